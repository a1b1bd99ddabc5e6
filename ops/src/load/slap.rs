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

use slapcluster_api::marshal::{Value, encode};

use super::LoadError;
use test_kit::slap::{Answer, Connection, computer_definition as definition, form};

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
        "/getFullComputerInformation?{}",
        form(&[("computer_id", &target.computer)])
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
        let port = test_kit::cluster::unused_port(&[])?;
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
