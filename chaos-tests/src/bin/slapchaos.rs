//! `slapchaos`: seeded chaos runs against real `slapmaster` processes in network namespaces
//! (root). Every parameter derives from `--seed` (printed; run `i` uses seed + i), so a run is
//! replayed with `--seed N --runs 1`. Reports go to `--out` (one directory per run: summary,
//! JSON history, timeline SVG). Exits 1 if any run found a violation.

use std::path::PathBuf;
use std::time::Duration;

use chaos_tests::cluster::Danger;
use chaos_tests::nemesis::Nemesis;
use chaos_tests::run::{RunConfig, run};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "slapchaos",
    about = "Jepsen-style fault runs against a slapcluster"
)]
struct Cli {
    /// The first run's seed (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Seconds of workload and faults per run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Cluster sizes, used in turn.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    replicas: Vec<usize>,
    /// Nemeses (kill, pause, halves, isolate-leader, bridge, one-way), or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    nemesis: Vec<String>,
    #[arg(long, default_value_t = 6)]
    workers: usize,
    #[arg(long, default_value = "chaos-runs")]
    out: PathBuf,
    /// The slapmaster binary (default: the one beside slapchaos).
    #[arg(long)]
    slapmaster: Option<PathBuf>,
    /// danger: replicas answer linearizable reads without the read index. The checker must
    /// then find violations.
    #[arg(long)]
    danger_stale_reads: bool,
    /// Replicas on loopback ports behind user-space fault proxies, even as root (without root
    /// this is the only way; there is then no full-disk fault).
    #[arg(long)]
    loopback: bool,
    /// Replicas apart: in the regions of this map in turn (`ops/regions/world.toml`),
    /// on loopback behind fronts that hold what they send each other for the map's distance,
    /// each replica's clients in its region, Raft's timing from the widest round trip.
    #[arg(long)]
    regions: Option<PathBuf>,
    /// With `--regions`: only these of the map's regions (e.g. `eu,us,asia`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "chaos_tests=info,slapchaos=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let slapmaster = match cli.slapmaster {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("slapmaster"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate slapmaster; pass --slapmaster"))?,
    };
    let nemeses: Vec<Nemesis> = if cli.nemesis.iter().any(|n| n == "all") {
        Nemesis::ALL.to_vec()
    } else {
        cli.nemesis
            .iter()
            .map(|n| n.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?
    };
    anyhow::ensure!(
        cli.replicas.iter().all(|&r| r >= 3),
        "a chaos run needs at least three replicas"
    );
    let regions = match &cli.regions {
        Some(path) => Some(test_kit::distance::RegionMap::load_only(path, &cli.only)?),
        None => None,
    };
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    println!("slapchaos: seed {seed}, {} runs", cli.runs);
    let mut failed = Vec::new();
    for i in 0..cli.runs {
        let replicas = cli.replicas[usize::try_from(i).unwrap_or(0) % cli.replicas.len()];
        let config = RunConfig {
            seed: seed + i,
            replicas,
            duration: Duration::from_secs(cli.duration),
            nemeses: nemeses.clone(),
            workers: cli.workers,
            danger: if cli.danger_stale_reads {
                Danger::StaleReads
            } else {
                Danger::None
            },
            loopback: cli.loopback,
            regions: regions.clone(),
            slapmaster: slapmaster.clone(),
            out: cli.out.clone(),
        };
        let outcome = run(&config).await?;
        println!(
            "run {i}: seed {} | {} replicas | {} faults | {} ops | recovered in {} | {} violations | {}",
            config.seed,
            replicas,
            outcome.history.faults.len(),
            outcome.history.ops.len(),
            outcome
                .recovered_in
                .map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
            outcome.violations.len(),
            outcome.dir.display()
        );
        if !outcome.violations.is_empty() {
            print!("{}", outcome.summary);
            failed.push(config.seed);
        }
    }
    println!(
        "slapchaos: {} runs, {} with violations{}",
        cli.runs,
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (seeds {failed:?})")
        }
    );
    Ok(if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
