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
    #[arg(long, default_value_t = 5)]
    poll_seconds: u64,
    /// Changes timed in the long-poll phase (0 skips it).
    #[arg(long, default_value_t = 200)]
    wakes: usize,
    /// Leader kills to time (0 skips the failover phase).
    #[arg(long, default_value_t = 20)]
    failovers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let slapmaster = match cli.slapmaster {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("slapmaster"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate slapmaster; pass --slapmaster"))?,
    };
    let options = ops::load::Options {
        slapmaster,
        data_dir: cli.data_dir,
        replicas: cli.replicas,
        clients: cli.clients,
        placement_time: Duration::from_secs(cli.seconds),
        poll_clients: cli.poll_clients,
        poll_time: Duration::from_secs(cli.poll_seconds),
        wakes: cli.wakes,
        failovers: cli.failovers,
    };
    let report = ops::load::run(&options, |line| eprintln!("slapload: {line}")).await?;
    println!("{report}");
    Ok(())
}
