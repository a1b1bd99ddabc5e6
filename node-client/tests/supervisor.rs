//! The supervisor with real processes: restart after an exit, a stop that reaches the whole
//! process group, a changed spec restarted, and processes a killed agent left behind.

use std::path::Path;
use std::time::Duration;

use node_client::supervisor::{ProcessSpec, Supervisor};
use test_kit::cluster::wait_for;

fn spec(directory: &Path, name: &str, script: &str) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: [("GREETING".to_owned(), "hello".to_owned())].into(),
        directory: directory.to_path_buf(),
        run_as: None,
    }
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid.trim()).exists()
        && !std::fs::read_to_string(Path::new("/proc").join(pid.trim()).join("stat"))
            .is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test]
async fn supervises_restarts_and_stops_whole_groups() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let partition = dir.path();
    let supervisor = Supervisor::new(Duration::from_secs(5));

    // Appends a line per start, starts a grandchild that records its pid, then exits after a
    // moment: the supervisor must start it again.
    let flapping = spec(
        partition,
        "flapping",
        "echo \"$GREETING\" >> starts; sleep 1000 & echo $! > grandchild; sleep 0.2; exit 1",
    );
    supervisor.ensure("slappart0", vec![flapping.clone()]).await;
    wait_for("two starts", || async {
        let starts = std::fs::read_to_string(partition.join("starts")).unwrap_or_default();
        (starts.lines().count() >= 2).then_some(())
    })
    .await?;
    let log = std::fs::read_to_string(flapping.log_path()).unwrap_or_default();
    assert!(log.is_empty() || !log.contains("not found"), "{log}");

    // A long-running process with a grandchild: stopping the partition stops both.
    let steady = spec(
        partition,
        "steady",
        "sleep 1000 & echo $! > steady-child; wait",
    );
    supervisor.ensure("slappart0", vec![steady.clone()]).await;
    let child = wait_for("the steady process's child", || async {
        std::fs::read_to_string(partition.join("steady-child"))
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
    .await?;
    assert!(alive(&child));
    assert!(!supervisor.groups("slappart0").is_empty());
    supervisor.stop_partition("slappart0", partition).await;
    wait_for("the grandchild to be gone", || async {
        (!alive(&child)).then_some(())
    })
    .await?;
    assert!(!supervisor.supervises("slappart0"));
    Ok(())
}

#[test]
fn processes_left_by_a_killed_agent_are_stopped_before_new_ones_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let partition = dir.path();
    let process = spec(partition, "web", "echo $$ >> pids; exec sleep 1000");

    // The first agent starts it, then vanishes without stopping it: its runtime is dropped
    // with the supervisor still alive, as when the agent is killed.
    let runtime = tokio::runtime::Runtime::new()?;
    let first = process.clone();
    runtime.block_on(async {
        let supervisor = Supervisor::new(Duration::from_secs(5));
        supervisor.ensure("slappart0", vec![first]).await;
        let started = wait_for("the first start", || async {
            std::fs::read_to_string(partition.join("pids"))
                .ok()
                .filter(|s| s.lines().count() == 1)
        })
        .await;
        // Never dropped: a dropped supervisor stops its processes, a killed agent does not.
        std::mem::forget(supervisor);
        started
    })?;
    std::thread::spawn(move || drop(runtime))
        .join()
        .map_err(|_| anyhow::anyhow!("drop"))?;
    let pids = std::fs::read_to_string(partition.join("pids"))?;
    let orphan = pids.lines().next().unwrap_or_default().to_owned();
    assert!(alive(&orphan), "the orphan outlived its agent");

    tokio::runtime::Runtime::new()?.block_on(async {
        let supervisor = Supervisor::new(Duration::from_secs(5));
        supervisor.ensure("slappart0", vec![process]).await;
        wait_for("the orphan stopped and a new process started", || async {
            let pids = std::fs::read_to_string(partition.join("pids")).ok()?;
            (pids.lines().count() == 2 && !alive(&orphan)).then_some(())
        })
        .await?;
        supervisor.stop_all().await;
        anyhow::Ok(())
    })
}
