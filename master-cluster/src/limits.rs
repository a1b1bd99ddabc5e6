//! What any one caller may take of a replica, decided without transport types: every listener
//! asks [`Budgets`] before it spends, and maps an [`Exhausted`] to its own answer (gRPC
//! `ResourceExhausted`, HTTP 429).
//!
//! - **Connections per address**, counted from accept to close: a [`ConnectionPermit`].
//! - **Calls per second** per identity and per address (token buckets that refill at the rate
//!   and hold at most a burst), and **calls in flight** per identity: a [`CallPermit`] held
//!   until the answer is sent.
//! - **Decode memory**: one budget shared by every call of every caller. A call charges what
//!   its request can cost once decoded ([`DecodeCharge`]) as its bytes arrive and before they
//!   are decoded, and gives it back when answered; a call whose charge does not fit is refused.
//!   So requests held at once (waiting for a commit, say) never cost more than the budget. It
//!   is shared fairly: one identity holds at most half of it ([`CALLER_SHARE`]), and the
//!   last eighth ([`SMALL_RESERVE`]) is kept for calls that charge little (at most
//!   [`SMALL_CHARGE`]), so that callers sending large requests, even several together, never
//!   leave a node's poll or a user's ordinary request without room.
//!
//! Replicas are never limited (Raft's traffic is the cluster's own), and operators are not
//! rate-limited: they are how an overload is repaired. Every entry is dropped once idle, so the
//! tables hold only callers active in the last seconds (see `Table::prune`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::lock;
use crate::state::model::Actor;

/// Largest request a node, user or operator may send. The largest legitimate one is an
/// instance request with the maximum parameters (1 MiB) and SLA; anything larger is refused
/// before it is decoded.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 << 20;

/// Error messages name what was wrong, and may quote the caller's input: at most this many
/// bytes of them are sent back, so that a 3 MB identifier is not echoed whole.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `message`, cut to [`MAX_MESSAGE_BYTES`] (at a character boundary) with its length said.
pub fn bounded(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &message[..end], message.len())
}

/// The limits, per replica (`[limits]` in the configuration file). The defaults are far above
/// what a well-behaved agent or client does (a node polls about once a second, or holds one
/// long-poll), and low enough that one identity takes at most about a quarter of a two-core
/// replica's calls and no caller can hold more than the decode budget's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory all calls' requests may cost at once, decoded (bytes).
    pub decode_budget_bytes: u64,
    /// Calls a second one identity may make, sustained; and how many it may make at once
    /// after a pause.
    pub calls_per_second: u32,
    pub burst: u32,
    /// Calls one identity may have in flight.
    pub in_flight_per_caller: u32,
    /// Calls a second from one address, whoever calls (a burst of twice as many).
    pub calls_per_second_per_address: u32,
    /// Open connections from one address, per listener.
    pub connections_per_address: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            decode_budget_bytes: 256 << 20,
            calls_per_second: 5_000,
            burst: 10_000,
            in_flight_per_caller: 256,
            calls_per_second_per_address: 20_000,
            connections_per_address: 1_024,
        }
    }
}

/// Why a caller is refused now; it may try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    #[error("{who} made more than {per_second} calls a second; slow down and retry")]
    Rate { who: String, per_second: u32 },
    #[error("{who} has {max} calls in flight already; wait for an answer and retry")]
    InFlight { who: String, max: u32 },
    #[error("{address} has {max} connections open already")]
    Connections { address: IpAddr, max: u32 },
    #[error(
        "the replica is holding {budget} bytes of requests already; this one needs {needed} \
         more; retry shortly"
    )]
    Decode { needed: u64, budget: u64 },
    #[error(
        "{who} holds {held} bytes of requests being decoded, its share of the replica's; this \
         one needs {needed} more; wait for answers and retry"
    )]
    DecodeShare { who: String, held: u64, needed: u64 },
}

/// One caller's or one address's use, for as long as it is active.
#[derive(Debug)]
struct Usage {
    bucket: Bucket,
    in_flight: u32,
    connections: u32,
    /// Bytes of the decode budget this caller's calls hold.
    decoding: u64,
}

/// A token bucket: `tokens` refill at `rate` a second up to `burst`; a call takes one.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            refilled: now,
        }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.refilled = now;
    }

    /// Takes a token if there is one.
    fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Caller(String),
    Address(IpAddr),
}

/// One identity's calls hold at most this fraction of the decode budget (a half): room for
/// its largest request (a replica's configuration must allow it), and never all of it.
pub const CALLER_SHARE: u64 = 2;
/// The last fraction of the decode budget (1/8) that only small charges may use.
pub const SMALL_RESERVE: u64 = 8;
/// What a small charge is: an ordinary call (a poll, a request with kilobytes of parameters).
pub const SMALL_CHARGE: u64 = 1 << 20;

/// A replica's budgets (see the module's documentation).
#[derive(Debug)]
pub struct Budgets {
    limits: Limits,
    decoding: AtomicU64,
    usage: std::sync::Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Key, Usage>,
    /// Entries after the last prune: the next prune waits until there are twice as many, so
    /// pruning costs O(1) a call, amortised.
    kept: usize,
}

impl Budgets {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            decoding: AtomicU64::new(0),
            usage: std::sync::Mutex::default(),
        })
    }

    /// Bytes of decode budget charged now.
    pub fn decoding(&self) -> u64 {
        self.decoding.load(Ordering::Relaxed)
    }

    /// Admits one call of `caller` (none: a call that needs no identity, such as an
    /// enrollment) from `address`, or says which budget it exceeds. Nothing is taken from a
    /// budget when the call is refused.
    pub fn admit_call(
        self: &Arc<Self>,
        caller: Option<&Actor>,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<CallPermit, Exhausted> {
        let caller = match caller {
            Some(Actor::Replica(_)) => return Ok(CallPermit::unlimited()),
            Some(Actor::Operator(_)) => None,
            Some(other) => Some(other.to_string()),
            None => None,
        };
        let limits = &self.limits;
        let per_address = limits.calls_per_second_per_address;
        let mut table = lock(&self.usage);
        if let Some(address) = address {
            let usage = table.entry(Key::Address(address), 2 * per_address, now);
            // Checked without taking: a refusal below must not cost the address a token.
            usage.bucket.refill(per_address, 2 * per_address, now);
            if usage.bucket.tokens < 1.0 {
                return Err(Exhausted::Rate {
                    who: address.to_string(),
                    per_second: per_address,
                });
            }
        }
        if let Some(who) = &caller {
            let usage = table.entry(Key::Caller(who.clone()), limits.burst, now);
            if usage.in_flight >= limits.in_flight_per_caller {
                return Err(Exhausted::InFlight {
                    who: who.clone(),
                    max: limits.in_flight_per_caller,
                });
            }
            if !usage
                .bucket
                .take(limits.calls_per_second, limits.burst, now)
            {
                return Err(Exhausted::Rate {
                    who: who.clone(),
                    per_second: limits.calls_per_second,
                });
            }
            usage.in_flight += 1;
        }
        if let Some(address) = address {
            let usage = table.entry(Key::Address(address), 2 * per_address, now);
            usage.bucket.tokens -= 1.0;
        }
        table.prune(limits, now);
        Ok(CallPermit {
            release: caller.map(|who| (self.clone(), Key::Caller(who))),
        })
    }

    /// Admits one connection from `address`, held until the permit is dropped.
    pub fn connect(
        self: &Arc<Self>,
        address: IpAddr,
        now: Instant,
    ) -> Result<ConnectionPermit, Exhausted> {
        let max = self.limits.connections_per_address;
        let per_address = 2 * self.limits.calls_per_second_per_address;
        let mut table = lock(&self.usage);
        let usage = table.entry(Key::Address(address), per_address, now);
        if usage.connections >= max {
            return Err(Exhausted::Connections { address, max });
        }
        usage.connections += 1;
        Ok(ConnectionPermit {
            budgets: self.clone(),
            address,
        })
    }

    /// A charge of `caller`'s against the decode budget (none: a call that needs no identity,
    /// or an operator's or a replica's, which have no share to keep to), empty until
    /// [`DecodeCharge::grow_to`].
    pub fn decode_charge(self: &Arc<Self>, caller: Option<&Actor>) -> DecodeCharge {
        let caller = match caller {
            None | Some(Actor::Replica(_) | Actor::Operator(_)) => None,
            Some(other) => Some(Key::Caller(other.to_string())),
        };
        DecodeCharge {
            budgets: self.clone(),
            caller,
            charged: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` more for a charge that will then total `total`, from the caller's share
    /// and the budget, or neither.
    fn take_decode(&self, caller: Option<&Key>, bytes: u64, total: u64) -> Result<(), Exhausted> {
        let budget = self.limits.decode_budget_bytes;
        let mut table = lock(&self.usage);
        if let Some(key @ Key::Caller(who)) = caller {
            let held = table.entries.get(key).map_or(0, |usage| usage.decoding);
            if held + bytes > budget / CALLER_SHARE {
                return Err(Exhausted::DecodeShare {
                    who: who.clone(),
                    held,
                    needed: bytes,
                });
            }
        }
        // Large charges leave the reserve to small ones.
        let limit = if total <= SMALL_CHARGE {
            budget
        } else {
            budget - budget / SMALL_RESERVE
        };
        self.decoding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|after| *after <= limit)
            })
            .map_err(|_| Exhausted::Decode {
                needed: bytes,
                budget,
            })?;
        if let Some(key) = caller {
            let burst = self.limits.burst;
            table.entry(key.clone(), burst, Instant::now()).decoding += bytes;
        }
        Ok(())
    }

    fn give_back_decode(&self, caller: Option<&Key>, bytes: u64) {
        self.decoding.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(key) = caller {
            self.release(key, |usage| {
                usage.decoding = usage.decoding.saturating_sub(bytes);
            });
        }
    }

    fn release(&self, key: &Key, release: impl FnOnce(&mut Usage)) {
        let mut table = lock(&self.usage);
        if let Some(usage) = table.entries.get_mut(key) {
            release(usage);
        }
    }
}

impl Table {
    fn entry(&mut self, key: Key, burst: u32, now: Instant) -> &mut Usage {
        self.entries.entry(key).or_insert_with(|| Usage {
            bucket: Bucket::full(burst, now),
            in_flight: 0,
            connections: 0,
            decoding: 0,
        })
    }

    /// Drops the entries that hold nothing and whose bucket has refilled (a caller that comes
    /// back then starts as it would have anyway), once the table has doubled since the last
    /// prune.
    fn prune(&mut self, limits: &Limits, now: Instant) {
        if self.entries.len() < 1024.max(2 * self.kept) {
            return;
        }
        self.entries.retain(|key, usage| {
            let (rate, burst) = match key {
                Key::Caller(_) => (limits.calls_per_second, limits.burst),
                Key::Address(_) => (
                    limits.calls_per_second_per_address,
                    2 * limits.calls_per_second_per_address,
                ),
            };
            usage.bucket.refill(rate, burst, now);
            usage.in_flight > 0
                || usage.connections > 0
                || usage.decoding > 0
                || usage.bucket.tokens < f64::from(burst)
        });
        self.kept = self.entries.len();
    }
}

/// One admitted call; dropping it ends the call's time in flight.
#[derive(Debug)]
pub struct CallPermit {
    release: Option<(Arc<Budgets>, Key)>,
}

impl CallPermit {
    fn unlimited() -> Self {
        Self { release: None }
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if let Some((budgets, key)) = self.release.take() {
            budgets.release(&key, |usage| {
                usage.in_flight = usage.in_flight.saturating_sub(1)
            });
        }
    }
}

/// One open connection; dropping it closes its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    budgets: Arc<Budgets>,
    address: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.budgets.release(&Key::Address(self.address), |usage| {
            usage.connections = usage.connections.saturating_sub(1);
        });
    }
}

/// What one call holds of the decode budget; given back when dropped.
#[derive(Debug)]
pub struct DecodeCharge {
    budgets: Arc<Budgets>,
    /// Whose share it counts against.
    caller: Option<Key>,
    charged: AtomicU64,
}

impl DecodeCharge {
    /// Raises the charge to `total` bytes (never lowers it), or refuses and keeps what was
    /// charged. Calls on one charge come from one request's body, one at a time.
    pub fn grow_to(&self, total: u64) -> Result<(), Exhausted> {
        let charged = self.charged.load(Ordering::Acquire);
        if total <= charged {
            return Ok(());
        }
        self.budgets
            .take_decode(self.caller.as_ref(), total - charged, total)?;
        self.charged.store(total, Ordering::Release);
        Ok(())
    }

    pub fn charged(&self) -> u64 {
        self.charged.load(Ordering::Acquire)
    }
}

impl Drop for DecodeCharge {
    fn drop(&mut self) {
        let charged = *self.charged.get_mut();
        self.budgets.give_back_decode(self.caller.as_ref(), charged);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state::model::UserId;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary_and_say_how_long_they_were() {
        let short = "unknown computer COMP-1".to_string();
        assert_eq!(bounded(short.clone()), short);
        let long = format!("unknown computer {}", "é".repeat(2_000_000));
        let cut = bounded(long.clone());
        assert!(cut.len() < MAX_MESSAGE_BYTES + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("… ({} bytes in all)", long.len())));
    }

    fn limits() -> Limits {
        Limits {
            decode_budget_bytes: 1000,
            calls_per_second: 10,
            burst: 5,
            in_flight_per_caller: 3,
            calls_per_second_per_address: 100,
            connections_per_address: 2,
        }
    }

    fn user(name: &str) -> Actor {
        Actor::User(UserId::from(name))
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));

    #[test]
    fn a_caller_gets_its_burst_then_its_rate_and_others_are_not_affected() {
        let budgets = Budgets::new(limits());
        let start = Instant::now();
        let mallory = user("mallory");
        for _ in 0..5 {
            drop(
                budgets
                    .admit_call(Some(&mallory), HOME, start)
                    .expect("within the burst"),
            );
        }
        assert_eq!(
            budgets.admit_call(Some(&mallory), HOME, start).map(drop),
            Err(Exhausted::Rate {
                who: "user mallory".into(),
                per_second: 10
            })
        );
        drop(
            budgets
                .admit_call(Some(&user("alice")), HOME, start)
                .expect("alice has her own bucket"),
        );
        // 10 a second: one more after 100 ms, not two.
        let later = start + Duration::from_millis(100);
        drop(
            budgets
                .admit_call(Some(&mallory), HOME, later)
                .expect("refilled"),
        );
        assert!(budgets.admit_call(Some(&mallory), HOME, later).is_err());
    }

    #[test]
    fn calls_in_flight_are_limited_until_their_answers() {
        let budgets = Budgets::new(Limits {
            burst: 100,
            ..limits()
        });
        let now = Instant::now();
        let alice = user("alice");
        let held: Vec<_> = (0..3)
            .map(|_| {
                budgets
                    .admit_call(Some(&alice), HOME, now)
                    .expect("admitted")
            })
            .collect();
        assert_eq!(
            budgets.admit_call(Some(&alice), HOME, now).map(drop),
            Err(Exhausted::InFlight {
                who: "user alice".into(),
                max: 3
            })
        );
        drop(held);
        drop(
            budgets
                .admit_call(Some(&alice), HOME, now)
                .expect("answered: room again"),
        );
    }

    #[test]
    fn replicas_are_never_limited_and_operators_only_by_address() {
        let budgets = Budgets::new(limits());
        let now = Instant::now();
        let replica = Actor::Replica(2);
        let operator = Actor::Operator("root".into());
        let mut held = Vec::new();
        for _ in 0..50 {
            held.push(
                budgets
                    .admit_call(Some(&replica), HOME, now)
                    .expect("a replica"),
            );
            held.push(
                budgets
                    .admit_call(Some(&operator), None, now)
                    .expect("an operator"),
            );
        }
    }

    #[test]
    fn an_address_is_limited_whoever_calls_from_it() {
        let budgets = Budgets::new(Limits {
            calls_per_second_per_address: 3,
            burst: 100,
            ..limits()
        });
        let now = Instant::now();
        for i in 0..6 {
            let caller = user(&format!("user{i}"));
            drop(
                budgets
                    .admit_call(Some(&caller), HOME, now)
                    .expect("within 2 × 3"),
            );
        }
        assert!(matches!(
            budgets.admit_call(Some(&user("user7")), HOME, now),
            Err(Exhausted::Rate { .. })
        ));
        drop(
            budgets
                .admit_call(None, None, now)
                .expect("another address"),
        );
    }

    #[test]
    fn connections_per_address_are_counted_until_closed() {
        let budgets = Budgets::new(limits());
        let now = Instant::now();
        let address = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        let first = budgets.connect(address, now).expect("first");
        let _second = budgets.connect(address, now).expect("second");
        assert_eq!(
            budgets.connect(address, now).map(drop),
            Err(Exhausted::Connections { address, max: 2 })
        );
        drop(first);
        budgets
            .connect(address, now)
            .expect("one closed: room again");
    }

    #[test]
    fn the_decode_budget_is_shared_and_given_back() {
        let budgets = Budgets::new(limits());
        let first = budgets.decode_charge(None);
        first.grow_to(600).expect("fits");
        first.grow_to(300).expect("never lowered");
        assert_eq!(first.charged(), 600);
        let second = budgets.decode_charge(None);
        assert_eq!(
            second.grow_to(500),
            Err(Exhausted::Decode {
                needed: 500,
                budget: 1000
            })
        );
        second
            .grow_to(400)
            .expect("exactly the rest (small charges may use the reserve)");
        assert_eq!(budgets.decoding(), 1000);
        drop(first);
        assert_eq!(budgets.decoding(), 400);
        drop(second);
        assert_eq!(budgets.decoding(), 0);
    }

    #[test]
    fn one_caller_holds_a_share_and_large_charges_leave_the_reserve_to_small_ones() {
        let budget = 64 * SMALL_CHARGE;
        let budgets = Budgets::new(Limits {
            decode_budget_bytes: budget,
            ..limits()
        });
        let (mallory, eve, alice) = (user("mallory"), user("eve"), user("alice"));
        // Mallory's share: a half, whatever is free.
        let held = budgets.decode_charge(Some(&mallory));
        held.grow_to(budget / 4).expect("within her share");
        let more = budgets.decode_charge(Some(&mallory));
        more.grow_to(budget / 4).expect("her share");
        let beyond = budgets.decode_charge(Some(&mallory));
        assert!(matches!(
            beyond.grow_to(1),
            Err(Exhausted::DecodeShare {
                held: 33_554_432,
                ..
            })
        ));
        drop(beyond);
        // Others with large requests fill the rest but the reserve.
        let others: Vec<_> = (0..1)
            .map(|n| {
                let charge = budgets.decode_charge(Some(&user(&format!("other{n}"))));
                charge.grow_to(budget / 4).expect("their share");
                charge
            })
            .collect();
        let eves = budgets.decode_charge(Some(&eve));
        let large = budget / 8 + SMALL_CHARGE;
        assert!(matches!(eves.grow_to(large), Err(Exhausted::Decode { .. })));
        eves.grow_to(budget / 8 - SMALL_CHARGE)
            .expect("up to the reserve");
        // An ordinary call still has room.
        let alices = budgets.decode_charge(Some(&alice));
        alices.grow_to(SMALL_CHARGE).expect("the reserve");
        drop((held, more, others, eves, alices));
        assert_eq!(budgets.decoding(), 0);
        let table = lock(&budgets.usage);
        assert!(table.entries.values().all(|usage| usage.decoding == 0));
    }

    #[test]
    fn idle_callers_are_forgotten() {
        let budgets = Budgets::new(limits());
        let start = Instant::now();
        // The first prune (at 1,024 entries) finds every bucket just used: all kept.
        for i in 0..1500 {
            drop(budgets.admit_call(Some(&user(&format!("early{i}"))), None, start));
        }
        // The next (at 2,048) finds the early buckets refilled: only the late ones kept.
        let later = start + Duration::from_secs(1);
        for i in 0..600 {
            drop(budgets.admit_call(Some(&user(&format!("late{i}"))), None, later));
        }
        let kept = lock(&budgets.usage).entries.len();
        assert!(
            kept < 1024,
            "{kept} entries kept after every bucket refilled"
        );
    }
}
