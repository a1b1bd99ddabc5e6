//! A run's report: a text summary (faults, operations by kind and outcome, latencies,
//! recovery, violations), the JSON history, and a timeline picture (SVG) of operations per
//! worker with the faults as shaded bands.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use ops::load::Sample;

use crate::ChaosError;
use crate::history::{Call, Freshness, History, Outcome, worker_name};

/// The summary of a run: `heading` (the run's configuration, [`crate::run::RunConfig::heading`])
/// first, then faults, operations, latencies, recovery and violations.
pub fn summary(
    heading: &str,
    history: &History,
    violations: &[String],
    notes: &[String],
    recovered_in: Option<Duration>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{heading}");
    let _ = writeln!(out, "faults ({}):", history.faults.len());
    for fault in &history.faults {
        let _ = writeln!(
            out,
            "  {:>8.3}-{:>8.3} s  {:<15} {}",
            fault.started_us as f64 / 1e6,
            fault.healed_us as f64 / 1e6,
            fault.kind,
            fault.description
        );
    }
    let mut counts: BTreeMap<(&str, &str), Sample> = BTreeMap::new();
    for op in &history.ops {
        let kind = match op.call {
            Call::Request { .. } => "request",
            Call::Publish { .. } => "publish",
            Call::Read {
                freshness: Freshness::Linearizable,
            } => "read (linearizable)",
            Call::Read {
                freshness: Freshness::Stale,
            } => "read (stale)",
            Call::Intrude { .. } => "intrusion (must be refused)",
        };
        let outcome = match op.outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::Unknown(_) => "unknown",
        };
        counts
            .entry((kind, outcome))
            .or_default()
            .latencies
            .push(Duration::from_micros(
                op.completed_us.saturating_sub(op.invoked_us),
            ));
    }
    let _ = writeln!(out, "operations ({}):", history.ops.len());
    for ((kind, outcome), sample) in counts {
        let ms = |q: f64| sample.quantile(q).as_secs_f64() * 1000.0;
        let _ = writeln!(
            out,
            "  {kind:<20} {outcome:<8} {:>6}   p50 {:>8.2} ms   p99 {:>8.2} ms",
            sample.latencies.len(),
            ms(0.5),
            ms(0.99)
        );
    }
    match recovered_in {
        Some(took) => {
            let _ = writeln!(
                out,
                "serving again {:.3} s after healing",
                took.as_secs_f64()
            );
        }
        None => {
            let _ = writeln!(out, "NOT serving again within the liveness bound");
        }
    }
    for note in notes {
        let _ = writeln!(out, "note: {note}");
    }
    if violations.is_empty() {
        let _ = writeln!(out, "violations: none");
    } else {
        let _ = writeln!(out, "violations ({}):", violations.len());
        for violation in violations {
            let _ = writeln!(out, "  {violation}");
        }
    }
    out
}

/// Writes `summary.txt`, `history.json` and `timeline.svg` into `dir`.
pub fn save(dir: &Path, history: &History, summary: &str) -> Result<(), ChaosError> {
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| ChaosError::Setup(format!("writing {}: {e}", dir.join(name).display())))
    };
    write("summary.txt", summary.as_bytes())?;
    let json = serde_json::to_vec(history)
        .map_err(|e| ChaosError::Setup(format!("encoding the history: {e}")))?;
    write("history.json", &json)?;
    write("timeline.svg", timeline(history).as_bytes())
}

/// Operations as bars on one row per worker (green ok, grey failed, orange unknown), faults as
/// red bands with their description.
pub fn timeline(history: &History) -> String {
    const WIDTH: f64 = 1600.0;
    const ROW: f64 = 14.0;
    const TOP: f64 = 40.0;
    let end = history
        .ops
        .iter()
        .map(|o| o.completed_us)
        .chain(history.faults.iter().map(|f| f.healed_us))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut workers: Vec<usize> = history.ops.iter().map(|o| o.worker).collect();
    workers.sort_unstable();
    workers.dedup();
    let row_of: BTreeMap<usize, usize> = workers.iter().enumerate().map(|(r, w)| (*w, r)).collect();
    let height = TOP + ROW * workers.len() as f64 + 20.0;
    let x = |us: u64| 60.0 + (WIDTH - 80.0) * us as f64 / end;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"monospace\" font-size=\"10\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"14\">seed {} - {} replicas - {} operations - {} faults</text>\n",
        history.seed,
        history.replicas,
        history.ops.len(),
        history.faults.len()
    );
    for fault in &history.faults {
        let (a, b) = (x(fault.started_us), x(fault.healed_us));
        let _ = writeln!(
            svg,
            "<rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f4cccc\"><title>{}</title></rect>\
             <text x=\"{a:.1}\" y=\"32\" fill=\"#990000\">{}</text>",
            TOP - 4.0,
            (b - a).max(1.0),
            ROW * workers.len() as f64 + 8.0,
            escape(&fault.description),
            escape(&fault.kind)
        );
    }
    for op in &history.ops {
        let row = row_of.get(&op.worker).copied().unwrap_or(0);
        let y = TOP + ROW * row as f64;
        let colour = match op.outcome {
            Outcome::Ok(_) => "#6aa84f",
            Outcome::Failed(_) => "#999999",
            Outcome::Unknown(_) => "#e69138",
        };
        let (a, b) = (x(op.invoked_us), x(op.completed_us));
        let _ = writeln!(
            svg,
            "<rect x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>",
            (b - a).max(0.8),
            ROW - 3.0
        );
    }
    for (row, worker) in workers.iter().enumerate() {
        let label = worker_name(*worker);
        let _ = writeln!(
            svg,
            "<text x=\"5\" y=\"{:.1}\">{label}</text>",
            TOP + ROW * row as f64 + 9.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
