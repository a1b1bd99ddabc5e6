//! The fallback when the suite does not run as root: replicas on loopback ports, each behind a
//! user-space TCP proxy that is the address the cluster knows it by. A partition is applied by
//! the proxies: a connection from replica `i` to replica `j`'s proxy is cut (and new ones are
//! held open without an answer, as dropped packets would be) while `(i, j)` is blocked. The
//! proxy tells who connects by looking the connecting socket up in `/proc/net/tcp6` and in the
//! replicas' open files (our own children, so no privilege is needed); the harness's clients
//! are never blocked.
//!
//! A connection belongs to whoever opened it: blocking `(i, j)` stops what `i` sends to `j` on
//! its own connections, and answers to `j` on them, as a one-way packet filter does to TCP.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::ChaosError;
use crate::net::Blocked;

struct Shared {
    blocked: Blocked,
    /// Each replica's process id, while it runs.
    pids: Vec<Option<u32>>,
    /// Bumped at every partition change: open connections check whether they may live on.
    generation: watch::Sender<u64>,
}

pub struct Proxies {
    /// Where the cluster reaches replica `i` (its proxy).
    pub fronts: Vec<u16>,
    /// Where replica `i` really listens.
    pub backs: Vec<u16>,
    shared: Arc<Mutex<Shared>>,
    tasks: JoinSet<()>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Every update is a single assignment: a panic elsewhere leaves nothing half-written.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proxies {
    /// Starts one proxy per replica on `fronts`, forwarding to `backs` on `[::1]`.
    pub async fn start(fronts: Vec<u16>, backs: Vec<u16>) -> Result<Self, ChaosError> {
        let shared = Arc::new(Mutex::new(Shared {
            blocked: Blocked::new(),
            pids: vec![None; fronts.len()],
            generation: watch::channel(0).0,
        }));
        let mut tasks = JoinSet::new();
        for (to, (&front, &back)) in fronts.iter().zip(&backs).enumerate() {
            let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, front)))
                .await
                .map_err(|e| ChaosError::Setup(format!("proxy on port {front}: {e}")))?;
            tasks.spawn(accept(listener, to, front, back, Arc::clone(&shared)));
        }
        Ok(Self {
            fronts,
            backs,
            shared,
            tasks,
        })
    }

    pub fn set_pid(&self, replica: usize, pid: Option<u32>) {
        lock(&self.shared).pids[replica] = pid;
    }

    pub fn partition(&self, blocked: &Blocked) {
        let mut shared = lock(&self.shared);
        shared.blocked = blocked.clone();
        shared.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        self.partition(&Blocked::new());
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn accept(
    listener: TcpListener,
    to: usize,
    front: u16,
    back: u16,
    shared: Arc<Mutex<Shared>>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let from = {
            let pids = lock(&shared).pids.clone();
            replica_of(peer.port(), front, &pids)
        };
        connections.spawn(relay(client, from, to, back, Arc::clone(&shared)));
        while connections.try_join_next().is_some() {}
    }
}

fn is_blocked(shared: &Mutex<Shared>, from: Option<usize>, to: usize) -> bool {
    from.is_some_and(|from| lock(shared).blocked.contains(&(from, to)))
}

/// One connection: held open without an answer while blocked, relayed otherwise, and cut
/// when a partition blocks it.
async fn relay(
    client: TcpStream,
    from: Option<usize>,
    to: usize,
    back: u16,
    shared: Arc<Mutex<Shared>>,
) {
    let mut generation = lock(&shared).generation.subscribe();
    // Blocked from the start: a black hole until the partition heals, then closed (the
    // sender reconnects, as after a real partition its connection would have timed out).
    while is_blocked(&shared, from, to) {
        if generation.changed().await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, back))).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut client, mut server) = (client, server);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = async {
            loop {
                if generation.changed().await.is_err() || is_blocked(&shared, from, to) {
                    return;
                }
            }
        } => {}
    }
}

/// Which replica owns the socket connected from local port `port` to the proxy's port
/// `front`, if any: its inode from `/proc/net/tcp6`, then the replica process holding that
/// inode. Both ends are matched: a local port alone also names sockets of earlier
/// connections to elsewhere (in TIME_WAIT, with no inode), and taking one of those would let
/// this connection through every partition.
fn replica_of(port: u16, front: u16, pids: &[Option<u32>]) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp6").ok()?;
    let (local, remote) = (format!(":{port:04X}"), format!(":{front:04X}"));
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let inode = *fields.get(9)?;
        (fields.get(1)?.ends_with(&local) && fields.get(2)?.ends_with(&remote) && inode != "0")
            .then(|| inode.to_owned())
    })?;
    let link = format!("socket:[{inode}]");
    pids.iter().enumerate().find_map(|(i, pid)| {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", (*pid)?)).ok()?;
        fds.flatten()
            .any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy() == link)
            })
            .then_some(i)
    })
}
