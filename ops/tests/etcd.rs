//! The etcd side of the benchmark (`slapload --etcd`, `ops/bench/run`), briefly: three real
//! etcd members start over mTLS, take puts from several clients, and survive a leader kill,
//! which is timed. The figures are measured by `ops/bench/run` (BENCHMARKS.md), not here.

use std::time::Duration;

use ops::load::etcd::{self, EtcdCluster, EtcdTls};
use test_kit::cluster::{Layout, credentials, issue, run_tool, slapmaster_for_tests};
use test_kit::distance::RegionMap;

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

/// etcd apart, as `slapload --regions --etcd` runs it: members behind fronts that hold what
/// they send each other for the map's distance, clients through delay links, the leader moved
/// where asked. A put through the farthest member cannot beat the round trips it needs; with
/// the leader's region cut off, another member leads and takes the puts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_runs_apart_behind_the_same_links() -> anyhow::Result<()> {
    let Ok(path) = which("etcd") else {
        test_kit::skip!("etcd is not installed (./.ci/setup installs etcd-server, as root)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let map = RegionMap::parse(
        "within_ms = 1\n[[link]]\nbetween = [\"a\", \"b\"]\nrtt_ms = 20\n\
         [[link]]\nbetween = [\"a\", \"c\"]\nrtt_ms = 40\n\
         [[link]]\nbetween = [\"b\", \"c\"]\nrtt_ms = 30\n",
    )?;
    let layout = Layout {
        map,
        regions: ["a", "b", "c"].map(String::from).to_vec(),
        learners: 0,
        seed: 1,
    };
    let cluster = EtcdCluster::start_apart(&path, dir.path(), &layout, None).await?;
    cluster.move_leader(2).await?;
    assert_eq!(cluster.leader().await?, 2);
    let targets = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, region)| Ok((i, cluster.url_from(region, i)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let samples = etcd::puts_from(&cluster, targets, 0, Duration::from_millis(800)).await?;
    assert_eq!(samples.len(), 3);
    for sample in &samples {
        assert!(
            !sample.latencies.is_empty() && sample.failed == 0,
            "{sample:?}"
        );
    }
    // From a: 1 ms to its member, 40 ms on to the leader in c, 30 ms to c's majority (b).
    let fastest = samples[0].quantile(0.0);
    assert!(fastest >= Duration::from_millis(71), "{fastest:?}");
    let took = etcd::cut_off_leader(&cluster, 0).await?;
    eprintln!("etcd: leader's region cut -> next put in {took:?}");
    assert_ne!(
        cluster.leader().await?,
        2,
        "c was cut off: another member leads"
    );
    Ok(())
}
