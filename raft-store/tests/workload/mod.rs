//! What the crash tests share: a workload that uses the store as openraft does (append,
//! truncate an uncommitted tail, vote, apply, snapshot, purge), reporting each operation once
//! it returned; the model of what those reports promise; and the check of a reopened store
//! against it.
//!
//! Reports, one line each, made only after the operation returned:
//!   `flushed FIRST LAST TERM`  entries FIRST..=LAST of TERM are durable
//!   `truncating SINCE`         about to truncate the log from SINCE (uncommitted entries only)
//!   `truncated SINCE`          the truncation returned
//!   `voted TERM`               the vote for TERM is durable
//!   `applied INDEX`            entries up to INDEX are applied (durably)
//!   `applied-lazily INDEX`     entries up to INDEX are applied, durable only after the next
//!                              sync of the state (a store with a state sync interval)
//!   `snapshotted INDEX`        a snapshot up to INDEX is built (so the state is durable to it)
//!   `purged INDEX`             a snapshot was published and the log purged up to INDEX
//!
//! Checked after every crash: every reported entry not covered by a truncation is present with
//! its exact bytes; the log has no hole; the vote is not behind the last reported one; the
//! committed log id is not past the log; `last_applied` is at least the last one reported
//! durable (applied, or snapshotted) and the key-value state equals the replay of the entries
//! up to it; every entry reported applied, lazily or not, is still in the log (or behind a
//! snapshot) with its term, so that replaying it recovers a lazily synced state (the workload
//! does so when it starts again, as openraft does, up to the committed log id); the current
//! snapshot installs into a fresh store and equals the state at its index. The model also
//! refuses a workload that would truncate an applied entry, which Raft never does.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, EntryPayload, Membership};
use raft_store::testing::{
    APPLIED_COMMANDS, KV_STATS, KvApp, KvCommand, KvConfig, kv_rows, open_kv, splitmix,
};
use raft_store::{Entry, LeaderId, LogId, Vote};
use raft_store::{LogStore, StateMachineStore};

pub type Store = (LogStore<KvConfig>, StateMachineStore<KvConfig, KvApp>);

const KEYS: u64 = 64;
const NODE: u64 = 1;

// ---------------------------------------------------------------------------------------------
// What each entry holds, derived from its index and term only.

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
    Membership::new_with_defaults(vec![[NODE].into()], [])
}

/// Index 0 is the initial membership, as after `Raft::initialize`; every later index a put.
pub fn entry(index: u64, term: u64) -> Entry<KvConfig> {
    let payload = if index == 0 {
        EntryPayload::Membership(membership())
    } else {
        EntryPayload::Normal(KvCommand::Put {
            key: key_of(index),
            value: value_of(index, term),
        })
    };
    Entry::<KvConfig> {
        log_id: LogId::new(LeaderId::new(term, NODE), index),
        payload,
    }
}

// ---------------------------------------------------------------------------------------------
// The workload: runs until an operation fails (the crash) or a report is refused.

/// Works on `store` as openraft would, reporting each operation through `report` once it
/// returned; `lazily` says whether the store's state is synced lazily (then applies are
/// reported `applied-lazily`). Returns the first error: the store's, or `report`'s.
pub async fn run(
    store: Store,
    seed: u64,
    lazily: bool,
    report: &mut dyn FnMut(String) -> Result<()>,
) -> Result<()> {
    let (log, sm) = store;
    let mut rng = seed;
    let applied_line = if lazily { "applied-lazily" } else { "applied" };
    let state = log.log_state().await?;
    let mut term = state.last_log_id.map_or(1, |id| id.leader_id.term);
    let mut next = state.last_log_id.map_or(0, |id| id.index + 1);
    let mut applied = sm.applied().await?.0.map(|id| id.index);
    // Entries from here on were never applied by an earlier life of this store. The committed
    // log id is written lazily, so after a crash it may be behind entries that were applied
    // (hence committed); Raft never truncates those, so neither does this workload.
    let fresh = next;

    // As openraft does on start: apply what the log says is committed before anything else.
    // A lazily synced state may have rolled back behind it; those entries are committed, so
    // they are in the log and are never truncated.
    let committed = log.committed().await?.map(|id| id.index);
    if committed > applied {
        let from = applied.map_or(0, |a| a + 1);
        let to = committed.map_or(0, |c| c + 1);
        let entries = log.entries(from..to).await?;
        ensure!(
            entries.len() as u64 == to - from,
            "log lost committed entries {from}..{to}"
        );
        sm.apply_entries(entries).await?;
        report(format!("{applied_line} {}", to - 1))?;
        applied = Some(to - 1);
    }

    loop {
        let count = 1 + splitmix(&mut rng) % 24;
        let batch: Vec<_> = (next..next + count).map(|i| entry(i, term)).collect();
        log.append_durably(batch).await?;
        report(format!("flushed {next} {} {term}", next + count - 1))?;
        next += count;

        // Like a follower whose uncommitted tail is overwritten by a new leader: only entries
        // never applied, in this life or an earlier one.
        let first_unapplied = applied.map_or(0, |a| a + 1);
        let lowest = (first_unapplied + 1).max(fresh);
        if splitmix(&mut rng).is_multiple_of(5) && next > lowest {
            let since = lowest + splitmix(&mut rng) % (next - lowest);
            report(format!("truncating {since}"))?;
            log.truncate_since(since).await?;
            report(format!("truncated {since}"))?;
            term += 1;
            log.save_vote_durably(Vote::new_committed(term, NODE))
                .await?;
            report(format!("voted {term}"))?;
            next = since;
            let batch: Vec<_> = (next..next + 4).map(|i| entry(i, term)).collect();
            log.append_durably(batch).await?;
            report(format!("flushed {next} {} {term}", next + 3))?;
            next += 4;
        }

        // Commit and apply what is in the log, in a couple of batches.
        let mut from = first_unapplied;
        while from < next {
            let to = (from + 1 + splitmix(&mut rng) % 16).min(next);
            let entries = log.entries(from..to).await?;
            ensure!(
                entries.len() as u64 == to - from,
                "log lost entries {from}..{to}"
            );
            let last = entries.last().map(|e| e.log_id);
            if let Some(last) = last {
                log.save_committed_lazily(last).await?;
            }
            sm.apply_entries(entries).await?;
            report(format!("{applied_line} {}", to - 1))?;
            applied = Some(to - 1);
            from = to;
        }

        if splitmix(&mut rng).is_multiple_of(8) {
            let snapshot = sm.build_snapshot_now().await?;
            if let Some(last) = snapshot.meta.last_log_id {
                report(format!("snapshotted {}", last.index))?;
                // Keep a few entries behind the snapshot, as openraft does.
                let keep = splitmix(&mut rng) % 8;
                let behind = last.index.saturating_sub(keep);
                // Absent when an earlier purge already went further.
                if let Some(upto) = log.entries(behind..=behind).await?.pop() {
                    log.purge_upto(upto.log_id).await?;
                    report(format!("purged {}", upto.log_id.index))?;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model: what the reports promise, accumulated over all crashes.

#[derive(Default)]
pub struct Model {
    /// Term of every index known to be in the log (reported, or found on disk after a crash).
    terms: BTreeMap<u64, u64>,
    /// A truncation that started but was not reported done: entries from here may be gone.
    pending_truncation: Option<u64>,
    /// Applied as reported durable.
    last_applied: Option<u64>,
    /// Applied as reported, durable or not.
    applied_any: Option<u64>,
    purged: Option<u64>,
    vote_term: Option<u64>,
    pub lines: u64,
}

impl Model {
    pub fn observe(&mut self, line: &str) -> Result<()> {
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
            Some("truncating") => {
                let since = num(1)?;
                ensure!(
                    Some(since) > self.applied_any,
                    "the workload truncates from {since}, but entries up to {:?} were applied: \
                     Raft never truncates committed entries",
                    self.applied_any
                );
                self.pending_truncation = Some(since);
            }
            Some("truncated") => {
                let since = num(1)?;
                self.terms.split_off(&since);
                self.pending_truncation = None;
            }
            Some("voted") => self.vote_term = Some(num(1)?),
            Some("applied") => {
                self.last_applied = Some(num(1)?);
                self.applied_any = self.applied_any.max(self.last_applied);
            }
            Some("applied-lazily") => self.applied_any = self.applied_any.max(Some(num(1)?)),
            Some("snapshotted") => self.last_applied = self.last_applied.max(Some(num(1)?)),
            Some("purged") => self.purged = Some(num(1)?),
            _ => bail!("unexpected report {line:?}"),
        }
        Ok(())
    }

    pub fn summary(&self) -> String {
        format!(
            "{} lines so far, last applied {:?}, purged {:?}",
            self.lines, self.last_applied, self.purged
        )
    }
}

/// Checks the store reopened after a crash against everything reported before it, then
/// adopts what it found as the truth for the next round. Re-applies what a lazily synced
/// state lost, as openraft would.
pub async fn check(store: &Store, model: &mut Model) -> Result<()> {
    let (log, sm) = store;
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
        "committed {committed:?} is beyond the log (last {:?})",
        state.last_log_id
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
    // Adopt the disk as the truth for the next round (a crash may land after a commit and
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
    ensure!(
        read_kv(&sm.begin_read()?)? == replay(&model.terms, applied_index),
        "state after applying up to {applied_index:?} differs from the replay of the log"
    );

    // What a lazily synced state lost comes back from the log, as openraft replays it: every
    // entry reported applied is committed, so it is still there (or behind a snapshot, which
    // covers it), with the term it was applied with (checked above).
    if model.applied_any > applied_index {
        let from = applied_index.map_or(0, |a| a + 1);
        let to = model.applied_any.map_or(0, |a| a + 1);
        let found = log.entries(from..to).await?.len();
        ensure!(
            found as u64 == to - from,
            "entries {from}..{to} were reported applied, but the log holds only {found} of them"
        );
    }
    model.last_applied = applied_index;

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

/// After all the crashes the store still takes appends and applies.
pub async fn still_works(store: &Store, model: &mut Model) -> Result<()> {
    let (log, sm) = store;
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

/// The seed from `var`, or from the clock.
pub fn seed_from(var: &str) -> Result<u64> {
    match std::env::var(var) {
        Ok(seed) => seed.parse().with_context(|| var.to_string()),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            Ok(now.as_secs() << 30 ^ u64::from(now.subsec_nanos()))
        }
    }
}

/// A count from `var`, or `default`.
pub fn count_from(var: &str, default: u32) -> Result<u32> {
    match std::env::var(var) {
        Ok(n) => n.parse().with_context(|| var.to_string()),
        Err(_) => Ok(default),
    }
}
