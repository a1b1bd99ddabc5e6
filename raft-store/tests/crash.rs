//! Crash test: a child process runs the store's workload (`workload/mod.rs`: append,
//! truncate, vote, apply, snapshot, purge) and is killed with SIGKILL at seeded random moments;
//! after each kill the store is reopened and checked against everything the child reported
//! before it died (the checks are listed in `workload/mod.rs`), and the next child continues
//! on the same directory. A killed process leaves everything it wrote in the page cache, so
//! this test never sees an unsynced write lost: `power_loss.rs` does.
//!
//! One child in two syncs its applied state only every 2 ms, so that a kill rolls the state
//! back behind the log's committed index. It runs without libtest's harness because the same
//! binary is also the child.
//!
//! `RAFT_STORE_CRASH_SEED=N` replays a run; `RAFT_STORE_CRASH_KILLS=N` (default 24) soaks.

mod workload;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use raft_store::testing::{open_kv_with, splitmix};

use workload::Model;

const CHILD_DIR: &str = "RAFT_STORE_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "RAFT_STORE_CRASH_CHILD_SEED";

fn main() -> Result<()> {
    // `cargo test -- --list` and filters are libtest conventions; this harness has one test.
    if std::env::args().any(|a| a == "--list") {
        println!("crash_recovery: test");
        return Ok(());
    }
    match std::env::var_os(CHILD_DIR) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}

/// The child: works until killed, printing each report once its operation returned.
fn child(dir: &Path) -> Result<()> {
    let mut rng: u64 = std::env::var(CHILD_SEED)?.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let lazily = splitmix(&mut rng).is_multiple_of(2);
        let options = raft_store::Options {
            state_sync_interval: if lazily {
                Duration::from_millis(2)
            } else {
                Duration::ZERO
            },
            ..small_segments()
        };
        let store = open_kv_with(dir, &options)?;
        let mut stdout = std::io::stdout();
        workload::run(store, splitmix(&mut rng), lazily, &mut |line| {
            writeln!(stdout, "{line}")?;
            Ok(stdout.flush()?)
        })
        .await
    })
}

/// The parent: kills, reopens, checks.
fn parent() -> Result<()> {
    let seed = workload::seed_from("RAFT_STORE_CRASH_SEED")?;
    let kills = workload::count_from("RAFT_STORE_CRASH_KILLS", 24)?;
    println!(
        "crash_recovery: seed {seed} ({kills} kills); replay with RAFT_STORE_CRASH_SEED={seed}"
    );
    let mut rng = seed;
    let dir = tempfile::tempdir()?;
    let mut model = Model::default();
    let runtime = tokio::runtime::Runtime::new()?;

    for round in 0..kills {
        let mut child = spawn_child(dir.path(), splitmix(&mut rng))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();

        // Let the child do a random amount of work, then kill it a random moment later.
        let work = 1 + splitmix(&mut rng) % 120;
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..work {
            let line = lines.next().context("child exited early")??;
            model.observe(&line)?;
            ensure!(
                Instant::now() < deadline,
                "child made no progress within 60 s"
            );
        }
        // Not synchronisation: where the kill lands in the child's work is the test's input.
        std::thread::sleep(Duration::from_micros(splitmix(&mut rng) % 3000));
        child.kill()?;
        let status = child.wait()?;
        ensure!(
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
            "child ended by itself: {status}"
        );
        // Lines still in the pipe were printed before the kill: they are reports too.
        for line in lines {
            model.observe(&line?)?;
        }

        runtime
            .block_on(async {
                workload::check(&open_kv_with(dir.path(), &small_segments())?, &mut model).await
            })
            .with_context(|| format!("round {round}; replay with RAFT_STORE_CRASH_SEED={seed}"))?;
        println!("crash_recovery: round {round}: ok ({})", model.summary());
    }

    runtime.block_on(async {
        workload::still_works(&open_kv_with(dir.path(), &small_segments())?, &mut model).await
    })?;
    println!("crash_recovery: passed, seed {seed}");
    Ok(())
}

fn spawn_child(dir: &Path, seed: u64) -> Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .env(CHILD_DIR, dir)
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// Small log segments: every child starts, fills and recycles several.
fn small_segments() -> raft_store::Options {
    raft_store::Options {
        log_segment_bytes: 256 << 10,
        ..Default::default()
    }
}
