//! A progress line on stderr for long operations (a snapshot streamed or restored, a learner
//! catching up), drawn only for a person at a terminal: scripts and `--json` see nothing.

use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Progress {
    label: String,
    enabled: bool,
    started: Instant,
    drawn: Option<Instant>,
}

/// At most this often, so that a fast stream does not spend its time drawing.
const REDRAW: Duration = Duration::from_millis(100);

impl Progress {
    pub fn new(label: impl Into<String>, enabled: bool) -> Self {
        Self {
            label: label.into(),
            enabled: enabled && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            started: Instant::now(),
            drawn: None,
        }
    }

    /// `done` of `total` units (bytes unless `unit` says otherwise); no total shows a count.
    pub fn update(&mut self, done: u64, total: Option<u64>, unit: &str) {
        if !self.enabled || self.drawn.is_some_and(|at| at.elapsed() < REDRAW) {
            return;
        }
        self.drawn = Some(Instant::now());
        let line = line(&self.label, done, total, unit, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.drawn.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        self.drawn = None;
    }
}

fn amount(n: u64, unit: &str) -> String {
    if unit == "bytes" {
        let mib = n as f64 / f64::from(1u32 << 20);
        format!("{mib:.1} MiB")
    } else {
        format!("{n} {unit}")
    }
}

/// `label [#####.....]  45%  12.0 MiB of 26.7 MiB  3 s`, or without a total, a count.
fn line(label: &str, done: u64, total: Option<u64>, unit: &str, elapsed: Duration) -> String {
    const WIDTH: u64 = 30;
    let seconds = elapsed.as_secs();
    match total.filter(|t| *t > 0) {
        Some(total) => {
            let done = done.min(total);
            let filled = usize::try_from(done * WIDTH / total).unwrap_or(0);
            let empty = usize::try_from(WIDTH).unwrap_or(0) - filled;
            format!(
                "{label} [{}{}] {:>3}%  {} of {}  {seconds} s",
                "#".repeat(filled),
                ".".repeat(empty),
                done * 100 / total,
                amount(done, unit),
                amount(total, unit),
            )
        }
        None => format!("{label}  {}  {seconds} s", amount(done, unit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_share_done() {
        let l = line(
            "restoring",
            1 << 20,
            Some(4 << 20),
            "bytes",
            Duration::from_secs(3),
        );
        let bar = format!("[{}{}]", "#".repeat(7), ".".repeat(23));
        assert!(l.starts_with(&format!("restoring {bar}  25%")), "{l}");
        assert!(l.contains("1.0 MiB of 4.0 MiB"));
        assert_eq!(
            line("catching up", 7, None, "entries behind", Duration::ZERO),
            "catching up  7 entries behind  0 s"
        );
    }
}
