//! The real SlapOS client, `slapos.core` 1.26.1 (installed by `.ci/slapos-client`), against a
//! three-replica cluster of `slapmaster` processes, through a follower's SLAP listener over
//! HTTPS with client certificates: a node (`slapos node register|format|software|instance|
//! report`, with the computer's certificate, which `register` obtained for an operator's
//! one-time token) and a user (`slapos supply|request|remove`, with theirs, which `slapos
//! configure client` obtained for theirs).
//! No command of the client, whatever it answers, ends in a traceback (checked on every
//! run). The scenario runs twice: with the node's commands run as root, as most sites do, and as a
//! dedicated unprivileged user that owns every partition (`slapos node format` still runs as
//! root: it creates the users), as some sites do. That user cannot rewrite a partition's 0400
//! certificate file: the node must be given the same certificate on every run.
//!
//! The test runs again inside fresh network and mount namespaces (`namespaced`): the users
//! `slapos node format` creates live in a private copy of /etc, and nothing the client tries
//! to reach beyond loopback (format asks public services for its IPv4 address) leaves the
//! machine. Buildout is replaced by `tests/slap/buildout.py`, which does what a release's
//! buildout would through the real `slapos.slap` library.
//!
//! Over 800 lines on purpose: one scenario, in the order a site lives it (register, format,
//! supply, request, read, shrink, stop, destroy, remove), each step asserted before the next relies on it.

use test_kit::namespaced;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use test_kit::cluster::Cluster;

const MARKER: &str = "SLAPCLUSTER_SLAP_CLIENT_CHILD";
const COMPUTER: &str = "COMP-SLAP-1";
const PARTITIONS: usize = 6;

/// The virtual environment with the real client, if the project's setup installed it.
fn venv() -> Option<PathBuf> {
    let venv = std::env::var_os("SLAPOS_VENV").map_or_else(
        || PathBuf::from("/opt/slapcluster/slapos-venv"),
        PathBuf::from,
    );
    venv.join("bin/slapos").exists().then_some(venv)
}

#[test]
fn a_slapos_node_and_user_run_an_instance_tree_through_a_follower() {
    if std::env::var_os(MARKER).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            scenario(NodeUser::Root).await;
            scenario(NodeUser::Dedicated).await;
        });
        return;
    }
    let Some(venv) = venv() else {
        test_kit::skip!("no SlapOS client (./.ci/setup installs it, as root)");
        return;
    };
    if !test_kit::is_root() {
        test_kit::skip!("slapos node format creates users: needs root");
        return;
    }
    let (passed, log) = namespaced::rerun(
        "a_slapos_node_and_user_run_an_instance_tree_through_a_follower",
        MARKER,
        venv.as_os_str(),
    )
    .expect("the namespaced run starts");
    println!("{log}");
    assert!(passed, "the scenario failed (its output is above)");
}

/// Who runs `slapos node software|instance|report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeUser {
    Root,
    /// `sctnode`, which owns every partition and the software root.
    Dedicated,
}

const DEDICATED: &str = "sctnode";

/// Files and commands of the node and the user.
struct Site {
    venv: PathBuf,
    dir: PathBuf,
    release: String,
    /// The node's uid and gid when it is not root.
    node_ids: Option<(u32, u32)>,
}

impl Site {
    fn node_cfg(&self) -> PathBuf {
        self.dir.join("slapos.cfg")
    }

    /// Where `slapos configure client` writes (the client's default, under the test's HOME).
    fn client_cfg(&self) -> PathBuf {
        self.dir.join("home/.slapos/slapos-client.cfg")
    }

    /// Runs `slapos ARGS` (as the node's user for a node command); returns whether it
    /// succeeded and what it printed.
    fn slapos(&self, args: &[&str], as_node: bool) -> (bool, String) {
        let mut command = Command::new(self.venv.join("bin/slapos"));
        command.args(args).env("HOME", self.dir.join("home"));
        if let (true, Some((uid, gid))) = (as_node, self.node_ids) {
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            // (std drops root's supplementary groups when it changes the uid.)
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let output = command.output().expect("slapos runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Whatever it answers, the client never ends in a traceback.
        assert!(!text.contains("Traceback"), "slapos {args:?}:\n{text}");
        (output.status.success(), text)
    }

    /// A node command, which must succeed.
    fn node(&self, command: &str, extra: &[&str]) -> String {
        let cfg = self.node_cfg();
        let pidfile = self.dir.join("run").join(format!("{command}.pid"));
        let mut args = vec!["node", command, "--cfg", cfg.to_str().expect("utf-8 path")];
        // The slapgrid commands (software, instance, report) run at once, one at a time.
        if !matches!(command, "format" | "collect") {
            args.extend(["--now", "--pidfile", pidfile.to_str().expect("utf-8 path")]);
        } else if command == "format" {
            args.push("--now");
        }
        args.extend_from_slice(extra);
        // Format creates the users, and collect must be root's (the client says so), whoever
        // runs the node's other commands.
        let (ok, text) = self.slapos(&args, !matches!(command, "format" | "collect"));
        assert!(ok, "slapos node {command} failed:\n{text}");
        text
    }

    /// A user command through the client configuration.
    fn user(&self, args: &[&str]) -> (bool, String) {
        let cfg = self.client_cfg();
        let mut all = args.to_vec();
        all.extend(["--cfg", cfg.to_str().expect("utf-8 path")]);
        self.slapos(&all, false)
    }

    /// Runs a Python snippet with the client's library, with the key and certificate files
    /// `credentials` (`KEY_FILE`, `CERT_FILE`); returns what it printed.
    fn python_as(&self, master_url: &str, credentials: (&Path, &Path), code: &str) -> String {
        let output = Command::new(self.venv.join("bin/python"))
            .args(["-W", "ignore", "-c", code])
            .env("MASTER_URL", master_url)
            .env("KEY_FILE", credentials.0)
            .env("CERT_FILE", credentials.1)
            .env("COMPUTER", COMPUTER)
            .output()
            .expect("python runs");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{code}\n{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    }

    /// Stops the supervisord `slapos node instance` started, if it did.
    fn stop_supervisord(&self) {
        let pidfile = self.dir.join("instance/var/run/supervisord.pid");
        if let Ok(pid) = std::fs::read_to_string(pidfile)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop_supervisord();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Partition `n`'s definition: an IPv6 and a local IPv4 address, a tap, a user (each its own
/// as root; the dedicated user for every partition otherwise).
fn definition(node_user: NodeUser) -> String {
    let user = |n: usize| match node_user {
        NodeUser::Root => format!("sctuser{n}"),
        NodeUser::Dedicated => DEDICATED.to_string(),
    };
    let software_user = match node_user {
        NodeUser::Root => "sctsoft",
        NodeUser::Dedicated => DEDICATED,
    };
    let mut text =
        format!("[computer]\naddress = fd5e:c1a5::1/64\nsoftware_user = {software_user}\n");
    for n in 0..PARTITIONS {
        text.push_str(&format!(
            "\n[partition_{n}]\naddress = fd5e:c1a5::{:x}/64 10.77.0.{}/255.255.255.0\n\
             user = {}\nnetwork_interface = scttap{n}\npathname = slappart{n}\n",
            0x10 + n,
            10 + n,
            user(n)
        ));
    }
    text
}

/// The dedicated user's uid and gid, created on first use (in the test's private /etc).
fn dedicated_user() -> (u32, u32) {
    let id = |flag: &str| {
        let output = Command::new("id")
            .args([flag, DEDICATED])
            .output()
            .expect("id runs");
        output
            .status
            .success()
            .then(|| {
                String::from_utf8_lossy(&output.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
            .flatten()
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", DEDICATED])
            .status()
            .expect("useradd runs");
        assert!(status.success(), "useradd {DEDICATED}");
    }
    (
        id("-u").expect("the user's uid"),
        id("-g").expect("the user's gid"),
    )
}

/// Gives `path` (and everything under it) to `ids`.
fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown -R {}", path.display());
}

/// Yesterday's samples in `slapos node collect`'s database under `$DATA_LOG` (made as collect
/// makes it): the machine at 12.5 % CPU, and a process of `sctuser0`; prints yesterday's date.
const SEED_COLLECT: &str = "import datetime, os
from slapos.collect.db import Database
day = (datetime.datetime.utcnow().date() - datetime.timedelta(days=1)).strftime('%Y-%m-%d')
os.makedirs(os.environ['DATA_LOG'], exist_ok=True)
db = Database(os.environ['DATA_LOG'], create=True)
db.connect()
db.insertSystemSnapshot(loadavg=0.5, cpu_percent=12.5, memory_used=1 << 30,
    memory_free=1 << 30, net_in_bytes=0, net_in_errors=0, net_in_dropped=0, net_out_bytes=0,
    net_out_errors=0, net_out_dropped=0, insertion_date=day, insertion_time='12:00:00')
db.insertUserSnapshot('sctuser0', pid=4242, process='instance', cpu_percent=30.0,
    cpu_time=60.0, cpu_num_threads=1, memory_percent=1.0, memory_rss=64 << 20,
    io_rw_counter=0, io_cycles_counter=0, insertion_date=day, insertion_time='12:00:00')
db.commit()
db.close()
print(day)
";

/// The usage a computer's node posted (of one partition, or all with `partition` empty).
async fn usage_of(cluster: &Cluster, url: &str, partition: &str) -> pb::UsageReply {
    let channel = client::connect_with(url, Some(cluster.operator()))
        .await
        .expect("connects");
    pb::user_client::UserClient::new(channel)
        .usage(pb::UsageRequest {
            computer: COMPUTER.into(),
            partition: partition.into(),
            consistency: pb::Consistency::Linearizable.into(),
            ..Default::default()
        })
        .await
        .expect("usage")
        .into_inner()
}

async fn show_computer(cluster: &Cluster, url: &str) -> pb::ShowComputerReply {
    let channel = client::connect_with(url, Some(cluster.operator()))
        .await
        .expect("connects");
    pb::admin_client::AdminClient::new(channel)
        .show_computer(pb::ShowComputerRequest {
            computer: COMPUTER.into(),
            consistency: pb::Consistency::Linearizable.into(),
        })
        .await
        .expect("the computer")
        .into_inner()
}

async fn show_root(url: &str, user: &tonic::transport::ClientTlsConfig) -> pb::ShowInstanceReply {
    let channel = client::connect_with(url, Some(user.clone()))
        .await
        .expect("connects");
    pb::user_client::UserClient::new(channel)
        .show_instance(pb::ShowInstanceRequest {
            instance: Some(pb::show_instance_request::Instance::Title("root".into())),
            consistency: pb::Consistency::Linearizable.into(),
        })
        .await
        .expect("the root instance")
        .into_inner()
}

/// Runs `step` until `done` holds for its result, at most `attempts` times.
/// Runs `step` until `done` holds for its result, at most `attempts` times; the last result
/// explains a failure.
fn until<T: std::fmt::Debug>(
    what: &str,
    attempts: usize,
    mut step: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let started = Instant::now();
    let mut last = None;
    for attempt in 1..=attempts {
        let value = step();
        if done(&value) {
            eprintln!(
                "    {what}: after {attempt} run(s), {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return value;
        }
        last = Some(value);
    }
    panic!("{what}: not after {attempts} runs; the last:\n{last:#?}");
}

async fn scenario(node_user: NodeUser) {
    eprintln!("=== the node's commands run as {node_user:?}");
    let venv = PathBuf::from(std::env::var_os(MARKER).expect("the venv"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().to_path_buf();
    // Partition users and the software user read the release and the stand-in.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let cluster = Cluster::start(
        env!("CARGO_BIN_EXE_slapmaster").as_ref(),
        &dir.join("cluster"),
        3,
    )
    .await
    .expect("three voters");
    let follower = cluster.follower().await.expect("a follower");
    let (grpc, master_url) = (follower.url(), follower.slap_url());
    eprintln!(
        "--- the node and the user talk to follower {} at {master_url}",
        follower.id
    );

    let node_ids = (node_user == NodeUser::Dedicated).then(dedicated_user);
    let user_tls = cluster
        .credentials("user:alice")
        .expect("the user's certificate")
        .tls_config();
    // Alice supplies software to the computer: she manages its project.
    cluster
        .set_role("alice", "default", "manager")
        .await
        .expect("alice manages the default project");
    let release_dir = dir.join("release");
    std::fs::create_dir_all(&release_dir).expect("mkdir");
    write(&release_dir.join("software.cfg"), "[buildout]\nparts =\n");
    write(&release_dir.join("instance.cfg"), "[buildout]\nparts =\n");
    let stand_in = dir.join("buildout.py");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slap/buildout.py"),
        &stand_in,
    )
    .expect("the stand-in");
    for sub in [
        "home",
        "certificates",
        "software",
        "instance",
        "run",
        "register",
    ] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    write(&dir.join("definition.cfg"), &definition(node_user));
    let site = Site {
        venv,
        release: release_dir.join("software.cfg").display().to_string(),
        dir: dir.clone(),
        node_ids,
    };

    eprintln!("--- slapos node register --token: the node's certificate, from an operator's token");
    let mut admin = test_kit::cluster::admin(&grpc, &cluster.operator())
        .await
        .expect("the operator's channel");
    let token = admin
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            computer: COMPUTER.into(),
            valid_seconds: 600,
        })
        .await
        .expect("an enrollment token")
        .into_inner()
        .token;
    let registered = dir.join("register/slapos");
    let register = |token: &str, cfg: &Path| {
        site.slapos(
            &[
                "node",
                "register",
                "the first node",
                "--token",
                token,
                "--cfg",
                cfg.to_str().expect("utf-8"),
                "--master-url",
                &master_url,
                "--master-url-web",
                &master_url,
                "--partition-number",
                &PARTITIONS.to_string(),
            ],
            false,
        )
    };
    let (ok, text) = register(&token, &registered.join("slapos.cfg"));
    assert!(ok, "slapos node register: {text}");
    let written = std::fs::read_to_string(registered.join("slapos.cfg")).expect("slapos.cfg");
    assert!(
        written.contains(&format!("\ncomputer_id = {COMPUTER}\n"))
            && written.contains(&format!("\nmaster_url = {master_url}\n")),
        "{written}"
    );
    std::fs::create_dir_all(dir.join("again")).expect("mkdir");
    let (ok, text) = register(&token, &dir.join("again/slapos/slapos.cfg"));
    assert!(
        !ok && text.contains("Access denied to the SlapOS Master"),
        "a token is good once: {text}"
    );

    eprintln!("--- slapos configure client --token: the user's certificate, from their token");
    let token = admin
        .create_credential_token(pb::CreateCredentialTokenRequest {
            user: "alice".into(),
            valid_seconds: 600,
        })
        .await
        .expect("a credential token")
        .into_inner()
        .token;
    let client_cfg = site.client_cfg();
    let (ok, text) = site.slapos(
        &[
            "configure",
            "client",
            "--token",
            &token,
            "--cfg",
            client_cfg.to_str().expect("utf-8"),
            "--master-url",
            &master_url,
            "--master-url-web",
            &master_url,
        ],
        false,
    );
    assert!(ok, "slapos configure client: {text}");
    assert!(
        std::fs::read_to_string(&client_cfg)
            .expect("the client's configuration")
            .contains(&format!("master_url = {master_url}")),
        "{text}"
    );

    // The node runs with the files register wrote, as they are.
    let ssl = registered.join("ssl");
    write(
        &site.node_cfg(),
        &format!(
            "[slapos]\nmaster_url = {master_url}\ncomputer_id = {COMPUTER}\n\
             key_file = {key}\ncert_file = {cert}\ncertificate_repository_path = {dir}/certificates\n\
             software_root = {dir}/software\ninstance_root = {dir}/instance\n\
             buildout = {stand_in}\n{root_check}\n[slapformat]\nalter_network = False\nalter_user = True\n\
             create_tap = False\npartition_amount = {PARTITIONS}\ncomputer_xml = {dir}/slapos.xml\n\
             ipv6_prefixshift = 16\nuser_base_name = sctuser\npartition_base_name = slappart\n\
             [collect]\nreport_disk_usage = False\n",
            key = ssl.join("key").display(),
            cert = ssl.join("certificate").display(),
            dir = dir.display(),
            stand_in = stand_in.display(),
            // How a site runs the node as its own user: the client's documented switch.
            root_check = if node_ids.is_some() {
                "root_check = false\n"
            } else {
                ""
            },
        ),
    );

    eprintln!("--- slapos node format: {PARTITIONS} partitions");
    let definition_file = dir.join("definition.cfg");
    site.node(
        "format",
        &[
            "--input_definition_file",
            definition_file.to_str().expect("utf-8"),
        ],
    );
    if let Some(ids) = node_ids {
        // What the node writes to is its user's; format made the partitions and the software
        // root its already.
        for sub in ["home", "certificates", "instance", "run", "register"] {
            chown_tree(&dir.join(sub), ids);
        }
    }
    let shown = show_computer(&cluster, &grpc).await;
    assert_eq!(shown.partitions.len(), PARTITIONS, "{shown:?}");
    for (n, partition) in shown.partitions.iter().enumerate() {
        assert_eq!(partition.reference, format!("slappart{n}"));
        assert_eq!(partition.tap, format!("scttap{n}"));
        assert!(
            partition.addresses.iter().any(|a| a.contains(':'))
                && partition.addresses.iter().any(|a| a.contains('.')),
            "an IPv6 and a local IPv4 address: {partition:?}"
        );
    }

    eprintln!("--- slapos supply, then slapos node software installs the release");
    let (ok, text) = site.user(&["supply", &site.release, COMPUTER]);
    assert!(ok, "slapos supply: {text}");
    site.node("software", &[]);
    let software = show_computer(&cluster, &grpc).await.software;
    assert!(
        software
            .iter()
            .any(|s| s.url == site.release && s.reported() == pb::SoftwareState::Available),
        "{software:?}"
    );

    eprintln!("--- slapos request root; slapos node instance until it publishes");
    let (ok, text) = site.user(&[
        "request",
        "root",
        &site.release,
        "--parameters",
        "greeting=hello",
    ]);
    assert!(
        ok || text.contains("provisioning"),
        "slapos request: {text}"
    );
    until(
        "the root publishes its child's and its shared instance's urls",
        8,
        || {
            let node = site.slapos(
                &[
                    "node",
                    "instance",
                    "--cfg",
                    site.node_cfg().to_str().expect("utf-8"),
                    "--now",
                    "--pidfile",
                    dir.join("run/instance.pid").to_str().expect("utf-8"),
                ],
                true,
            );
            (
                node,
                site.user(&[
                    "request",
                    "root",
                    &site.release,
                    "--parameters",
                    "greeting=hello",
                ]),
            )
        },
        |(_, (ok, text))| *ok && text.contains("child-url") && text.contains("shared-url"),
    );
    let root = show_root(&grpc, &user_tls).await;
    let instance = root.instance.expect("the root");
    let connection = &instance.connection;
    assert!(
        connection["url"].starts_with("http://[fd5e:c1a5::"),
        "{connection:?}"
    );
    assert!(
        connection["child-url"].ends_with("/child"),
        "{connection:?}"
    );
    assert!(
        connection["shared-url"].ends_with("/shared"),
        "{connection:?}"
    );
    assert_eq!(instance.reported_state(), pb::ReportedState::Started);
    let shown = show_computer(&cluster, &grpc).await;
    let busy: Vec<&str> = shown
        .partitions
        .iter()
        .filter(|p| !p.instance_guid.is_empty())
        .map(|p| p.instance_title.as_str())
        .collect();
    assert_eq!(
        busy.len(),
        2,
        "the root and its child, the shared instance hosted: {busy:?}"
    );

    eprintln!("--- slapos service list|info, computer list|info: the HATEOAS API");
    // The client finds it through getHateoasUrl (no master_rest_url in its configuration).
    let hateoas = |args: &[&str]| site.user(args);
    let (ok, text) = hateoas(&["service", "list"]);
    assert!(
        ok && text.contains(&format!("\"root\": \"{}\"", site.release)),
        "slapos service list: {text}"
    );
    let (ok, text) = hateoas(&["service", "info", "root"]);
    for shown in [
        "\"requested-state\": \"start_requested\"".to_string(),
        "\"shared\": false".to_string(),
        "\"greeting\": \"hello\"".to_string(),
        format!("\"child-url\": \"{}\"", connection["child-url"]),
        "\"status\": \"green\"".to_string(),
    ] {
        assert!(
            ok && text.contains(&shown),
            "slapos service info: {shown} in\n{text}"
        );
    }
    let (ok, text) = hateoas(&["service", "info", "no-such-tree"]);
    assert!(!ok && text.contains("does not exist"), "{text}");
    let (ok, text) = hateoas(&["computer", "list"]);
    assert!(
        ok && text.contains(&format!("{COMPUTER} {COMPUTER}")),
        "slapos computer list: {text}"
    );
    let (ok, text) = hateoas(&["computer", "info", COMPUTER]);
    assert!(
        ok && text.contains(&format!("Computer Reference: {COMPUTER}")),
        "slapos computer info: {text}"
    );
    let (ok, text) = hateoas(&["computer", "info", "COMP-NONE"]);
    assert!(!ok && text.contains("does not exist"), "{text}");

    // Another user sees none of it, and cannot read alice's tree by its address either.
    let bob = cluster
        .credentials_dir("user:bob")
        .expect("another user's certificate");
    let read = r#"
import os, requests
key = (os.environ['CERT_FILE'], os.environ['KEY_FILE'])
base = requests.get(os.environ['MASTER_URL'] + 'getHateoasUrl', verify=False, cert=key).text
for query in [
    'mode=search&query=portal_type:"Instance Tree" AND validation_state:validated',
    'mode=search&query=portal_type:"Compute Node" AND validation_state:validated',
    'mode=traverse&relative_url=instance_tree_module/GUID&view=slaposjs_view',
    'mode=traverse&relative_url=compute_node_module/COMPUTER&view=slaposjs_view',
]:
    r = requests.get(base + '?' + query, verify=False, cert=key)
    print(r.status_code, r.text[:200].replace('\n', ' '))
"#
    .replace("GUID", &instance.guid)
    .replace("COMPUTER", COMPUTER);
    let seen = site.python_as(
        &master_url,
        (&bob.join("key.pem"), &bob.join("chain.pem")),
        &read,
    );
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 4, "{seen}");
    assert!(
        lines[0].starts_with("200") && lines[0].contains("\"contents\":[]"),
        "bob's trees: {seen}"
    );
    assert!(
        lines[1].starts_with("200") && lines[1].contains("\"contents\":[]"),
        "bob's computers: {seen}"
    );
    assert!(lines[2].starts_with("404"), "alice's tree, as bob: {seen}");
    assert!(
        lines[3].starts_with("404"),
        "alice's computer, as bob: {seen}"
    );

    eprintln!("--- destroy a shared instance never hosted, then again once it is gone");
    let nowhere = dir.join("nowhere/software.cfg");
    let nowhere = nowhere.to_str().expect("utf-8");
    let (ok, text) = site.user(&["request", "lonely", nowhere, "--slave"]);
    assert!(
        !ok && text.contains("provisioning"),
        "no host runs {nowhere}: {text}"
    );
    for attempt in ["never hosted", "already gone"] {
        let (ok, text) = site.user(&[
            "request",
            "lonely",
            nowhere,
            "--slave",
            "--state",
            "destroyed",
        ]);
        assert!(
            ok && text.contains("State is : destroyed"),
            "slapos request --state destroyed, {attempt}: {text}"
        );
    }

    eprintln!("--- slapos node instance again: every partition keeps its certificate");
    let certificates = partition_certificates(&dir.join("certificates"));
    assert_eq!(
        certificates.len(),
        2,
        "the root's and its child's: {certificates:?}"
    );
    // `--all` processes every partition, changed or not: each fetches its certificate.
    let log = site.node("instance", &["--all"]);
    assert!(!log.contains("Changed certificate"), "{log}");
    let again = partition_certificates(&dir.join("certificates"));
    if let Some((uid, _)) = node_ids {
        // Written for the dedicated user, read-only: it could not have rewritten them.
        for entry in std::fs::read_dir(dir.join("certificates")).expect("the repository") {
            let meta = entry.expect("an entry").metadata().expect("metadata");
            assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
                0o400
            );
        }
    }
    let changed: Vec<&String> = certificates
        .iter()
        .filter(|(partition, pair)| again.get(*partition) != Some(pair))
        .map(|(partition, _)| partition)
        .collect();
    assert!(changed.is_empty(), "new certificates for {changed:?}");
    let user_credentials = cluster
        .credentials("user:alice")
        .expect("the user's certificate");
    let partition_tls: Vec<_> = certificates
        .values()
        .map(|(chain_pem, key_pem)| {
            client::Credentials {
                roots_pem: user_credentials.roots_pem.clone(),
                chain_pem: chain_pem.clone(),
                key_pem: key_pem.clone(),
            }
            .tls_config()
        })
        .collect();
    for url in cluster.urls() {
        for tls in &partition_tls {
            catalog(&url, tls)
                .await
                .expect("a partition's certificate is good on every replica");
        }
    }

    eprintln!("--- the node is told the root's last status (so it does not post it again)");
    let connect = "import os\nfrom slapos import slap\ns = slap.slap()\n\
                   s.initializeConnection(os.environ['MASTER_URL'], \
                   key_file=os.environ['KEY_FILE'], cert_file=os.environ['CERT_FILE'])\n\
                   computer = s.registerComputer(os.environ['COMPUTER'])\n";
    let statuses = site.python_as(
        &master_url,
        (&ssl.join("key"), &ssl.join("certificate")),
        &format!(
            "{connect}for p in computer.getComputerPartitionList():\n    \
             print(p.getId(), p.getInstanceParameterDict().get('instance_title'), \
             p.getAccessStatus())\n"
        ),
    );
    let root_line = statuses
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("root"))
        .unwrap_or_else(|| panic!("the root's partition: {statuses}"));
    assert!(root_line.contains("#access"), "{statuses}");

    eprintln!("--- a usage journal (useComputer) posted twice is stored whole, once");
    let journal = "<?xml version='1.0' encoding='utf-8'?><journal><transaction type=\"Sale Packing List\">\
        <title>Resource consumptions</title><start_date></start_date><stop_date>now</stop_date>\
        <reference>COMP-SLAP-1</reference><currency></currency><payment_mode></payment_mode>\
        <category></category><arrow type=\"Administration\"><source></source><destination></destination></arrow>\
        <movement><resource>CPU Consumption</resource><title>CPU Consumption of slappart0</title>\
        <reference>slappart0</reference><quantity>42.5</quantity><price>0.0</price><VAT>None</VAT>\
        <category>cpu</category></movement></transaction></journal>";
    site.python_as(
        &master_url,
        (&ssl.join("key"), &ssl.join("certificate")),
        &format!("{connect}computer.reportUsage({journal:?})\ncomputer.reportUsage({journal:?})\n"),
    );
    let usage = usage_of(&cluster, &grpc, "slappart0").await;
    assert_eq!(usage.reports.len(), 1, "{usage:?}");
    let report = &usage.reports[0];
    assert_eq!(
        (report.reference.as_str(), report.stop_date.as_str()),
        (COMPUTER, "now")
    );
    let movement = &report.movements[0];
    assert_eq!(
        (
            movement.title.as_str(),
            movement.quantity,
            movement.price,
            movement.vat.as_str(),
            movement.category.as_str()
        ),
        ("CPU Consumption of slappart0", 42.5, 0.0, "None", "cpu"),
        "{usage:?}"
    );

    eprintln!("--- slapos node collect, then slapos node report posts the day's report");
    // What collect gathered yesterday (it reports on past days): the machine's load and one
    // partition user's processes, in collect's own database.
    let data_log = dir.join("instance/var/data-log");
    // Collect runs as root; its database is root's, as on a site.
    let seeded = Command::new(site.venv.join("bin/python"))
        .args(["-W", "ignore", "-c", SEED_COLLECT])
        .env("DATA_LOG", &data_log)
        .output()
        .expect("python runs");
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let yesterday = String::from_utf8_lossy(&seeded.stdout).trim().to_string();
    let log = site.node("collect", &[]);
    let reports = dir.join(format!("instance/var/xml_report/{COMPUTER}"));
    let written = reports.join(format!("{yesterday}.xml"));
    assert!(written.exists(), "collect wrote no report:\n{log}");
    if let Some(ids) = node_ids {
        // Root's collect also wrote into the partitions (their resource files): the site's
        // own user takes back its tree, and sends and removes the reports.
        chown_tree(&dir.join("instance"), ids);
    }
    let log = site.node("report", &[]);
    assert!(!written.exists(), "report posted and removed it:\n{log}");
    let usage = usage_of(&cluster, &grpc, "").await;
    let day = usage
        .reports
        .iter()
        .find(|r| r.reference == format!("{yesterday}-global"))
        .unwrap_or_else(|| panic!("the day's report: {usage:?}"));
    assert_eq!(day.start_date, format!("{yesterday} 00:00:00"));
    assert!(
        day.movements.iter().any(|m| m.partition.is_empty()
            && m.reference == COMPUTER
            && m.resource == "service_module/cpu_load_percent"
            && (m.quantity - 12.5).abs() < 1e-9),
        "the computer's load: {day:?}"
    );
    // As root each partition has its own user, which names it; a dedicated user names none.
    let named = if node_ids.is_none() { "slappart0" } else { "" };
    assert!(
        day.movements
            .iter()
            .any(|m| m.reference == "sctuser0" && m.partition == named),
        "sctuser0's load: {day:?}"
    );

    eprintln!("--- the tree shrinks: the root stops requesting its shared instance, which goes");
    let (ok, text) = site.user(&[
        "request",
        "root",
        &site.release,
        "--parameters",
        "greeting=hello",
        "shrink=yes",
    ]);
    assert!(ok, "slapos request (shrink): {text}");
    site.node("instance", &[]);
    let channel = client::connect_with(&grpc, Some(user_tls.clone()))
        .await
        .expect("connects");
    let mut titles: Vec<String> = pb::user_client::UserClient::new(channel)
        .list_instances(pb::ListInstancesRequest {
            consistency: pb::Consistency::Linearizable.into(),
        })
        .await
        .expect("the user's instances")
        .into_inner()
        .instances
        .into_iter()
        .filter(|i| i.requested_state() != pb::RequestedState::Destroyed)
        .map(|i| i.title)
        .collect();
    titles.sort();
    assert_eq!(titles, ["child", "root"], "shared-1 is no longer requested");

    eprintln!("--- stop: the node reports the root stopped");
    let (ok, text) = site.user(&[
        "request",
        "root",
        &site.release,
        "--state",
        "stopped",
        "--parameters",
        "greeting=hello",
        "shrink=yes",
    ]);
    assert!(ok, "slapos request --state stopped: {text}");
    site.node("instance", &[]);
    let root = show_root(&grpc, &user_tls)
        .await
        .instance
        .expect("the root");
    assert_eq!(root.reported_state(), pb::ReportedState::Stopped);

    eprintln!("--- destroy: slapos node report frees every partition");
    let (ok, text) = site.user(&[
        "request",
        "root",
        &site.release,
        "--state",
        "destroyed",
        "--parameters",
        "greeting=hello",
        "shrink=yes",
    ]);
    assert!(
        ok || text.contains("provisioning"),
        "slapos request --state destroyed: {text}"
    );
    site.node("instance", &[]);
    let runtime = tokio::runtime::Handle::current();
    until(
        "every partition is free",
        6,
        || {
            site.node("report", &[]);
            tokio::task::block_in_place(|| runtime.block_on(show_computer(&cluster, &grpc)))
        },
        |shown| shown.partitions.iter().all(|p| p.instance_guid.is_empty()),
    );
    // The tree is gone, its shared instance with it.
    let channel = client::connect_with(&grpc, Some(user_tls.clone()))
        .await
        .expect("connects");
    let left = pb::user_client::UserClient::new(channel)
        .list_instances(pb::ListInstancesRequest {
            consistency: pb::Consistency::Linearizable.into(),
        })
        .await
        .expect("the user's instances")
        .into_inner()
        .instances;
    assert!(left.is_empty(), "{left:?}");

    eprintln!("--- the destroyed instances' certificates are refused by every replica");
    let deadline = Instant::now() + Duration::from_secs(1);
    for url in cluster.urls() {
        for tls in &partition_tls {
            loop {
                match catalog(&url, tls).await {
                    Err(status) if status.code() == tonic::Code::Unauthenticated => {
                        assert!(status.message().ends_with("is revoked"), "{status:?}");
                        break;
                    }
                    other => assert!(
                        Instant::now() < deadline,
                        "{url} still answers a destroyed instance's certificate: {other:?}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    eprintln!("--- slapos remove, then slapos node software removes the release");
    let (ok, text) = site.user(&["remove", &site.release, COMPUTER]);
    assert!(ok, "slapos remove: {text}");
    site.node("software", &[]);
    let software = show_computer(&cluster, &grpc).await.software;
    assert!(
        software
            .iter()
            .all(|s| s.url != site.release || s.reported() == pb::SoftwareState::Destroyed),
        "{software:?}"
    );
    let installed = std::fs::read_dir(dir.join("software"))
        .expect("the software root")
        .count();
    assert_eq!(installed, 0, "the release's directory is removed");
    site.stop_supervisord();

    eprintln!("--- every call the client made is in README's table of calls");
    let metrics = test_kit::http::get(follower.http_addr(), "/metrics")
        .await
        .expect("the follower's metrics")
        .body;
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let called: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("slapcluster_slap_request_seconds_count{call=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter(|(_, count)| *count != "0")
        .map(|(call, _)| call)
        .collect();
    assert!(called.contains(&"useComputer"), "{metrics}");
    eprintln!("    {} calls: {}", called.len(), called.join(" "));
    let missing: Vec<&&str> = called
        .iter()
        .filter(|call| {
            !readme
                .lines()
                .any(|l| l.starts_with('|') && l.contains(&format!("`{call}`")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "calls README's table does not name: {missing:?}"
    );
    drop(cluster);
}

/// The partitions' certificates the node keeps (`certificate_repository_path`): each
/// partition's certificate and key, by partition.
fn partition_certificates(dir: &Path) -> BTreeMap<String, (String, String)> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("the certificate repository") {
        let path = entry.expect("an entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("crt") {
            continue;
        }
        let partition = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a partition's name")
            .to_string();
        let certificate = std::fs::read_to_string(&path).expect("the certificate");
        let key = std::fs::read_to_string(path.with_extension("key")).expect("its key");
        found.insert(partition, (certificate, key));
    }
    found
}

/// Reads the catalog on `url` as the holder of `tls`: any authenticated caller may.
async fn catalog(url: &str, tls: &tonic::transport::ClientTlsConfig) -> Result<(), tonic::Status> {
    let channel = client::connect_with(url, Some(tls.clone()))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    pb::user_client::UserClient::new(channel)
        .list_software_releases(pb::ListSoftwareReleasesRequest::default())
        .await
        .map(|_| ())
}
