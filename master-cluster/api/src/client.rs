//! Connecting to a replica, for every client of the contract (node agents, `slapctl`, the
//! load tool, `slapmaster` itself): one channel per replica address, TCP_NODELAY on, over TLS
//! with the caller's [`Credentials`] (its certificate is its identity), or, on a cluster run
//! with `insecure_plaintext`, in plaintext with the caller's name in the [`ACTOR_HEADER`].
//! [`WhileChanging`] is the one policy for asking again while a membership changes.

use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The request header in which a caller names itself: `user:NAME`, `operator:NAME`,
/// `computer:ID` or `partition:COMPUTER/PARTITION`.
pub const ACTOR_HEADER: &str = "slapcluster-actor";

/// The largest reply a client accepts (a long list of computers or instances); tonic's
/// default is 4 MiB.
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// The one policy for a membership change the cluster cannot make yet (`slapctl member`,
/// `slapmaster join`): it answers `Unavailable` while another change is being committed or a
/// leader elected, so ask again, pausing 100 ms and doubling up to 1 s, until a deadline.
/// Every other answer is final.
#[derive(Debug)]
pub struct WhileChanging {
    deadline: tokio::time::Instant,
    pause: Duration,
}

impl WhileChanging {
    const FIRST_PAUSE: Duration = Duration::from_millis(100);
    const LONGEST_PAUSE: Duration = Duration::from_secs(1);

    /// Asking again for at most `limit` from now.
    pub fn for_at_most(limit: Duration) -> Self {
        Self {
            deadline: tokio::time::Instant::now() + limit,
            pause: Self::FIRST_PAUSE,
        }
    }

    /// After `answer`, whether to ask again: if so, it has paused first; if not, `answer` is
    /// the one to report.
    pub async fn again(&mut self, answer: &tonic::Status) -> bool {
        if answer.code() != tonic::Code::Unavailable
            || tokio::time::Instant::now() + self.pause >= self.deadline
        {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Self::LONGEST_PAUSE);
        true
    }
}

/// Why a call did not reach a replica or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url} is not a replica address (say http://[host]:port): {source}")]
    Address {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{actor:?} cannot be sent as {ACTOR_HEADER}")]
    Actor { actor: String },
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// A channel to the replica at `url` (`http://[host]:port`), connected now so that a wrong
/// address fails here.
pub async fn connect(url: &str) -> Result<Channel, ClientError> {
    connect_with(url, None).await
}

/// [`connect`] over TLS (`https://[host]:port`): the cluster's roots and this client's
/// certificate in `tls`.
pub async fn connect_with(url: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, ClientError> {
    tls_endpoint(url, tls)?
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            url: url.to_string(),
            source,
        })
}

/// A channel that connects on first use (and reconnects after a failure).
pub fn connect_lazy(url: &str) -> Result<Channel, ClientError> {
    connect_lazy_with(url, None)
}

/// [`connect_lazy`], over TLS when `tls` is given.
pub fn connect_lazy_with(url: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, ClientError> {
    Ok(tls_endpoint(url, tls)?.connect_lazy())
}

fn tls_endpoint(url: &str, tls: Option<ClientTlsConfig>) -> Result<Endpoint, ClientError> {
    let endpoint = endpoint(url)?;
    match tls {
        None => Ok(endpoint),
        Some(tls) => endpoint
            .tls_config(tls)
            .map_err(|source| ClientError::Address {
                url: url.to_string(),
                source,
            }),
    }
}

fn endpoint(url: &str) -> Result<Endpoint, ClientError> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|source| ClientError::Address {
            url: url.to_string(),
            source,
        })?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// `message` as a request from `actor`.
pub fn as_actor<T>(message: T, actor: &str) -> Result<tonic::Request<T>, ClientError> {
    let mut request = tonic::Request::new(message);
    let value = actor.parse().map_err(|_| ClientError::Actor {
        actor: actor.to_string(),
    })?;
    request.metadata_mut().insert(ACTOR_HEADER, value);
    Ok(request)
}

/// A certificate, its key and the cluster's roots, as PEM text: what a client (or a replica)
/// presents over TLS. On disk, a directory of `roots.pem`, `chain.pem` and `key.pem` (as
/// `slapmaster cert issue` writes it).
#[derive(Clone)]
pub struct Credentials {
    /// The cluster's root certificates (two during a CA rotation).
    pub roots_pem: Vec<String>,
    /// The certificate, then the intermediate that signed it (if any).
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

const ROOTS_FILE: &str = "roots.pem";
const CHAIN_FILE: &str = "chain.pem";
const KEY_FILE: &str = "key.pem";

/// Writes a private key readable by its owner only, and syncs it.
pub fn write_key_file(path: &std::path::Path, key_pem: &str) -> Result<(), std::io::Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    key.write_all(key_pem.as_bytes())?;
    key.sync_all()
}

impl Credentials {
    /// The files of a credentials directory.
    pub const FILES: [&str; 3] = [ROOTS_FILE, CHAIN_FILE, KEY_FILE];

    /// Reads `roots.pem`, `chain.pem` and `key.pem` from `dir`.
    pub fn read_dir(dir: &std::path::Path) -> Result<Self, std::io::Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        Ok(Self {
            roots_pem: vec![read(ROOTS_FILE)?],
            chain_pem: read(CHAIN_FILE)?,
            key_pem: read(KEY_FILE)?,
        })
    }

    /// Writes the three files into `dir` (created if needed); the key readable by its owner
    /// only, and synced.
    pub fn write_dir(&self, dir: &std::path::Path) -> Result<(), std::io::Error> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(ROOTS_FILE), self.roots_pem.concat())?;
        std::fs::write(dir.join(CHAIN_FILE), &self.chain_pem)?;
        write_key_file(&dir.join(KEY_FILE), &self.key_pem)
    }

    /// The client side of TLS: trust the cluster's roots, present this certificate.
    pub fn tls_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.chain_pem,
            &self.key_pem,
        ));
        for root in &self.roots_pem {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(root));
        }
        config
    }
}
