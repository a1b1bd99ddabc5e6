//! `slapctl`: the command line of users and operators, noun then verb, against any replica.
//!
//! - [`Cli`]: the command tree (clap, `cli.rs`); [`run`] carries one command out and returns
//!   its [`Output`], through one handler file per noun: `instance`, `software`, `computer`,
//!   `project`, `quota`, `alert`, `cluster` (members), `cert`, `snapshot`.
//! - [`conn`]: the replicas to try, the caller's certificate, and errors that say what to do.
//! - [`output`]: tables for people, JSON (`--json`) for scripts, from the same values.
//! - [`progress`]: a progress line for long operations, at a terminal only.
//! - [`replica`]: replicas hosted as instances of the slapmaster release (`replica add`).

mod alert;
mod cert;
mod cli;
mod cluster;
mod computer;
pub mod conn;
mod instance;
pub mod output;
pub mod progress;
mod project;
mod quota;
pub mod replica;
mod snapshot;
mod software;

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

use alert::*;
use cert::*;
pub use cli::*;
use cluster::*;
use computer::*;
use instance::*;
use project::*;
use quota::*;
use snapshot::*;
use software::*;

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
        Command::Member(MemberCommand::Leader { id, timeout }) => {
            member_leader(&conn, id, timeout).await
        }
        Command::Member(MemberCommand::Remove { id }) => member_remove(&conn, id).await,
        Command::Replica(command) => replica::run(&conn, command).await,
        Command::Computer(command) => computer(&conn, command).await,
        Command::Project(command) => project(&conn, command).await,
        Command::Quota(command) => quota(&conn, command).await,
        Command::Alert(command) => alert(&conn, command).await,
        Command::Cert(command) => cert(&conn, command).await,
        Command::Snapshot(SnapshotCommand::Save { file }) => {
            snapshot_save(&conn, &file, progress).await
        }
        Command::Completions { .. } => Err(CtlError::Failed("handled above".into())),
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
