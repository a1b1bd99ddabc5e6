//! Distance in user space, since this machine's kernel has no `netem`: a [`RegionMap`] (regions
//! and the round trip between each two, from one TOML file that the load tool, the chaos suite
//! and the tests share), a [`DelayLink`] (a TCP relay that delivers every byte a one-way
//! delay after it arrived, in each direction) for a client in one region calling a replica in
//! another, and [`Distances`] (who is where) for [`crate::fronts::Fronts`] to put between
//! replicas.
//!
//! A link holds bytes, it does not pace them: it keeps reading while earlier bytes wait, so a
//! link caps neither throughput nor the number of messages in flight, as a long fat pipe does
//! not. Jitter (seeded, so a run can be replayed) lengthens a chunk's delay but never lets it
//! overtake an earlier one: TCP delivers in order whatever the network did.
//!
//! Worst case per connection and direction: [`IN_FLIGHT_CHUNKS`] chunks of [`CHUNK`] bytes held
//! (16 MiB); a sender faster than that waits, as it would on a full TCP window.
//!
//! Bytes are released on a timerfd per connection and direction, not by tokio's timer, which
//! rounds every deadline up to its next millisecond: a link with no delay then cost 2.3 ms per
//! round trip, and a region's 1 ms round trip 3.3 ms.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Error;
use crate::rng::Rng;

/// The most a link reads at once.
pub const CHUNK: usize = 64 * 1024;
/// Chunks a link holds per connection and direction before it stops reading.
pub const IN_FLIGHT_CHUNKS: usize = 256;

/// Regions and the round-trip time between each two:
///
/// ```toml
/// within_ms = 1          # a round trip inside one region
/// jitter_ms = 2          # each one-way trip between regions takes up to this much longer
/// within_jitter_us = 100 # and one inside a region up to this (default: jitter_ms)
///
/// [[link]]
/// between = ["eu", "us"]
/// rtt_ms = 80
/// ```
///
/// Every two regions named must have a link: a map that leaves a pair out is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionMap {
    within: Duration,
    jitter: Duration,
    within_jitter: Duration,
    rtt: BTreeMap<(String, String), Duration>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    within_ms: u64,
    #[serde(default)]
    jitter_ms: u64,
    within_jitter_us: Option<u64>,
    #[serde(default)]
    link: Vec<LinkEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkEntry {
    between: [String; 2],
    rtt_ms: u64,
}

/// The key of a pair of regions, whichever order they are named in.
fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

fn refused(what: String) -> Error {
    Error::Cluster(format!("region map: {what}"))
}

impl RegionMap {
    /// A map from its TOML text; a region linked to itself, a pair given twice or left out,
    /// or an unknown key is refused, naming it.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let file: MapFile = toml::from_str(text).map_err(|e| refused(e.to_string()))?;
        let mut rtt = BTreeMap::new();
        for LinkEntry {
            between: [a, b],
            rtt_ms,
        } in file.link
        {
            if a == b || a.is_empty() {
                return Err(refused(format!("a link between {a:?} and {b:?}")));
            }
            if rtt
                .insert(pair(&a, &b), Duration::from_millis(rtt_ms))
                .is_some()
            {
                return Err(refused(format!("{a} and {b} are linked twice")));
            }
        }
        let map = Self {
            within: Duration::from_millis(file.within_ms),
            jitter: Duration::from_millis(file.jitter_ms),
            within_jitter: file
                .within_jitter_us
                .map_or(Duration::from_millis(file.jitter_ms), Duration::from_micros),
            rtt,
        };
        let regions = map.regions();
        for a in &regions {
            for b in regions.iter().filter(|b| a < *b) {
                if !map.rtt.contains_key(&pair(a, b)) {
                    return Err(refused(format!("no link between {a} and {b}")));
                }
            }
        }
        Ok(map)
    }

    /// [`RegionMap::parse`] of the file at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text).map_err(|e| refused(format!("{}: {e}", path.display())))
    }

    /// [`load`](Self::load), then [`only`](Self::only) the regions named, if any are (the
    /// tools' `--only`).
    pub fn load_only(path: &Path, only: &[String]) -> Result<Self, Error> {
        let map = Self::load(path)?;
        if only.is_empty() {
            Ok(map)
        } else {
            map.only(only)
        }
    }

    /// Every region the map names.
    pub fn regions(&self) -> BTreeSet<&str> {
        self.rtt
            .keys()
            .flat_map(|(a, b)| [a.as_str(), b.as_str()])
            .collect()
    }

    /// The round trip between `a` and `b`: the map's `within` when they are the same region.
    pub fn rtt(&self, a: &str, b: &str) -> Result<Duration, Error> {
        if a == b {
            return Ok(self.within);
        }
        self.rtt
            .get(&pair(a, b))
            .copied()
            .ok_or_else(|| refused(format!("no link between {a} and {b}")))
    }

    /// Half of [`RegionMap::rtt`]: what a [`DelayLink`] from `a` to `b` holds each byte.
    pub fn one_way(&self, a: &str, b: &str) -> Result<Duration, Error> {
        Ok(self.rtt(a, b)? / 2)
    }

    /// The most a one-way trip from `a` to `b` takes beyond its delay. (Inside a region a
    /// network varies by tens of microseconds, between regions by milliseconds.)
    pub fn jitter(&self, a: &str, b: &str) -> Duration {
        if a == b {
            self.within_jitter
        } else {
            self.jitter
        }
    }

    /// The longest round trip between two of `regions` (members of a cluster, say): what its
    /// Raft timing derives from.
    pub fn widest(&self, regions: &[String]) -> Result<Duration, Error> {
        let mut widest = Duration::ZERO;
        for a in regions {
            for b in regions {
                widest = widest.max(self.rtt(a, b)?);
            }
        }
        Ok(widest)
    }

    /// The map of `regions` only, with the links between them; a region the map does not
    /// name is refused.
    pub fn only(&self, regions: &[String]) -> Result<Self, Error> {
        let named = self.regions();
        if let Some(unknown) = regions.iter().find(|r| !named.contains(r.as_str())) {
            return Err(refused(format!("no region {unknown}")));
        }
        let kept = |region: &String| regions.contains(region);
        Ok(Self {
            within: self.within,
            jitter: self.jitter,
            within_jitter: self.within_jitter,
            rtt: self
                .rtt
                .iter()
                .filter(|((a, b), _)| kept(a) && kept(b))
                .map(|(pair, rtt)| (pair.clone(), *rtt))
                .collect(),
        })
    }

    /// Of `candidates`, the region nearest `from` (`from` itself when it is one); `None` when
    /// there are none or `from` is not on the map.
    pub fn nearest<'a>(&self, from: &str, candidates: &'a [String]) -> Option<&'a String> {
        candidates
            .iter()
            .filter_map(|c| Some((self.rtt(from, c).ok()?, c)))
            .min()
            .map(|(_, c)| c)
    }
}

/// How much longer than its delay each chunk takes: up to `most`, drawn from a seeded stream.
#[derive(Debug, Clone)]
struct Jitter {
    rng: Rng,
    most: Duration,
}

impl Jitter {
    fn next(&mut self) -> Duration {
        let most = u64::try_from(self.most.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.below(most.saturating_add(1)))
    }
}

/// A relay on `[::1]` to `upstream` that holds every byte `one_way` (plus up to `jitter`) in
/// each direction. Stops relaying when dropped.
#[derive(Debug)]
pub struct DelayLink {
    addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl DelayLink {
    /// Listens on a free port of `[::1]`. `seed` makes the jitter replayable: print it.
    pub async fn start(
        upstream: SocketAddr,
        one_way: Duration,
        jitter: Duration,
        seed: u64,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)))
            .await
            .map_err(|e| Error::io("binding a delay link", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading a delay link's address", e))?;
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(listener, upstream, one_way, jitter, seed));
        Ok(Self { addr, tasks })
    }

    /// Where to connect to reach `upstream` through the link.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    one_way: Duration,
    jitter: Duration,
    seed: u64,
) {
    let mut connections = JoinSet::new();
    for n in 0u64.. {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let route = Route::new(one_way, jitter, seed, n);
        connections.spawn(async move {
            route.connecting().await;
            if let Ok(server) = TcpStream::connect(upstream).await {
                route.relay(client, server).await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// A delay link from every region of a map to every member of a cluster: where a client in a
/// region calls a member. Stops relaying when dropped.
#[derive(Debug)]
pub struct ClientLinks {
    links: BTreeMap<(String, usize), DelayLink>,
}

impl ClientLinks {
    /// Member `i` sits in `regions[i]` and takes clients at `upstreams[i]`; `seed` makes every
    /// link's jitter replayable (each draws its own from it).
    pub async fn start(
        map: &RegionMap,
        regions: &[String],
        upstreams: &[SocketAddr],
        seed: u64,
    ) -> Result<Self, Error> {
        let mut links = BTreeMap::new();
        let mut seed = seed;
        for from in map.regions() {
            for (index, (to, upstream)) in regions.iter().zip(upstreams).enumerate() {
                seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let one_way = map.one_way(from, to)?;
                let jitter = map.jitter(from, to);
                let link = DelayLink::start(*upstream, one_way, jitter, seed).await?;
                links.insert((from.to_owned(), index), link);
            }
        }
        Ok(Self { links })
    }

    /// The port on `[::1]` a client in `region` calls member `index` at.
    pub fn port(&self, region: &str, index: usize) -> Result<u16, Error> {
        self.links
            .get(&(region.to_owned(), index))
            .map(|link| link.addr().port())
            .ok_or_else(|| refused(format!("no link from {region} to member {index}")))
    }
}

/// Who is where: the one-way delay between each two members of a cluster (by index), for
/// [`crate::fronts::Fronts`] to put between them.
#[derive(Debug, Clone, Default)]
pub struct Distances {
    /// `one_way[from][to]`; empty when members are not apart.
    one_way: Vec<Vec<Duration>>,
    /// `jitter[from][to]`, the most a trip takes beyond `one_way`.
    jitter: Vec<Vec<Duration>>,
    seed: u64,
}

impl Distances {
    /// Members not apart: every connection between them is relayed as it comes.
    pub fn none() -> Self {
        Self::default()
    }

    /// Member `i` in `regions[i]` of `map`; `seed` makes the jitter replayable (print it).
    pub fn on_map(map: &RegionMap, regions: &[String], seed: u64) -> Result<Self, Error> {
        let one_way = regions
            .iter()
            .map(|from| {
                regions
                    .iter()
                    .map(|to| map.one_way(from, to))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let jitter = regions
            .iter()
            .map(|from| regions.iter().map(|to| map.jitter(from, to)).collect())
            .collect();
        Ok(Self {
            one_way,
            jitter,
            seed,
        })
    }

    /// The one-way delay from member `from` to member `to` (zero when not apart).
    pub fn one_way(&self, from: usize, to: usize) -> Duration {
        self.one_way
            .get(from)
            .and_then(|row| row.get(to))
            .copied()
            .unwrap_or_default()
    }

    /// The route of the `n`th connection from `from` to `to`, if they are apart.
    pub(crate) fn route(&self, from: usize, to: usize, n: u64) -> Option<Route> {
        let one_way = self.one_way(from, to);
        let jitter = self
            .jitter
            .get(from)
            .and_then(|row| row.get(to))
            .copied()
            .unwrap_or_default();
        (!one_way.is_zero() || !jitter.is_zero()).then(|| {
            let pair = u64::try_from(from * 1_000 + to).unwrap_or_default();
            Route::new(one_way, jitter, self.seed ^ pair.rotate_left(32), n)
        })
    }
}

/// One connection's way across the distance, in both directions.
pub(crate) struct Route {
    one_way: Duration,
    up: Jitter,
    down: Jitter,
}

impl Route {
    /// The `n`th connection of a link seeded with `seed`: each connection and direction draws
    /// its own jitter from the one seed.
    fn new(one_way: Duration, jitter: Duration, seed: u64, n: u64) -> Self {
        let seed = seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Self {
            one_way,
            up: Jitter {
                rng: Rng::new(seed),
                most: jitter,
            },
            down: Jitter {
                rng: Rng::new(!seed),
                most: jitter,
            },
        }
    }

    /// Connecting crosses the distance too: a SYN one way, its answer back.
    pub(crate) async fn connecting(&self) {
        Timer::new()
            .sleep_until(Instant::now() + self.one_way * 2)
            .await;
    }

    /// Relays `client` ↔ `server` until both directions end.
    pub(crate) async fn relay(self, client: TcpStream, server: TcpStream) {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::join!(
            pump(client_read, server_write, self.one_way, self.up),
            pump(server_read, client_write, self.one_way, self.down),
        );
    }
}

/// One direction: reads as bytes come, releases each chunk `one_way` (plus jitter, never
/// before the chunk read earlier) after it came, then closes the write side after the last.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    one_way: Duration,
    mut jitter: Jitter,
) {
    let (held, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let reader = async move {
        let mut last = Instant::now();
        loop {
            let mut chunk = vec![0; CHUNK];
            let n = match from.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            chunk.truncate(n);
            let at = (Instant::now() + one_way + jitter.next()).max(last);
            last = at;
            if held.send((at, chunk)).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        let timer = Timer::new();
        while let Some((at, chunk)) = due.recv().await {
            timer.sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A timer good to the kernel's timer slack (tens of microseconds) for one task: a Linux
/// timerfd, which tokio polls like a socket. tokio's own timer rounds every deadline up to
/// its next millisecond, which made a link with no delay cost 2.3 ms per round trip.
struct Timer(Option<AsyncFd<TimerHandle>>);

struct TimerHandle(TimerFd);

impl AsRawFd for TimerHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    /// Inside a tokio runtime (its reactor polls the timer).
    fn new() -> Self {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags).ok();
        // `AsyncFd::new` is deprecated for types whose `as_raw_fd` could change or close
        // while registered (tokio#8587); `TimerHandle` owns its one fd until the `AsyncFd`
        // is dropped, and its replacement `register` is `unsafe`, which the workspace forbids.
        #[allow(deprecated)]
        Self(timer.and_then(|timer| AsyncFd::new(TimerHandle(timer)).ok()))
    }

    /// Returns at `at`, never before: a link must not deliver early, or a figure could beat
    /// the distance.
    async fn sleep_until(&self, at: Instant) {
        let now = Instant::now();
        if at <= now {
            return;
        }
        // Armed relative to a `now` already past: it rings at `at` or after.
        let rang = match &self.0 {
            Some(timer) => Self::ring_after(timer, at - now).await.is_ok(),
            None => false,
        };
        if !rang {
            // No timerfd (or it failed): tokio's coarser timer, which is never early either.
            tokio::time::sleep_until(at).await;
        }
    }

    async fn ring_after(timer: &AsyncFd<TimerHandle>, after: Duration) -> std::io::Result<()> {
        let once = Expiration::OneShot(TimeSpec::from_duration(after));
        timer.get_ref().0.set(once, TimerSetTimeFlags::empty())?;
        loop {
            let mut ready = timer.readable().await?;
            // Readiness left from the last ring reads nothing (EAGAIN): wait again.
            if let Ok(rang) = ready.try_io(|t| t.get_ref().0.wait().map_err(std::io::Error::from)) {
                return rang;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
within_ms = 1
jitter_ms = 2

[[link]]
between = ["eu", "us"]
rtt_ms = 80

[[link]]
between = ["asia", "eu"]
rtt_ms = 150

[[link]]
between = ["us", "asia"]
rtt_ms = 120
"#;

    #[test]
    fn a_map_gives_round_trips_either_way_and_the_nearest_region() {
        let map = RegionMap::parse(MAP).expect("parses");
        assert_eq!(map.regions(), BTreeSet::from(["asia", "eu", "us"]));
        assert_eq!(map.rtt("eu", "asia").ok(), Some(Duration::from_millis(150)));
        assert_eq!(map.rtt("asia", "eu").ok(), Some(Duration::from_millis(150)));
        assert_eq!(map.rtt("us", "us").ok(), Some(Duration::from_millis(1)));
        assert_eq!(
            map.one_way("eu", "us").ok(),
            Some(Duration::from_millis(40))
        );
        assert!(map.rtt("eu", "mars").is_err());
        let replicas = ["us".to_owned(), "asia".to_owned()];
        assert_eq!(map.nearest("eu", &replicas), Some(&replicas[0]));
        assert_eq!(map.nearest("asia", &replicas), Some(&replicas[1]));
        assert_eq!(map.nearest("mars", &replicas), None);
        // Without its own figure, a region's jitter inside is the map's.
        assert_eq!(map.jitter("eu", "eu"), Duration::from_millis(2));
        let apart = RegionMap::parse(&format!("within_jitter_us = 100\n{MAP}")).expect("parses");
        assert_eq!(apart.jitter("eu", "eu"), Duration::from_micros(100));
        assert_eq!(apart.jitter("eu", "us"), Duration::from_millis(2));
    }

    #[test]
    fn a_map_that_leaves_a_pair_out_or_names_one_twice_is_refused() {
        let missing = MAP.replace("[[link]]\nbetween = [\"us\", \"asia\"]\nrtt_ms = 120\n", "");
        let error = RegionMap::parse(&missing).expect_err("a pair left out");
        assert!(
            error.to_string().contains("no link between asia and us"),
            "{error}"
        );
        let twice = format!("{MAP}\n[[link]]\nbetween = [\"us\", \"eu\"]\nrtt_ms = 90\n");
        let error = RegionMap::parse(&twice).expect_err("a pair twice");
        assert!(error.to_string().contains("linked twice"), "{error}");
        let itself = "within_ms = 1\n[[link]]\nbetween = [\"eu\", \"eu\"]\nrtt_ms = 1\n";
        assert!(RegionMap::parse(itself).is_err());
        assert!(RegionMap::parse("within_ms = 1\nrtt = 3\n").is_err());
    }

    #[test]
    fn the_shared_map_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/regions/world.toml");
        let map = RegionMap::load(&path).expect("the shipped map");
        assert_eq!(map.regions().len(), 4);
        let voters = ["asia", "eu", "us"].map(String::from);
        let three = map.only(&voters).expect("three of them");
        assert_eq!(three.regions(), BTreeSet::from(["asia", "eu", "us"]));
        assert_eq!(three.rtt("eu", "asia").ok(), map.rtt("eu", "asia").ok());
        assert!(three.rtt("eu", "au").is_err());
        assert!(map.only(&["mars".to_string()]).is_err());
    }

    #[test]
    fn jitter_stays_within_its_bound_and_replays_from_its_seed() {
        let most = Duration::from_millis(3);
        let draw = |seed| {
            let mut jitter = Jitter {
                rng: Rng::new(seed),
                most,
            };
            (0..1000).map(|_| jitter.next()).collect::<Vec<_>>()
        };
        let first = draw(7);
        assert!(first.iter().all(|d| *d <= most));
        assert_eq!(first, draw(7));
        assert_ne!(first, draw(8));
    }

    /// An echo server on `[::1]`: what it reads it writes back, until the peer closes.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_round_trip_through_a_link_takes_at_least_twice_its_delay() {
        let link = DelayLink::start(echo().await, Duration::from_millis(40), Duration::ZERO, 1)
            .await
            .expect("link");
        let mut stream = TcpStream::connect(link.addr()).await.expect("connect");
        // The connection is set up across the distance first; time one exchange after it.
        stream.write_all(b"warm").await.expect("write");
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await.expect("read");
        let sent = std::time::Instant::now();
        stream.write_all(b"ping").await.expect("write");
        stream.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"ping");
        assert!(
            sent.elapsed() >= Duration::from_millis(80),
            "{:?}",
            sent.elapsed()
        );
    }

    #[tokio::test]
    async fn bytes_arrive_whole_and_in_order_whatever_the_jitter() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        println!("delay link jitter seed {seed}");
        let link = DelayLink::start(
            echo().await,
            Duration::from_millis(2),
            Duration::from_millis(5),
            seed,
        )
        .await
        .expect("link");
        let stream = TcpStream::connect(link.addr()).await.expect("connect");
        let (mut read, mut write) = stream.into_split();
        let sent: Vec<u8> = (0..4_000_000u32)
            .map(|i| u8::try_from(i % 251).unwrap_or_default())
            .collect();
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(10_000) {
                write.write_all(piece).await.expect("write");
            }
            write.shutdown().await.expect("shutdown");
        });
        let mut received = Vec::new();
        read.read_to_end(&mut received).await.expect("read");
        writer.await.expect("writer");
        assert!(
            received == expected,
            "bytes changed on the way (seed {seed})"
        );
    }
}
