//! Reaching the cluster: the replicas to try (in order, until one answers), the caller's
//! certificate, and every failure turned into a [`CtlError`] that says what to do next.

use std::path::PathBuf;

use serde::Deserialize;
use slapcluster_api::client::{self, Credentials};
use slapcluster_api::v1::admin_client::AdminClient;
use slapcluster_api::v1::user_client::UserClient;
use tonic::Code;
use tonic::transport::Channel;

/// Why a command failed. Each message ends with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot reach any replica of the cluster:\n{}\n  check --cluster (or `cluster` in the \
         configuration) and that the replicas run",
        tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n")
    )]
    Unreachable { tried: Vec<String> },
    #[error(
        "{url} refused this client's certificate: {message}\n  check --tls-dir (or `tls_dir`): \
         it needs a certificate from this cluster's CA, not expired and not revoked"
    )]
    Certificate { url: String, message: String },
    #[error(
        "not allowed: {0}\n  this command needs another identity (operators: an operator's certificate)"
    )]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error(
        "the cluster cannot answer now: {0}\n  it may be electing a leader or lack a quorum; \
         retry, and see `slapctl cluster status`"
    )]
    Unavailable(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    /// The process exit code: 2 for what the user must fix in the command or configuration,
    /// 3 when the cluster could not be reached or did not answer, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Config(_)
            | CtlError::Denied(_)
            | CtlError::NotFound(_)
            | CtlError::Refused(_)
            | CtlError::Certificate { .. } => 2,
            CtlError::Unreachable { .. } | CtlError::Unavailable(_) => 3,
            CtlError::Io { .. } | CtlError::Failed(_) => 1,
        }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| CtlError::Io { what, source }
    }
}

/// A refusal or failure of a call to `url`.
pub fn status(url: &str, status: tonic::Status) -> CtlError {
    let message = status.message().to_string();
    match status.code() {
        Code::Unauthenticated => CtlError::Certificate {
            url: url.to_string(),
            message,
        },
        Code::PermissionDenied => CtlError::Denied(message),
        Code::NotFound => CtlError::NotFound(message),
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists => {
            CtlError::Refused(message)
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted => {
            CtlError::Unavailable(message)
        }
        code => CtlError::Failed(format!("{url} answered {code:?}: {message}")),
    }
}

/// `slapctl.toml`: where the cluster is and who this client is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Replicas to try, in order (`https://[2001:db8::1]:7001`).
    #[serde(default)]
    pub cluster: Vec<String>,
    /// This client's certificate: roots.pem, chain.pem, key.pem.
    pub tls_dir: Option<PathBuf>,
    /// On a cluster run with `insecure_plaintext` (a trusted development network), the
    /// identity to name in the actor header: `user:NAME` or `operator:NAME`.
    pub actor: Option<String>,
}

impl ConfigFile {
    /// Reads `path`; a missing default file is an empty configuration.
    pub fn read(path: &std::path::Path, explicit: bool) -> Result<Self, CtlError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| CtlError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(e) => Err(CtlError::Config(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }
}

/// Where to connect and as whom, once flags and the file are combined.
#[derive(Debug, Clone)]
pub struct Target {
    pub urls: Vec<String>,
    pub credentials: Option<Credentials>,
    pub actor: Option<String>,
}

impl Target {
    pub fn new(file: ConfigFile) -> Result<Self, CtlError> {
        if file.cluster.is_empty() {
            return Err(CtlError::Config(
                "no cluster given: pass --cluster https://[host]:port (or set `cluster` in \
                 ~/.config/slapctl/config.toml)"
                    .into(),
            ));
        }
        let credentials = match &file.tls_dir {
            None => None,
            Some(dir) => Some(Credentials::read_dir(dir).map_err(|e| {
                CtlError::Config(format!(
                    "cannot read this client's certificate: {e}\n  --tls-dir names a directory \
                     with roots.pem, chain.pem and key.pem (`slapctl cert issue` writes one)"
                ))
            })?),
        };
        if credentials.is_none() && file.actor.is_none() {
            return Err(CtlError::Config(
                "no identity: pass --tls-dir DIR (your certificate), or --actor on a plaintext \
                 development cluster"
                    .into(),
            ));
        }
        let tls_url = file.cluster.iter().find(|u| u.starts_with("https://"));
        if credentials.is_none()
            && let Some(url) = tls_url
        {
            return Err(CtlError::Config(format!(
                "{url} is a TLS address: pass --tls-dir with your certificate"
            )));
        }
        Ok(Self {
            urls: file.cluster,
            credentials,
            actor: file.actor,
        })
    }
}

/// A connection to the first replica that answered.
#[derive(Debug, Clone)]
pub struct Conn {
    pub url: String,
    channel: Channel,
    actor: Option<String>,
}

impl Conn {
    pub async fn open(target: &Target) -> Result<Self, CtlError> {
        let mut tried = Vec::new();
        for url in &target.urls {
            let tls = target.credentials.as_ref().map(Credentials::tls_config);
            match client::connect_with(url, tls).await {
                Ok(channel) => {
                    return Ok(Self {
                        url: url.clone(),
                        channel,
                        actor: target.actor.clone(),
                    });
                }
                Err(e) => tried.push(describe_connect_error(url, &e)),
            }
        }
        Err(CtlError::Unreachable { tried })
    }

    /// `message` as a request, naming the actor on a plaintext cluster.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, CtlError> {
        match &self.actor {
            Some(actor) if !self.url.starts_with("https://") => {
                client::as_actor(message, actor).map_err(|e| CtlError::Config(e.to_string()))
            }
            _ => Ok(tonic::Request::new(message)),
        }
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone()).max_decoding_message_size(client::MAX_REPLY_BYTES)
    }

    pub fn user(&self) -> UserClient<Channel> {
        UserClient::new(self.channel.clone()).max_decoding_message_size(client::MAX_REPLY_BYTES)
    }

    /// A failed call, as a [`CtlError`].
    pub fn failed(&self, e: tonic::Status) -> CtlError {
        status(&self.url, e)
    }

    /// The reply of a call to this replica, or the error that says what to do.
    pub async fn answer<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CtlError> {
        call.await
            .map(tonic::Response::into_inner)
            .map_err(|e| self.failed(e))
    }
}

/// A connection failure, with its whole cause chain (the TLS reason is at its end).
fn describe_connect_error(url: &str, error: &client::ClientError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        text.push_str(&format!(
            " (the replica's certificate is not signed by a root in this client's roots.pem: \
             is {url} this cluster?)"
        ));
    }
    text
}
