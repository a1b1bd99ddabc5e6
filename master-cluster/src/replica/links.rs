//! The links to the other members, kept open and measured.
//!
//! A follower mostly talks to the leader. It calls another follower only when an election
//! starts or when a write must be forwarded to a new leader. A connection opened then costs
//! a TCP and a TLS handshake, two round trips, before the vote or the write is even sent.
//! Measured under `slapload --regions`: after the leader's region was cut off, the first
//! pre-vote between the remaining voters (120 ms apart) took 380 ms.
//!
//! So every [`PING_INTERVAL`] a replica pings each member over the channel that Raft and
//! forwarded writes share ([`super::Peers`]). That keeps the connection open, and opens it
//! again after a cut heals. Each answer also measures the round trip: operators read it in
//! `Admin.ClusterStatus` to size `[raft] rtt_ms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ReplicaCore;
use crate::lock;

/// How often each member is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How long a ping may go unanswered. An unanswered ping forgets the member's round trip.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A round trip older than this is not shown: the member stopped answering.
const FRESH_FOR: Duration = Duration::from_secs(5);

/// The measured round trips to the other members, by member id. Cheap to clone.
#[derive(Clone, Default)]
pub struct RoundTrips(Arc<Mutex<HashMap<u64, Measured>>>);

#[derive(Debug, Clone, Copy)]
struct Measured {
    /// `None` after the first answer: it may have paid for opening the connection (three
    /// round trips), which would take a minute of pings to smooth away.
    smoothed: Option<Duration>,
    at: Instant,
}

/// The smoothed round trip after one more `sample`: seven eighths of the last estimate and one
/// eighth of the sample, as TCP smooths its own (RFC 6298). The first sample stands alone.
pub fn smooth(previous: Option<Duration>, sample: Duration) -> Duration {
    match previous {
        Some(previous) => (previous * 7 + sample) / 8,
        None => sample,
    }
}

impl RoundTrips {
    /// An answer from member `id` after `sample`. The first since the replica started or the
    /// member last failed to answer only marks it as answering (see [`Measured::smoothed`]).
    fn record(&self, id: u64, sample: Duration) {
        let mut measured = lock(&self.0);
        let smoothed = measured
            .get(&id)
            .map(|answering| smooth(answering.smoothed, sample));
        measured.insert(
            id,
            Measured {
                smoothed,
                at: Instant::now(),
            },
        );
    }

    fn forget(&self, id: u64) {
        lock(&self.0).remove(&id);
    }

    /// The smoothed round trip to member `id`, when it answered a ping lately.
    pub fn get(&self, id: u64) -> Option<Duration> {
        lock(&self.0)
            .get(&id)
            .filter(|m| m.at.elapsed() < FRESH_FOR)
            .and_then(|m| m.smoothed)
    }
}

/// Pings every other member every [`PING_INTERVAL`] until the replica is dropped.
pub(super) fn spawn(core: &Arc<ReplicaCore>) {
    let weak = Arc::downgrade(core);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(core) = weak.upgrade() else { return };
            let mut pings = tokio::task::JoinSet::new();
            for member in core.members().into_iter().filter(|m| m.id != core.id()) {
                let peers = core.peers().clone();
                pings.spawn(async move {
                    let sent = Instant::now();
                    let answered =
                        tokio::time::timeout(PING_TIMEOUT, peers.ping(&member.addr, PING_TIMEOUT))
                            .await;
                    (member.id, answered.is_ok_and(|a| a.is_ok()), sent.elapsed())
                });
            }
            let round_trips = core.round_trips.clone();
            // The core is not held across the pings: a stopping replica is not kept alive.
            drop(core);
            while let Some(joined) = pings.join_next().await {
                match joined {
                    Ok((id, true, took)) => round_trips.record(id, took),
                    Ok((id, false, _)) => round_trips.forget(id),
                    Err(_) => {}
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_moves_an_eighth_of_the_way_to_each_sample() {
        let ms = Duration::from_millis;
        assert_eq!(smooth(None, ms(80)), ms(80));
        assert_eq!(smooth(Some(ms(80)), ms(160)), ms(90));
        // One slow answer does not make a link look far; a run of them does.
        let mut estimate = Some(ms(80));
        for _ in 0..40 {
            estimate = Some(smooth(estimate, ms(160)));
        }
        assert!(estimate.is_some_and(|e| e > ms(155) && e <= ms(160)));
    }

    #[test]
    fn the_first_answer_opens_the_link_and_an_unanswered_member_has_no_round_trip() {
        let ms = Duration::from_millis;
        let trips = RoundTrips::default();
        // The first answer paid for the handshakes: not a round trip.
        trips.record(2, ms(9));
        assert_eq!(trips.get(2), None);
        trips.record(2, ms(3));
        assert_eq!(trips.get(2), Some(ms(3)));
        trips.forget(2);
        assert_eq!(trips.get(2), None);
        trips.record(2, ms(9));
        assert_eq!(
            trips.get(2),
            None,
            "reconnected: measured again from the next"
        );
        assert_eq!(trips.get(3), None);
    }
}
