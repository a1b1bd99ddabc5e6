//! The command tree (clap): nouns, their verbs and arguments. The handlers are in one file per
//! noun.

use super::*;

#[derive(Debug, Parser)]
#[command(
    name = "slapctl",
    version,
    about = "Users and operators of a slapcluster: instances, software, computers, members, certificates, backups"
)]
pub struct Cli {
    /// The configuration file (`cluster`, `tls_dir`, `actor`).
    #[arg(long, global = true, env = "SLAPCTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// A replica to talk to (repeat it: the next is tried when one does not answer).
    #[arg(long, global = true, env = "SLAPCTL_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This client's certificate: a directory with roots.pem, chain.pem and key.pem.
    #[arg(long, global = true, env = "SLAPCTL_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// On a plaintext development cluster: who you are (`user:NAME`, `operator:NAME`).
    #[arg(long, global = true, env = "SLAPCTL_ACTOR")]
    pub actor: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Request an instance (again, to change it): idempotent by title.
    Request(RequestArgs),
    /// Your instances.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Why an instance is where it is, or why it is not placed yet.
    Explain(InstanceRef),
    /// Ask a computer to install (or, with --remove, remove) a software release.
    Supply {
        url: String,
        #[arg(long)]
        computer: String,
        #[arg(long)]
        remove: bool,
    },
    /// The software release catalog.
    #[command(subcommand)]
    Software(SoftwareCommand),
    /// What a computer used: each movement its node posted, with its partition (empty for the
    /// computer as a whole), report, dates, quantity, price, VAT and category.
    Usage {
        #[arg(long)]
        computer: String,
        #[arg(long)]
        partition: Option<String>,
    },
    /// The cluster as a whole (operators).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Replicas of the cluster (operators).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Replicas hosted as instances on the cluster's own nodes (operators).
    #[command(subcommand)]
    Replica(replica::ReplicaCommand),
    /// Computers and their partitions (operators; a project's managers see its computers and
    /// set their scope).
    #[command(subcommand)]
    Computer(ComputerCommand),
    /// Projects: who may request, supply and read what.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// How much one user may hold: instances, waiting requests, parameter bytes (operators
    /// set them; anyone reads their own).
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Alerts: instances failing, computers whose node is silent (yours, your projects' as a
    /// manager, every one as an operator).
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Certificates issued by the cluster (operators; users make tokens for their own).
    #[command(subcommand)]
    Cert(CertCommand),
    /// Backups (operators).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The instance's title, unique among your instances.
    pub title: String,
    #[arg(long)]
    pub software: String,
    #[arg(long = "type")]
    pub software_type: Option<String>,
    /// An instance parameter (repeat it).
    #[arg(long = "param", value_parser = key_value)]
    pub parameters: Vec<(String, String)>,
    /// Where it may go: region=..., computer_guid=..., cpu_type=... (repeat it).
    #[arg(long, value_parser = key_value)]
    pub sla: Vec<(String, String)>,
    /// A shared (slave) instance, hosted by another instance.
    #[arg(long)]
    pub shared: bool,
    #[arg(long, value_enum, default_value = "started")]
    pub state: State,
    /// The project to request a new tree in (default: your first project, else `default`).
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum State {
    Started,
    Stopped,
    Destroyed,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?}: say key=value")),
    }
}

/// An instance by the title of one of your root instances, or by guid.
#[derive(Debug, Args)]
pub struct InstanceRef {
    /// The title of one of your root instances.
    #[arg(required_unless_present = "guid")]
    pub title: Option<String>,
    #[arg(long, conflicts_with = "title")]
    pub guid: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    List,
    Show(InstanceRef),
    /// Destroy an instance and every instance it requested.
    Destroy(InstanceRef),
}

#[derive(Debug, Subcommand)]
pub enum SoftwareCommand {
    List,
    /// Add a software release to the catalog.
    Publish {
        url: String,
        #[arg(long, default_value = "")]
        title: String,
        /// A software type it offers (repeat it).
        #[arg(long = "type")]
        software_types: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every member: role, region, applied index, lag, last contact with the leader.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    List,
    /// Add a replica (started with `slapmaster run` or `join`) as a learner; show it catching
    /// up; with --promote, make it a voter once it has.
    Add {
        id: u64,
        /// Its address, e.g. `https://[2001:db8::4]:7000`.
        url: String,
        #[arg(long, default_value = "")]
        region: String,
        #[arg(long)]
        promote: bool,
        /// Give up waiting for it to catch up after this many seconds (it stays a learner).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Make a learner a voter.
    Promote {
        id: u64,
    },
    /// Remove a replica from the membership (stop its process afterwards).
    Remove {
        id: u64,
    },
    /// Hand the leadership to a voter: every write pays the leader's distance, so keep it
    /// where most writers are (ops/runbooks/regions.md).
    Leader {
        id: u64,
        /// Give up waiting for it to lead after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// The open alerts, newest first; with `--closed`, the closed ones too.
    List {
        #[arg(long)]
        closed: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ComputerCommand {
    List,
    Show {
        computer: String,
    },
    /// Take no new instances (what runs there stays): close/noallocation.
    Close {
        computer: String,
    },
    /// Take every project's new instances again: open/public.
    Open {
        computer: String,
    },
    /// Set whose new instances it takes: open/public, open/project, open/personal,
    /// close/noallocation, close/maintenance, close/termination, close/forever.
    Scope {
        computer: String,
        scope: String,
    },
    /// Hand it to another project (operators): its managers run it from then on.
    Move {
        computer: String,
        #[arg(long)]
        project: String,
    },
    /// A one-time enrollment token for the computer's node (`slapnode enroll --token`, or
    /// `slapos node register --token` for a computer named COMP-…).
    Token {
        computer: String,
        /// How long it may be used; at most a week.
        #[arg(long, default_value_t = 3600)]
        valid_seconds: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Your projects and your role in each (operators: every project).
    List,
    /// A project and its members.
    Show { project: String },
    /// Create a project, or retitle it (operators).
    Create {
        project: String,
        #[arg(long, default_value = "")]
        title: String,
    },
    /// Give a user a role in a project (operators and its managers).
    Add {
        project: String,
        user: String,
        #[arg(long, value_enum, default_value = "customer")]
        role: Role,
    },
    /// Remove a user from a project (operators and its managers).
    Remove { project: String, user: String },
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// A user's quota and what they hold (your own without --user; everyone's default with
    /// --default).
    Show {
        #[arg(long, conflicts_with = "default")]
        user: Option<String>,
        #[arg(long)]
        default: bool,
    },
    /// Set a user's quota, or everyone's default without --user (operators). Limits not
    /// given keep the value in force.
    Set {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        instances: Option<u64>,
        #[arg(long)]
        pending: Option<u64>,
        #[arg(long)]
        parameter_bytes: Option<u64>,
    },
    /// Remove a user's own quota (the default applies again), or the default set (the
    /// master's own applies) without --user (operators).
    Unset {
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    Manager,
    Customer,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// A certificate for a user, computer or partition, signed by a replica's signing CA.
    /// Without --csr the key is made here and written to --out with the certificate.
    Issue {
        /// user:NAME, computer:ID or partition:COMPUTER/PARTITION
        identity: String,
        /// Sign this request instead (its owner keeps the key).
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Where to write roots.pem, chain.pem (and key.pem).
        #[arg(long)]
        out: PathBuf,
        /// Lifetime in days (default: the role's).
        #[arg(long)]
        days: Option<u32>,
    },
    /// A one-time token with which the user's client gets a certificate of theirs (`slapos
    /// configure client --token`): operators for anyone, a user for themselves.
    Token {
        user: String,
        /// How long it may be used; at most a week.
        #[arg(long, default_value_t = 3600)]
        valid_seconds: u32,
    },
    /// Revoke a certificate by serial: every replica refuses it within a second.
    Revoke {
        serial: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup (every write acknowledged before the call is in it), whole or not at all.
    Save { file: PathBuf },
}

/// The default configuration file: `$XDG_CONFIG_HOME/slapctl/config.toml`, else
/// `~/.config/slapctl/config.toml`.
fn default_config() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("slapctl").join("config.toml"))
}

impl Cli {
    /// Flags over the configuration file.
    pub fn target(&self) -> Result<Target, CtlError> {
        let mut file = match (&self.config, default_config()) {
            (Some(path), _) => ConfigFile::read(path, true)?,
            (None, Some(path)) => ConfigFile::read(&path, false)?,
            (None, None) => ConfigFile::default(),
        };
        if !self.cluster.is_empty() {
            file.cluster = self.cluster.clone();
        }
        if self.tls_dir.is_some() {
            file.tls_dir = self.tls_dir.clone();
        }
        if self.actor.is_some() {
            file.actor = self.actor.clone();
        }
        Target::new(file)
    }
}
