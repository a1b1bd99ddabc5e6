//! `slapmaster`: a slapcluster master replica. Parses the command line and hands off to
//! `master_cluster::daemon`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use master_cluster::daemon::{self, FileConfig, Overrides, ValidConfig, dev::DevOptions};

/// A replica allocates and frees many small buffers per request (gRPC frames, redb pages,
/// encoded records); glibc's allocator measured as a tenth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "slapmaster", version, about = "A slapcluster master replica")]
struct Cli {
    /// How logs are written to stderr: text, or json (one object per line).
    #[arg(
        long,
        global = true,
        env = "SLAPMASTER_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    /// Serve /metrics, /healthz, /readyz and the status page here (plain HTTP).
    #[arg(long, env = "SLAPMASTER_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Serve the SLAP HTTP protocol (existing SlapOS nodes and clients) here; `[slap]` in
    /// the configuration file says how.
    #[arg(long, env = "SLAPMASTER_SLAP_LISTEN")]
    slap_listen: Option<String>,
    /// Serve the web panel here (HTTPS; people log in with their browser's certificate).
    #[arg(long, env = "SLAPMASTER_PANEL_LISTEN")]
    panel_listen: Option<String>,
    #[arg(long, env = "SLAPMASTER_ADVERTISE")]
    advertise: Option<String>,
    #[arg(long, env = "SLAPMASTER_REGION")]
    region: Option<String>,
    #[arg(long, env = "SLAPMASTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The replica's certificate: a directory with roots.pem, chain.pem and key.pem.
    #[arg(long, env = "SLAPMASTER_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Plaintext, callers naming themselves in a header: a trusted development network only.
    #[arg(long)]
    insecure_plaintext: bool,
    /// danger: linearizable reads served without the read index (possibly stale). Only for
    /// the chaos suite, to show that its checker catches it.
    #[arg(long, hide = true)]
    danger_stale_reads: bool,
}

impl ConfigArgs {
    fn load(self) -> anyhow::Result<ValidConfig> {
        let (file, overrides) = self.parts()?;
        Ok(file.validate(overrides)?)
    }

    /// The file as read, and what the flags and environment say over it.
    fn parts(self) -> anyhow::Result<(FileConfig, Overrides)> {
        let file = FileConfig::load(self.config.as_deref())?;
        Ok((
            file,
            Overrides {
                id: self.id,
                listen: self.listen,
                http_listen: self.http_listen,
                slap_listen: self.slap_listen,
                panel_listen: self.panel_listen,
                advertise: self.advertise,
                region: self.region,
                data_dir: self.data_dir,
                tls_dir: self.tls_dir,
                insecure_plaintext: self.insecure_plaintext,
                danger_stale_reads: self.danger_stale_reads,
            },
        ))
    }
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the cluster's root CA (root.pem, root.key) in a directory; once per cluster.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "slapcluster")]
        cluster: String,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue a key and a certificate from the root CA, into a directory (roots.pem,
    /// chain.pem, key.pem) that `--tls-dir` reads.
    Issue {
        /// The directory `slapmaster ca init` wrote.
        #[arg(long)]
        ca_dir: PathBuf,
        /// replica:N, operator:NAME, user:NAME, computer:ID or partition:COMPUTER/PARTITION.
        #[arg(long)]
        identity: String,
        /// For a replica: each name or address clients reach it at (repeat the flag).
        #[arg(long)]
        server_name: Vec<String>,
        /// Lifetime in days (default: 90, operators 30).
        #[arg(long)]
        days: Option<u64>,
        /// Sign this certificate signing request (its owner keeps the key) instead of making
        /// a key here.
        #[arg(long)]
        csr: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Give a replica an intermediate CA (signer.pem, signer.key in its tls_dir), with which it
    /// signs the certificates of computers that enroll with a token.
    Signer {
        #[arg(long)]
        ca_dir: PathBuf,
        /// The replica's id.
        #[arg(long)]
        replica: u64,
        /// The replica's tls_dir.
        #[arg(long)]
        tls_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Serve a replica until SIGTERM or Ctrl-C.
    Run(ConfigArgs),
    /// Bootstrap a new cluster whose first voter is this replica, then exit (once per cluster).
    Init(ConfigArgs),
    /// Make (once) a root CA, a seed replica's certificate and an operator's certificate in a
    /// directory, found a one-replica cluster, and serve it: the seed of a cluster that will
    /// host its own replicas (see ops/runbooks/self-hosting.md). Run again, it serves the seed.
    Bootstrap {
        #[command(flatten)]
        config: ConfigArgs,
        /// Holds ca/, tls/, operator/ and data/.
        #[arg(long)]
        dir: PathBuf,
        /// The cluster's name, in its root CA.
        #[arg(long, default_value = "slapcluster")]
        cluster_name: String,
        /// The operator whose certificate is made in DIR/operator.
        #[arg(long, default_value = "admin")]
        operator: String,
    },
    /// Serve a new replica and have the cluster add it (learner, then voter once caught up,
    /// unless `--learner`).
    Join {
        #[command(flatten)]
        config: ConfigArgs,
        /// Replicas of the cluster, e.g. `https://[::1]:7000` (asked in turn; repeat the flag
        /// or separate with commas).
        #[arg(long, required = true, value_delimiter = ',')]
        via: Vec<String>,
        #[arg(long, default_value = "operator:slapmaster")]
        actor: String,
        /// Stay a learner: serve this region's nodes and reads, never vote.
        #[arg(long)]
        learner: bool,
    },
    /// The process of a replica hosted as an instance of the slapmaster software release:
    /// makes its keys and certificate requests, awaits the operator's certificates, then
    /// joins the cluster (or serves, once a voter).
    Instance {
        /// The configuration the node rendered (id, listen, advertise, tls_dir, ...).
        #[arg(long)]
        config: PathBuf,
        /// Replicas of the cluster to ask (repeat the flag or separate with commas).
        #[arg(long, required = true, value_delimiter = ',')]
        via: Vec<String>,
    },
    /// The promise of a hosted replica: holds while it awaits the operator's certificates,
    /// then only while it is ready.
    Promise {
        #[arg(long)]
        config: PathBuf,
    },
    /// Make an empty data directory the first replica of a new cluster holding a backup.
    Restore {
        #[command(flatten)]
        config: ConfigArgs,
        /// A file written by `slapctl snapshot save`.
        #[arg(long)]
        backup: PathBuf,
    },
    /// The cluster's root CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Certificates for replicas, operators, users, computers and partitions.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run a three-replica cluster on `[::1]` with a demo computer, until Ctrl-C.
    Dev {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Replicas listen on this port and the next two.
        #[arg(long, default_value_t = 7001)]
        base_port: u16,
    },
}

/// Threads for blocking work (every state read, snapshots; apply has a thread of its own).
/// tokio's default is 512, and each thread keeps its own allocator pages: 2,000 nodes
/// long-polling a replica of 200k partitions grew it 336 MiB with 512, 243 MiB with 32
/// (`slapload --scale`, BENCHMARKS.md).
/// On two cores, 32 reads at once is already far more than can run.
const BLOCKING_THREADS: usize = 32;

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("slapmaster: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(slapmaster()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Our errors carry their causes in their message; the chain would repeat them.
            eprintln!("slapmaster: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn slapmaster() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            // openraft's heartbeat worker warns on every heartbeat (10 a second) to a peer
            // that is down; replication reports the same peer, backing off.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,openraft::core::heartbeat=error".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for people: hosted replicas and services log to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Command::Run(config) => daemon::run(config.load()?, daemon::shutdown_signal()).await?,
        Command::Init(config) => daemon::init(config.load()?).await?,
        Command::Bootstrap {
            config,
            dir,
            cluster_name,
            operator,
        } => {
            if config.insecure_plaintext {
                anyhow::bail!("a seed speaks TLS: it makes the cluster's certificates");
            }
            let (file, overrides) = config.parts()?;
            let options = daemon::bootstrap::BootstrapOptions {
                dir,
                cluster: cluster_name,
                operator,
            };
            daemon::bootstrap::bootstrap(
                &options,
                file,
                overrides,
                &mut std::io::stdout(),
                daemon::shutdown_signal(),
            )
            .await?;
        }
        Command::Join {
            config,
            via,
            actor,
            learner,
        } => {
            let join_as = match learner {
                true => daemon::JoinAs::Learner,
                false => daemon::JoinAs::Voter,
            };
            let config = config.load()?;
            daemon::join(config, &via, &actor, join_as, daemon::shutdown_signal()).await?;
        }
        Command::Instance { config, via } => {
            daemon::hosted::instance(&config, &via, daemon::shutdown_signal()).await?;
        }
        Command::Promise { config } => println!("{}", daemon::hosted::promise(&config).await?),
        Command::Restore { config, backup } => {
            let config = config.load()?;
            let data_dir = config.replica.data_dir.clone();
            daemon::restore(config, &backup).await?;
            println!(
                "restored {} into {}: start it with `slapmaster run` and this configuration, then join others",
                backup.display(),
                data_dir.display()
            );
        }
        Command::Ca(CaCommand::Init { dir, cluster }) => {
            daemon::ca_init(&dir, &cluster)?;
            println!("root CA of {cluster} in {}", dir.display());
        }
        Command::Cert(CertCommand::Issue {
            ca_dir,
            identity,
            server_name,
            days,
            csr,
            out,
        }) => {
            let lifetime = days.map(|d| Duration::from_secs(d * 24 * 3600));
            let identity = daemon::cert_issue(
                &ca_dir,
                &identity,
                server_name,
                lifetime,
                csr.as_deref(),
                &out,
            )?;
            println!("certificate for {identity} in {}", out.display());
        }
        Command::Cert(CertCommand::Signer {
            ca_dir,
            replica,
            tls_dir,
        }) => {
            daemon::cert_signer(&ca_dir, replica, &tls_dir)?;
            println!("signing CA of replica {replica} in {}", tls_dir.display());
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
