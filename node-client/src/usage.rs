//! Resource usage per partition, from `/proc`: CPU time and resident memory of every process
//! in the partition's process groups, and the bytes its directory holds. The agent samples
//! each usage interval and posts one record per partition for the interval.
//!
//! CPU time is counted as the growth of each process's own and reaped children's time since
//! the previous sample (a process that appeared meanwhile counts in full). A process that
//! started and ended between two samples is not seen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// A process, told apart from a later one with the same pid by its start time.
type ProcessKey = (u32, u64);

/// What one sample saw of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PartitionSample {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
}

/// CPU counters between samples.
pub struct Meter {
    ticks_per_second: u64,
    page_size: u64,
    last: HashMap<ProcessKey, u64>,
}

impl Meter {
    pub fn new() -> Self {
        use nix::unistd::{SysconfVar, sysconf};
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        Self {
            ticks_per_second: u64::try_from(ticks).unwrap_or(100).max(1),
            page_size: u64::try_from(page).unwrap_or(4096),
            last: HashMap::new(),
        }
    }

    /// Samples every process whose group is in `groups` (partition → its process groups).
    pub fn sample(
        &mut self,
        groups: &BTreeMap<String, Vec<u32>>,
    ) -> BTreeMap<String, PartitionSample> {
        let owner: HashMap<u32, &str> = groups
            .iter()
            .flat_map(|(partition, gs)| gs.iter().map(move |g| (*g, partition.as_str())))
            .collect();
        let mut samples: BTreeMap<String, PartitionSample> = groups
            .keys()
            .map(|p| (p.clone(), PartitionSample::default()))
            .collect();
        let mut seen = HashMap::new();
        for stat in processes() {
            let Some(partition) = owner.get(&stat.group) else {
                continue;
            };
            let key = (stat.pid, stat.started);
            let before = self.last.get(&key).copied().unwrap_or(0);
            seen.insert(key, stat.ticks);
            if let Some(sample) = samples.get_mut(*partition) {
                sample.cpu_seconds +=
                    stat.ticks.saturating_sub(before) as f64 / self.ticks_per_second as f64;
                sample.memory_bytes += stat.resident_pages * self.page_size;
            }
        }
        self.last = seen;
        samples
    }
}

impl Default for Meter {
    fn default() -> Self {
        Self::new()
    }
}

struct ProcessStat {
    pid: u32,
    group: u32,
    started: u64,
    /// utime + stime + cutime + cstime.
    ticks: u64,
    resident_pages: u64,
}

fn processes() -> impl Iterator<Item = ProcessStat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(pid, &stat)
        })
}

/// Fields of `/proc/PID/stat` after the command name: 3 state, 5 pgrp, 14-17 times, 22
/// start time, 24 rss (pages).
fn parse_stat(pid: u32, stat: &str) -> Option<ProcessStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcessStat {
        pid,
        group: u32::try_from(field(5)?).ok()?,
        ticks: field(14)? + field(15)? + field(16)? + field(17)?,
        started: field(22)?,
        resident_pages: field(24)?,
    })
}

/// Bytes held under `directory`, not following symbolic links, each inode counted once.
pub fn disk_bytes(directory: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut inodes = BTreeSet::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if inodes.insert((meta.dev(), meta.ino())) {
                // Allocated blocks, as du counts them (a sparse file holds less than its size).
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_with_a_tricky_command_name() {
        let line = "4242 (a (weird) name) S 1 4240 4240 0 -1 4194560 100 0 0 0 \
                    150 50 10 5 20 0 1 0 987654 12345678 321 18446744073709551615";
        let stat = parse_stat(4242, line).expect("parses");
        assert_eq!(stat.group, 4240);
        assert_eq!(stat.ticks, 215);
        assert_eq!(stat.started, 987_654);
        assert_eq!(stat.resident_pages, 321);
    }

    #[test]
    fn counts_this_process_group() {
        let me = std::process::id();
        let group = processes()
            .find(|p| p.pid == me)
            .map(|p| p.group)
            .expect("this process is in /proc");
        let mut meter = Meter::new();
        let groups = BTreeMap::from([("slappart0".to_owned(), vec![group])]);
        // Burn a little CPU so the counters move.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let sample = meter.sample(&groups)["slappart0"];
        assert!(sample.memory_bytes > 0);
        assert!(sample.cpu_seconds > 0.0, "{sample:?}");
    }

    #[test]
    fn disk_counts_files_once() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("a"), vec![1u8; 64 * 1024])?;
        std::fs::create_dir(dir.path().join("sub"))?;
        std::fs::hard_link(dir.path().join("a"), dir.path().join("sub").join("b"))?;
        let bytes = disk_bytes(dir.path());
        assert!((64 * 1024..128 * 1024).contains(&bytes), "{bytes}");
        Ok(())
    }
}
