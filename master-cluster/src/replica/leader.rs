//! Calls only the leader can answer — writes and read indexes — made from any replica: sent
//! straight to the leader this replica knows of, else tried here first (this replica may lead,
//! or learn of the leader from the attempt), and retried (bounded) while an election runs.
//!
//! A write is sent again only when the earlier attempt certainly did not reach the log (this
//! replica or the leader answered "not the leader", or the leader's port refused the
//! connection). After a forward whose fate is unknown (the leader timed out committing it, the
//! connection broke while it was in flight) the caller is told so instead: committing the
//! same command a second time, after writes that followed the first, would undo them (a
//! request repeated after a newer request for the same instance).

use openraft::async_runtime::WatchReceiver as _;
use std::time::Duration;

use openraft::ReadPolicy;
use openraft::error::{LinearizableReadError, RaftError};

use super::network::Peers;
use super::wire::ForwardError;
use super::{CoreError, ReplicaCore, WriteError, Written};
use crate::state::Command;

/// Something only the leader can answer: tried locally first, else sent to the leader.
pub(super) trait LeaderCall {
    type Output;
    /// Whether the call may be sent again after an attempt whose outcome is unknown: a read
    /// index may, a write may not.
    const REPEATABLE: bool;
    fn local(&self, replica: &ReplicaCore) -> impl Future<Output = Attempt<Self::Output>> + Send;
    fn remote(
        &self,
        peers: &Peers,
        leader: String,
        timeout: Duration,
    ) -> impl Future<Output = Result<Result<Self::Output, ForwardError>, tonic::Status>> + Send;
}

pub(super) struct WriteCall<'a>(pub(super) &'a Command);

impl LeaderCall for WriteCall<'_> {
    type Output = Written;
    const REPEATABLE: bool = false;

    async fn local(&self, replica: &ReplicaCore) -> Attempt<Written> {
        replica.batcher.submit(self.0.clone()).await
    }

    async fn remote(
        &self,
        peers: &Peers,
        leader: String,
        timeout: Duration,
    ) -> Result<Result<Written, ForwardError>, tonic::Status> {
        let answer = peers.forward(&leader, self.0, timeout).await?;
        Ok(answer.map(|(response, index)| Written { response, index }))
    }
}

pub(super) struct ReadIndexCall;

impl LeaderCall for ReadIndexCall {
    type Output = u64;
    const REPEATABLE: bool = true;

    async fn local(&self, replica: &ReplicaCore) -> Attempt<u64> {
        match replica.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read, _)) => Attempt::Done(read.log_id().index),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(to))) => {
                Attempt::Redirect(to.leader_id.zip(to.leader_node.map(|n| n.addr)))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Attempt::Stopped(e.into())
            }
            Err(RaftError::Fatal(fatal)) => Attempt::Stopped(fatal.into()),
        }
    }

    async fn remote(
        &self,
        peers: &Peers,
        leader: String,
        timeout: Duration,
    ) -> Result<Result<u64, ForwardError>, tonic::Status> {
        let answer = peers.read_index(&leader, timeout).await?;
        Ok(answer.map(|index| index.unwrap_or(0)))
    }
}

/// One step of [`ReplicaCore::at_leader`].
pub(crate) enum Attempt<T> {
    Done(T),
    /// Not the leader; the leader as this replica knows it.
    Redirect(Option<(u64, String)>),
    /// Not answered within this long; a write may yet take effect.
    TimedOut(Duration),
    /// This replica's Raft core could not carry it through.
    Stopped(CoreError),
}

impl ReplicaCore {
    /// Runs `call` here; where this replica does not lead, against the leader; during an
    /// election, waits for one. Bounded by the write timeout, the local attempt included.
    pub(super) async fn at_leader<C: LeaderCall>(&self, call: C) -> Result<C::Output, WriteError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        // A follower that knows the leader goes there at once: a local attempt would only
        // pass through its Raft core to be told the same.
        let mut known = self.other_leader();
        loop {
            let leader = match known.take() {
                Some(leader) => Some(leader),
                None => match tokio::time::timeout_at(deadline, call.local(self)).await {
                    Ok(Attempt::Done(value)) => return Ok(value),
                    Ok(Attempt::Redirect(leader)) => leader,
                    Ok(Attempt::TimedOut(waited)) => return Err(WriteError::TimedOut(waited)),
                    Ok(Attempt::Stopped(cause)) => return Err(cause.into()),
                    Err(_) => return Err(WriteError::TimedOut(self.write_timeout)),
                },
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::NoLeader(self.write_timeout));
            }
            match leader {
                Some((leader, addr)) if leader != self.id => {
                    match call.remote(&self.peers, addr, remaining).await {
                        Ok(Ok(value)) => return Ok(value),
                        Ok(Err(ForwardError::NotLeader { .. })) => {}
                        Ok(Err(ForwardError::Unavailable(reason))) if !C::REPEATABLE => {
                            return Err(WriteError::Unconfirmed(reason));
                        }
                        Ok(Err(ForwardError::Unavailable(reason))) => {
                            tracing::warn!(leader, %reason, "leader cannot answer; waiting");
                            self.wait_for_leader_change(Some(leader), remaining).await;
                        }
                        Err(status) if !C::REPEATABLE && !never_sent(&status) => {
                            return Err(WriteError::Unconfirmed(status.message().to_owned()));
                        }
                        Err(status) => {
                            tracing::debug!(leader, %status, "leader unreachable; waiting for a leader");
                            self.wait_for_leader_change(Some(leader), remaining).await;
                        }
                    }
                }
                // No leader known (an election), or the view is stale: wait for a change.
                known => {
                    self.wait_for_leader_change(known.map(|(id, _)| id), remaining)
                        .await
                }
            }
        }
    }

    /// The leader as this replica knows it, when that is another replica, with its address.
    fn other_leader(&self) -> Option<(u64, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leader = metrics.current_leader.filter(|&leader| leader != self.id)?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// Waits until this replica's view of the leader differs from `leader` (an election
    /// finished, or the leader was found), or `timeout`.
    async fn wait_for_leader_change(&self, leader: Option<u64>, timeout: Duration) {
        let _ = self
            .raft
            .wait(Some(timeout.min(Duration::from_secs(2))))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != leader,
                "leader change",
            )
            .await;
    }
}

/// Whether a failed call to a peer certainly never reached it: its port refused the
/// connection, or its address is not one we can dial. Anything else (a reset, a timeout, a
/// broken stream) may have happened after the peer received the request.
fn never_sent(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::InvalidArgument {
        // `Peers::client`: the address did not parse; nothing was sent.
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::replica::{Listening, Opened, ReplicaConfig};
    use crate::state::Op;
    use crate::state::model::{Actor, Timestamp};

    /// A call whose leader is elsewhere and whose every remote attempt fails as `answer` says,
    /// counting the attempts.
    struct Probe<const REPEAT: bool> {
        answer: fn() -> Result<Result<(), ForwardError>, tonic::Status>,
        sent: AtomicUsize,
    }

    impl<const REPEAT: bool> LeaderCall for &Probe<REPEAT> {
        type Output = ();
        const REPEATABLE: bool = REPEAT;

        async fn local(&self, _: &ReplicaCore) -> Attempt<()> {
            Attempt::Redirect(Some((99, "http://[::1]:1".into())))
        }

        async fn remote(
            &self,
            _: &Peers,
            _: String,
            _: Duration,
        ) -> Result<Result<(), ForwardError>, tonic::Status> {
            self.sent.fetch_add(1, Ordering::SeqCst);
            (self.answer)()
        }
    }

    /// A replica's core that knows no leader (never initialised): every call goes
    /// "elsewhere". It serves nothing: the calls under test never reach a listener.
    async fn lone_replica(dir: &std::path::Path) -> Opened {
        let addr = "[::1]:1".parse().expect("addr");
        let mut config = ReplicaConfig::new(1, addr, dir.into());
        config.danger_plaintext = true;
        config.write_timeout = Duration::from_millis(2500);
        let listening = Listening {
            grpc: addr,
            http: None,
            slap: None,
        };
        ReplicaCore::open(&config, listening).await.expect("opens")
    }

    /// The chaos smoke's one rare violation had this shape: a forwarded write committed, its
    /// answer lost with the connection, the forward sent again after a newer write, and the
    /// older value back. A write is now sent once unless it certainly never arrived.
    #[tokio::test]
    async fn a_write_whose_forward_may_have_arrived_is_not_sent_again_and_a_read_index_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened {
            core: replica,
            files,
        } = lone_replica(dir.path()).await;
        let lost: fn() -> Result<Result<(), ForwardError>, tonic::Status> = || {
            Ok(Err(ForwardError::Unavailable(
                "not committed within 10s; it may yet be".into(),
            )))
        };
        let broken: fn() -> Result<Result<(), ForwardError>, tonic::Status> =
            || Err(tonic::Status::unavailable("connection reset by peer"));
        for answer in [lost, broken] {
            let write = Probe::<false> {
                answer,
                sent: AtomicUsize::new(0),
            };
            let outcome = replica.at_leader(&write).await;
            assert!(
                matches!(outcome, Err(WriteError::Unconfirmed(_))),
                "{outcome:?}"
            );
            assert_eq!(write.sent.load(Ordering::SeqCst), 1, "sent once");
        }
        let read_index = Probe::<true> {
            answer: lost,
            sent: AtomicUsize::new(0),
        };
        let outcome = replica.at_leader(&read_index).await;
        assert!(
            matches!(outcome, Err(WriteError::NoLeader(_))),
            "{outcome:?}"
        );
        assert!(
            read_index.sent.load(Ordering::SeqCst) >= 2,
            "a read index is asked again until the deadline"
        );
        replica.raft().shutdown().await.expect("shutdown");
        drop(replica);
        files.wait().await;
    }

    fn command() -> Command {
        Command {
            at: Timestamp(1),
            actor: Actor::Replica(1),
            op: Op::RecordLiveness { seen: Vec::new() },
        }
    }

    /// How a forward to `[::1]:port` failed.
    async fn forward_to(port: u16) -> tonic::Status {
        Peers::default()
            .forward(
                &format!("http://[::1]:{port}"),
                &command(),
                Duration::from_secs(5),
            )
            .await
            .expect_err("no answer from that port")
    }

    /// A forward to a port nobody listens on never reached a leader: sending it again is safe.
    #[tokio::test]
    async fn a_refused_connection_was_never_sent() {
        let listener = tokio::net::TcpListener::bind("[::1]:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let status = forward_to(port).await;
        assert!(never_sent(&status), "{status:?}");
    }

    /// A forward the peer received and then dropped may have been committed: not resent.
    #[tokio::test]
    async fn a_connection_broken_after_the_request_may_have_been_sent() {
        let listener = tokio::net::TcpListener::bind("[::1]:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            // Reads the request, then closes without an answer, as a leader that dies would.
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buffer = vec![0; 64 * 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buffer).await;
        });
        let status = forward_to(port).await;
        server.await.expect("server");
        assert!(!never_sent(&status), "{status:?}");
    }
}
