//! `slapmaster`: a slapcluster master replica. Parses the command line and hands off to
//! `master_cluster::daemon`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use master_cluster::daemon::{self, FileConfig, Overrides, ValidConfig, dev::DevOptions};

#[derive(Parser)]
#[command(name = "slapmaster", version, about = "A slapcluster master replica")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where to find the configuration, and what overrides it.
#[derive(clap::Args)]
struct ConfigArgs {
    /// The TOML configuration file (every key has a default; see the README).
    #[arg(long, env = "SLAPMASTER_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "SLAPMASTER_ID")]
    id: Option<u64>,
    #[arg(long, env = "SLAPMASTER_LISTEN")]
    listen: Option<String>,
    #[arg(long, env = "SLAPMASTER_ADVERTISE")]
    advertise: Option<String>,
    #[arg(long, env = "SLAPMASTER_REGION")]
    region: Option<String>,
    #[arg(long, env = "SLAPMASTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(self) -> anyhow::Result<ValidConfig> {
        let file = FileConfig::load(self.config.as_deref())?;
        Ok(file.validate(Overrides {
            id: self.id,
            listen: self.listen,
            advertise: self.advertise,
            region: self.region,
            data_dir: self.data_dir,
        })?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve a replica until SIGTERM or Ctrl-C.
    Run(ConfigArgs),
    /// Bootstrap a new cluster whose first voter is this replica, then exit (once per cluster).
    Init(ConfigArgs),
    /// Serve a new replica and have the cluster add it (learner, then voter once caught up).
    Join {
        #[command(flatten)]
        config: ConfigArgs,
        /// Any replica of the cluster, e.g. `http://[::1]:7000`.
        #[arg(long)]
        via: String,
        #[arg(long, default_value = "operator:slapmaster")]
        actor: String,
    },
    /// Make an empty data directory the first replica of a new cluster holding a backup.
    Restore {
        #[command(flatten)]
        config: ConfigArgs,
        /// A file written by `slapmaster backup`.
        #[arg(long)]
        backup: PathBuf,
    },
    /// Remove a replica from the membership (through any replica).
    Remove {
        #[arg(long)]
        cluster: String,
        /// The id of the replica to remove.
        #[arg(long)]
        id: u64,
        #[arg(long, default_value = "operator:slapmaster")]
        actor: String,
    },
    /// Save a backup of the cluster (as of a linearizable read) to a file.
    Backup {
        /// Any replica of the cluster.
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        to: PathBuf,
        #[arg(long, default_value = "operator:slapmaster")]
        actor: String,
    },
    /// Show the members of the cluster with their role, region, applied index and lag.
    Status {
        #[arg(long)]
        cluster: String,
        #[arg(long, default_value = "operator:slapmaster")]
        actor: String,
    },
    /// Run a three-replica cluster on `[::1]` with a demo computer, until Ctrl-C.
    Dev {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Replicas listen on this port and the next two.
        #[arg(long, default_value_t = 7001)]
        base_port: u16,
    },
}

/// A replica allocates and frees many small buffers per request (gRPC frames, redb pages,
/// encoded records); glibc's allocator measured as a tenth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match slapmaster().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Our errors carry their causes in their message; the chain would repeat them.
            eprintln!("slapmaster: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn slapmaster() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(config) => daemon::run(config.load()?, daemon::shutdown_signal()).await?,
        Command::Init(config) => daemon::init(config.load()?).await?,
        Command::Join { config, via, actor } => {
            daemon::join(config.load()?, &via, &actor, daemon::shutdown_signal()).await?;
        }
        Command::Restore { config, backup } => daemon::restore(config.load()?, &backup).await?,
        Command::Backup { cluster, to, actor } => {
            let bytes = daemon::backup(&cluster, &actor, &to).await?;
            println!("saved {bytes} bytes to {}", to.display());
        }
        Command::Remove { cluster, id, actor } => {
            let index = daemon::remove(&cluster, &actor, id).await?;
            println!("replica {id} removed (membership change at index {index})");
        }
        Command::Status { cluster, actor } => {
            print!("{}", daemon::status(&cluster, &actor).await?);
        }
        Command::Dev {
            data_dir,
            base_port,
        } => {
            let options = DevOptions {
                data_dir,
                base_port,
                ..Default::default()
            };
            daemon::dev::dev(&options, &mut std::io::stdout(), daemon::shutdown_signal()).await?;
        }
    }
    Ok(())
}
