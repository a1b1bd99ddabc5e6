//! Each replica's front door: replicas on loopback ports, each behind a user-space TCP proxy
//! (its *front*) that is the address the cluster knows it by. The front tells who connects by
//! looking the connecting socket up in `/proc/net/tcp6` and in the replicas' open files (our
//! own children, so no privilege is needed), and so can put, between two replicas:
//!
//! - **distance**: a connection from replica `i` to `j` crosses [`Distances`]' one-way delay
//!   of `(i, j)` in each direction, as a [`crate::distance::DelayLink`] does;
//! - **partitions** (the chaos suite without root): a connection from `i` to `j`'s front is
//!   cut (and new ones are held open without an answer, as dropped packets would be) while
//!   `(i, j)` is blocked.
//!
//! Anyone else (the harness's clients, a delay link in front of a client) passes with neither.
//! A connection belongs to whoever opened it: blocking `(i, j)` stops what `i` sends to `j` on
//! its own connections, and answers to `j` on them, as a one-way packet filter does to TCP.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::distance::Distances;

/// Which replica may not send to which: `(from, to)`, by index.
pub type Blocked = BTreeSet<(usize, usize)>;

/// Member `cut` of `members` cut off from every other, both ways (its region cut off).
pub fn cut_off(cut: usize, members: usize) -> Blocked {
    (0..members)
        .filter(|&i| i != cut)
        .flat_map(|i| [(i, cut), (cut, i)])
        .collect()
}

struct Shared {
    blocked: Blocked,
    /// Each replica's process id, while it runs.
    pids: Vec<Option<u32>>,
    /// Bumped at every partition change: open connections check whether they may live on.
    generation: watch::Sender<u64>,
}

pub struct Fronts {
    /// Where the cluster reaches replica `i` (its proxy).
    pub fronts: Vec<u16>,
    /// Where replica `i` really listens.
    pub backs: Vec<u16>,
    shared: Arc<Mutex<Shared>>,
    distances: Arc<Distances>,
    tasks: JoinSet<()>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Every update is a single assignment: a panic elsewhere leaves nothing half-written.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fronts {
    /// Starts one front per replica on `fronts`, forwarding to `backs` on `[::1]`, with
    /// `distances` between replicas.
    pub async fn start(
        fronts: Vec<u16>,
        backs: Vec<u16>,
        distances: Distances,
    ) -> Result<Self, Error> {
        let shared = Arc::new(Mutex::new(Shared {
            blocked: Blocked::new(),
            pids: vec![None; fronts.len()],
            generation: watch::channel(0).0,
        }));
        let distances = Arc::new(distances);
        let mut tasks = JoinSet::new();
        for (to, (&front, &back)) in fronts.iter().zip(&backs).enumerate() {
            let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, front)))
                .await
                .map_err(|e| Error::io(format!("a front on port {front}"), e))?;
            let door = Door {
                to,
                front,
                back,
                shared: Arc::clone(&shared),
                distances: Arc::clone(&distances),
            };
            tasks.spawn(door.accept(listener));
        }
        Ok(Self {
            fronts,
            backs,
            shared,
            distances,
            tasks,
        })
    }

    /// The distances the fronts put between replicas.
    pub fn distances(&self) -> &Distances {
        &self.distances
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

impl Drop for Fronts {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// One replica's front: where it listens, and what it shares with the others.
struct Door {
    to: usize,
    front: u16,
    back: u16,
    shared: Arc<Mutex<Shared>>,
    distances: Arc<Distances>,
}

impl Door {
    async fn accept(self, listener: TcpListener) {
        let door = Arc::new(self);
        let mut connections = JoinSet::new();
        for n in 0u64.. {
            let Ok((client, peer)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let from = {
                let pids = lock(&door.shared).pids.clone();
                replica_of(peer.port(), door.front, &pids)
            };
            connections.spawn(Arc::clone(&door).relay(client, from, n));
            while connections.try_join_next().is_some() {}
        }
    }

    fn is_blocked(&self, from: Option<usize>) -> bool {
        from.is_some_and(|from| lock(&self.shared).blocked.contains(&(from, self.to)))
    }

    /// One connection: held open without an answer while blocked, relayed across the
    /// distance otherwise, and cut when a partition blocks it. `n` counts the front's
    /// connections, so that each draws its own jitter.
    async fn relay(self: Arc<Self>, client: TcpStream, from: Option<usize>, n: u64) {
        let mut generation = lock(&self.shared).generation.subscribe();
        // Blocked from the start: a black hole until the partition heals, then closed (the
        // sender reconnects, as after a real partition its connection would have timed out).
        while self.is_blocked(from) {
            if generation.changed().await.is_err() {
                return;
            }
        }
        let route = from.and_then(|from| self.distances.route(from, self.to, n));
        if let Some(route) = &route {
            route.connecting().await;
        }
        let back = SocketAddr::from((Ipv6Addr::LOCALHOST, self.back));
        let Ok(server) = TcpStream::connect(back).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let (mut client, mut server) = (client, server);
        tokio::select! {
            () = async {
                match route {
                    Some(route) => route.relay(client, server).await,
                    None => {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }
            } => {}
            () = async {
                loop {
                    if generation.changed().await.is_err() || self.is_blocked(from) {
                        return;
                    }
                }
            } => {}
        }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::cluster::unused_port;
    use crate::distance::RegionMap;

    /// An echo server on a free port of `[::1]`.
    async fn echo() -> u16 {
        let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        port
    }

    /// One exchange on `stream`, and how long it took.
    async fn exchange(stream: &mut TcpStream) -> std::io::Result<Duration> {
        let sent = Instant::now();
        stream.write_all(b"ping").await?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await?;
        assert_eq!(&answer, b"ping");
        Ok(sent.elapsed())
    }

    /// Member 0 is this test's own process (the front finds the connecting socket among its
    /// files), member 1 an echo server: what member 0 sends member 1 crosses the map's
    /// distance, and a partition cuts it.
    #[tokio::test]
    async fn a_member_reaches_another_across_the_distance_and_not_through_a_partition() {
        let map =
            RegionMap::parse("within_ms = 1\n[[link]]\nbetween = [\"eu\", \"us\"]\nrtt_ms = 80\n")
                .expect("map");
        let regions = ["eu".to_owned(), "us".to_owned()];
        let distances = Distances::on_map(&map, &regions, 1).expect("distances");
        assert_eq!(distances.one_way(0, 1), Duration::from_millis(40));
        let front = unused_port(&[]).expect("a port");
        let other = unused_port(&[front]).expect("a port");
        let fronts = Fronts::start(vec![other, front], vec![0, echo().await], distances)
            .await
            .expect("fronts");
        fronts.set_pid(0, Some(std::process::id()));
        let to_member_1 = SocketAddr::from((Ipv6Addr::LOCALHOST, fronts.fronts[1]));

        let mut stream = TcpStream::connect(to_member_1).await.expect("connect");
        exchange(&mut stream)
            .await
            .expect("the connection is set up");
        let took = exchange(&mut stream).await.expect("an exchange");
        assert!(took >= Duration::from_millis(80), "{took:?}");

        fronts.partition(&Blocked::from([(0, 1)]));
        // A partition cuts the open connection: the front closes it.
        let mut rest = Vec::new();
        let cut = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
        assert!(
            cut.await.is_ok(),
            "the partition did not cut the connection"
        );
        fronts.heal();
        let mut stream = TcpStream::connect(to_member_1).await.expect("connect");
        exchange(&mut stream)
            .await
            .expect("healed, member 0 is answered again");
    }
}
