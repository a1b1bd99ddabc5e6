//! The replicas an agent may talk to, ranked by how fast they answer. The agent starts from
//! its configured seeds, learns the members from every poll, talks to the fastest replica that
//! works, and on an error or a timeout moves to the next one within the same call. A replica
//! that failed is skipped for a jittered, growing while; when every one fails the caller backs
//! off and tries again.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use slapcluster_api::client::{self, ClientError};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Code, Status};

const FIRST_PENALTY: Duration = Duration::from_secs(1);
const MAX_PENALTY: Duration = Duration::from_secs(30);

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A replica answered and refused: another replica would say the same.
    #[error("{what} refused by {url}: {:?}: {}", status.code(), status.message())]
    Rejected {
        what: &'static str,
        url: String,
        status: Status,
    },
    /// No replica answered in time.
    #[error("{what}: no replica answered ({})", tried.join("; "))]
    Unreachable {
        what: &'static str,
        tried: Vec<String>,
    },
}

struct Endpoint {
    url: String,
    channel: Channel,
    /// Smoothed round-trip time of short calls.
    rtt: Option<Duration>,
    failures: u32,
    /// Skipped until then after a failure.
    retry_at: Option<Instant>,
    /// In the membership the cluster last reported (seeds count until a poll says otherwise).
    member: bool,
    seed: bool,
}

pub struct Replicas {
    /// How to reach replicas; replaced when the computer's certificate is renewed.
    tls: std::sync::RwLock<Option<ClientTlsConfig>>,
    /// Sent as the actor header on a plaintext cluster.
    actor: Option<AsciiMetadataValue>,
    endpoints: Mutex<Vec<Endpoint>>,
    /// The replica that answered last, to log when the agent moves to another.
    current: Mutex<String>,
    pub metrics: std::sync::Arc<crate::observe::NodeMetrics>,
}

/// One call's outcome on one replica, for the ranking.
enum Attempt<T> {
    Done(T),
    Refused(Status),
    Failed(String),
}

impl Replicas {
    pub fn new(
        seeds: &[String],
        tls: Option<ClientTlsConfig>,
        actor: Option<String>,
    ) -> Result<Self, ClientError> {
        let actor = actor
            .map(|actor| actor.parse().map_err(|_| ClientError::Actor { actor }))
            .transpose()?;
        let replicas = Self {
            tls: std::sync::RwLock::new(tls),
            actor,
            endpoints: Mutex::new(Vec::new()),
            current: Mutex::new(String::new()),
            metrics: Default::default(),
        };
        for url in seeds {
            replicas.add(url, true)?;
        }
        Ok(replicas)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Endpoint>> {
        // A panic while holding this lock cannot leave the list half-updated (every change is
        // one push or one field store), so a poisoned lock is still usable.
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tls(&self) -> Option<ClientTlsConfig> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uses `tls` (a renewed certificate) for every replica from now on: each channel is
    /// opened again; calls in flight finish on the old one.
    pub fn set_tls(&self, tls: ClientTlsConfig) -> Result<(), ClientError> {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = Some(tls);
        let urls: Vec<String> = self.lock().iter().map(|e| e.url.clone()).collect();
        let channels = urls
            .into_iter()
            .map(|url| Ok((client::connect_lazy_with(&url, self.tls())?, url)))
            .collect::<Result<Vec<_>, ClientError>>()?;
        for endpoint in self.lock().iter_mut() {
            if let Some((channel, _)) = channels.iter().find(|(_, url)| *url == endpoint.url) {
                endpoint.channel = channel.clone();
            }
        }
        Ok(())
    }

    fn add(&self, url: &str, seed: bool) -> Result<(), ClientError> {
        let channel = client::connect_lazy_with(url, self.tls())?;
        let mut endpoints = self.lock();
        if let Some(known) = endpoints.iter_mut().find(|e| e.url == url) {
            known.seed |= seed;
            known.member = true;
            return Ok(());
        }
        endpoints.push(Endpoint {
            url: url.to_owned(),
            channel,
            rtt: None,
            failures: 0,
            retry_at: None,
            member: true,
            seed,
        });
        Ok(())
    }

    /// Takes in the members a replica reported. Replicas that left are forgotten unless they
    /// are seeds (kept, last, in case the cluster comes back to them). Returns whether the
    /// list changed.
    pub fn learn(&self, members: &[pb::ReplicaEndpoint]) -> bool {
        if members.is_empty() {
            return false;
        }
        let urls: BTreeSet<&str> = members.iter().map(|m| m.url.as_str()).collect();
        let before = self.urls();
        {
            let mut endpoints = self.lock();
            endpoints.retain(|e| e.seed || urls.contains(e.url.as_str()));
            for endpoint in endpoints.iter_mut() {
                endpoint.member = urls.contains(endpoint.url.as_str());
            }
        }
        for url in urls {
            if let Err(e) = self.add(url, false) {
                tracing::warn!("ignoring member address {url}: {e}");
            }
        }
        self.urls() != before
    }

    /// The known replicas, best first.
    pub fn urls(&self) -> Vec<String> {
        self.ranked().into_iter().map(|(url, _)| url).collect()
    }

    /// Members that answer, fastest first; then members that failed, soonest retry first;
    /// then former members kept as seeds.
    fn ranked(&self) -> Vec<(String, Channel)> {
        let now = Instant::now();
        let mut endpoints: Vec<_> = self
            .lock()
            .iter()
            .map(|e| {
                let waiting = e.retry_at.filter(|&t| t > now);
                let key = (
                    !e.member,
                    waiting.is_some(),
                    waiting,
                    e.rtt.unwrap_or(Duration::MAX),
                );
                (key, e.url.clone(), e.channel.clone())
            })
            .collect();
        endpoints.sort_by_key(|e| e.0);
        endpoints
            .into_iter()
            .map(|(_, url, ch)| (url, ch))
            .collect()
    }

    fn record(&self, url: &str, outcome: Result<Option<Duration>, ()>) {
        let mut endpoints = self.lock();
        let Some(endpoint) = endpoints.iter_mut().find(|e| e.url == url) else {
            return;
        };
        match outcome {
            Ok(rtt) => {
                endpoint.failures = 0;
                endpoint.retry_at = None;
                if let Some(rtt) = rtt {
                    endpoint.rtt = Some(match endpoint.rtt {
                        Some(old) => (old * 7 + rtt * 3) / 10,
                        None => rtt,
                    });
                }
            }
            Err(()) => {
                endpoint.failures = endpoint.failures.saturating_add(1);
                let exponent = endpoint.failures.min(6) - 1;
                let penalty = (FIRST_PENALTY * 2u32.pow(exponent)).min(MAX_PENALTY);
                endpoint.retry_at = Some(Instant::now() + jitter(penalty));
            }
        }
    }

    /// `message` with the actor header a plaintext cluster needs.
    fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        if let Some(actor) = &self.actor {
            request
                .metadata_mut()
                .insert(client::ACTOR_HEADER, actor.clone());
        }
        request
    }

    /// Calls the best replica, and the next ones in turn on an error or after `timeout`.
    /// `measure` feeds the answer time into the ranking (not for long-polls, whose time is
    /// the wait).
    pub async fn call<M, T, F, Fut>(
        &self,
        what: &'static str,
        timeout: Duration,
        measure: bool,
        message: &M,
        f: F,
    ) -> Result<T, CallError>
    where
        M: Clone,
        F: Fn(NodeClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let result = async {
            let mut tried = Vec::new();
            for (url, channel) in self.ranked() {
                match self
                    .attempt(&url, channel, timeout, measure, message, &f)
                    .await
                {
                    Attempt::Done(reply) => {
                        self.answered(&url);
                        return Ok(reply);
                    }
                    Attempt::Refused(status) => {
                        return Err(CallError::Rejected { what, url, status });
                    }
                    Attempt::Failed(reason) => {
                        tracing::debug!("{what} via {url} failed: {reason}");
                        tried.push(format!("{url}: {reason}"));
                    }
                }
            }
            Err(CallError::Unreachable { what, tried })
        }
        .await;
        self.metrics.calls.get(what).observe(started.elapsed());
        if result.is_err() {
            self.metrics.call_failures.get(what).inc();
        }
        result
    }

    async fn attempt<M, T, F, Fut>(
        &self,
        url: &str,
        channel: Channel,
        timeout: Duration,
        measure: bool,
        message: &M,
        f: &F,
    ) -> Attempt<T>
    where
        M: Clone,
        F: Fn(NodeClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let client = NodeClient::new(channel);
        let started = Instant::now();
        let request = self.request(message.clone());
        match tokio::time::timeout(timeout, f(client, request)).await {
            Ok(Ok(reply)) => {
                self.record(url, Ok(measure.then(|| started.elapsed())));
                Attempt::Done(reply.into_inner())
            }
            Ok(Err(status)) if retryable(&status) => {
                self.record(url, Err(()));
                Attempt::Failed(format!("{:?}: {}", status.code(), status.message()))
            }
            Ok(Err(status)) => {
                self.record(url, Ok(None));
                Attempt::Refused(status)
            }
            Err(_) => {
                self.record(url, Err(()));
                Attempt::Failed(format!("no answer within {timeout:?}"))
            }
        }
    }

    fn answered(&self, url: &str) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if *current != url {
            tracing::info!("talking to {url}");
            self.metrics.replica_changes.inc();
            url.clone_into(&mut current);
        }
    }

    /// The replica that answered last.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Measures every replica with one short call each, so that a closer one is found even
    /// while the current one works.
    pub async fn rank<M, T, F, Fut>(&self, timeout: Duration, message: &M, f: F)
    where
        M: Clone,
        F: Fn(NodeClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        for (url, channel) in self.ranked() {
            let _ = self
                .attempt(&url, channel, timeout, true, message, &f)
                .await;
        }
    }
}

/// Transport failures and a replica's own trouble: another replica may do better.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Internal
            | Code::ResourceExhausted
    )
}

/// `d` scaled by a random factor in [0.5, 1.5): agents that failed together do not retry in
/// step.
pub fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per instance: enough randomness for spreading retries.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.5 + (random % 1000) as f64 / 1000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(url: &str) -> pb::ReplicaEndpoint {
        pb::ReplicaEndpoint {
            url: url.into(),
            voter: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn ranks_working_members_first_and_keeps_seeds() -> Result<(), ClientError> {
        let replicas = Replicas::new(&["http://[::1]:1".into()], None, None)?;
        assert!(replicas.learn(&[member("http://[::1]:2"), member("http://[::1]:3")]));
        assert!(!replicas.learn(&[member("http://[::1]:2"), member("http://[::1]:3")]));
        replicas.record("http://[::1]:3", Ok(Some(Duration::from_millis(1))));
        replicas.record("http://[::1]:2", Ok(Some(Duration::from_millis(5))));
        assert_eq!(
            replicas.urls(),
            ["http://[::1]:3", "http://[::1]:2", "http://[::1]:1"],
            "the seed left the membership: last"
        );
        replicas.record("http://[::1]:3", Err(()));
        assert_eq!(
            replicas.urls()[0],
            "http://[::1]:2",
            "a failed replica waits its turn"
        );
        Ok(())
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(2));
            assert!(
                d >= Duration::from_secs(1) && d < Duration::from_secs(3),
                "{d:?}"
            );
        }
    }
}
