//! Power-loss test: the store's workload (`workload/mod.rs`) runs on disks that keep what was
//! written since their last sync apart (`raft_store::testing::power_loss`): the log's directory
//! of segment files (small ones, so that segments are started, filled and recycled many times)
//! and the state machine's disk. At a seeded moment (a count of disk calls, so a cut can land
//! inside any write, sync or rename, or inside the recovery that opening after the previous cut
//! does) the power goes out on all of them at once. The
//! disks then keep nothing, everything, or a seeded part of the unsynced writes, torn at
//! sector boundaries; the store is reopened and checked against everything reported before
//! the cut (the checks are listed in `workload/mod.rs`), and the next round continues on the
//! same disks.
//!
//! One round in two syncs the applied state only when a snapshot is built, so that a cut rolls
//! the state back behind the log's committed index and recovery must replay the log. The
//! snapshots directory is on the real disk: only the two redb files lose power.
//!
//! A second run puts the store on disks that lie about `sync_data`: the check must catch it.
//!
//! Everything derives from the printed seed: `RAFT_STORE_POWER_LOSS_SEED=N` replays a run
//! exactly; `RAFT_STORE_POWER_LOSS_CUTS=N` (default 100) soaks.

mod workload;

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use raft_store::testing::power_loss::{Directory, Disk, Power, Survival};
use raft_store::testing::{KvApp, open_kv_on, splitmix};
use raft_store::{Options, StoreError};

use workload::Model;

fn main() -> Result<()> {
    // `cargo test -- --list` and filters are libtest conventions; this harness has one test.
    if std::env::args().any(|a| a == "--list") {
        println!("power_loss: test");
        return Ok(());
    }
    let seed = workload::seed_from("RAFT_STORE_POWER_LOSS_SEED")?;
    let cuts = workload::count_from("RAFT_STORE_POWER_LOSS_CUTS", 100)?;
    println!(
        "power_loss: seed {seed} ({cuts} cuts); replay with RAFT_STORE_POWER_LOSS_SEED={seed}"
    );
    power_cuts(seed, cuts)
        .with_context(|| format!("replay with RAFT_STORE_POWER_LOSS_SEED={seed}"))?;
    println!("power_loss: passed, seed {seed}");
    lying_disk_is_caught()?;
    Ok(())
}

/// The machine's disks and the directory of its snapshots.
struct Machine {
    dir: tempfile::TempDir,
    log: Directory,
    state: Disk,
}

/// Small segments: a round rotates through several and purges recycle them.
const SEGMENT_BYTES: u64 = 64 << 10;

impl Machine {
    fn new() -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            log: Directory::new(),
            state: Disk::new(),
        })
    }

    /// Opens the store with the power on for good (after a cut, to check it).
    fn reopen(&self) -> Result<workload::Store, StoreError> {
        open_kv_on(
            self.dir.path(),
            &self.log,
            &self.state,
            &Power::on(),
            &Options {
                log_segment_bytes: SEGMENT_BYTES,
                ..Default::default()
            },
        )
    }

    /// The power comes back; returns how many unsynced bytes the two disks lost.
    fn power_cycle(&self, survival: Survival, rng: &mut u64) -> u64 {
        self.log.power_cycle(survival, splitmix(rng))
            + self.state.power_cycle(survival, splitmix(rng))
    }
}

fn power_cuts(seed: u64, cuts: u32) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let machine = Machine::new()?;
    let mut model = Model::default();
    let mut rng = seed;
    let mut during_open = 0;
    for cut in 0..cuts {
        let lazily = splitmix(&mut rng).is_multiple_of(2);
        let options = Options {
            // Long enough that only building a snapshot syncs the state.
            state_sync_interval: if lazily {
                Duration::from_secs(3600)
            } else {
                Duration::ZERO
            },
            log_segment_bytes: SEGMENT_BYTES,
            ..Default::default()
        };
        // One cut in eight comes early, mostly while opening (recovering from the last cut).
        let span = if splitmix(&mut rng).is_multiple_of(8) {
            120
        } else {
            3000
        };
        let calls = 1 + splitmix(&mut rng) % span;
        let power = Power::cut_after(calls);
        let workload_seed = splitmix(&mut rng);
        runtime.block_on(async {
            let store = match open_kv_on(
                machine.dir.path(),
                &machine.log,
                &machine.state,
                &power,
                &options,
            ) {
                Ok(store) => store,
                // The cut came while opening: recovery itself was interrupted.
                Err(_) if power.is_lost() => {
                    during_open += 1;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            let outcome = workload::run(store, workload_seed, lazily, &mut |line| {
                // A report after the cut would claim what the dead machine never finished.
                if power.is_lost() {
                    bail!("power lost");
                }
                model.observe(&line)
            })
            .await;
            match outcome {
                Err(_) if power.is_lost() => Ok(()),
                Err(e) => Err(e.context("the workload failed with the power on")),
                Ok(()) => bail!("the workload stopped by itself"),
            }
        })?;

        let survival = match splitmix(&mut rng) % 4 {
            0 => Survival::Nothing,
            1 => Survival::Everything,
            _ => Survival::Sectors((splitmix(&mut rng) % 1000) as f64 / 1000.0),
        };
        let lost = machine.power_cycle(survival, &mut rng);
        runtime
            .block_on(async { workload::check(&machine.reopen()?, &mut model).await })
            .with_context(|| format!("cut {cut}: after {calls} disk calls, {survival:?}"))?;
        println!(
            "power_loss: cut {cut}: after {calls} disk calls, {survival:?}, {lost} unsynced \
             bytes lost: ok ({})",
            model.summary()
        );
    }
    println!(
        "power_loss: {during_open} of {cuts} cuts interrupted the recovery of the previous one"
    );
    runtime.block_on(async { workload::still_works(&machine.reopen()?, &mut model).await })
}

/// The same workload on disks whose sync makes nothing durable, cut keeping nothing unsynced:
/// the check must report what was lost at the first cut.
fn lying_disk_is_caught() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let machine = Machine::new()?;
    let mut model = Model::default();
    let power = Power::cut_after(2000);
    runtime.block_on(async {
        let store = raft_store::open_on(
            machine.dir.path(),
            machine.log.lying_storage(&power),
            machine.state.lying_backend(&power),
            KvApp,
            &Options {
                log_segment_bytes: SEGMENT_BYTES,
                ..Default::default()
            },
        )?;
        let outcome = workload::run(store, 1, false, &mut |line| {
            if power.is_lost() {
                bail!("power lost");
            }
            model.observe(&line)
        })
        .await;
        ensure!(
            power.is_lost(),
            "the workload stopped before the cut: {outcome:?}"
        );
        Ok(())
    })?;
    ensure!(model.lines > 0, "nothing was reported before the cut");
    machine.power_cycle(Survival::Nothing, &mut 0);
    match runtime.block_on(async { workload::check(&machine.reopen()?, &mut model).await }) {
        Ok(()) => bail!("a disk that lies about fsync went unnoticed"),
        Err(e) => {
            println!("power_loss: a disk that lies about fsync is caught at the first cut: {e:#}")
        }
    }
    Ok(())
}
