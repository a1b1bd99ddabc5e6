//! The load tool (`slapload`) against real `slapmaster` processes (and one `slapnode`),
//! briefly: every phase runs, every request is placed, and the failover phase kills and
//! restarts a leader. The figures themselves are measured with the release build
//! (BENCHMARKS.md), not here.

use std::time::Duration;

use test_kit::cluster::{Cluster, binary_for_tests, slapmaster_for_tests};

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
