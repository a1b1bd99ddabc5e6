//! `slapbench`: SLAP calls against the reference mini-master (`slapos proxy start`) and a
//! three-replica slapcluster, on this machine (see `ops::load::slap`).

use std::path::PathBuf;

use clap::Parser;
use ops::load::slap::{self, Polls, Reference, Target};
use test_kit::cluster::Cluster;

#[derive(Parser)]
#[command(
    name = "slapbench",
    about = "SLAP calls against slapos proxy and against slapcluster"
)]
struct Cli {
    /// The virtual environment with slapos.core (`.ci/slapos-client`).
    #[arg(long, default_value = "/opt/slapcluster/slapos-venv")]
    venv: PathBuf,
    /// The slapmaster binary (default: the one beside slapbench).
    #[arg(long)]
    slapmaster: Option<PathBuf>,
    /// Partitions of the computer, every one busy.
    #[arg(long, default_value_t = 100)]
    partitions: usize,
    /// Instance requests made one after the other (timed).
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Client counts of the poll phases.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Seconds per poll phase.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

const COMPUTER: &str = "COMP-BENCH";

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn line(name: &str, polls: &Polls) {
    println!(
        "{name:<12} getFullComputerInformation, {:>2} clients{}  {:>8.1}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} in {:.1} s, {} bytes each)",
        polls.clients,
        if polls.new_connections {
            ", a connection per call"
        } else {
            ", kept-alive connections"
        },
        polls.sample.per_second(),
        ms(polls.sample.quantile(0.5)),
        ms(polls.sample.quantile(0.99)),
        polls.sample.latencies.len(),
        polls.sample.elapsed.as_secs_f64(),
        polls.bytes,
    );
}

async fn measure(cli: &Cli, target: &Target) -> anyhow::Result<Vec<Polls>> {
    let took = slap::setup(target, cli.partitions, cli.requests).await?;
    println!(
        "{:<12} {} sequential instance requests in {:.3} s ({} partitions)",
        target.name,
        cli.requests,
        took.as_secs_f64(),
        cli.partitions
    );
    let mut out = Vec::new();
    for &clients in &cli.clients {
        for new_connections in [false, true] {
            let polls = slap::polls(target, clients, cli.seconds, new_connections).await?;
            line(&target.name, &polls);
            out.push(polls);
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let slapmaster = match &cli.slapmaster {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("slapmaster"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate slapmaster; pass --slapmaster"))?,
    };
    let scratch = tempfile::tempdir()?;

    let reference = Reference::start(&cli.venv, &scratch.path().join("proxy"), COMPUTER).await?;
    let theirs = measure(
        &cli,
        &Target {
            name: "slapproxy".into(),
            addr: reference.addr,
            node_tls: None,
            user_tls: None,
            computer: COMPUTER.into(),
        },
    )
    .await?;
    drop(reference);

    let cluster = Cluster::start(&slapmaster, &scratch.path().join("cluster"), 3).await?;
    // The user supplies the release as its computer's project's manager.
    cluster.set_role("bench", "default", "manager").await?;
    let follower = cluster.follower().await?;
    let ours = measure(
        &cli,
        &Target {
            name: "slapcluster".into(),
            addr: format!("[::1]:{}", follower.slap_port).parse()?,
            node_tls: Some(test_kit::slap::client_tls(
                &cluster.credentials_dir(&format!("computer:{COMPUTER}"))?,
            )?),
            user_tls: Some(test_kit::slap::client_tls(
                &cluster.credentials_dir("user:bench")?,
            )?),
            computer: COMPUTER.into(),
        },
    )
    .await?;
    for (mine, reference) in ours.iter().zip(&theirs) {
        println!(
            "ratio, {:>2} clients{}: {:.0} / {:.1} polls/s = {:.0}x",
            mine.clients,
            if mine.new_connections {
                ", a connection per call"
            } else {
                ""
            },
            mine.sample.per_second(),
            reference.sample.per_second(),
            mine.sample.per_second() / reference.sample.per_second()
        );
    }
    Ok(())
}
