//! The etcd side of the benchmark (`slapload --etcd`, `ops/bench/run`), briefly: three real
//! etcd members start over mTLS, take puts from several clients, and survive a leader kill,
//! which is timed. The figures are measured by `ops/bench/run` (BENCHMARKS.md), not here.

use std::time::Duration;

use ops::load::etcd::{self, EtcdCluster, EtcdTls};
use test_kit::cluster::{credentials, issue, run_tool, slapmaster_for_tests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_drives_a_real_etcd_cluster() -> anyhow::Result<()> {
    let Ok(path) = which("etcd") else {
        test_kit::skip!("etcd is not installed (./.ci/setup installs etcd-server, as root)");
        return Ok(());
    };
    // Over mTLS, as the benchmark runs it first: certificates of a CA made for the test.
    let dir = tempfile::tempdir()?;
    let slapmaster = slapmaster_for_tests()?;
    run_tool(
        &slapmaster,
        &["ca", "init", "--dir"],
        &dir.path().join("ca"),
        &[],
    )?;
    let mut members = Vec::new();
    for i in 1..=3 {
        let out = dir.path().join(format!("e{i}-tls"));
        issue(
            &slapmaster,
            dir.path(),
            &format!("replica:{i}"),
            &out,
            &["--server-name", "::1"],
        )?;
        members.push(out);
    }
    let tls = EtcdTls {
        members,
        client: credentials(&slapmaster, dir.path(), "user:etcd-test")?,
    };
    let mut cluster = EtcdCluster::start(&path, dir.path(), 3, Some(tls)).await?;
    assert!(cluster.urls().iter().all(|u| u.starts_with("https://")));
    let sample = etcd::puts(&cluster, 0, 4, Duration::from_millis(500)).await?;
    assert!(sample.latencies.len() > 10, "puts acknowledged: {sample:?}");
    assert_eq!(sample.failed, 0);
    let leader = cluster.leader().await?;
    let took = etcd::failover(&mut cluster, 0).await?;
    assert!(
        took > Duration::ZERO && took < Duration::from_secs(30),
        "{took:?}"
    );
    let after = cluster.leader().await?;
    assert!(after < 3, "a leader again after the kill (was {leader})");
    Ok(())
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
