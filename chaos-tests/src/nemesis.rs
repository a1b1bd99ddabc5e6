//! The nemesis: faults injected on a seeded schedule while the workload runs, each healed
//! before the next. Every fault is recorded with its interval.
//!
//! While a partition strands replicas away from every majority, the nemesis also probes it:
//! a write acknowledged on the majority's side, then a linearizable read on each stranded
//! replica. Such a read must fail or see the write, so a replica that answers it from its
//! own state is caught by the linearizability check in every run that partitions, not only
//! when the workload's random calls happen to line up.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::ChaosError;
use crate::cluster::Cluster;
use crate::history::{Call, Fault, Freshness, Op, Outcome, PROBE_WORKER};
use crate::net::Blocked;
use crate::rng::Rng;
use crate::workload::{Clients, Key};

/// How long a probe tries to get its write acknowledged: long enough for the majority's side
/// to elect a leader when the old one was cut off.
const PROBE_WRITE_BOUND: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nemesis {
    /// SIGKILL a replica (the leader half the time), restart it from its data when healing.
    Kill,
    /// SIGSTOP a replica (the leader half the time), SIGCONT when healing.
    Pause,
    /// A random minority cut off from the majority.
    Halves,
    /// The leader cut off from everyone.
    IsolateLeader,
    /// Two groups that cannot reach each other, and one replica that reaches both.
    Bridge,
    /// One replica hears nobody, though everyone hears it.
    OneWay,
    /// A replica's disk filled to the last byte; healing frees it and restarts the replica,
    /// as the runbook says.
    DiskFull,
    /// A replica removed from the membership, its data wiped; healing has it join again.
    Membership,
    /// A whole region (the leader's half the time) cut off from the others; in a run that is
    /// not apart, each replica is a region of its own.
    Region,
}

impl Nemesis {
    pub const ALL: [Nemesis; 9] = [
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Halves,
        Nemesis::IsolateLeader,
        Nemesis::Bridge,
        Nemesis::OneWay,
        Nemesis::DiskFull,
        Nemesis::Membership,
        Nemesis::Region,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Halves => "halves",
            Nemesis::IsolateLeader => "isolate-leader",
            Nemesis::Bridge => "bridge",
            Nemesis::OneWay => "one-way",
            Nemesis::DiskFull => "disk-full",
            Nemesis::Membership => "membership",
            Nemesis::Region => "region",
        }
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nemesis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Nemesis::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
                format!("unknown nemesis {s:?}; known: {}", names.join(", "))
            })
    }
}

/// A fault in place, and how to undo it.
pub enum Injected {
    Killed(usize),
    Paused(usize),
    /// The network is cut; `stranded` are the replicas that reach no majority.
    Partitioned {
        stranded: Vec<usize>,
    },
    DiskFull(usize),
    Removed(usize),
    /// Nothing to undo (the fault could not be made, and the description says why).
    Nothing,
}

/// Blocks every direction between the two groups.
fn cut(a: &[usize], b: &[usize]) -> Blocked {
    let mut blocked = BTreeSet::new();
    for &x in a {
        for &y in b {
            blocked.insert((x, y));
            blocked.insert((y, x));
        }
    }
    blocked
}

/// Injects `nemesis`; returns how to heal it and a description.
pub async fn inject(
    nemesis: Nemesis,
    cluster: &mut Cluster,
    rng: &mut Rng,
) -> Result<(Injected, String), ChaosError> {
    let n = cluster.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Fisher-Yates from the seed.
    for i in (1..n).rev() {
        order.swap(i, rng.index(i + 1));
    }
    let leader = cluster.leader().await;
    let target = match leader {
        Some(l) if rng.chance(50) => l,
        _ => order[0],
    };
    let replica = |i: usize| i + 1;
    Ok(match nemesis {
        Nemesis::Kill => {
            cluster.kill(target)?;
            (
                Injected::Killed(target),
                format!("killed replica {}", replica(target)),
            )
        }
        Nemesis::Pause => {
            cluster.pause(target, true)?;
            (
                Injected::Paused(target),
                format!("paused replica {}", replica(target)),
            )
        }
        Nemesis::Halves => {
            let (minority, majority) = order.split_at(n / 2);
            cluster.fabric.partition(&cut(minority, majority))?;
            (
                Injected::Partitioned {
                    stranded: minority.to_vec(),
                },
                format!("cut {:?} from {:?}", names(minority), names(majority)),
            )
        }
        Nemesis::IsolateLeader => {
            let alone = leader.unwrap_or(order[0]);
            let others: Vec<usize> = (0..n).filter(|&i| i != alone).collect();
            cluster.fabric.partition(&cut(&[alone], &others))?;
            (
                Injected::Partitioned {
                    stranded: vec![alone],
                },
                format!(
                    "isolated replica {} (leader: {})",
                    replica(alone),
                    leader.is_some()
                ),
            )
        }
        Nemesis::Bridge => {
            let bridge = order[0];
            let rest = &order[1..];
            let (left, right) = rest.split_at(rest.len() / 2);
            cluster.fabric.partition(&cut(left, right))?;
            // Each side reaches a majority through the bridge.
            (
                Injected::Partitioned {
                    stranded: Vec::new(),
                },
                format!(
                    "{:?} and {:?} bridged by replica {} only",
                    names(left),
                    names(right),
                    replica(bridge)
                ),
            )
        }
        Nemesis::DiskFull if !cluster.fabric.has_disks() => (
            Injected::Nothing,
            "no disk to fill: replicas get their own tmpfs only as root".into(),
        ),
        Nemesis::DiskFull => {
            let bytes = cluster.fill_disk(target)?;
            (
                Injected::DiskFull(target),
                format!(
                    "filled replica {}'s disk ({} MiB of ballast)",
                    replica(target),
                    bytes >> 20
                ),
            )
        }
        Nemesis::Membership => match cluster.remove_member(target).await {
            Ok(()) => {
                cluster.kill(target)?;
                cluster.wipe(target)?;
                (
                    Injected::Removed(target),
                    format!(
                        "removed replica {} from the membership, wiped its data",
                        replica(target)
                    ),
                )
            }
            Err(why) => (
                Injected::Nothing,
                format!("could not remove replica {}: {why}", replica(target)),
            ),
        },
        Nemesis::Region => {
            let region = cluster.region(target).map(str::to_owned);
            let (inside, outside): (Vec<usize>, Vec<usize>) =
                (0..n).partition(|&i| match &region {
                    Some(region) => cluster.region(i) == Some(region.as_str()),
                    None => i == target,
                });
            cluster.fabric.partition(&cut(&inside, &outside))?;
            // A region holding a majority still serves; only a minority is stranded.
            let stranded = if inside.len() * 2 < n {
                inside.clone()
            } else {
                outside.clone()
            };
            (
                Injected::Partitioned { stranded },
                format!(
                    "cut off region {} ({:?})",
                    region.as_deref().unwrap_or("of one replica"),
                    names(&inside)
                ),
            )
        }
        Nemesis::OneWay => {
            let deaf = target;
            let blocked: Blocked = (0..n).filter(|&i| i != deaf).map(|i| (i, deaf)).collect();
            cluster.fabric.partition(&blocked)?;
            (
                Injected::Partitioned {
                    stranded: vec![deaf],
                },
                format!("replica {} hears nobody", replica(deaf)),
            )
        }
    })
}

fn names(group: &[usize]) -> Vec<usize> {
    group.iter().map(|i| i + 1).collect()
}

/// Undoes a fault.
pub fn heal(injected: &Injected, cluster: &mut Cluster) -> Result<(), ChaosError> {
    match injected {
        Injected::Killed(i) => cluster.restart(*i),
        Injected::Paused(i) => cluster.pause(*i, false),
        Injected::Partitioned { .. } => cluster.fabric.heal(),
        Injected::DiskFull(i) => {
            cluster.free_disk(*i)?;
            cluster.kill(*i)?;
            cluster.restart(*i)
        }
        Injected::Removed(i) => cluster.rejoin(*i),
        Injected::Nothing => Ok(()),
    }
}

/// Injects faults from `kinds` until `until`: quiet 1-3 s, fault held 2-5 s (and until its
/// probe is done), healed. Returns the faults and the probes' operations.
pub async fn run(
    cluster: &mut Cluster,
    clients: &Clients,
    kinds: &[Nemesis],
    mut rng: Rng,
    started: Instant,
    until: Instant,
) -> Result<(Vec<Fault>, Vec<Op>), ChaosError> {
    let mut faults = Vec::new();
    let mut probes = Vec::new();
    let mut probe_v = 0;
    let since =
        |at: Instant| u64::try_from(at.duration_since(started).as_micros()).unwrap_or(u64::MAX);
    // Every kind in turn, in a seeded order: a short run still sees them all.
    let mut kinds = kinds.to_vec();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.index(i + 1));
    }
    let mut turn = 0usize;
    loop {
        tokio::time::sleep(rng.millis(1000, 3000)).await;
        let hold = rng.millis(2000, 5000);
        if Instant::now() + hold >= until || kinds.is_empty() {
            break;
        }
        let kind = kinds[turn % kinds.len()];
        turn += 1;
        let injected_at = Instant::now();
        let (injected, mut description) = inject(kind, cluster, &mut rng).await?;
        tracing::info!("nemesis: {description}");
        match &injected {
            Injected::Partitioned { stranded } if !stranded.is_empty() => {
                let ((ops, outcome), ()) = tokio::join!(
                    probe(clients, stranded, &mut probe_v),
                    tokio::time::sleep(hold)
                );
                tracing::info!("nemesis: {outcome}");
                description = format!("{description}; {outcome}");
                probes.extend(ops);
            }
            _ => tokio::time::sleep(hold).await,
        }
        heal(&injected, cluster)?;
        tracing::info!("nemesis: healed {kind}");
        faults.push(Fault {
            kind: kind.name().into(),
            description,
            started_us: since(injected_at),
            healed_us: since(Instant::now()),
        });
    }
    Ok((faults, probes))
}

/// While a partition holds: writes [`Key::PROBE`] (`v` counts its writes) through the replicas
/// that reach a majority until one is acknowledged, then reads it linearizably on every
/// stranded replica at once. Returns the operations and what happened, in words.
async fn probe(clients: &Clients, stranded: &[usize], v: &mut u64) -> (Vec<Op>, String) {
    let reachable: Vec<usize> = (0..clients.replicas())
        .filter(|i| !stranded.contains(i))
        .collect();
    let deadline = Instant::now() + PROBE_WRITE_BOUND;
    let (mut ops, written_through) = clients
        .write_until_acknowledged(PROBE_WORKER, &reachable, &Key::PROBE, v, deadline)
        .await;
    let Some(through) = written_through else {
        return (
            ops,
            format!("probe: no write acknowledged within {PROBE_WRITE_BOUND:?}"),
        );
    };
    let mut reads = JoinSet::new();
    for &replica in stranded {
        let clients = clients.clone();
        reads.spawn(async move {
            let read = Call::Read {
                freshness: Freshness::Linearizable,
            };
            clients
                .perform(PROBE_WORKER, replica, &Key::PROBE, read)
                .await
        });
    }
    let mut answered = 0;
    while let Some(read) = reads.join_next().await {
        // A probe read that panicked is simply not part of the history.
        if let Ok(op) = read {
            answered += usize::from(matches!(op.outcome, Outcome::Ok(_)));
            ops.push(op);
        }
    }
    (
        ops,
        format!(
            "probe: v={v} acknowledged through replica {}, then {answered} of {} stranded \
             replicas answered a linearizable read",
            through + 1,
            stranded.len()
        ),
    )
}
