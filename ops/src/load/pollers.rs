//! Simulated nodes for `slapload --scale`: one TLS connection per computer, each holding the
//! real long-poll (`PollComputer` with `after`) as `slapnode` does, and nothing else. What
//! they measure is the wake: how long after a placement on its computer a node's long-poll
//! answers with it.
//!
//! A placement is acknowledged with the log index of its write; a long-poll answers with its
//! computer's view version, the index of the last change to that view. So the wake of a
//! placement at index `i` on computer `c` is `c`'s first answer with a version `>= i`,
//! whichever of the acknowledgement and the answer reached the tool first.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use slapcluster_api::client::Credentials;

use super::*;

/// The answers kept per computer to match a late acknowledgement against.
const ANSWERS_KEPT: usize = 8;

/// How long a simulated node's long-poll waits (the longest the replica allows).
const POLL_WAIT_MS: u32 = 60_000;

/// Connections opened at once while the nodes start.
const CONNECTING: usize = 64;

/// Certificates for `computers`, signed in this process by the cluster's root CA (under
/// `dir/ca`, as the test kit lays it out): a `slapmaster cert issue` per computer would fork
/// ten thousand times.
pub fn computer_credentials(
    dir: &Path,
    computers: &[String],
) -> Result<Vec<Credentials>, LoadError> {
    let read = |name: &str| {
        let path = dir.join("ca").join(name);
        std::fs::read_to_string(&path)
            .map_err(|e| LoadError::io(format!("reading {}", path.display()), e))
    };
    let root_pem = read("root.pem")?;
    let root = ca::Authority::load(&root_pem, &read("root.key")?)
        .map_err(|e| LoadError::Cluster(format!("loading the root CA: {e}")))?;
    let lifetime = ca::Lifetimes::default().leaf(ca::Role::Computer);
    computers
        .iter()
        .map(|computer| {
            let identity = ca::Identity::parse_uri(&format!("urn:slapcluster:computer:{computer}"))
                .map_err(|e| LoadError::Cluster(format!("computer {computer}: {e}")))?;
            let request = ca::new_key_and_request()
                .map_err(|e| LoadError::Cluster(format!("a key for {computer}: {e}")))?;
            let grant = ca::Grant {
                identity,
                lifetime,
                server_names: Vec::new(),
            };
            let chain_pem = root
                .sign_leaf(&request.csr_pem, &grant, std::time::SystemTime::now())
                .map_err(|e| {
                    LoadError::Cluster(format!("signing {computer}'s certificate: {e}"))
                })?;
            Ok(Credentials {
                roots_pem: vec![root_pem.clone()],
                chain_pem,
                key_pem: request.key_pem,
            })
        })
        .collect()
}

/// Wakes matched so far, and what is left to match.
#[derive(Default)]
struct Matcher {
    /// Per computer, its node's last answers: (version, when), oldest first.
    answered: HashMap<String, VecDeque<(u64, Instant)>>,
    /// Per computer, placements acknowledged that its node has not seen yet:
    /// (index, sent, acknowledged).
    waiting: HashMap<String, Vec<(u64, Instant, Instant)>>,
    /// Wakes from the placement's acknowledgement (0 when the node answered first).
    from_ack: Vec<Duration>,
    /// Wakes from the placement's request: what a user waits before the node knows.
    from_request: Vec<Duration>,
    /// Placements on computers no simulated node polls.
    unpolled: usize,
    /// Every answer the nodes had.
    answers: usize,
}

impl Matcher {
    fn woke(&mut self, answered_at: Instant, sent: Instant, acknowledged: Instant) {
        self.from_ack
            .push(answered_at.saturating_duration_since(acknowledged));
        self.from_request
            .push(answered_at.saturating_duration_since(sent));
    }

    fn answer(&mut self, computer: &str, version: u64, at: Instant) {
        self.answers += 1;
        if let Some(waiting) = self.waiting.get_mut(computer) {
            let mut seen = Vec::new();
            waiting.retain(|&(index, sent, acknowledged)| {
                let now_seen = index <= version;
                if now_seen {
                    seen.push((sent, acknowledged));
                }
                !now_seen
            });
            for (sent, acknowledged) in seen {
                self.woke(at, sent, acknowledged);
            }
        }
        let answers = self.answered.entry(computer.to_string()).or_default();
        if answers.len() == ANSWERS_KEPT {
            answers.pop_front();
        }
        answers.push_back((version, at));
    }

    fn placed(&mut self, computer: &str, index: u64, sent: Instant, acknowledged: Instant) {
        // Every polled computer has answered once before placements start.
        let Some(answers) = self.answered.get(computer) else {
            self.unpolled += 1;
            return;
        };
        let first = answers
            .iter()
            .find(|(version, _)| *version >= index)
            .map(|&(_, at)| at);
        match first {
            Some(at) => self.woke(at, sent, acknowledged),
            None => self.waiting.entry(computer.to_string()).or_default().push((
                index,
                sent,
                acknowledged,
            )),
        }
    }
}

/// Simulated nodes long-polling one replica, until dropped.
pub struct Pollers {
    matcher: Arc<Mutex<Matcher>>,
    failures: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
}

/// What the nodes saw while they polled.
pub struct Wakes {
    pub from_ack: Vec<Duration>,
    pub from_request: Vec<Duration>,
    /// Placements on computers no simulated node polls.
    pub unpolled: usize,
    pub answers: usize,
    pub failures: usize,
}

fn lock(matcher: &Mutex<Matcher>) -> std::sync::MutexGuard<'_, Matcher> {
    // Every update leaves the matcher whole before anything that could panic.
    matcher.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pollers {
    /// Connects one node per computer of `computers` (with its certificate) to `url`, and
    /// returns once each has had its first answer and holds a long-poll.
    pub async fn start(
        url: &str,
        computers: Vec<(String, Credentials)>,
    ) -> Result<Self, LoadError> {
        let matcher: Arc<Mutex<Matcher>> = Arc::default();
        let failures = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let count = computers.len();
        let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
        let mut tasks = tokio::task::JoinSet::new();
        for (computer, credentials) in computers {
            let (url, matcher, failures, started, connecting) = (
                url.to_string(),
                matcher.clone(),
                failures.clone(),
                started.clone(),
                connecting.clone(),
            );
            tasks.spawn(async move {
                let channel = {
                    let _permit = connecting.acquire().await;
                    client::connect_with(&url, Some(credentials.tls_config())).await
                };
                let Ok(channel) = channel else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut node = NodeClient::new(channel);
                let mut after = None;
                loop {
                    let request = pb::PollComputerRequest {
                        computer: computer.clone(),
                        after,
                        wait_ms: if after.is_some() { POLL_WAIT_MS } else { 0 },
                        ..Default::default()
                    };
                    match node.poll_computer(request).await {
                        Ok(reply) => {
                            let version = reply.get_ref().version;
                            lock(&matcher).answer(&computer, version, Instant::now());
                            if after.is_none() {
                                started.fetch_add(1, Ordering::Relaxed);
                            }
                            after = Some(version);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        let pollers = Self {
            matcher,
            failures,
            tasks,
        };
        cluster::wait_for("every simulated node's first answer", || async {
            let failed = pollers.failures.load(Ordering::Relaxed);
            (started.load(Ordering::Relaxed) + failed >= count).then_some(())
        })
        .await?;
        match pollers.failures.load(Ordering::Relaxed) {
            0 => Ok(pollers),
            failed => Err(LoadError::Cluster(format!(
                "{failed} of {count} simulated nodes could not connect or poll"
            ))),
        }
    }

    /// What a placement client calls with each placement acknowledged.
    pub fn watch(&self) -> Watch {
        let matcher = self.matcher.clone();
        Arc::new(move |reply: &pb::RequestInstanceReply, sent: Instant| {
            let acknowledged = Instant::now();
            if let Some(pb::placement::Placement::Partition(partition)) =
                reply.placement.as_ref().and_then(|p| p.placement.as_ref())
            {
                lock(&matcher).placed(&partition.computer, reply.index, sent, acknowledged);
            }
        })
    }

    /// The wakes so far (the nodes go on polling until dropped).
    pub fn wakes(&self) -> Wakes {
        let mut matcher = lock(&self.matcher);
        Wakes {
            from_ack: std::mem::take(&mut matcher.from_ack),
            from_request: std::mem::take(&mut matcher.from_request),
            unpolled: matcher.unpolled,
            answers: matcher.answers,
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Placements acknowledged that their node has not answered with yet.
    pub fn unseen(&self) -> usize {
        lock(&self.matcher).waiting.values().map(Vec::len).sum()
    }

    pub fn open(&self) -> usize {
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_is_matched_whichever_of_answer_and_acknowledgement_comes_first() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut matcher = Matcher::default();
        // The node answers first (version 10 covers index 10): no wait after the ack.
        matcher.answer("C1", 5, at(0));
        matcher.answer("C1", 10, at(30));
        matcher.placed("C1", 10, at(20), at(40));
        // The ack first: matched by the next answer that covers it, not by an older one.
        matcher.answer("C2", 3, at(0));
        matcher.placed("C2", 12, at(50), at(60));
        matcher.answer("C2", 11, at(65));
        matcher.answer("C2", 12, at(90));
        // Never seen.
        matcher.answer("C3", 1, at(0));
        matcher.placed("C3", 13, at(100), at(110));
        // Not polled.
        matcher.placed("C4", 14, at(100), at(110));
        assert_eq!(matcher.unpolled, 1);
        assert_eq!(
            matcher.from_ack,
            [Duration::ZERO, Duration::from_millis(30)]
        );
        assert_eq!(
            matcher.from_request,
            [Duration::from_millis(10), Duration::from_millis(40)]
        );
        assert_eq!(matcher.waiting.values().map(Vec::len).sum::<usize>(), 1);
    }
}
