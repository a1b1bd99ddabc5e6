//! `slapnode`: the node agent. `run` converges the computer to the master's promises; `format`
//! sets up the partitions (`--dry-run` prints the plan); `enroll` gets the computer's first
//! certificate.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use node_client::NodeFile;

#[derive(Parser)]
#[command(name = "slapnode", version, about = "The slapcluster node agent")]
struct Cli {
    /// The agent's configuration file.
    #[arg(
        long,
        short,
        env = "SLAPNODE_CONFIG",
        default_value = "/etc/slapnode/slapnode.toml",
        global = true
    )]
    config: PathBuf,
    /// How logs are written to stderr: text, or json (one object per line).
    #[arg(
        long,
        global = true,
        env = "SLAPNODE_LOG_FORMAT",
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

#[derive(Subcommand)]
enum Command {
    /// Format, register, then converge software and partitions until SIGTERM.
    Run,
    /// Create or reconcile the partitions (users, directories, addresses, taps).
    Format {
        /// Print the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Get this computer's certificate with a one-time token; writes `tls_dir`.
    Enroll {
        #[arg(long)]
        token: String,
        /// The cluster's root certificate (PEM), handed over with the token.
        #[arg(long)]
        roots: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slapnode: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = NodeFile::read(&cli.config)?.validate()?;
    match cli.command {
        Command::Format { dry_run } => {
            if dry_run {
                let observed = partitioning::system::observe(&config.format)?;
                let plan = partitioning::reconcile(&config.format, &observed, &BTreeSet::new());
                for partition in &plan.partitions {
                    println!("{partition}");
                }
                for action in &plan.actions {
                    println!("would {action}");
                }
            } else {
                let plan = partitioning::system::format(&config.format, &BTreeSet::new())?;
                for action in &plan.actions {
                    println!("{action}");
                }
                println!("{} partitions ready", plan.partitions.len());
            }
            Ok(())
        }
        Command::Enroll { token, roots } => {
            let node_client::Transport::Tls { dir } = &config.transport else {
                anyhow::bail!("enroll writes tls_dir, and the configuration has none");
            };
            let master = config.masters.first().cloned().unwrap_or_default();
            tokio::runtime::Runtime::new()?
                .block_on(node_client::enroll::enroll(&master, &roots, &token, dir))?;
            println!(
                "enrolled {}; credentials in {}",
                config.computer,
                dir.display()
            );
            Ok(())
        }
        Command::Run => {
            // One thread is plenty for an agent that mostly waits, and keeps its memory small;
            // formatting and disk walks go to the blocking pool.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(node_client::run(config, shutdown_signal()))?;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        // Without SIGTERM handling, Ctrl-C still stops the agent.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
