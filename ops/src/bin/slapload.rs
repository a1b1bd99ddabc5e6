//! `slapload`: the end-to-end benchmark of a slapcluster (see `ops::load`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "slapload",
    about = "End-to-end benchmark of a slapcluster of real processes"
)]
struct Cli {
    /// The slapmaster binary (default: the one beside slapload).
    #[arg(long)]
    slapmaster: Option<PathBuf>,
    /// Keep the replicas' data here (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Client counts of the placement phases.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Seconds per placement phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 4)]
    poll_clients: usize,
    /// Seconds of the full-poll phase (0 skips it).
    #[arg(long, default_value_t = 5)]
    poll_seconds: u64,
    /// Changes timed in the long-poll phase (0 skips it).
    #[arg(long, default_value_t = 200)]
    wakes: usize,
    /// The slapnode binary (default: the one beside slapload).
    #[arg(long)]
    slapnode: Option<PathBuf>,
    /// Seconds to measure an idle slapnode (0 skips the agent phase).
    #[arg(long, default_value_t = 20)]
    agent_seconds: u64,
    /// Partitions (each with a running instance) of the measured slapnode.
    #[arg(long, default_value_t = 10)]
    agent_partitions: u32,
    /// Leader kills to time (0 skips the failover phase).
    #[arg(long, default_value_t = 20)]
    failovers: usize,
    /// Then run the same placement concurrencies as puts and the same failovers on a
    /// three-member etcd cluster of this binary, and print the ratios (`ops/bench/run`).
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// How etcd runs: mtls (as slapcluster does), plaintext, or both in turn.
    #[arg(long, value_delimiter = ',', default_value = "mtls,plaintext")]
    etcd_modes: Vec<EtcdMode>,
    /// Instead of the benchmark: start three replicas of this (earlier) slapmaster and
    /// upgrade them one at a time to `--slapmaster`, with writes throughout
    /// (`ops::load::upgrade` says what it crosses and checks).
    #[arg(long)]
    upgrade_from: Option<PathBuf>,
    /// Instead of the benchmark: the cluster with distance in it (`ops::load::regions`), one
    /// voter in each of `--voters`, clients in every region of this map
    /// (`ops/regions/world.toml`). `--clients` are then totals spread over the
    /// regions, and `--failovers` rounds of the leader's region cut off.
    #[arg(long)]
    regions: Option<PathBuf>,
    /// With `--regions`: only these of the map's regions (e.g. `eu,us,asia`), clients too.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The voters' regions (default: every region of the map but the learners', in name order).
    #[arg(long, value_delimiter = ',')]
    voters: Vec<String>,
    /// Regions with a learner each (e.g. a far region's: it serves its nodes, never votes).
    #[arg(long, value_delimiter = ',')]
    learners: Vec<String>,
    /// Where a regional run puts the leader (default: where the first election put it).
    #[arg(long)]
    leader: Option<String>,
    /// Clients of the loopback placement phase a regional run compares with (0 skips it).
    #[arg(long, default_value_t = 256)]
    loopback_clients: usize,
    /// Replica configuration (TOML, as `slapmaster run --config` reads) for every replica
    /// (default for `--regions`: `[raft] rtt_ms`, the widest round trip between the voters).
    #[arg(long)]
    replica_config: Option<PathBuf>,
    /// Seeds the links' jitter (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Instead of the benchmark: the cluster at SlapOS scale (`ops::load::scale`): a
    /// baseline, `--computers` x `--partitions` registered, `--fill` of them placed by
    /// `--scale-clients` users, placements at size, each replica's memory and files, a
    /// restart, `--pollers` simulated nodes long-polling a follower while clients place, a
    /// new replica from empty, a failover, the baseline again on a second, empty cluster.
    /// `--seconds` times the four placement phases (30 makes the ratio at size steadier).
    #[arg(long)]
    scale: bool,
    #[arg(long, default_value_t = 10_000)]
    computers: usize,
    #[arg(long, default_value_t = 100)]
    partitions: usize,
    /// The percentage of the partitions placed before the phase at size (at most 90).
    #[arg(long, default_value_t = 50)]
    fill: usize,
    #[arg(long, default_value_t = 64)]
    scale_clients: usize,
    /// The bytes of each instance's parameters in the fill.
    #[arg(long, default_value_t = 2048)]
    parameter_bytes: usize,
    /// Simulated nodes long-polling one follower, one connection each.
    #[arg(long, default_value_t = 10_000)]
    pollers: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EtcdMode {
    Mtls,
    Plaintext,
}

/// Each simulated node of `--scale` holds a socket here and one in the replica it polls: the
/// soft limit on open files goes up to the hard one (the replicas started from here inherit
/// it).
fn raise_open_files() -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let beside = |name: &str| -> anyhow::Result<PathBuf> {
        std::env::current_exe()?
            .parent()
            .map(|dir| dir.join(name))
            .ok_or_else(|| anyhow::anyhow!("cannot locate {name}; pass --{name}"))
    };
    let slapmaster = match cli.slapmaster {
        Some(path) => path,
        None => beside("slapmaster")?,
    };
    if let Some(old) = &cli.upgrade_from {
        let scratch = tempfile::tempdir()?;
        let dir = cli.data_dir.unwrap_or_else(|| scratch.path().to_path_buf());
        let report = ops::load::upgrade::rolling_upgrade(old, &slapmaster, &dir, |line| {
            eprintln!("slapload: {line}")
        })
        .await?;
        println!("{report}");
        return Ok(());
    }
    let config = match &cli.replica_config {
        Some(path) => Some(std::fs::read_to_string(path)?),
        None => None,
    };
    if cli.scale {
        raise_open_files()?;
        let options = ops::load::scale::ScaleOptions {
            slapmaster,
            data_dir: cli.data_dir,
            computers: cli.computers,
            partitions: cli.partitions,
            fill_percent: cli.fill,
            clients: cli.scale_clients,
            parameter_bytes: cli.parameter_bytes,
            placement_time: Duration::from_secs(cli.seconds),
            pollers: cli.pollers,
            config,
        };
        let report = ops::load::scale::run(&options, |line| eprintln!("slapload: {line}")).await?;
        println!("{report}");
        return Ok(());
    }
    if let Some(path) = &cli.regions {
        let map = test_kit::distance::RegionMap::load_only(path, &cli.only)?;
        let voters = if cli.voters.is_empty() {
            map.regions()
                .into_iter()
                .filter(|r| !cli.learners.iter().any(|l| l == r))
                .map(str::to_owned)
                .collect()
        } else {
            cli.voters.clone()
        };
        let seed = cli.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
        eprintln!("slapload: link jitter seed {seed}");
        let config = match config {
            Some(config) => Some(config),
            None => {
                let widest = map.widest(&voters)?.as_millis();
                eprintln!("slapload: replicas' [raft] rtt_ms = {widest} (the voters' widest)");
                Some(format!("[raft]\nrtt_ms = {widest}\n"))
            }
        };
        let options = ops::load::regions::RegionOptions {
            slapmaster,
            data_dir: cli.data_dir,
            map,
            voters,
            learners: cli.learners.clone(),
            leader: cli.leader.clone(),
            clients: cli.clients,
            loopback_clients: cli.loopback_clients,
            placement_time: Duration::from_secs(cli.seconds),
            poll_clients: cli.poll_clients,
            poll_time: Duration::from_secs(cli.poll_seconds),
            wakes: cli.wakes,
            cutoffs: cli.failovers,
            config,
            seed,
            etcd: cli.etcd.clone(),
        };
        let report =
            ops::load::regions::run(&options, |line| eprintln!("slapload: {line}")).await?;
        println!("{report}");
        return Ok(());
    }
    let slapnode = match cli.slapnode {
        Some(path) => path,
        None => beside("slapnode")?,
    };
    if cli.agent_seconds > 0 && !slapnode.exists() {
        anyhow::bail!(
            "{} not found: build it (cargo build --release -p node-client), pass --slapnode, \
             or skip the agent phase with --agent-seconds 0",
            slapnode.display()
        );
    }
    let options = ops::load::Options {
        slapmaster,
        data_dir: cli.data_dir,
        replicas: cli.replicas,
        clients: cli.clients,
        placement_time: Duration::from_secs(cli.seconds),
        poll_clients: cli.poll_clients,
        poll_time: Duration::from_secs(cli.poll_seconds),
        wakes: cli.wakes,
        slapnode: Some(slapnode),
        agent_time: Duration::from_secs(cli.agent_seconds),
        agent_partitions: cli.agent_partitions,
        failovers: cli.failovers,
        etcd: cli.etcd,
        etcd_tls: cli
            .etcd_modes
            .iter()
            .map(|m| matches!(m, EtcdMode::Mtls))
            .collect(),
        config,
    };
    let report = ops::load::run(&options, |line| eprintln!("slapload: {line}")).await?;
    println!("{report}");
    Ok(())
}
