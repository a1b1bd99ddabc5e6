//! Storage throughput with fsync: log appends and state-machine applies through the store's
//! API, beside a raw redb commit of the same bytes.
//!
//! - `append/N`: `LogStore::append_durably` of N entries whose command is 256 bytes (one frame
//!   of the write-ahead log written and synced per call, as openraft drives it).
//! - `raw_redb/N`: one redb `Durability::Immediate` commit inserting the same N encoded entries,
//!   with redb's default one-phase commit, and `raw_redb_2pc/N` with the two-phase commit the
//!   state machine uses and the log used before the write-ahead log (see `db.rs`): what a log on
//!   redb would cost, beside what the write-ahead log costs.
//! - `apply/N`: `StateMachineStore::apply_entries` of N put commands into the key-value test
//!   application (one durable transaction per batch with `last_applied`).
//!
//! Files go to `RAFT_STORE_BENCH_DIR`, or cargo's target tmpdir: a real disk, never tmpfs,
//! where fsync would cost nothing.

use std::cell::Cell;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openraft::EntryPayload;
use openraft::vote::RaftLeaderId;
use raft_store::testing::{KvCommand, KvConfig, open_kv};
use raft_store::{Entry, LeaderId, LogId};
use redb::TableDefinition;

const BATCHES: [u64; 3] = [1, 16, 256];
/// Bytes of the command in every entry: an 8-byte key and a 248-byte value.
const COMMAND_BYTES: usize = 256;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("RAFT_STORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("bench dir");
    tempfile::tempdir_in(base).expect("bench tempdir")
}

fn entry(index: u64) -> Entry<KvConfig> {
    let key = (index % 4096).to_be_bytes().to_vec();
    let value = vec![(index % 251) as u8; COMMAND_BYTES - key.len()];
    Entry::<KvConfig> {
        log_id: LogId::new(LeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(KvCommand::Put { key, value }),
    }
}

fn batch(next: &Cell<u64>, n: u64) -> Vec<Entry<KvConfig>> {
    let first = next.get();
    next.set(first + n);
    (first..first + n).map(entry).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("append");
    for n in BATCHES {
        let dir = bench_dir();
        let (log, _sm) = open_kv(dir.path()).expect("open");
        let next = Cell::new(0);
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || batch(&next, n),
                |entries| rt.block_on(log.append_durably(entries)).expect("append"),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

const RAW_LOG: TableDefinition<[u8; 8], &[u8]> = TableDefinition::new("raw_log");

fn raw_redb(c: &mut Criterion) {
    for (name, two_phase) in [("raw_redb", false), ("raw_redb_2pc", true)] {
        let mut group = c.benchmark_group(name);
        for n in BATCHES {
            let dir = bench_dir();
            let db = redb::Database::create(dir.path().join("raw.redb")).expect("create");
            let next = Cell::new(0);
            // The bytes the store writes for these entries, encoded outside the timing.
            let encode = |entries: Vec<Entry<KvConfig>>| -> Vec<([u8; 8], Vec<u8>)> {
                entries
                    .iter()
                    .map(|e| {
                        let bytes = postcard::to_stdvec(&e.payload).expect("encode");
                        (e.log_id.index.to_be_bytes(), bytes)
                    })
                    .collect()
            };
            group.throughput(Throughput::Elements(n));
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_batched(
                    || encode(batch(&next, n)),
                    |rows| {
                        let mut txn = db.begin_write().expect("write");
                        txn.set_two_phase_commit(two_phase);
                        {
                            let mut table = txn.open_table(RAW_LOG).expect("table");
                            for (key, value) in &rows {
                                table.insert(key, value.as_slice()).expect("insert");
                            }
                        }
                        txn.commit().expect("commit");
                    },
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
}

fn apply(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("apply");
    for n in BATCHES {
        let dir = bench_dir();
        let (_log, sm) = open_kv(dir.path()).expect("open");
        let next = Cell::new(0);
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || batch(&next, n),
                |entries| rt.block_on(sm.apply_entries(entries)).expect("apply"),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = storage;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = append, raw_redb, apply
}
criterion_main!(storage);
