//! The SLAP protocol's view of a computer (what `getFullComputerInformation` will answer),
//! built from a real cluster's state: `slapmaster dev`'s demo computer with three instances.

use std::collections::BTreeMap;

use master_cluster::daemon::dev::{self, DEMO_COMPUTER, DEMO_SOFTWARE};
use master_cluster::replica::Consistency;
use master_cluster::slap::marshal::{self, SlapClass, Value};
use master_cluster::slap::view;
use master_cluster::state::query;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_view_marshals_as_a_node_expects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dev::start(
        &dev::DevOptions::plaintext_for_tests(dir.path()),
        &mut Vec::new(),
    )
    .await
    .expect("dev cluster starts");
    let (view, ips) = cluster.replicas[0]
        .read(Consistency::Linearizable, |txn| {
            let view =
                query::computer_view(txn, &DEMO_COMPUTER.into())?.expect("the demo computer");
            let mut ips = BTreeMap::new();
            for p in &view.partitions {
                if let Some(instance) = &p.instance {
                    ips.insert(
                        p.partition.reference.clone(),
                        query::tree_addresses(txn, instance.instance.guid)?,
                    );
                }
            }
            Ok((view, ips))
        })
        .await
        .expect("read");
    let marshalled = view::computer(&view, &ips);
    // What goes on the wire reads back, and writes again, the same (keys sorted on the wire).
    let wire = marshal::encode(&marshalled);
    let read = marshal::decode(&wire).expect("our own document decodes");
    assert!(marshal::encode(&read) == wire, "stable on the wire");

    let Value::Object(computer) = &marshalled else {
        panic!("not an object: {marshalled:?}")
    };
    assert_eq!(computer.class, SlapClass::Computer);
    assert_eq!(computer.args, vec![Value::string(DEMO_COMPUTER)]);
    let software = marshalled.get("_software_release_list").expect("software");
    let Value::List(software) = software else {
        panic!("{software:?}")
    };
    assert_eq!(software.len(), 1);
    assert_eq!(
        software[0].get("_software_release"),
        Some(&Value::string(DEMO_SOFTWARE))
    );
    assert_eq!(
        software[0].get("_requested_state"),
        Some(&Value::string("available"))
    );

    let Some(Value::List(partitions)) = marshalled.get("_computer_partition_list") else {
        panic!("no partitions")
    };
    assert_eq!(partitions.len(), 8);
    let busy: Vec<&Value> = partitions
        .iter()
        .filter(|p| p.get("_requested_state") == Some(&Value::string("started")))
        .collect();
    assert_eq!(busy.len(), 3, "the three demo instances");
    for p in &busy {
        let parameters = p.get("_parameter_dict").expect("parameters");
        assert_eq!(
            parameters.get("slap_software_release_url"),
            Some(&Value::string(DEMO_SOFTWARE))
        );
        assert_eq!(
            parameters.get("slap_computer_id"),
            Some(&Value::string(DEMO_COMPUTER))
        );
        assert_eq!(
            parameters.get("slap_computer_partition_id"),
            p.get("_partition_id")
        );
        assert!(
            matches!(parameters.get("timestamp"), Some(Value::String(t)) if t.parse::<u64>().is_ok())
        );
        let Some(Value::List(ip_list)) = parameters.get("ip_list") else {
            panic!("no ip_list")
        };
        assert!(!ip_list.is_empty(), "the partition's own addresses");
        assert!(matches!(&ip_list[0], Value::Tuple(pair) if pair.len() == 2));
        assert!(matches!(
            p.get("_software_release_document"),
            Some(Value::Object(o)) if o.class == SlapClass::SoftwareRelease
        ));
        assert!(matches!(p.get("_instance_guid"), Some(Value::String(_))));
    }
    let free: Vec<&Value> = partitions
        .iter()
        .filter(|p| p.get("_requested_state") == Some(&Value::string("destroyed")))
        .collect();
    assert_eq!(free.len(), 5);
    assert!(
        free.iter()
            .all(|p| p.get("_software_release_document") == Some(&Value::None))
    );
    cluster.shutdown().await.expect("stops");
}

/// Status codes as SLAP clients read them, through a follower's plaintext SLAP listener (the
/// dev cluster's: calls naming no partition are the demo user's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_the_status_a_slapos_client_expects() {
    use test_kit::slap::{Connection, form};
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dev::start(
        &dev::DevOptions::plaintext_for_tests(dir.path()),
        &mut Vec::new(),
    )
    .await
    .expect("dev cluster starts");
    let follower = cluster.follower().expect("a follower");
    let mut slap = Connection::new(follower.slap_addr().expect("SLAP listens"), None);
    let none = marshal::encode(&Value::None);
    let request = |title: &str, release: &str, sla: Value, parameters: &str| {
        form(&[
            ("software_release", release),
            ("software_type", "default"),
            ("partition_reference", title),
            ("partition_parameter_xml", parameters),
            ("filter_xml", &marshal::encode(&sla)),
            ("state", &none),
            ("shared_xml", &marshal::encode(&Value::Bool(false))),
        ])
    };
    let empty = marshal::encode(&Value::dict::<String>([]));
    let text = |body: &[u8]| String::from_utf8_lossy(body).to_string();

    // The demo computer's document, and 404 for a computer nobody registered.
    let answer = slap
        .call(
            &format!("/getFullComputerInformation?computer_id={DEMO_COMPUTER}"),
            None,
        )
        .await
        .expect("answers");
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    let document = marshal::decode(&text(&answer.body)).expect("a Computer");
    assert_eq!(
        document.get("_computer_id"),
        Some(&Value::string(DEMO_COMPUTER))
    );
    // Tagged with its version: sent back, 304 while nothing it shows changed. The dev
    // cluster may still be settling (this follower applying what its seed wrote): a 200 then
    // carries a newer tag, which is sent back in turn.
    let poll = format!("/getFullComputerInformation?computer_id={DEMO_COMPUTER}");
    let mut tag = answer.header("etag").expect("an ETag").to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let again = loop {
        let again = slap
            .call_with(&poll, None, &[("If-None-Match", &tag)])
            .await
            .expect("answers");
        if again.status != 200 {
            break again;
        }
        let newer = again.header("etag").expect("an ETag").to_string();
        assert_ne!(newer, tag, "a document answered again must have changed");
        assert!(
            std::time::Instant::now() < deadline,
            "the computer never settled"
        );
        tag = newer;
    };
    assert_eq!(again.status, 304, "{}", text(&again.body));
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(tag.as_str()));
    let answer = slap
        .call("/getFullComputerInformation?computer_id=COMP-NOBODY", None)
        .await
        .expect("answers");
    assert_eq!(answer.status, 404, "{}", text(&answer.body));
    let answer = slap
        .call_with(
            "/getFullComputerInformation?computer_id=COMP-NOBODY",
            None,
            &[("If-None-Match", "*")],
        )
        .await
        .expect("answers");
    assert_eq!(answer.status, 404, "an unknown computer matches no tag");

    // Placed: the SoftwareInstance, read back on this follower.
    let answer = slap
        .call(
            "/requestComputerPartition",
            Some(&request(
                "web-2",
                DEMO_SOFTWARE,
                Value::dict::<String>([]),
                &empty,
            )),
        )
        .await
        .expect("answers");
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    let instance = marshal::decode(&text(&answer.body)).expect("a SoftwareInstance");
    assert_eq!(
        instance.get("slap_computer_id"),
        Some(&Value::string(DEMO_COMPUTER))
    );
    // The computer changed: its document again, with another tag, once this follower has
    // applied the change.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let answer = loop {
        let answer = slap
            .call_with(&poll, None, &[("If-None-Match", &tag)])
            .await
            .expect("answers");
        if answer.status != 304 {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the change never showed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    assert_ne!(answer.header("etag"), Some(tag.as_str()));
    // No computer supplies the release: 408 while it waits (the client asks again).
    let answer = slap
        .call(
            "/requestComputerPartition",
            Some(&request(
                "elsewhere",
                "https://lab.example/nobody/software.cfg",
                Value::dict::<String>([]),
                &empty,
            )),
        )
        .await
        .expect("answers");
    assert_eq!(answer.status, 408, "{}", text(&answer.body));
    // An SLA no marketplace knows: it can never be placed, 404.
    let answer = slap
        .call(
            "/requestComputerPartition",
            Some(&request(
                "odd",
                DEMO_SOFTWARE,
                Value::dict([("colour", Value::string("blue"))]),
                &empty,
            )),
        )
        .await
        .expect("answers");
    assert_eq!(answer.status, 404, "{}", text(&answer.body));

    // The caller's mistakes are 400 with what is wrong; never 500.
    for (path, body, says) in [
        (
            "/requestComputerPartition",
            request(
                "bad",
                DEMO_SOFTWARE,
                Value::dict::<String>([]),
                "<marshal><list",
            ),
            "partition_parameter_xml",
        ),
        (
            "/requestComputerPartition",
            "software_release=%ZZ".to_string(),
            "escape",
        ),
        (
            "/supplySupply",
            form(&[("url", DEMO_SOFTWARE)]),
            "computer_id",
        ),
        (
            "/loadComputerConfigurationFromXML",
            form(&[(
                "xml",
                &marshal::encode(&Value::dict([
                    ("reference", Value::string("COMP-NEW")),
                    ("partition_list", Value::string("slappart0")),
                ])),
            )]),
            "partition_list: not a list",
        ),
    ] {
        let answer = slap.call(path, Some(&body)).await.expect("answers");
        assert_eq!(answer.status, 400, "{path}: {}", text(&answer.body));
        assert!(
            text(&answer.body).contains(says),
            "{path}: {}",
            text(&answer.body)
        );
    }
    // An unknown call: 404.
    let answer = slap.call("/noSuchCall", None).await.expect("answers");
    assert_eq!(answer.status, 404);
    // Counted by call, unknown names under one label.
    let scrape = test_kit::http::get(
        follower.http_addr().expect("operations listener"),
        "/metrics",
    )
    .await
    .expect("metrics");
    let polls: u64 = scrape
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "slapcluster_slap_request_seconds_count{call=\"getFullComputerInformation\"} ",
            )
        })
        .and_then(|n| n.parse().ok())
        .expect("polls counted");
    assert!(polls >= 5, "{polls} polls counted");
    for line in [
        "slapcluster_slap_request_seconds_count{call=\"requestComputerPartition\"} 5",
        "slapcluster_slap_request_errors_total{call=\"requestComputerPartition\"} 4",
        "slapcluster_slap_request_errors_total{call=\"unknown\"} 1",
    ] {
        assert!(scrape.body.contains(line), "{line} in:\n{}", scrape.body);
    }
    cluster.shutdown().await.expect("stops");
}
