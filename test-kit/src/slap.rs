//! A minimal SLAP client: one request at a time per connection, `Content-Length` bodies,
//! closed connections reopened; HTTPS with a client certificate or plain HTTP. For tests
//! and for `slapbench`, which measures two masters with the same client so that both pay the
//! same.

use std::net::SocketAddr;
use std::sync::Arc;

use slapcluster_api::marshal::{Value, encode};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::Error as LoadError;

/// A client TLS setup from an identity's files (`chain.pem`, `key.pem`, `roots.pem`).
pub fn client_tls(dir: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, LoadError> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| LoadError::io(format!("reading {}", dir.join(name).display()), e))
    };
    client_tls_pem(&read("roots.pem")?, &read("chain.pem")?, &read("key.pem")?)
}

/// [`client_tls`] from the PEM text of the roots, the chain and the key.
pub fn client_tls_pem(
    roots_pem: &[u8],
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, LoadError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| LoadError::Cluster(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(roots_pem) {
        let root = root.map_err(|e| bad("roots.pem", &e))?;
        roots.add(root).map_err(|e| bad("roots.pem", &e))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("chain.pem", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad("key.pem", &e))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("TLS", &e))?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| bad("the client certificate", &e))?;
    Ok(Arc::new(config))
}

/// A client that trusts `roots_pem` and shows no certificate of its own (a node before it
/// enrolls).
pub fn anonymous_tls(roots_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, LoadError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| LoadError::Cluster(format!("roots.pem: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(roots_pem) {
        roots.add(root.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// One HTTP/1.1 connection, opened on first use and again after the server closes it.
pub struct Connection {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    stream: Option<BufReader<Box<dyn Io>>>,
}

/// What a call answered.
pub struct Answer {
    pub status: u16,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Connection {
    pub fn new(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            addr,
            tls,
            stream: None,
        }
    }

    async fn open(&self) -> Result<BufReader<Box<dyn Io>>, LoadError> {
        let io = |e| LoadError::io(format!("connecting to {}", self.addr), e);
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                Box::new(connector.connect(name, tcp).await.map_err(io)?)
            }
        };
        Ok(BufReader::new(stream))
    }

    /// `GET path?query` (`form` is `None`) or `POST path` with the urlencoded `form`.
    pub async fn call(&mut self, path: &str, form: Option<&str>) -> Result<Answer, LoadError> {
        self.call_with(path, form, &[]).await
    }

    /// [`Connection::call`] with extra `headers` (name, value).
    pub async fn call_with(
        &mut self,
        path: &str,
        form: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, LoadError> {
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.open().await?,
        };
        let (answer, keep) = self.exchange(stream, path, form, headers).await?;
        if let Some(stream) = keep {
            self.stream = Some(stream);
        }
        Ok(answer)
    }

    async fn exchange(
        &self,
        mut stream: BufReader<Box<dyn Io>>,
        path: &str,
        form: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<(Answer, Option<BufReader<Box<dyn Io>>>), LoadError> {
        let io = |e| LoadError::io(format!("calling {path} on {}", self.addr), e);
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = match form {
            None => format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n{extra}\r\n",
                self.addr
            ),
            Some(form) => format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n{extra}Content-Type: \
                 application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
                self.addr,
                form.len()
            ),
        };
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(io)?;
        let mut line = String::new();
        stream.read_line(&mut line).await.map_err(io)?;
        let malformed = |what: &str| LoadError::Cluster(format!("{path}: {what}"));
        let mut parts = line.split_whitespace();
        let version = parts.next().ok_or_else(|| malformed("no status line"))?;
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("no status"))?;
        let mut keep_alive = version == "HTTP/1.1";
        let mut length = None;
        let mut headers = Vec::new();
        loop {
            line.clear();
            stream.read_line(&mut line).await.map_err(io)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let (name, value) = (name.to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
                _ => {}
            }
            headers.push((name, value.to_string()));
        }
        // These never have a body, whatever the headers say.
        if matches!(status, 204 | 304) {
            length = Some(0);
        }
        let mut body = Vec::new();
        match length {
            Some(length) => {
                body.resize(length, 0);
                stream.read_exact(&mut body).await.map_err(io)?;
            }
            None => {
                stream.read_to_end(&mut body).await.map_err(io)?;
                keep_alive = false;
            }
        }
        Ok((
            Answer {
                status,
                headers,
                body,
            },
            keep_alive.then_some(stream),
        ))
    }
}

/// `a=1&b=x%20y`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The computer definition `slapos node format` posts, with `partitions` partitions
/// (`slappart0`...) on documentation addresses: for benchmarks and tests.
pub fn computer_definition(computer: &str, partitions: usize) -> String {
    let partition_list = (0..partitions)
        .map(|n| {
            Value::dict([
                ("reference", Value::string(format!("slappart{n}"))),
                ("path", Value::string(format!("/srv/slapgrid/slappart{n}"))),
                (
                    "address_list",
                    Value::List(vec![
                        Value::dict([
                            (
                                "addr",
                                Value::string(format!("10.0.{}.{}", n / 250, n % 250 + 2)),
                            ),
                            ("netmask", Value::string("255.255.0.0")),
                        ]),
                        Value::dict([
                            ("addr", Value::string(format!("fd00:bench::{:x}", n + 16))),
                            ("netmask", Value::string("ffff:ffff:ffff:ffff::")),
                        ]),
                    ]),
                ),
                (
                    "tap",
                    Value::dict([("name", Value::string(format!("slaptap{n}")))]),
                ),
                (
                    "user",
                    Value::dict([("name", Value::string(format!("slapuser{n}")))]),
                ),
            ])
        })
        .collect();
    encode(&Value::dict([
        ("reference", Value::string(computer)),
        ("address", Value::string("fd00:bench::1")),
        ("netmask", Value::string("ffff:ffff:ffff:ffff::")),
        ("instance_root", Value::string("/srv/slapgrid")),
        ("software_root", Value::string("/opt/slapgrid")),
        ("partition_list", Value::List(partition_list)),
    ]))
}
