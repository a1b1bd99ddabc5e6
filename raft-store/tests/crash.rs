//! Crash test: a child process appends, truncates, applies, snapshots and purges in a loop and
//! is killed with SIGKILL at seeded random moments; after each kill the store is reopened and
//! checked against everything the child reported before it died.
//!
//! The child prints a line only after the operation it reports has returned:
//!   `flushed FIRST LAST TERM`  entries FIRST..=LAST of TERM are durable
//!   `truncating SINCE`         about to truncate the log from SINCE (unapplied entries only)
//!   `truncated SINCE`          the truncation returned
//!   `voted TERM`               the vote for TERM is durable
//!   `applied INDEX`            entries up to INDEX are applied (durably)
//!   `applied-lazily INDEX`     entries up to INDEX are applied, durable only after the next
//!                              sync (a child with a state sync interval, one seed in two)
//!   `snapshotted INDEX`        a snapshot up to INDEX is built (so the state is durable to it)
//!   `purged INDEX`             a snapshot was published and the log purged up to INDEX
//!
//! Checked after every kill: every reported entry not covered by a truncation is present with
//! its exact bytes; the log has no hole; the vote is not behind the last reported one; `last_applied` is at least the last one
//! reported durable (applied, or snapshotted) and
//! the key-value state equals the replay of the entries up to it; the current snapshot
//! installs into a fresh store and equals the state at its index; and the next child continues
//! on the same directory. It runs without libtest's harness because the same binary is also
//! the child.
//!
//! `RAFT_STORE_CRASH_SEED=N` replays a run; `RAFT_STORE_CRASH_KILLS=N` (default 24) soaks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use openraft::{BasicNode, Entry, EntryPayload, LeaderId, LogId, Membership, Vote};
use raft_store::testing::{
    APPLIED_COMMANDS, KV_STATS, KvCommand, KvConfig, kv_rows, open_kv, open_kv_with,
};

const CHILD_DIR: &str = "RAFT_STORE_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "RAFT_STORE_CRASH_CHILD_SEED";
const KEYS: u64 = 64;
const NODE: u64 = 1;

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

// ---------------------------------------------------------------------------------------------
// Shared: what each entry holds, derived from its index and term only.

fn key_of(index: u64) -> Vec<u8> {
    (index % KEYS).to_be_bytes().to_vec()
}

fn value_of(index: u64, term: u64) -> Vec<u8> {
    let mut value = Vec::with_capacity(256);
    value.extend_from_slice(&index.to_be_bytes());
    value.extend_from_slice(&term.to_be_bytes());
    let mut x = index ^ (term << 48);
    while value.len() < 256 {
        value.extend_from_slice(&splitmix(&mut x).to_be_bytes());
    }
    value
}

fn membership() -> Membership<u64, BasicNode> {
    Membership::new(vec![[NODE].into()], None)
}

/// Index 0 is the initial membership, as after `Raft::initialize`; every later index a put.
fn entry(index: u64, term: u64) -> Entry<KvConfig> {
    let payload = if index == 0 {
        EntryPayload::Membership(membership())
    } else {
        EntryPayload::Normal(KvCommand::Put {
            key: key_of(index),
            value: value_of(index, term),
        })
    };
    Entry {
        log_id: LogId::new(LeaderId::new(term, NODE), index),
        payload,
    }
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// The child: works until killed.

fn child(dir: &Path) -> Result<()> {
    let mut rng: u64 = std::env::var(CHILD_SEED)?.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // One child in two commits applied batches durably only every 2 ms.
        let lazily = splitmix(&mut rng).is_multiple_of(2);
        let options = raft_store::Options {
            state_sync_interval: if lazily {
                Duration::from_millis(2)
            } else {
                Duration::ZERO
            },
            ..Default::default()
        };
        let applied_line = if lazily { "applied-lazily" } else { "applied" };
        let (log, sm) = open_kv_with(dir, &options)?;
        let state = log.log_state().await?;
        let mut term = state.last_log_id.map_or(1, |id| id.leader_id.term);
        let mut next = state.last_log_id.map_or(0, |id| id.index + 1);
        let mut applied = sm.applied().await?.0.map(|id| id.index);
        loop {
            let count = 1 + splitmix(&mut rng) % 24;
            let batch: Vec<_> = (next..next + count).map(|i| entry(i, term)).collect();
            log.append_durably(batch).await?;
            println!("flushed {next} {} {term}", next + count - 1);
            next += count;

            // Like a follower whose uncommitted tail is overwritten by a new leader.
            let first_unapplied = applied.map_or(0, |a| a + 1);
            if splitmix(&mut rng).is_multiple_of(5) && next - first_unapplied > 1 {
                let since = first_unapplied + 1 + splitmix(&mut rng) % (next - first_unapplied - 1);
                println!("truncating {since}");
                log.truncate_since(since).await?;
                println!("truncated {since}");
                term += 1;
                log.save_vote_durably(Vote::new_committed(term, NODE))
                    .await?;
                println!("voted {term}");
                next = since;
                let batch: Vec<_> = (next..next + 4).map(|i| entry(i, term)).collect();
                log.append_durably(batch).await?;
                println!("flushed {next} {} {term}", next + 3);
                next += 4;
            }

            // Apply what is in the log, in a couple of batches.
            let mut from = first_unapplied;
            while from < next {
                let to = (from + 1 + splitmix(&mut rng) % 16).min(next);
                let entries = log.entries(from..to).await?;
                ensure!(
                    entries.len() as u64 == to - from,
                    "log lost entries {from}..{to}"
                );
                let last = entries.last().map(|e| e.log_id);
                sm.apply_entries(entries).await?;
                println!("{applied_line} {}", to - 1);
                if let Some(last) = last {
                    log.save_committed_lazily(last).await?;
                }
                applied = Some(to - 1);
                from = to;
            }

            if splitmix(&mut rng).is_multiple_of(8) {
                let snapshot = sm.build_snapshot_now().await?;
                if let Some(last) = snapshot.meta.last_log_id {
                    println!("snapshotted {}", last.index);
                    // Keep a few entries behind the snapshot, as openraft does.
                    let keep = splitmix(&mut rng) % 8;
                    let behind = last.index.saturating_sub(keep);
                    // Absent when an earlier purge already went further.
                    if let Some(upto) = log.entries(behind..=behind).await?.pop() {
                        log.purge_upto(upto.log_id).await?;
                        println!("purged {}", upto.log_id.index);
                    }
                }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The parent: kills, reopens, checks.

/// What the children reported, accumulated over all rounds.
#[derive(Default)]
struct Model {
    /// Term of every index known to be in the log (reported, or found on disk after a kill).
    terms: BTreeMap<u64, u64>,
    /// A truncation that started but was not reported done: entries from here may be gone.
    pending_truncation: Option<u64>,
    last_applied: Option<u64>,
    purged: Option<u64>,
    vote_term: Option<u64>,
    lines: u64,
}

impl Model {
    fn observe(&mut self, line: &str) -> Result<()> {
        self.lines += 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<u64> {
            words
                .get(i)
                .context("short line")?
                .parse()
                .with_context(|| format!("bad number in {line:?}"))
        };
        match words.first().copied() {
            Some("flushed") => {
                let (first, last, term) = (num(1)?, num(2)?, num(3)?);
                for index in first..=last {
                    self.terms.insert(index, term);
                }
            }
            Some("truncating") => self.pending_truncation = Some(num(1)?),
            Some("truncated") => {
                let since = num(1)?;
                self.terms.split_off(&since);
                self.pending_truncation = None;
            }
            Some("voted") => self.vote_term = Some(num(1)?),
            Some("applied") => self.last_applied = Some(num(1)?),
            Some("applied-lazily") => {}
            Some("snapshotted") => self.last_applied = self.last_applied.max(Some(num(1)?)),
            Some("purged") => self.purged = Some(num(1)?),
            _ => bail!("unexpected child output {line:?}"),
        }
        Ok(())
    }
}

fn parent() -> Result<()> {
    let seed = match std::env::var("RAFT_STORE_CRASH_SEED") {
        Ok(seed) => seed.parse().context("RAFT_STORE_CRASH_SEED")?,
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            now.as_secs() << 30 ^ u64::from(now.subsec_nanos())
        }
    };
    let kills: u32 = match std::env::var("RAFT_STORE_CRASH_KILLS") {
        Ok(kills) => kills.parse().context("RAFT_STORE_CRASH_KILLS")?,
        Err(_) => 24,
    };
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

        runtime.block_on(check(dir.path(), &mut model))?;
        println!(
            "crash_recovery: round {round}: ok ({} lines so far, last applied {:?}, purged {:?})",
            model.lines, model.last_applied, model.purged
        );
    }

    runtime.block_on(still_works(dir.path(), &mut model))?;
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

async fn check(dir: &Path, model: &mut Model) -> Result<()> {
    let (log, sm) = open_kv(dir)?;
    let state = log.log_state().await?;
    let purged = state.last_purged_log_id.map(|id| id.index);
    ensure!(
        purged >= model.purged,
        "purge reported up to {:?} but the log says {purged:?}",
        model.purged
    );
    let on_disk = log.entries(..).await?;

    let vote = log.vote().await?;
    ensure!(
        vote.map(|v| v.leader_id.term) >= model.vote_term,
        "vote {vote:?} is behind the reported vote in term {:?}",
        model.vote_term
    );
    // Written without fsync: it may lag, but it must decode and never pass the log.
    let committed = log.committed().await?.map(|id| id.index);
    ensure!(
        committed <= state.last_log_id.map(|id| id.index),
        "committed {committed:?} is beyond the log"
    );

    // No hole, and every entry holds exactly what its index and term say.
    for (expected_index, entry) in (purged.map_or(0, |p| p + 1)..).zip(&on_disk) {
        ensure!(
            entry.log_id.index == expected_index,
            "hole: found {} where {expected_index} was expected",
            entry.log_id
        );
        ensure!(
            *entry == self::entry(entry.log_id.index, entry.log_id.leader_id.term),
            "entry {} does not hold what was appended",
            entry.log_id
        );
    }
    ensure!(
        state.last_log_id
            == on_disk
                .last()
                .map(|e| e.log_id)
                .or(state.last_purged_log_id),
        "log state {state:?} disagrees with the entries"
    );

    // Every reported entry is there, unless a truncation that started may have removed it.
    let disk_terms: BTreeMap<u64, u64> = on_disk
        .iter()
        .map(|e| (e.log_id.index, e.log_id.leader_id.term))
        .collect();
    for (&index, &term) in model.terms.range(purged.map_or(0, |p| p + 1)..) {
        let may_be_gone = model.pending_truncation.is_some_and(|since| index >= since);
        match disk_terms.get(&index) {
            Some(&found) if found == term => {}
            None if may_be_gone => {}
            found => {
                bail!("entry {index} of term {term} was reported flushed; found term {found:?}")
            }
        }
    }
    // Adopt the disk as the truth for the next round (a kill may land after a commit and
    // before its report), keeping the terms of purged entries for the state check below.
    model.terms.split_off(&purged.map_or(0, |p| p + 1));
    model.terms.extend(disk_terms);
    model.pending_truncation = None;
    model.purged = purged;

    // The state machine: at least what was reported, never beyond the log, equal to the replay.
    let (applied, membership) = sm.applied().await?;
    let applied_index = applied.map(|id| id.index);
    ensure!(
        applied_index >= model.last_applied,
        "applied {applied_index:?} is behind the reported {:?}",
        model.last_applied
    );
    ensure!(
        applied_index <= state.last_log_id.map(|id| id.index),
        "applied {applied_index:?} is beyond the log"
    );
    if let Some(applied) = applied {
        ensure!(
            model.terms.get(&applied.index) == Some(&applied.leader_id.term),
            "last applied {applied} is not an entry of the log"
        );
        ensure!(
            membership.log_id().map(|id| id.index) == Some(0)
                && *membership.membership() == self::membership(),
            "membership {membership:?} is not the one applied at index 0"
        );
    }
    model.last_applied = applied_index;
    ensure!(
        read_kv(&sm.begin_read()?)? == replay(&model.terms, applied_index),
        "state after applying up to {applied_index:?} differs from the replay of the log"
    );

    // The current snapshot is complete: installed elsewhere, it equals the state at its index.
    if let Some(snapshot) = sm.current_snapshot().await? {
        let at = snapshot.meta.last_log_id.map(|id| id.index);
        let fresh = tempfile::tempdir()?;
        let (_, fresh_sm) = open_kv(fresh.path())?;
        fresh_sm
            .install_snapshot_file(snapshot.meta.clone(), snapshot.file)
            .await?;
        ensure!(
            read_kv(&fresh_sm.begin_read()?)? == replay(&model.terms, at),
            "snapshot at {at:?} does not hold the state at its index"
        );
    }
    Ok(())
}

/// After all the kills the store still takes appends and applies.
async fn still_works(dir: &Path, model: &mut Model) -> Result<()> {
    let (log, sm) = open_kv(dir)?;
    let last = log.log_state().await?.last_log_id.context("log is empty")?;
    let applied = sm.applied().await?.0.map_or(0, |id| id.index + 1);
    let next = last.index + 1;
    let term = last.leader_id.term;
    log.append_durably((next..next + 10).map(|i| entry(i, term)).collect())
        .await?;
    sm.apply_entries(log.entries(applied..next + 10).await?)
        .await?;
    for index in next..next + 10 {
        model.terms.insert(index, term);
    }
    ensure!(
        read_kv(&sm.begin_read()?)? == replay(&model.terms, Some(next + 9)),
        "state after the final appends differs from the replay"
    );
    Ok(())
}

type KvState = (BTreeMap<Vec<u8>, Vec<u8>>, u64);

fn read_kv(txn: &redb::ReadTransaction) -> Result<KvState> {
    let commands = match txn.open_table(KV_STATS)?.get(APPLIED_COMMANDS)? {
        Some(v) => u64::from_be_bytes(v.value().try_into()?),
        None => 0,
    };
    Ok((kv_rows(txn)?, commands))
}

/// The state after applying entries `0..=upto` with the terms in `terms`.
fn replay(terms: &BTreeMap<u64, u64>, upto: Option<u64>) -> KvState {
    let mut kv = BTreeMap::new();
    let mut commands = 0;
    if let Some(upto) = upto {
        for (&index, &term) in terms.range(1..=upto) {
            kv.insert(key_of(index), value_of(index, term));
            commands += 1;
        }
    }
    (kv, commands)
}
