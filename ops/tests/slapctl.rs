//! `slapctl` against a real local cluster (three `slapmaster` processes over mTLS, made by
//! the load tool's harness): every command family, as an operator and as a user, through
//! text and `--json`, and the errors for an unreachable cluster, a refused certificate and a
//! missing configuration.

use std::path::Path;
use std::process::{Command, Stdio};

use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use test_kit::cluster::{issue, run_tool, unused_port};

mod slapctl_kit;

use slapctl_kit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_operators_manage_computers_instances_and_certificates() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let mut node = f.register_computer().await?;

    // computer list / show: the registration as the operator sees it.
    let list = f.as_operator(&["--json", "computer", "list"]).ok().json();
    assert_eq!(list[0]["id"], COMPUTER);
    assert_eq!(list[0]["partitions"], 4);
    assert_eq!(list[0]["busy"], 0);
    assert_eq!(list[0]["region"], "eu");
    assert_eq!(list[0]["allocation"], "open/project");
    assert_eq!(list[0]["project"], "default");
    // Registered over gRPC a moment ago; its node has not polled yet, which is no silence
    // until the threshold has passed since it registered.
    assert_eq!(
        list[0]["health"],
        "ok: registered; its node has not polled yet"
    );
    let table = f.as_operator(&["computer", "list"]).ok().stdout;
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(COMPUTER) && table.contains("open/project"),
        "{table}"
    );

    // cert issue: a user's key made here, its certificate signed by a replica.
    let alice = f.dir.path().join("alice");
    let issued = f
        .as_operator(&[
            "cert",
            "issue",
            "user:alice",
            "--out",
            alice.to_str().expect("utf-8"),
        ])
        .ok();
    assert!(issued.stdout.contains("user:alice"), "{}", issued.stdout);
    for file in ["roots.pem", "chain.pem", "key.pem"] {
        assert!(alice.join(file).exists(), "{file} written");
    }
    let refused = f.as_operator(&["cert", "issue", "operator:eve", "--out", "/nonexistent"]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("root CA, offline"),
        "{}",
        refused.stderr
    );

    // software publish / list, supply.
    f.as_operator(&[
        "software", "publish", SOFTWARE, "--title", "ctl", "--type", "default",
    ])
    .ok();
    let catalog = f
        .slapctl(&alice, &["--json", "software", "list"])
        .ok()
        .json();
    assert_eq!(catalog[0]["url"], SOFTWARE);
    let supplied = f
        .as_operator(&["supply", SOFTWARE, "--computer", COMPUTER])
        .ok();
    assert!(
        supplied.stdout.contains("asked to install"),
        "{}",
        supplied.stdout
    );

    // A closed computer takes nothing: the request waits, explain says why; opening the
    // computer places it.
    let closed = f.as_operator(&["computer", "close", COMPUTER]).ok();
    assert!(
        closed
            .stdout
            .contains("is close/noallocation: no new instances"),
        "{}",
        closed.stdout
    );
    let requested = f
        .slapctl(
            &alice,
            &[
                "request",
                "web",
                "--software",
                SOFTWARE,
                "--param",
                "port=8080",
                "--sla",
                "region=eu",
            ],
        )
        .ok();
    assert!(requested.stdout.contains("pending"), "{}", requested.stdout);
    assert!(
        requested.stdout.contains("slapctl explain web"),
        "{}",
        requested.stdout
    );
    let why = f.slapctl(&alice, &["--json", "explain", "web"]).ok().json();
    assert!(
        why["placement"]
            .as_str()
            .is_some_and(|p| p.starts_with("pending"))
    );
    assert!(!why["explanation"].as_str().unwrap_or_default().is_empty());
    let opened = f.as_operator(&["computer", "open", COMPUTER]).ok();
    assert!(
        opened.stdout.contains("1 pending request(s) placed"),
        "{}",
        opened.stdout
    );
    let why = f.slapctl(&alice, &["explain", "web"]).ok();
    assert!(why.stdout.contains(COMPUTER), "{}", why.stdout);

    // instance list / show, and the computer's partitions with it.
    let instances = f
        .slapctl(&alice, &["--json", "instance", "list"])
        .ok()
        .json();
    assert_eq!(instances[0]["title"], "web");
    assert_eq!(instances[0]["requested_state"], "started");
    assert_eq!(instances[0]["parameters"]["port"], "8080");
    let shown = f.slapctl(&alice, &["instance", "show", "web"]).ok().stdout;
    assert!(shown.contains("port=8080"), "{shown}");
    // Placed, but its node has not reported it: a warning that says so.
    let health = shown
        .lines()
        .find(|l| l.starts_with("health"))
        .unwrap_or_default();
    assert!(health.contains("warning: "), "{shown}");
    let guid = instances[0]["guid"].as_str().expect("a guid").to_string();
    let computer = f
        .as_operator(&["--json", "computer", "show", COMPUTER])
        .ok()
        .json();
    let busy: Vec<&serde_json::Value> = computer["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["guid"] == guid.as_str())
        .collect();
    assert_eq!(busy.len(), 1, "{computer}");
    assert_eq!(busy[0]["owner"], "alice");
    assert_eq!(computer["software"][0]["requested"], "available");
    let missing = f.as_operator(&["computer", "show", "COMP-NONE"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("slapctl computer list"),
        "{}",
        missing.stderr
    );

    // usage posted by the node, read by the operator.
    let partition = busy[0]["partition"]
        .as_str()
        .expect("partition")
        .to_string();
    alerts_follow_what_the_node_reports(&f, &mut node, &alice, &partition).await?;
    node.post_usage(pb::PostUsageRequest {
        computer: COMPUTER.into(),
        records: vec![pb::UsageRecord {
            partition: partition.clone(),
            period_start: 1_000_000,
            period_end: 3_601_000_000,
            movements: vec![pb::UsageMovement {
                resource: "cpu_seconds".into(),
                category: String::new(),
                quantity: 12.5,
            }],
        }],
    })
    .await?;
    // And a day's report as `slapos node collect` writes it, posted over SLAP as `slapos node
    // report` does (twice: it timed out the first time): every field is kept, counted once.
    let journal = "<?xml version='1.0' encoding='utf-8'?><journal><transaction type=\"Sale \
        Packing List\"><title>Eco Information for COMP-CTL</title><start_date>2026-12-05 \
        00:00:00</start_date><stop_date>2026-12-05 23:59:59</stop_date><reference>2026-12-05-global\
        </reference><currency>EUR</currency><payment_mode /><category /><arrow type=\"Destination\" \
        /><movement><resource>service_module/cpu_load_percent</resource><title>CPU Load Percent \
        Average</title><reference>COMP-CTL</reference><quantity>12.5</quantity><price>0.25</price>\
        <VAT>20%</VAT><category>cpu</category></movement></transaction></journal>";
    let slap_port = f.cluster.replicas[0]
        .slap_url()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok())
        .expect("a SLAP port");
    let mut slap = test_kit::slap::Connection::new(
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, slap_port)),
        Some(test_kit::slap::client_tls(
            &f.cluster.credentials_dir(&format!("computer:{COMPUTER}"))?,
        )?),
    );
    let report = test_kit::slap::form(&[("computer_id", COMPUTER), ("use_string", journal)]);
    for _ in 0..2 {
        let answer = slap.call("/useComputer", Some(&report)).await?;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    let usage = f
        .as_operator(&["--json", "usage", "--computer", COMPUTER])
        .ok()
        .json();
    let rows = usage.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{usage}");
    assert_eq!(rows[0]["partition"], partition.as_str());
    assert_eq!(rows[0]["resource"], "cpu_seconds");
    assert_eq!(rows[0]["quantity"], 12.5);
    assert_eq!(rows[0]["start"], "1000000");
    let collected = &rows[1];
    assert_eq!(collected["partition"], "", "the computer as a whole");
    assert_eq!(collected["report"], "2026-12-05-global");
    assert_eq!(collected["start"], "2026-12-05 00:00:00");
    assert_eq!(collected["reference"], COMPUTER);
    assert_eq!(
        (
            &collected["quantity"],
            &collected["price"],
            &collected["vat"],
            &collected["category"]
        ),
        (&12.5.into(), &0.25.into(), &"20%".into(), &"cpu".into())
    );
    let text = f.as_operator(&["usage", "--computer", COMPUTER]).ok();
    assert!(text.stdout.contains("2026-12-05-global"), "{}", text.stdout);

    // projects: an operator creates one and makes alice its manager; she then runs the
    // computer once it is the project's, and not before.
    f.as_operator(&["project", "create", "PROJ-CTL", "--title", "Ctl"])
        .ok();
    let outside = f.slapctl(&alice, &["computer", "scope", COMPUTER, "open/personal"]);
    assert_eq!(outside.code, 2, "{}", outside.stdout);
    assert!(
        outside
            .stderr
            .contains("may not set the allocation scope of computer"),
        "{}",
        outside.stderr
    );
    f.as_operator(&["project", "add", "PROJ-CTL", "alice", "--role", "manager"])
        .ok();
    f.as_operator(&["computer", "move", COMPUTER, "--project", "PROJ-CTL"])
        .ok();
    let scoped = f
        .slapctl(&alice, &["computer", "scope", COMPUTER, "open/personal"])
        .ok();
    assert!(scoped.stdout.contains("open/personal"), "{}", scoped.stdout);
    let bad = f.as_operator(&["computer", "scope", COMPUTER, "open/friends"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("close/forever"), "{}", bad.stderr);
    let mine = f
        .slapctl(&alice, &["--json", "project", "list"])
        .ok()
        .json();
    let roles: Vec<(String, String)> = mine
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| (p["project"].to_string(), p["role"].to_string()))
        .collect();
    assert_eq!(
        roles,
        [
            ("\"PROJ-CTL\"".to_string(), "\"manager\"".to_string()),
            ("\"default\"".to_string(), "\"customer\"".to_string())
        ]
    );
    let shown = f.slapctl(&alice, &["project", "show", "PROJ-CTL"]).ok();
    assert!(
        shown.stdout.contains("alice") && shown.stdout.contains("manager"),
        "{}",
        shown.stdout
    );

    // quota: alice reads her own; an operator lowers it to what she holds and her next new
    // request is refused, naming the quota; raised again, it is accepted.
    let own = f.slapctl(&alice, &["--json", "quota", "show"]).ok().json();
    assert_eq!(own["user"], "alice");
    assert_eq!(own["own"], false);
    let held = own["held"]["instances"].as_u64().expect("a count");
    assert!(held >= 1, "{own}");
    let refused = f.slapctl(&alice, &["quota", "show", "--user", "bob"]);
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    let held = held.to_string();
    f.as_operator(&["quota", "set", "--user", "alice", "--instances", &held])
        .ok();
    let one_more = ["request", "one-more", "--software", SOFTWARE];
    let over = f.slapctl(&alice, &one_more);
    assert_ne!(over.code, 0, "{}", over.stdout);
    assert!(over.stderr.contains("the quota is"), "{}", over.stderr);
    let default = f
        .as_operator(&["--json", "quota", "show", "--default"])
        .ok()
        .json();
    assert_eq!(default["quota"]["instances"], 1_000);
    f.as_operator(&["quota", "unset", "--user", "alice"]).ok();
    f.slapctl(&alice, &one_more).ok();

    // computer token: one use, for a new computer's node.
    let token = f
        .as_operator(&["--json", "computer", "token", "COMP-NEW"])
        .ok()
        .json();
    assert_eq!(token["token"].as_str().map(str::len), Some(64));
    // cert token: a user's own, for their client; not someone else's.
    let own = f
        .slapctl(&alice, &["--json", "cert", "token", "alice"])
        .ok()
        .json();
    assert_eq!(own["token"].as_str().map(str::len), Some(64));
    let other = f.slapctl(&alice, &["cert", "token", "bob"]);
    assert_ne!(other.code, 0, "{}", other.stdout);
    assert!(other.stderr.contains("user alice"), "{}", other.stderr);

    // instance destroy, by title.
    let destroyed = f.slapctl(&alice, &["instance", "destroy", "web"]).ok();
    assert!(
        destroyed.stdout.contains("destroyed"),
        "{}",
        destroyed.stdout
    );
    let gone = f
        .slapctl(&alice, &["--json", "instance", "show", "web"])
        .ok()
        .json();
    assert_eq!(gone["requested_state"], "destroyed");

    // cert list / revoke: alice's certificate is refused within a second of its revocation.
    let certificates = f.as_operator(&["--json", "cert", "list"]).ok().json();
    let serial = certificates
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["identity"] == "urn:slapcluster:user:alice")
        .and_then(|c| c["serial"].as_str())
        .expect("alice's certificate recorded")
        .to_string();
    f.as_operator(&["cert", "revoke", &serial, "--reason", "left"])
        .ok();
    let listed = f.as_operator(&["cert", "list"]).ok().stdout;
    assert!(listed.contains("left"), "{listed}");
    eventually("alice refused", || {
        let run = f.slapctl(&alice, &["instance", "list"]);
        run.code == 2 && run.stderr.contains("refused this client's certificate")
    });
    // A user is not an operator.
    let bob = f.dir.path().join("bob");
    f.as_operator(&[
        "cert",
        "issue",
        "user:bob",
        "--out",
        bob.to_str().expect("utf-8"),
    ])
    .ok();
    let denied = f.slapctl(&bob, &["cluster", "status"]);
    assert_eq!(denied.code, 2);
    assert!(denied.stderr.contains("not allowed"), "{}", denied.stderr);
    Ok(())
}

/// alert list, and the history instance show and computer show print: the node reports the
/// instance failing, then fixed; its owner and operators see the alert, another user does not.
async fn alerts_follow_what_the_node_reports(
    f: &Fixture,
    node: &mut NodeClient<tonic::transport::Channel>,
    alice: &Path,
    partition: &str,
) -> anyhow::Result<()> {
    let report = |state: pb::ReportedState, error_log: &str| pb::ReportInstanceRequest {
        partition: Some(pb::PartitionId {
            computer: COMPUTER.into(),
            partition: partition.into(),
        }),
        state: state.into(),
        error_log: error_log.into(),
        ..Default::default()
    };
    node.report_instance(report(
        pb::ReportedState::Unspecified,
        "promise check-port failed: connection refused",
    ))
    .await?;
    let open = |who: &Path| {
        f.slapctl(who, &["--json", "alert", "list"])
            .ok()
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually("alice's alert", || open(alice).len() == 1);
    let alert = &open(alice)[0];
    assert_eq!(alert["kind"], "instance");
    assert_eq!(alert["title"], "web");
    assert_eq!(
        alert["reason"],
        "its node reported an error: promise check-port failed: connection refused"
    );
    let table = f.slapctl(alice, &["alert", "list"]).ok().stdout;
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("check-port failed"), "{table}");
    assert_eq!(open(&f.operator).len(), 1, "operators see every alert");
    let carol = f.dir.path().join("carol");
    f.as_operator(&[
        "cert",
        "issue",
        "user:carol",
        "--out",
        carol.to_str().expect("utf-8"),
    ])
    .ok();
    assert!(open(&carol).is_empty(), "carol sees none of alice's");

    node.report_instance(report(pb::ReportedState::Started, ""))
        .await?;
    eventually("the alert to close", || open(alice).is_empty());
    let all = f
        .slapctl(alice, &["--json", "alert", "list", "--closed"])
        .ok()
        .json();
    assert_eq!(
        all[0]["closed_because"],
        format!("started on {COMPUTER}/{partition}")
    );
    let shown = f.slapctl(alice, &["instance", "show", "web"]).ok().stdout;
    let history = shown.split("history:").nth(1).unwrap_or_default();
    let healths: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.ends_with(':')))
        .collect();
    assert_eq!(
        healths.last().copied(),
        Some("ok:"),
        "the history ends with it running: {shown}"
    );
    assert!(healths.contains(&"failing:"), "{shown}");
    let computer = f
        .as_operator(&["--json", "computer", "show", COMPUTER])
        .ok()
        .json();
    assert!(
        !computer["history"].as_array().is_none_or(Vec::is_empty),
        "{computer}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_change_members_save_and_restore_backups() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let status = f.as_operator(&["--json", "cluster", "status"]).ok().json();
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert!(
        members
            .iter()
            .all(|m| m["voter"] == true && m["unreachable"] == "")
    );
    let leader = status["leader"].as_u64().expect("a leader");
    assert!(
        members
            .iter()
            .any(|m| m["id"] == leader && m["role"] == "leader")
    );
    let text = f.as_operator(&["cluster", "status"]).ok().stdout;
    assert!(text.contains(&format!("leader {leader}")), "{text}");
    assert!(text.contains("3 of 3 members answered"), "{text}");

    // member leader: the leadership goes where the operator says, asked of any replica.
    let next = if leader == 3 { 1 } else { leader + 1 };
    let moved = f.as_operator(&["member", "leader", &next.to_string()]).ok();
    assert!(
        moved.stdout.contains(&format!("replica {next} leads")),
        "{}",
        moved.stdout
    );
    assert_eq!(f.cluster.leader().await?, next);
    let learner = f.as_operator(&["member", "leader", "9"]);
    assert_eq!(learner.code, 2, "{learner:?}");
    assert!(learner.stderr.contains("not a voter"), "{}", learner.stderr);

    // member add --promote: a fourth replica, started empty, catches up and votes.
    let tls = f.dir.path().join("replica-4-tls");
    issue(
        &f.slapmaster,
        f.dir.path(),
        "replica:4",
        &tls,
        &["--server-name", "::1"],
    )?;
    let taken: Vec<u16> = f
        .cluster
        .replicas
        .iter()
        .flat_map(|r| [r.port, r.http_port, r.slap_port])
        .collect();
    let port = unused_port(&taken)?;
    let fourth = Process(
        Command::new(&f.slapmaster)
            .args(["run", "--id", "4", "--listen", &format!("[::1]:{port}")])
            .arg("--data-dir")
            .arg(f.dir.path().join("replica-4"))
            .arg("--tls-dir")
            .arg(&tls)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let url = format!("https://[::1]:{port}");
    let added = f
        .as_operator(&["member", "add", "4", &url, "--region", "r4", "--promote"])
        .ok();
    assert!(
        added.stdout.contains("promoted to voter"),
        "{}",
        added.stdout
    );
    let list = f.as_operator(&["--json", "member", "list"]).ok().json();
    let four = list
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"] == 4)
        .cloned()
        .expect("member 4 listed");
    assert_eq!(four["voter"], true);
    assert_eq!(four["region"], "r4");
    let removed = f.as_operator(&["member", "remove", "4"]).ok();
    assert!(
        removed.stdout.contains("stop its process"),
        "{}",
        removed.stdout
    );
    drop(fourth);
    let unknown = f.as_operator(&["member", "remove", "9"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown.stderr.starts_with("slapctl: refused"),
        "{}",
        unknown.stderr
    );

    // snapshot save, then restore into a new one-replica cluster that serves the same state.
    f.register_computer().await?;
    let backup = f.dir.path().join("backup.snapshot");
    let saved = f
        .as_operator(&["snapshot", "save", backup.to_str().expect("utf-8")])
        .ok();
    assert!(saved.stdout.contains("saved"), "{}", saved.stdout);
    assert!(std::fs::metadata(&backup)?.len() > 0);
    let restored_port = unused_port(&[taken, vec![port]].concat())?;
    let restored_tls = f.dir.path().join("restored-tls");
    issue(
        &f.slapmaster,
        f.dir.path(),
        "replica:1",
        &restored_tls,
        &["--server-name", "::1"],
    )?;
    let config = f.dir.path().join("restored.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\nlisten = \"[::1]:{restored_port}\"\ndata_dir = \"{}\"\ntls_dir = \"{}\"\n",
            f.dir.path().join("restored").display(),
            restored_tls.display()
        ),
    )?;
    // The new replica's own machine makes its data directory: `slapmaster restore`.
    let restore = |config: &Path| {
        Command::new(&f.slapmaster)
            .args(["restore", "--backup"])
            .arg(&backup)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .output()
    };
    let restored = restore(&config)?;
    let stdout = String::from_utf8_lossy(&restored.stdout);
    assert!(
        restored.status.success() && stdout.contains("slapmaster run"),
        "{restored:?}"
    );
    let again = restore(&config)?;
    assert_eq!(
        again.status.code(),
        Some(1),
        "a restore never overwrites a data directory: {again:?}"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{again:?}"
    );
    let _restored = Process(
        Command::new(&f.slapmaster)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let restored_url = format!("https://[::1]:{restored_port}");
    let operator = f.operator.to_string_lossy().to_string();
    eventually("the restored replica to serve the computer", || {
        let run = f.bare(&[
            "--cluster",
            &restored_url,
            "--tls-dir",
            &operator,
            "--json",
            "computer",
            "list",
        ]);
        run.code == 0 && run.json()[0]["id"] == COMPUTER
    });
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do_next() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let operator = f.operator.to_string_lossy().to_string();

    // Nothing listens there.
    let port = unused_port(&[])?.to_string();
    let nowhere = format!("https://[::1]:{port}");
    let run = f.bare(&[
        "--cluster",
        &nowhere,
        "--tls-dir",
        &operator,
        "cluster",
        "status",
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("cannot reach any replica"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&nowhere), "{}", run.stderr);
    assert!(run.stderr.contains("check --cluster"), "{}", run.stderr);
    // The first replica is down: the next one answers.
    let second = f.cluster.urls()[1].clone();
    let both = format!("{nowhere},{second}");
    f.bare(&[
        "--cluster",
        &both,
        "--tls-dir",
        &operator,
        "cluster",
        "status",
    ])
    .ok();

    // A certificate from another CA, presented with this cluster's roots: refused per call.
    let foreign = f.dir.path().join("foreign");
    run_tool(
        &f.slapmaster,
        &["ca", "init", "--dir"],
        &foreign.join("ca"),
        &[],
    )?;
    let stranger = foreign.join("operator");
    issue(&f.slapmaster, &foreign, "operator:stranger", &stranger, &[])?;
    std::fs::copy(f.operator.join("roots.pem"), stranger.join("roots.pem"))?;
    let stranger = stranger.to_string_lossy().to_string();
    let first = f.cluster.urls()[0].clone();
    let run = f.bare(&[
        "--cluster",
        &first,
        "--tls-dir",
        &stranger,
        "cluster",
        "status",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("refused this client's certificate"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("check --tls-dir"), "{}", run.stderr);

    // Roots of another CA: the replica's certificate is not trusted.
    let lost = foreign.join("lost");
    issue(&f.slapmaster, &foreign, "operator:lost", &lost, &[])?;
    let lost = lost.to_string_lossy().to_string();
    let run = f.bare(&["--cluster", &first, "--tls-dir", &lost, "cluster", "status"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("not signed by a root"),
        "{}",
        run.stderr
    );

    // No configuration at all, a missing file, a bad flag value.
    let run = f.bare(&["cluster", "status"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no cluster given"), "{}", run.stderr);
    let run = f.bare(&["--config", "/nonexistent/slapctl.toml", "cluster", "status"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("/nonexistent/slapctl.toml"),
        "{}",
        run.stderr
    );
    let run = f.bare(&["request", "x", "--software", "u", "--param", "novalue"]);
    assert_eq!(run.code, 2, "clap's usage error");
    assert!(run.stderr.contains("say key=value"), "{}", run.stderr);

    // A configuration file instead of flags.
    let config = f.dir.path().join("slapctl").join("config.toml");
    std::fs::create_dir_all(config.parent().expect("a parent"))?;
    std::fs::write(
        &config,
        format!("cluster = [\"{first}\"]\ntls_dir = \"{operator}\"\n"),
    )?;
    let run = f.bare(&["--json", "member", "list"]).ok();
    assert_eq!(run.json().as_array().map(Vec::len), Some(3));

    // Completions.
    let run = f.bare(&["completions", "bash"]).ok();
    assert!(
        run.stdout.contains("_slapctl"),
        "a bash completion function"
    );
    assert!(run.stdout.contains("snapshot"), "every noun completes");
    Ok(())
}
