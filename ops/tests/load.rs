//! The load tool (`slapload`) against real `slapmaster` processes (and one `slapnode`),
//! briefly: every phase runs, every request is placed, and the failover phase kills and
//! restarts a leader; apart in regions, every phase per region and a region cut off. The figures themselves are measured with the release build
//! (BENCHMARKS.md), not here.

use std::time::Duration;

use test_kit::cluster::{Cluster, binary_for_tests, slapmaster_for_tests};
use test_kit::distance::RegionMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_runs_every_phase_against_real_processes() {
    let options = ops::load::Options {
        slapmaster: slapmaster_for_tests().expect("slapmaster builds"),
        data_dir: None,
        replicas: 3,
        clients: vec![1, 8],
        placement_time: Duration::from_millis(500),
        poll_clients: 2,
        poll_time: Duration::from_millis(500),
        wakes: 5,
        // The agent phase needs slapnode: node-client's tests smoke it.
        slapnode: None,
        agent_time: Duration::ZERO,
        agent_partitions: 0,
        failovers: 1,
        etcd: None,
        etcd_tls: Vec::new(),
        config: None,
    };
    let report = ops::load::run(&options, |line| eprintln!("slapload: {line}"))
        .await
        .expect("the load tool runs");
    eprintln!("{report}");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "two placement phases, polls, wakes, failover"
    );
    for line in &lines[..3] {
        assert!(line.contains(", 0 failed"), "{line}");
        assert!(!line.contains("(0 in"), "nothing measured: {line}");
    }
    assert!(lines[3].contains("(5 changes)"), "{}", lines[3]);
    assert!(lines[4].contains("(1 kills)"), "{}", lines[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_phase_measures_a_real_slapnode() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(&slapmaster_for_tests()?, dir.path(), 3).await?;
    let figures = ops::load::agent::measure(
        &cluster,
        &binary_for_tests("node-client", "slapnode")?,
        dir.path(),
        3,
        Duration::from_millis(2500),
    )
    .await?;
    eprintln!("{}", figures.lines().join("\n"));
    assert!(figures.polls >= 1, "{figures:?}");
    assert!(
        figures.rss_bytes > 0 && !figures.cpu.is_zero(),
        "{figures:?}"
    );
    Ok(())
}

/// Three regions 20-40 ms apart (a small map, so that the test is quick), and a far one, d,
/// 80-120 ms from them.
const SMALL_MAP: &str = "within_ms = 1\njitter_ms = 1\n\
    [[link]]\nbetween = [\"a\", \"b\"]\nrtt_ms = 20\n\
    [[link]]\nbetween = [\"a\", \"c\"]\nrtt_ms = 40\n\
    [[link]]\nbetween = [\"b\", \"c\"]\nrtt_ms = 30\n\
    [[link]]\nbetween = [\"a\", \"d\"]\nrtt_ms = 120\n\
    [[link]]\nbetween = [\"b\", \"d\"]\nrtt_ms = 100\n\
    [[link]]\nbetween = [\"c\", \"d\"]\nrtt_ms = 80\n";

/// `slapload --regions`, briefly: a voter in each of three regions of a small map and a
/// learner in the far fourth, the leader moved to the one asked for, clients in every region
/// on their nearest replica, every phase measured per region beside its floor, and the
/// leader's region cut off once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_runs_with_its_replicas_apart() {
    let options = ops::load::regions::RegionOptions {
        slapmaster: slapmaster_for_tests().expect("slapmaster builds"),
        data_dir: None,
        map: RegionMap::parse(SMALL_MAP).expect("the map"),
        voters: ["a", "b", "c"].map(String::from).to_vec(),
        learners: vec!["d".into()],
        leader: Some("b".into()),
        clients: vec![4, 12],
        loopback_clients: 0,
        placement_time: Duration::from_millis(500),
        poll_clients: 1,
        poll_time: Duration::from_millis(300),
        wakes: 3,
        cutoffs: 1,
        config: Some("[raft]\nrtt_ms = 40\n".into()),
        seed: 1,
        etcd: None,
    };
    let report = ops::load::regions::run(&options, |line| eprintln!("slapload: {line}"))
        .await
        .expect("the regional run");
    eprintln!("{report}");
    assert!(report.contains("leader: replica 2 in b"), "{report}");
    assert!(report.contains("learners in d"), "{report}");
    let placements: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("placements") || l.trim_start().starts_with("from "))
        .collect();
    assert_eq!(
        placements.len(),
        10,
        "two phases, each all and per region:\n{report}"
    );
    for line in placements {
        assert!(line.contains(", 0 failed"), "{line}");
        assert!(!line.contains("(0 in"), "nothing measured: {line}");
    }
    // d's nodes poll d's learner: its polls cross no region (the nearest voter is 80 ms away).
    let polls_from_d = report
        .lines()
        .find(|l| l.starts_with("full polls from d"))
        .expect("polls from d");
    assert!(polls_from_d.ends_with("floor 1 ms"), "{polls_from_d}");
    let p50 = polls_from_d
        .split("p50")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse::<f64>().ok())
        .expect("a p50");
    assert!(
        p50 < 40.0,
        "answered by the learner, not across 80 ms: {polls_from_d}"
    );
    for region in ["a", "b", "c", "d"] {
        for what in [
            "full polls from",
            "long-poll wake in",
            "read-your-writes wait in",
        ] {
            assert!(
                report.contains(&format!("{what} {region}")),
                "{what} {region}:\n{report}"
            );
        }
    }
    assert!(report.contains("(1 cuts)"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_run_measures_every_phase_on_a_small_cluster() {
    let options = ops::load::scale::ScaleOptions {
        slapmaster: slapmaster_for_tests().expect("slapmaster builds"),
        data_dir: None,
        computers: 20,
        partitions: 10,
        fill_percent: 50,
        clients: 4,
        parameter_bytes: 256,
        placement_time: Duration::from_millis(500),
        // Every computer: the baseline's 80 and the 20 filled.
        pollers: 100,
        config: None,
    };
    let report = ops::load::scale::run(&options, |line| eprintln!("slapload: {line}"))
        .await
        .expect("the scale run");
    eprintln!("{report}");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 16, "{report}");
    assert!(lines[0].contains(", 0 failed"), "{}", lines[0]);
    assert!(
        lines[1].contains("20 computers, 200 partitions"),
        "{}",
        lines[1]
    );
    let placed: usize = lines[2]
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a count");
    // Clients stop once they see the target: the last requests in flight may pass it.
    assert!(
        (100..100 + 4).contains(&placed),
        "the fill placed {placed}: {}",
        lines[2]
    );
    assert_eq!(
        lines[3].split_whitespace().count(),
        4 + 10,
        "ten tenths: {}",
        lines[3]
    );
    assert!(lines[4].contains(", 0 failed"), "{}", lines[4]);
    assert!(lines[5].contains("100 open"), "{}", lines[5]);
    assert!(lines[6].contains(", 0 failed"), "{}", lines[6]);
    // Every placement on a polled computer woke its node (the run waits for it), and some did.
    let woken: usize = lines[7]
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a count of wakes");
    assert!(woken > 0, "{}", lines[7]);
    assert!(
        lines[7].contains("; 0 on computers not polled"),
        "{}",
        lines[7]
    );
    for replica in &lines[8..11] {
        assert!(
            replica.contains("resident") && !replica.contains("resident 0 MiB"),
            "{replica}"
        );
    }
    assert!(lines[11].contains("ready in"), "{}", lines[11]);
    assert!(
        lines[12].contains("new replica 4 from empty") && lines[12].contains("caught up in"),
        "{}",
        lines[12]
    );
    assert!(lines[13].contains("failover at size"), "{}", lines[13]);
    assert!(
        lines[14].contains("empty again") && lines[14].contains(", 0 failed"),
        "{}",
        lines[14]
    );
    assert!(lines[15].contains("at size / empty"), "{}", lines[15]);
}
