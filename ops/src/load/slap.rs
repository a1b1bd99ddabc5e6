//! The SLAP benchmark behind `slapbench`: the same calls, the way the SlapOS client makes them,
//! against the reference mini-master (`slapos proxy start`, Flask and SQLite, plain HTTP) and
//! against a three-replica slapcluster (a follower's SLAP listener, HTTPS with client
//! certificates):
//! - **setup**: the node's computer definition with N partitions, a supplied release
//!   reported available, then R instance requests one after the other (timed: the reference's
//!   "100 sequential requests");
//! - **polls**: `getFullComputerInformation` of that computer (every partition busy) by C
//!   clients for S seconds, each on one kept-alive connection, then each on a new connection
//!   per call (as `slapos.core`'s client does: it opens one for every call).
//!
//! The HTTP client is minimal on purpose (one request at a time per connection,
//! `Content-Length` bodies, closed connections reopened), so that both masters pay the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use master_cluster::slap::marshal::{Value, encode};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::LoadError;

/// The release every instance of the benchmark runs.
pub const RELEASE: &str = "https://lab.example/slapbench/software.cfg";

/// A master to measure and how to reach it.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    /// HTTPS as the node (its certificate); plain HTTP when `None`.
    pub node_tls: Option<Arc<rustls::ClientConfig>>,
    /// HTTPS as the user who requests the instances.
    pub user_tls: Option<Arc<rustls::ClientConfig>>,
    pub computer: String,
}

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
    pub body: Vec<u8>,
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
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.open().await?,
        };
        let (answer, keep) = self.exchange(stream, path, form).await?;
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
    ) -> Result<(Answer, Option<BufReader<Box<dyn Io>>>), LoadError> {
        let io = |e| LoadError::io(format!("calling {path} on {}", self.addr), e);
        let request = match form {
            None => format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n\r\n",
                self.addr
            ),
            Some(form) => format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nContent-Type: \
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
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
                _ => {}
            }
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
        Ok((Answer { status, body }, keep_alive.then_some(stream)))
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

/// The computer definition `slapos node format` posts, with `partitions` partitions.
pub fn definition(computer: &str, partitions: usize) -> String {
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

/// A request's parameters: a dozen, as a typical instance has.
fn parameters(index: usize) -> String {
    encode(&Value::dict((0..12).map(|k| {
        (
            format!("parameter-{k}"),
            Value::string(format!(
                "value {k} of instance {index}, <escaped> & quoted \""
            )),
        )
    })))
}

fn expect(answer: &Answer, what: &str, ok: &[u16]) -> Result<(), LoadError> {
    if ok.contains(&answer.status) {
        return Ok(());
    }
    Err(LoadError::Cluster(format!(
        "{what}: HTTP {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    )))
}

/// Registers the computer, supplies the release (reported available) and requests
/// `requests` instances one after the other; returns how long the requests took.
pub async fn setup(
    target: &Target,
    partitions: usize,
    requests: usize,
) -> Result<Duration, LoadError> {
    let mut node = Connection::new(target.addr, target.node_tls.clone());
    let mut user = Connection::new(target.addr, target.user_tls.clone());
    let computer = target.computer.as_str();
    let answer = node
        .call(
            "/loadComputerConfigurationFromXML",
            Some(&form(&[("xml", &definition(computer, partitions))])),
        )
        .await?;
    expect(&answer, "loadComputerConfigurationFromXML", &[200])?;
    let supply = form(&[
        ("url", RELEASE),
        ("computer_id", computer),
        ("state", "available"),
    ]);
    expect(
        &user.call("/supplySupply", Some(&supply)).await?,
        "supplySupply",
        &[200],
    )?;
    let available = form(&[("url", RELEASE), ("computer_id", computer)]);
    let answer = node
        .call("/availableSoftwareRelease", Some(&available))
        .await?;
    expect(&answer, "availableSoftwareRelease", &[200])?;
    let (none, no, empty) = (
        encode(&Value::None),
        encode(&Value::Bool(false)),
        encode(&Value::dict::<String>([])),
    );
    let started = Instant::now();
    for index in 0..requests {
        let title = format!("bench-{index}");
        let request = form(&[
            ("software_release", RELEASE),
            ("software_type", "default"),
            ("partition_reference", &title),
            ("partition_parameter_xml", &parameters(index)),
            ("filter_xml", &empty),
            ("state", &none),
            ("shared_xml", &no),
        ]);
        let answer = user
            .call("/requestComputerPartition", Some(&request))
            .await?;
        expect(&answer, "requestComputerPartition", &[200])?;
    }
    Ok(started.elapsed())
}

/// What a poll phase measured.
#[derive(Debug)]
pub struct Polls {
    pub clients: usize,
    pub new_connections: bool,
    pub sample: super::Sample,
    /// The size of one answer.
    pub bytes: usize,
}

/// `clients` nodes poll `getFullComputerInformation` for `seconds`.
pub async fn polls(
    target: &Target,
    clients: usize,
    seconds: f64,
    new_connections: bool,
) -> Result<Polls, LoadError> {
    let path = format!(
        "/getFullComputerInformation?computer_id={}",
        escape(&target.computer)
    );
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (target, path) = (target.clone(), path.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0;
            let mut connection = Connection::new(target.addr, target.node_tls.clone());
            while Instant::now() < deadline {
                if new_connections {
                    connection = Connection::new(target.addr, target.node_tls.clone());
                }
                let at = Instant::now();
                let answer = connection.call(&path, None).await?;
                latencies.push(at.elapsed());
                expect(&answer, "getFullComputerInformation", &[200])?;
                bytes = answer.body.len();
            }
            Ok::<_, LoadError>((latencies, bytes))
        });
    }
    let mut latencies = Vec::new();
    let mut bytes = 0;
    while let Some(done) = tasks.join_next().await {
        let (mine, size) =
            done.map_err(|e| LoadError::Cluster(format!("a polling client failed: {e}")))??;
        latencies.extend(mine);
        bytes = size;
    }
    Ok(Polls {
        clients,
        new_connections,
        sample: super::Sample {
            latencies,
            elapsed: started.elapsed(),
            ..Default::default()
        },
        bytes,
    })
}

/// The reference mini-master: `slapos proxy start` of the virtual environment `venv`, its
/// database under `dir`, on `[::1]:port`. Killed when dropped.
pub struct Reference {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Reference {
    pub async fn start(
        venv: &std::path::Path,
        dir: &std::path::Path,
        computer: &str,
    ) -> Result<Self, LoadError> {
        let port = super::cluster::unused_port(&[])?;
        let addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let cfg = dir.join("proxy.cfg");
        std::fs::create_dir_all(dir).map_err(|e| LoadError::io("creating the proxy's dir", e))?;
        std::fs::write(
            &cfg,
            format!(
                "[slapos]\ncomputer_id = {computer}\nmaster_url = http://[::1]:{port}/\n\
                 software_root = {dir}/software\ninstance_root = {dir}/instance\n\n\
                 [slapproxy]\nhost = ::1\nport = {port}\ndatabase_uri = {dir}/proxy.db\n",
                dir = dir.display()
            ),
        )
        .map_err(|e| LoadError::io("writing proxy.cfg", e))?;
        let log = std::fs::File::create(dir.join("proxy.log"))
            .map_err(|e| LoadError::io("creating proxy.log", e))?;
        let child = std::process::Command::new(venv.join("bin/slapos"))
            .args(["proxy", "start", "--cfg"])
            .arg(&cfg)
            .env("HOME", dir)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LoadError::io("starting slapos proxy", e))?;
        let reference = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                return Err(LoadError::Cluster(format!(
                    "slapos proxy did not listen on {addr} within a minute; see {}",
                    dir.join("proxy.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(reference)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
