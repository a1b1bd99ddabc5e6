//! `slapctl`: the command line of users and operators, noun then verb, against any replica.
//!
//! - [`Cli`]: the commands (clap); [`run`] carries one out and returns its [`Output`].
//! - [`conn`]: the replicas to try, the caller's certificate, and errors that say what to do.
//! - [`output`]: tables for people, JSON (`--json`) for scripts, from the same values.
//! - [`progress`]: a progress line for long operations, at a terminal only.
//! - [`replica`]: replicas hosted as instances of the slapmaster release (`replica add`).

pub mod conn;
pub mod output;
pub mod progress;
pub mod replica;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use slapcluster_api::short_name;
use slapcluster_api::v1 as pb;

pub use conn::{ConfigFile, Conn, CtlError, Target};
pub use output::Output;
use progress::Progress;

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
    /// Usage records of a computer's partitions.
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
    /// Certificates issued by the cluster (operators).
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
    /// A one-time enrollment token for the computer's node (`slapnode enroll --token`).
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
    /// Make an empty data directory the first replica of a new cluster holding a backup
    /// (run it with `slapmaster run --config`, then join others). Local: no cluster needed.
    Restore {
        file: PathBuf,
        /// The new replica's `slapmaster` configuration (id, listen, data_dir, tls_dir, ...).
        #[arg(long)]
        replica_config: PathBuf,
    },
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

/// Carries out `cli`'s command.
pub async fn run(cli: Cli) -> Result<Output, CtlError> {
    let progress = !cli.json;
    if let Command::Completions { shell } = &cli.command {
        let mut script = Vec::new();
        clap_complete::generate(
            *shell,
            &mut <Cli as clap::CommandFactory>::command(),
            "slapctl",
            &mut script,
        );
        return Ok(Output::message(
            String::from_utf8_lossy(&script).trim_end().to_string(),
            (),
        ));
    }
    if let Command::Snapshot(SnapshotCommand::Restore {
        file,
        replica_config,
    }) = &cli.command
    {
        return restore(file, replica_config, progress).await;
    }
    let conn = Conn::open(&cli.target()?).await?;
    match cli.command {
        Command::Request(args) => request(&conn, args).await,
        Command::Instance(InstanceCommand::List) => instance_list(&conn).await,
        Command::Instance(InstanceCommand::Show(which)) => instance_show(&conn, which).await,
        Command::Instance(InstanceCommand::Destroy(which)) => instance_destroy(&conn, which).await,
        Command::Explain(which) => explain(&conn, which).await,
        Command::Supply {
            url,
            computer,
            remove,
        } => supply(&conn, url, computer, remove).await,
        Command::Software(SoftwareCommand::List) => software_list(&conn).await,
        Command::Software(SoftwareCommand::Publish {
            url,
            title,
            software_types,
        }) => software_publish(&conn, url, title, software_types).await,
        Command::Usage {
            computer,
            partition,
        } => usage(&conn, computer, partition).await,
        Command::Cluster(ClusterCommand::Status) => cluster_status(&conn).await,
        Command::Member(MemberCommand::List) => member_list(&conn).await,
        Command::Member(MemberCommand::Add {
            id,
            url,
            region,
            promote,
            timeout,
        }) => {
            member_add(
                &conn,
                id,
                url,
                region,
                promote,
                Duration::from_secs(timeout),
                progress,
            )
            .await
        }
        Command::Member(MemberCommand::Promote { id }) => member_promote(&conn, id).await,
        Command::Member(MemberCommand::Remove { id }) => member_remove(&conn, id).await,
        Command::Replica(command) => replica::run(&conn, command).await,
        Command::Computer(command) => computer(&conn, command).await,
        Command::Project(command) => project(&conn, command).await,
        Command::Quota(command) => quota(&conn, command).await,
        Command::Cert(command) => cert(&conn, command).await,
        Command::Snapshot(SnapshotCommand::Save { file }) => {
            snapshot_save(&conn, &file, progress).await
        }
        Command::Snapshot(SnapshotCommand::Restore { .. }) | Command::Completions { .. } => {
            Err(CtlError::Failed("handled above".into()))
        }
    }
}

/// Microseconds since the epoch, as `N s ago` (or `-` for 0).
fn ago(micros: u64) -> Option<String> {
    if micros == 0 {
        return None;
    }
    let at = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
    Some(match SystemTime::now().duration_since(at) {
        Ok(d) if d.as_secs() < 120 => format!("{} s ago", d.as_secs()),
        Ok(d) if d.as_secs() < 7200 => format!("{} min ago", d.as_secs() / 60),
        Ok(d) => format!("{} h ago", d.as_secs() / 3600),
        Err(_) => "just now".into(),
    })
}

fn placement_text(placement: Option<&pb::Placement>) -> String {
    match placement.and_then(|p| p.placement.as_ref()) {
        Some(pb::placement::Placement::Partition(p)) => format!("{}/{}", p.computer, p.partition),
        Some(pb::placement::Placement::HostedBy(host)) => format!("hosted by {host}"),
        Some(pb::placement::Placement::Pending(reason)) => format!("pending: {reason}"),
        Some(pb::placement::Placement::Unplaceable(reason)) => format!("unplaceable: {reason}"),
        None => "unknown".into(),
    }
}

#[derive(Debug, Serialize)]
struct InstanceRow {
    title: String,
    guid: String,
    software_release: String,
    software_type: String,
    requested_state: String,
    reported_state: String,
    placement: String,
    shared: bool,
    parameters: BTreeMap<String, String>,
    connection: BTreeMap<String, String>,
    last_error: String,
}

impl From<&pb::Instance> for InstanceRow {
    fn from(i: &pb::Instance) -> Self {
        Self {
            title: i.title.clone(),
            guid: i.guid.clone(),
            software_release: i.software_release.clone(),
            software_type: i.software_type.clone(),
            requested_state: short_name(i.requested_state().as_str_name()),
            reported_state: match i.reported_state() {
                pb::ReportedState::Unspecified => String::new(),
                s => short_name(s.as_str_name()),
            },
            placement: placement_text(i.placement.as_ref()),
            shared: i.shared,
            parameters: i.parameters.clone().into_iter().collect(),
            connection: i.connection.clone().into_iter().collect(),
            last_error: i.last_error.clone(),
        }
    }
}

async fn request(conn: &Conn, args: RequestArgs) -> Result<Output, CtlError> {
    let mut message = pb::RequestInstanceRequest {
        title: args.title,
        software_release: args.software,
        software_type: args.software_type.unwrap_or_default(),
        parameters: args.parameters.into_iter().collect(),
        sla: args.sla.into_iter().collect(),
        shared: args.shared,
        project: args.project.unwrap_or_default(),
        ..Default::default()
    };
    message.set_state(match args.state {
        State::Started => pb::RequestedState::Started,
        State::Stopped => pb::RequestedState::Stopped,
        State::Destroyed => pb::RequestedState::Destroyed,
    });
    let reply = conn
        .answer(conn.user().request_instance(conn.request(message)?))
        .await?;
    #[derive(Serialize)]
    struct Requested {
        title: String,
        guid: String,
        requested_state: String,
        placement: String,
        changed: bool,
        index: u64,
    }
    let out = Requested {
        title: reply.title.clone(),
        guid: reply.guid.clone(),
        requested_state: short_name(reply.requested_state().as_str_name()),
        placement: placement_text(reply.placement.as_ref()),
        changed: reply.changed,
        index: reply.index,
    };
    let verb = if reply.changed {
        "requested"
    } else {
        "unchanged"
    };
    let hint = if out.placement.starts_with("pending") {
        format!("\n`slapctl explain {}` says what it waits for", out.title)
    } else {
        String::new()
    };
    Ok(Output::message(
        format!(
            "{verb} {} ({}): {}{hint}",
            out.title, out.guid, out.placement
        ),
        out,
    ))
}

async fn instance_list(conn: &Conn) -> Result<Output, CtlError> {
    let reply = conn
        .answer(
            conn.user()
                .list_instances(conn.request(pb::ListInstancesRequest::default())?),
        )
        .await?;
    let rows: Vec<InstanceRow> = reply.instances.iter().map(InstanceRow::from).collect();
    Ok(Output::table(
        &[
            "title",
            "guid",
            "requested_state",
            "reported_state",
            "placement",
        ],
        &rows,
    ))
}

fn show_request(which: InstanceRef) -> pb::ShowInstanceRequest {
    pb::ShowInstanceRequest {
        instance: Some(match (which.guid, which.title) {
            (Some(guid), _) => pb::show_instance_request::Instance::Guid(guid),
            (None, title) => pb::show_instance_request::Instance::Title(title.unwrap_or_default()),
        }),
        ..Default::default()
    }
}

async fn show(conn: &Conn, which: InstanceRef) -> Result<pb::ShowInstanceReply, CtlError> {
    conn.answer(
        conn.user()
            .show_instance(conn.request(show_request(which))?),
    )
    .await
}

async fn instance_show(conn: &Conn, which: InstanceRef) -> Result<Output, CtlError> {
    let reply = show(conn, which).await?;
    let instance = reply
        .instance
        .as_ref()
        .ok_or_else(|| CtlError::Failed("the replica answered no instance".into()))?;
    let row = InstanceRow::from(instance);
    let shared: Vec<String> = reply
        .shared_instances
        .iter()
        .map(|s| format!("{} ({})", s.title, s.guid))
        .collect();
    let mut out = Output::record(
        &[
            "title",
            "guid",
            "software_release",
            "software_type",
            "requested_state",
            "reported_state",
            "placement",
            "shared",
            "parameters",
            "connection",
            "last_error",
        ],
        &row,
    );
    if !shared.is_empty() {
        out = out.then(&format!("hosts: {}", shared.join(", ")));
    }
    Ok(out)
}

async fn explain(conn: &Conn, which: InstanceRef) -> Result<Output, CtlError> {
    let reply = show(conn, which).await?;
    let title = reply
        .instance
        .as_ref()
        .map(|i| i.title.clone())
        .unwrap_or_default();
    #[derive(Serialize)]
    struct Explained {
        title: String,
        placement: String,
        explanation: String,
    }
    let out = Explained {
        placement: placement_text(reply.instance.as_ref().and_then(|i| i.placement.as_ref())),
        explanation: reply.explanation,
        title,
    };
    Ok(Output::message(
        format!("{}: {}", out.title, out.explanation),
        out,
    ))
}

async fn instance_destroy(conn: &Conn, which: InstanceRef) -> Result<Output, CtlError> {
    let instance = show(conn, which)
        .await?
        .instance
        .ok_or_else(|| CtlError::Failed("the replica answered no instance".into()))?;
    let reply = conn
        .answer(
            conn.user()
                .destroy_instance(conn.request(pb::DestroyInstanceRequest {
                    guid: instance.guid.clone(),
                })?),
        )
        .await?;
    Ok(Output::message(
        format!(
            "{} ({}) {}: its node stops it, then the partition is freed",
            instance.title,
            instance.guid,
            if reply.changed {
                "destroyed"
            } else {
                "was already being destroyed"
            }
        ),
        serde_json::json!({"guid": instance.guid, "changed": reply.changed, "index": reply.index}),
    ))
}

async fn supply(
    conn: &Conn,
    url: String,
    computer: String,
    remove: bool,
) -> Result<Output, CtlError> {
    let mut message = pb::SupplyRequest {
        computer: computer.clone(),
        url: url.clone(),
        ..Default::default()
    };
    message.set_state(if remove {
        pb::SupplyState::Destroyed
    } else {
        pb::SupplyState::Available
    });
    let reply = conn
        .answer(conn.user().supply(conn.request(message)?))
        .await?;
    let verb = if remove { "to remove" } else { "to install" };
    Ok(Output::message(
        format!(
            "{computer} asked {verb} {url}; {} pending request(s) placed",
            reply.placed
        ),
        serde_json::json!({"computer": computer, "url": url, "remove": remove, "placed": reply.placed, "index": reply.index}),
    ))
}

async fn software_list(conn: &Conn) -> Result<Output, CtlError> {
    let reply = conn
        .answer(
            conn.user()
                .list_software_releases(conn.request(pb::ListSoftwareReleasesRequest::default())?),
        )
        .await?;
    #[derive(Serialize)]
    struct Row {
        url: String,
        title: String,
        software_types: String,
    }
    let rows: Vec<Row> = reply
        .software_releases
        .into_iter()
        .map(|s| Row {
            url: s.url,
            title: s.title,
            software_types: s.software_types.join(","),
        })
        .collect();
    Ok(Output::table(&["url", "title", "software_types"], &rows))
}

async fn software_publish(
    conn: &Conn,
    url: String,
    title: String,
    software_types: Vec<String>,
) -> Result<Output, CtlError> {
    let reply = conn
        .answer(conn.user().publish_software_release(conn.request(
            pb::PublishSoftwareReleaseRequest {
                url: url.clone(),
                title,
                software_types,
            },
        )?))
        .await?;
    Ok(Output::message(
        format!("{url} is in the catalog"),
        serde_json::json!({"url": url, "changed": reply.changed, "index": reply.index}),
    ))
}

async fn usage(
    conn: &Conn,
    computer: String,
    partition: Option<String>,
) -> Result<Output, CtlError> {
    let reply = conn
        .answer(conn.user().usage(conn.request(pb::UsageRequest {
            computer,
            partition: partition.unwrap_or_default(),
            ..Default::default()
        })?))
        .await?;
    #[derive(Serialize)]
    struct Row {
        partition: String,
        period_start: u64,
        period_end: u64,
        usage: BTreeMap<String, f64>,
    }
    let rows: Vec<Row> = reply
        .records
        .into_iter()
        .map(|r| Row {
            partition: r.partition,
            period_start: r.period_start,
            period_end: r.period_end,
            usage: r
                .movements
                .into_iter()
                .map(|m| (m.resource, m.quantity))
                .collect(),
        })
        .collect();
    Ok(Output::table(
        &["partition", "period_start", "period_end", "usage"],
        &rows,
    ))
}

#[derive(Debug, Serialize)]
struct MemberRow {
    id: u64,
    role: String,
    voter: bool,
    region: String,
    addr: String,
    applied_index: Option<u64>,
    lag: Option<u64>,
    leader_contact_ms: Option<u64>,
    unreachable: String,
}

async fn status(conn: &Conn) -> Result<pb::ClusterStatusReply, CtlError> {
    conn.answer(
        conn.admin()
            .cluster_status(conn.request(pb::ClusterStatusRequest {})?),
    )
    .await
}

fn member_rows(status: &pb::ClusterStatusReply) -> Vec<MemberRow> {
    status
        .members
        .iter()
        .map(|m| MemberRow {
            id: m.id,
            role: match m.role() {
                pb::Role::Unspecified => "unknown".into(),
                r => short_name(r.as_str_name()),
            },
            voter: m.voter,
            region: m.region.clone(),
            addr: m.addr.clone(),
            applied_index: m.applied_index,
            lag: m.lag,
            leader_contact_ms: m.leader_contact_age_ms,
            unreachable: m.unreachable.clone(),
        })
        .collect()
}

const MEMBER_COLUMNS: [&str; 8] = [
    "id",
    "role",
    "region",
    "addr",
    "applied_index",
    "lag",
    "leader_contact_ms",
    "unreachable",
];

async fn cluster_status(conn: &Conn) -> Result<Output, CtlError> {
    let status = status(conn).await?;
    let rows = member_rows(&status);
    let leader = match status.leader {
        0 => "no leader known".to_string(),
        id => format!("leader {id}"),
    };
    let reachable = rows.iter().filter(|r| r.unreachable.is_empty()).count();
    let table = Output::table(&MEMBER_COLUMNS, &rows);
    Ok(Output {
        json: serde_json::json!({
            "answered_by": status.id,
            "term": status.term,
            "leader": status.leader,
            "members": table.json,
        }),
        text: format!(
            "term {}, {leader}, {reachable} of {} members answered (asked {})\n\n{}",
            status.term,
            rows.len(),
            conn.url,
            table.text
        ),
    })
}

async fn member_list(conn: &Conn) -> Result<Output, CtlError> {
    Ok(Output::table(
        &MEMBER_COLUMNS,
        &member_rows(&status(conn).await?),
    ))
}

async fn member_add(
    conn: &Conn,
    id: u64,
    url: String,
    region: String,
    promote: bool,
    timeout: Duration,
    progress: bool,
) -> Result<Output, CtlError> {
    let added = while_changing(|| async {
        conn.admin()
            .add_member(conn.request(pb::AddMemberRequest {
                id,
                addr: url.clone(),
                region: region.clone(),
                wait_ms: 0,
                promote: false,
            })?)
            .await
            .map_err(Changing::Status)
    })
    .await;
    match added {
        Ok(_) => {}
        // Added, and catching up: the wait below shows how far it is.
        Err(Changing::Status(e)) if e.code() == tonic::Code::DeadlineExceeded => {}
        Err(e) => return Err(e.into_ctl(conn)),
    }
    let mut bar = Progress::new(format!("replica {id} catching up"), progress);
    let deadline = Instant::now() + timeout;
    let caught_up = loop {
        let status = status(conn).await?;
        let member = status.members.iter().find(|m| m.id == id);
        match member.and_then(|m| m.lag) {
            Some(0) => break true,
            Some(lag) => bar.update(lag, None, "entries behind"),
            None => bar.update(0, None, "entries (not answering yet)"),
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish();
    if !caught_up {
        return Err(CtlError::Unavailable(format!(
            "replica {id} was added as a learner but has not caught up after {}s; it keeps \
             going: watch `slapctl member list`, then `slapctl member promote {id}`",
            timeout.as_secs()
        )));
    }
    if promote {
        promote_with_retry(conn, id).await?;
    }
    Ok(Output::message(
        format!(
            "replica {id} ({url}) added{}",
            if promote {
                " and promoted to voter"
            } else {
                " as a learner, caught up"
            }
        ),
        serde_json::json!({"id": id, "addr": url, "voter": promote}),
    ))
}

/// What a membership change failed with: the replica's status, or the request not built.
enum Changing {
    Status(tonic::Status),
    Request(CtlError),
}

impl From<CtlError> for Changing {
    fn from(e: CtlError) -> Self {
        Self::Request(e)
    }
}

impl Changing {
    fn into_ctl(self, conn: &Conn) -> CtlError {
        match self {
            Self::Status(e) => conn.failed(e),
            Self::Request(e) => e,
        }
    }
}

/// Runs a membership change, asking again for up to 30 s while the cluster answers
/// `Unavailable`: another change (a join's, the previous step of this one) is still being
/// committed, or a leader is being elected. Returns the last answer.
async fn while_changing<T, F, Fut>(mut attempt: F) -> Result<T, Changing>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Changing>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match attempt().await {
            Err(Changing::Status(e))
                if e.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

async fn promote_with_retry(conn: &Conn, id: u64) -> Result<u64, CtlError> {
    while_changing(|| async {
        conn.admin()
            .promote_member(conn.request(pb::PromoteMemberRequest { id })?)
            .await
            .map(|reply| reply.into_inner().index)
            .map_err(Changing::Status)
    })
    .await
    .map_err(|e| e.into_ctl(conn))
}

async fn member_promote(conn: &Conn, id: u64) -> Result<Output, CtlError> {
    let index = promote_with_retry(conn, id).await?;
    Ok(Output::message(
        format!("replica {id} is a voter (membership change at index {index})"),
        serde_json::json!({"id": id, "index": index}),
    ))
}

async fn member_remove(conn: &Conn, id: u64) -> Result<Output, CtlError> {
    // An attempt the cluster did not answer may have removed the replica all the same: then
    // the next one finds it gone, which is what was asked.
    let mut unanswered = false;
    let removed = while_changing(|| {
        let first = !unanswered;
        unanswered = true;
        async move {
            match conn
                .admin()
                .remove_member(conn.request(pb::RemoveMemberRequest { id })?)
                .await
            {
                Ok(reply) => Ok(Some(reply.into_inner().index)),
                Err(e)
                    if !first
                        && e.code() == tonic::Code::FailedPrecondition
                        && e.message().contains("is not a member") =>
                {
                    Ok(None)
                }
                Err(e) => Err(Changing::Status(e)),
            }
        }
    })
    .await
    .map_err(|e| e.into_ctl(conn))?;
    let at = removed.map_or_else(String::new, |index| {
        format!(" (membership change at index {index})")
    });
    Ok(Output::message(
        format!("replica {id} removed{at}; stop its process now"),
        serde_json::json!({"id": id, "index": removed}),
    ))
}

#[derive(Debug, Serialize)]
struct ComputerRow {
    id: String,
    region: String,
    allocation: String,
    project: String,
    partitions: u32,
    busy: u32,
    last_seen: Option<String>,
    attributes: BTreeMap<String, String>,
}

impl From<&pb::ComputerSummary> for ComputerRow {
    fn from(c: &pb::ComputerSummary) -> Self {
        Self {
            id: c.id.clone(),
            region: c.attributes.get("region").cloned().unwrap_or_default(),
            allocation: c.scope.clone(),
            project: c.project.clone(),
            partitions: c.partitions,
            busy: c.busy,
            last_seen: ago(c.last_seen),
            attributes: c.attributes.clone().into_iter().collect(),
        }
    }
}

async fn computer(conn: &Conn, command: ComputerCommand) -> Result<Output, CtlError> {
    let mut admin = conn.admin();
    match command {
        ComputerCommand::List => {
            let reply = conn
                .answer(admin.list_computers(conn.request(pb::ListComputersRequest::default())?))
                .await?;
            let rows: Vec<ComputerRow> = reply.computers.iter().map(ComputerRow::from).collect();
            Ok(Output::table(
                &[
                    "id",
                    "region",
                    "allocation",
                    "busy",
                    "partitions",
                    "last_seen",
                ],
                &rows,
            ))
        }
        ComputerCommand::Show { computer } => {
            let reply = conn
                .answer(admin.show_computer(conn.request(pb::ShowComputerRequest {
                    computer,
                    ..Default::default()
                })?))
                .await?;
            let summary = reply.computer.unwrap_or_default();
            #[derive(Serialize)]
            struct PartitionRow {
                partition: String,
                addresses: String,
                tap: String,
                instance: String,
                guid: String,
                owner: String,
                requested_state: String,
            }
            let partitions: Vec<PartitionRow> = reply
                .partitions
                .iter()
                .map(|p| PartitionRow {
                    partition: p.reference.clone(),
                    addresses: p.addresses.join(" "),
                    tap: p.tap.clone(),
                    instance: p.instance_title.clone(),
                    guid: p.instance_guid.clone(),
                    owner: p.owner.clone(),
                    requested_state: if p.instance_guid.is_empty() {
                        String::new()
                    } else {
                        short_name(p.requested_state().as_str_name())
                    },
                })
                .collect();
            #[derive(Serialize)]
            struct SoftwareRow {
                url: String,
                requested: String,
                reported: String,
            }
            let software: Vec<SoftwareRow> = reply
                .software
                .iter()
                .map(|s| SoftwareRow {
                    url: s.url.clone(),
                    requested: short_name(s.requested().as_str_name()),
                    reported: match s.reported() {
                        pb::SoftwareState::Unspecified => "not reported yet".into(),
                        state => short_name(state.as_str_name()),
                    },
                })
                .collect();
            let head = Output::record(
                &[
                    "id",
                    "region",
                    "allocation",
                    "busy",
                    "partitions",
                    "last_seen",
                ],
                &ComputerRow::from(&summary),
            );
            let partition_table = Output::table(
                &[
                    "partition",
                    "addresses",
                    "tap",
                    "instance",
                    "owner",
                    "requested_state",
                ],
                &partitions,
            );
            let software_table = Output::table(&["url", "requested", "reported"], &software);
            Ok(Output {
                json: serde_json::json!({
                    "computer": head.json,
                    "partitions": partition_table.json,
                    "software": software_table.json,
                }),
                text: format!(
                    "{}\n\n{}\n\n{}",
                    head.text, partition_table.text, software_table.text
                ),
            })
        }
        ComputerCommand::Close { computer } => {
            scope(conn, computer, "close/noallocation".into()).await
        }
        ComputerCommand::Open { computer } => scope(conn, computer, "open/public".into()).await,
        ComputerCommand::Scope { computer, scope: s } => scope(conn, computer, s).await,
        ComputerCommand::Move { computer, project } => {
            let reply = conn
                .answer(admin.move_computer(conn.request(pb::MoveComputerRequest {
                    computer: computer.clone(),
                    project: project.clone(),
                })?))
                .await?;
            let text = if reply.changed {
                format!("{computer} now belongs to project {project}")
            } else {
                format!("{computer} already belonged to project {project}")
            };
            Ok(Output::message(
                text,
                serde_json::json!({"computer": computer, "project": project, "changed": reply.changed, "index": reply.index}),
            ))
        }
        ComputerCommand::Token {
            computer,
            valid_seconds,
        } => {
            let token = conn
                .answer(admin.create_enrollment_token(conn.request(
                    pb::CreateEnrollmentTokenRequest {
                        computer: computer.clone(),
                        valid_seconds,
                    },
                )?))
                .await?;
            Ok(Output::message(
                format!(
                    "{}\n(one use, for {computer}'s node: slapnode enroll --token TOKEN --roots \
                     root.pem; expires in {} s)",
                    token.token, valid_seconds
                ),
                serde_json::json!({"computer": computer, "token": token.token, "expires_at": token.expires_at}),
            ))
        }
    }
}

async fn scope(conn: &Conn, computer: String, scope: String) -> Result<Output, CtlError> {
    let reply =
        conn.answer(conn.admin().set_allocation_scope(conn.request(
            pb::SetAllocationScopeRequest {
                computer: computer.clone(),
                scope: scope.clone(),
                ..Default::default()
            },
        )?))
        .await?;
    let open = scope.starts_with("open/");
    let text = match (reply.changed, open) {
        (false, _) => format!("{computer} was already {scope}"),
        (true, true) => format!(
            "{computer} is {scope}; {} pending request(s) placed there",
            reply.placed
        ),
        (true, false) => {
            format!("{computer} is {scope}: no new instances go there; running ones stay")
        }
    };
    Ok(Output::message(
        text,
        serde_json::json!({"computer": computer, "scope": scope, "open": open, "changed": reply.changed, "placed": reply.placed}),
    ))
}

async fn project(conn: &Conn, command: ProjectCommand) -> Result<Output, CtlError> {
    let mut admin = conn.admin();
    let member = |project: String, user: String, role: &str| pb::SetProjectMemberRequest {
        project,
        user,
        role: role.to_string(),
    };
    match command {
        ProjectCommand::List => {
            let reply = conn
                .answer(admin.list_projects(conn.request(pb::ListProjectsRequest::default())?))
                .await?;
            #[derive(Serialize)]
            struct Row {
                project: String,
                title: String,
                role: String,
            }
            let rows: Vec<Row> = reply
                .projects
                .into_iter()
                .map(|p| Row {
                    project: p.project,
                    title: p.title,
                    role: p.role,
                })
                .collect();
            Ok(Output::table(&["project", "title", "role"], &rows))
        }
        ProjectCommand::Show { project } => {
            let reply = conn
                .answer(admin.show_project(conn.request(pb::ShowProjectRequest {
                    project,
                    ..Default::default()
                })?))
                .await?;
            #[derive(Serialize)]
            struct Row {
                user: String,
                role: String,
            }
            let mut rows: Vec<Row> = reply
                .members
                .iter()
                .map(|m| Row {
                    user: m.user.clone(),
                    role: m.role.clone(),
                })
                .collect();
            if !reply.everyone.is_empty() {
                rows.push(Row {
                    user: "(everyone)".into(),
                    role: reply.everyone.clone(),
                });
            }
            let members = Output::table(&["user", "role"], &rows);
            Ok(Output {
                text: format!(
                    "{}: {}

{}",
                    reply.project, reply.title, members.text
                ),
                json: serde_json::json!({
                    "project": reply.project,
                    "title": reply.title,
                    "everyone": reply.everyone,
                    "members": members.json,
                }),
            })
        }
        ProjectCommand::Create { project, title } => {
            let reply = conn
                .answer(admin.create_project(conn.request(pb::CreateProjectRequest {
                    project: project.clone(),
                    title,
                })?))
                .await?;
            let text = if reply.changed {
                format!("project {project} created")
            } else {
                format!("project {project} already existed")
            };
            Ok(Output::message(
                text,
                serde_json::json!({"project": project, "changed": reply.changed, "index": reply.index}),
            ))
        }
        ProjectCommand::Add {
            project,
            user,
            role,
        } => {
            let role = match role {
                Role::Manager => "manager",
                Role::Customer => "customer",
            };
            let reply = conn
                .answer(admin.set_project_member(conn.request(member(
                    project.clone(),
                    user.clone(),
                    role,
                ))?))
                .await?;
            Ok(Output::message(
                format!("{user} is {role} of project {project}"),
                serde_json::json!({"project": project, "user": user, "role": role, "changed": reply.changed}),
            ))
        }
        ProjectCommand::Remove { project, user } => {
            let reply = conn
                .answer(admin.set_project_member(conn.request(member(
                    project.clone(),
                    user.clone(),
                    "",
                ))?))
                .await?;
            Ok(Output::message(
                format!("{user} has no role in project {project}"),
                serde_json::json!({"project": project, "user": user, "changed": reply.changed}),
            ))
        }
    }
}

async fn quota(conn: &Conn, command: QuotaCommand) -> Result<Output, CtlError> {
    let mut admin = conn.admin();
    let whose = |user: &Option<String>| {
        user.clone()
            .unwrap_or_else(|| "everyone (the default)".to_string())
    };
    match command {
        QuotaCommand::Show { user, default } => {
            let reply = conn
                .answer(admin.show_quota(conn.request(pb::ShowQuotaRequest {
                    user: user.unwrap_or_default(),
                    default,
                    ..Default::default()
                })?))
                .await?;
            let (quota, held) = (
                reply.quota.unwrap_or_default(),
                reply.held.unwrap_or_default(),
            );
            let (name, source) = match (reply.user.as_str(), reply.own) {
                ("", true) => ("everyone", "the default set by an operator"),
                ("", false) => ("everyone", "the master's default"),
                (user, true) => (user, "set for them"),
                (user, false) => (user, "the default"),
            };
            Ok(Output {
                text: format!(
                    "{name} ({source}):\n  instances        {} of {}\n  waiting          {} of {}\n  parameter bytes  {} of {}",
                    held.instances,
                    quota.instances,
                    held.pending,
                    quota.pending,
                    held.parameter_bytes,
                    quota.parameter_bytes,
                ),
                json: serde_json::json!({
                    "user": reply.user,
                    "own": reply.own,
                    "quota": {"instances": quota.instances, "pending": quota.pending, "parameter_bytes": quota.parameter_bytes},
                    "held": {"instances": held.instances, "pending": held.pending, "parameter_bytes": held.parameter_bytes},
                }),
            })
        }
        QuotaCommand::Set {
            user,
            instances,
            pending,
            parameter_bytes,
        } => {
            // Limits not given keep the value in force for that user (or the default's).
            let current = conn
                .answer(admin.show_quota(conn.request(pb::ShowQuotaRequest {
                    user: user.clone().unwrap_or_default(),
                    default: user.is_none(),
                    ..Default::default()
                })?))
                .await?
                .quota
                .unwrap_or_default();
            let quota = pb::Quota {
                instances: instances.unwrap_or(current.instances),
                pending: pending.unwrap_or(current.pending),
                parameter_bytes: parameter_bytes.unwrap_or(current.parameter_bytes),
            };
            let reply = conn
                .answer(admin.set_quota(conn.request(pb::SetQuotaRequest {
                    user: user.clone().unwrap_or_default(),
                    quota: Some(quota),
                })?))
                .await?;
            Ok(Output::message(
                format!(
                    "quota of {}: {} instances, {} waiting, {} parameter bytes",
                    whose(&user),
                    quota.instances,
                    quota.pending,
                    quota.parameter_bytes
                ),
                serde_json::json!({"user": user, "changed": reply.changed, "index": reply.index}),
            ))
        }
        QuotaCommand::Unset { user } => {
            let reply = conn
                .answer(admin.set_quota(conn.request(pb::SetQuotaRequest {
                    user: user.clone().unwrap_or_default(),
                    quota: None,
                })?))
                .await?;
            Ok(Output::message(
                format!("quota of {} unset", whose(&user)),
                serde_json::json!({"user": user, "changed": reply.changed, "index": reply.index}),
            ))
        }
    }
}

async fn cert(conn: &Conn, command: CertCommand) -> Result<Output, CtlError> {
    let mut admin = conn.admin();
    match command {
        CertCommand::Issue {
            identity,
            csr,
            out,
            days,
        } => {
            let (key_pem, csr_pem) = match &csr {
                Some(path) => (
                    None,
                    std::fs::read_to_string(path)
                        .map_err(CtlError::io(format!("reading {}", path.display())))?,
                ),
                None => {
                    let made = ca::new_key_and_request()
                        .map_err(|e| CtlError::Failed(format!("making a key: {e}")))?;
                    (Some(made.key_pem), made.csr_pem)
                }
            };
            let reply = conn
                .answer(
                    admin.issue_certificate(conn.request(pb::IssueCertificateRequest {
                        identity: identity.clone(),
                        csr_pem,
                        days: days.unwrap_or(0),
                    })?),
                )
                .await?;
            match key_pem {
                Some(key_pem) => slapcluster_api::client::Credentials {
                    roots_pem: vec![reply.roots_pem.clone()],
                    chain_pem: reply.chain_pem.clone(),
                    key_pem,
                }
                .write_dir(&out)
                .map_err(CtlError::io(format!("writing {}", out.display())))?,
                None => {
                    std::fs::create_dir_all(&out)
                        .map_err(CtlError::io(format!("creating {}", out.display())))?;
                    std::fs::write(out.join("chain.pem"), &reply.chain_pem)
                        .map_err(CtlError::io("writing chain.pem"))?;
                    std::fs::write(out.join("roots.pem"), &reply.roots_pem)
                        .map_err(CtlError::io("writing roots.pem"))?;
                }
            }
            Ok(Output::message(
                format!(
                    "certificate {} for {identity} in {}{}",
                    reply.serial,
                    out.display(),
                    if csr.is_some() {
                        " (the key stays with the request's owner)"
                    } else {
                        " (key.pem readable by you only)"
                    }
                ),
                serde_json::json!({"identity": identity, "serial": reply.serial, "not_after": reply.not_after, "dir": out}),
            ))
        }
        CertCommand::Revoke { serial, reason } => {
            let reply = conn
                .answer(
                    admin.revoke_certificate(conn.request(pb::RevokeCertificateRequest {
                        serial: serial.clone(),
                        reason,
                    })?),
                )
                .await?;
            Ok(Output::message(
                format!(
                    "certificate {serial} {}: every replica refuses it within a second",
                    if reply.changed {
                        "revoked"
                    } else {
                        "was already revoked"
                    }
                ),
                serde_json::json!({"serial": serial, "changed": reply.changed, "index": reply.index}),
            ))
        }
        CertCommand::List => {
            let reply = conn
                .answer(admin.list_certificates(conn.request(pb::ListCertificatesRequest {})?))
                .await?;
            #[derive(Serialize)]
            struct Row {
                serial: String,
                identity: String,
                expires: String,
                issued_by: String,
                revoked: bool,
                reason: String,
            }
            let rows: Vec<Row> = reply
                .certificates
                .into_iter()
                .map(|c| Row {
                    serial: c.serial,
                    identity: c.identity,
                    expires: expires(c.not_after),
                    issued_by: c.issued_by,
                    revoked: c.revoked,
                    reason: c.revocation_reason,
                })
                .collect();
            Ok(Output::table(
                &[
                    "serial",
                    "identity",
                    "expires",
                    "issued_by",
                    "revoked",
                    "reason",
                ],
                &rows,
            ))
        }
    }
}

/// `in N days` / `expired`, from microseconds since the epoch.
fn expires(micros: u64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
    match at.duration_since(SystemTime::now()) {
        Ok(left) => format!("in {} days", left.as_secs() / 86_400),
        Err(_) => "expired".into(),
    }
}

async fn snapshot_save(
    conn: &Conn,
    file: &std::path::Path,
    progress: bool,
) -> Result<Output, CtlError> {
    use std::io::Write;
    let mut chunks = conn
        .answer(conn.admin().snapshot(conn.request(pb::SnapshotRequest {})?))
        .await?;
    // Written beside the target, synced, then renamed: the file is whole or absent.
    let partial = file.with_extension("partial");
    let mut out = std::fs::File::create(&partial)
        .map_err(CtlError::io(format!("creating {}", partial.display())))?;
    let mut bar = Progress::new(format!("saving {}", file.display()), progress);
    let mut bytes = 0u64;
    let streamed: Result<(), CtlError> = async {
        while let Some(chunk) = chunks.message().await.map_err(|e| conn.failed(e))? {
            out.write_all(&chunk.data)
                .map_err(CtlError::io(format!("writing {}", partial.display())))?;
            bytes += u64::try_from(chunk.data.len()).unwrap_or(u64::MAX);
            bar.update(bytes, None, "bytes");
        }
        out.sync_all()
            .map_err(CtlError::io(format!("syncing {}", partial.display())))
    }
    .await;
    bar.finish();
    if let Err(e) = streamed {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, file)
        .map_err(CtlError::io(format!("renaming to {}", file.display())))?;
    Ok(Output::message(
        format!(
            "saved {bytes} bytes to {} (from {}); restore it with `slapctl snapshot restore`",
            file.display(),
            conn.url
        ),
        serde_json::json!({"file": file, "bytes": bytes}),
    ))
}

async fn restore(
    file: &std::path::Path,
    replica_config: &std::path::Path,
    progress: bool,
) -> Result<Output, CtlError> {
    use master_cluster::daemon::{FileConfig, Overrides};
    let config = FileConfig::load(Some(replica_config))
        .and_then(|c| c.validate(Overrides::default()))
        .map_err(|e| CtlError::Config(e.to_string()))?;
    let data_dir = config.replica.data_dir.clone();
    let bar = std::sync::Arc::new(std::sync::Mutex::new(Progress::new(
        format!("restoring {}", file.display()),
        progress,
    )));
    let drawing = bar.clone();
    master_cluster::daemon::restore_reporting(config, file, move |done, total| {
        drawing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(done, Some(total), "bytes");
    })
    .await
    .map_err(|e| CtlError::Refused(e.to_string()))?;
    bar.lock().unwrap_or_else(|p| p.into_inner()).finish();
    Ok(Output::message(
        format!(
            "restored {} into {}: start it with `slapmaster run --config {}`, then join others",
            file.display(),
            data_dir.display(),
            replica_config.display()
        ),
        serde_json::json!({"file": file, "data_dir": data_dir}),
    ))
}
