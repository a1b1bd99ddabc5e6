//! Prometheus metrics, as replicas and node agents serve them on `/metrics`: counters, gauges
//! and latency histograms kept in atomics (recording never blocks or allocates), the text
//! exposition format (version 0.0.4) they are written in, and a strict parser of that format
//! for the tests that scrape them.
//!
//! No registry: each server keeps its metrics in a struct of its own and writes them, with
//! whatever it computes at scrape time (term, indexes, gauges read from its state), into an
//! [`Exposition`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `Content-Type` of an exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A count that only goes up (until the process restarts).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, such as the long-polls open now.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Never below zero: a decrement without its increment is a bug, not a negative gauge.
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// For a gauge sampled rather than counted (a file's size, say).
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Increments now and decrements when the guard is dropped (a request that ends however
    /// it ends).
    pub fn track(self: &Arc<Self>) -> GaugeGuard {
        self.inc();
        GaugeGuard(self.clone())
    }
}

/// See [`Gauge::track`].
#[derive(Debug)]
pub struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Upper bounds, in seconds, of the latency buckets: 50 µs to 10 s, about three per decade,
/// wide enough for an fsync on a fast disk and a long-poll alike.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`].
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), then one more for those above the last bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// Metrics of one kind, one per value of a label (a call's name, a follower's id), created on
/// first use.
#[derive(Debug, Default)]
pub struct Family<M> {
    members: Mutex<BTreeMap<String, Arc<M>>>,
}

impl<M: Default> Family<M> {
    /// The metric for `label`, created if it is new. Hold the `Arc` rather than asking again
    /// on a hot path.
    pub fn get(&self, label: &str) -> Arc<M> {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = members.get(label) {
            return m.clone();
        }
        let m = Arc::new(M::default());
        members.insert(label.to_string(), m.clone());
        m
    }

    fn snapshot(&self) -> Vec<(String, Arc<M>)> {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// One scrape's text, written family by family. Names must match `[a-zA-Z_:][a-zA-Z0-9_:]*`
/// (they are our literals); label values are escaped here.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        let _ = writeln!(self.out, "{name} {value}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        let _ = writeln!(self.out, "{name} {}", number(value));
    }

    /// A gauge with one sample per value of `label`.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (String, f64)>,
    ) {
        self.header(name, help, "gauge");
        for (value_of_label, value) in values {
            let _ = writeln!(
                self.out,
                "{name}{{{label}=\"{}\"}} {}",
                escape(&value_of_label),
                number(value)
            );
        }
    }

    /// A counter with one sample per member of `family`.
    pub fn counters(&mut self, name: &str, help: &str, label: &str, family: &Family<Counter>) {
        self.header(name, help, "counter");
        for (value_of_label, counter) in family.snapshot() {
            let _ = writeln!(
                self.out,
                "{name}{{{label}=\"{}\"}} {}",
                escape(&value_of_label),
                counter.get()
            );
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, help, "histogram");
        self.histogram_samples(name, "", histogram);
    }

    /// A histogram with one series per member of `family`.
    pub fn histograms(&mut self, name: &str, help: &str, label: &str, family: &Family<Histogram>) {
        self.header(name, help, "histogram");
        for (value_of_label, histogram) in family.snapshot() {
            let labels = format!("{label}=\"{}\",", escape(&value_of_label));
            self.histogram_samples(name, &labels, &histogram);
        }
    }

    fn histogram_samples(&mut self, name: &str, labels: &str, histogram: &Histogram) {
        // Read each bucket once: the cumulative counts and the total then agree even while
        // requests are being observed.
        let counts: Vec<u64> = histogram
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&counts) {
            cumulative += count;
            let _ = writeln!(
                self.out,
                "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += counts.last().copied().unwrap_or(0);
        let sum = Duration::from_nanos(histogram.sum_nanos.load(Ordering::Relaxed));
        let bare = labels.trim_end_matches(',');
        let braces = if bare.is_empty() {
            String::new()
        } else {
            format!("{{{bare}}}")
        };
        let _ = writeln!(
            self.out,
            "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}\n{name}_sum{braces} {}\n{name}_count{braces} {cumulative}",
            number(sum.as_secs_f64())
        );
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

/// A metric family as parsed from an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFamily {
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// With its suffix (`_bucket`, `_sum`, `_count`) for histograms.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What is wrong with an exposition, and on which line (1-based).
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Parses an exposition strictly: every sample belongs to a family declared by `# TYPE`
/// before it, names and labels are well formed, a label appears once per sample, and every
/// histogram series has increasing buckets ending in `+Inf`, equal to its `_count`.
pub fn parse(text: &str) -> Result<BTreeMap<String, ParsedFamily>, ParseError> {
    let mut families: BTreeMap<String, ParsedFamily> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let fail = |reason: String| ParseError {
            line: i + 1,
            reason,
        };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            check_name(name).map_err(fail)?;
            helps.insert(name.to_string(), help.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| fail("TYPE without a type".into()))?;
            check_name(name).map_err(fail)?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(fail(format!("unknown type {kind:?}")));
            }
            if families.contains_key(name) {
                return Err(fail(format!("{name} declared twice")));
            }
            families.insert(
                name.to_string(),
                ParsedFamily {
                    kind: kind.to_string(),
                    help: helps.get(name).cloned().unwrap_or_default(),
                    samples: Vec::new(),
                },
            );
        } else if line.starts_with('#') {
            continue;
        } else {
            let sample = parse_sample(line).map_err(fail)?;
            let family = family_of(&families, &sample.name)
                .ok_or_else(|| fail(format!("{} has no # TYPE before it", sample.name)))?;
            if let Some(f) = families.get_mut(&family) {
                f.samples.push(sample);
            }
        }
    }
    for (name, family) in &families {
        if family.kind == "histogram" {
            check_histogram(name, family).map_err(|reason| ParseError { line: 0, reason })?;
        }
    }
    Ok(families)
}

fn family_of(families: &BTreeMap<String, ParsedFamily>, sample: &str) -> Option<String> {
    if families.contains_key(sample) {
        return Some(sample.to_string());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = sample.strip_suffix(suffix)?;
        (families.get(base)?.kind == "histogram").then(|| base.to_string())
    })
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return Err("a sample without a value".into()),
    };
    check_name(name)?;
    let mut labels = BTreeMap::new();
    let value_text = if let Some(mut rest) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                break after;
            }
            let (label, after) = rest
                .split_once("=\"")
                .ok_or_else(|| format!("bad labels in {line:?}"))?;
            check_name(label)?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some((at, '"')) => break at,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err(format!("bad escape in {line:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice in {line:?}"));
            }
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    } else {
        rest
    };
    let mut parts = value_text.split_whitespace();
    let value = parts
        .next()
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    // An optional timestamp, then nothing.
    if let Some(timestamp) = parts.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("trailing text in {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn check_histogram(name: &str, family: &ParsedFamily) -> Result<(), String> {
    // Series are told apart by their labels other than `le`.
    /// A series' buckets (bound, cumulative count) and its `_count`.
    type Series = (Vec<(f64, f64)>, Option<f64>);
    let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for sample in &family.samples {
        let key: Vec<_> = sample
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let entry = series.entry(key).or_default();
        if sample.name.ends_with("_bucket") {
            let le = sample
                .labels
                .get("le")
                .ok_or_else(|| format!("{name}: a bucket without le"))?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("{name}: bad le {le:?}"))?
            };
            entry.0.push((bound, sample.value));
        } else if sample.name.ends_with("_count") {
            entry.1 = Some(sample.value);
        }
    }
    for (labels, (buckets, count)) in series {
        let increasing = buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let last = buckets.last();
        if !increasing || last.is_none_or(|(bound, _)| !bound.is_infinite()) {
            return Err(format!(
                "{name} {labels:?}: buckets not increasing up to +Inf"
            ));
        }
        if last.map(|(_, c)| *c) != count {
            return Err(format!(
                "{name} {labels:?}: +Inf bucket differs from _count"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exposition_parses_back_to_what_was_recorded() {
        let latency = Family::<Histogram>::default();
        latency
            .get("User/RequestInstance")
            .observe(Duration::from_micros(700));
        latency
            .get("User/RequestInstance")
            .observe(Duration::from_secs(20));
        latency
            .get("Node/Poll\"x\"")
            .observe(Duration::from_millis(3));
        let calls = Family::<Counter>::default();
        calls.get("a\\b\nc").add(3);
        let mut out = Exposition::default();
        out.counter("t_placements_total", "Placements.", 7);
        out.gauge("t_term", "Current term.", 4.0);
        out.gauges("t_lag", "Lag.", "follower", [("2".into(), 10.0)]);
        out.counters("t_calls_total", "Calls.", "call", &calls);
        out.histograms("t_seconds", "Latency.", "call", &latency);
        let parsed = parse(&out.finish()).expect("our own exposition parses");

        assert_eq!(parsed["t_placements_total"].samples[0].value, 7.0);
        assert_eq!(parsed["t_term"].kind, "gauge");
        assert_eq!(parsed["t_lag"].samples[0].labels["follower"], "2");
        assert_eq!(parsed["t_calls_total"].samples[0].labels["call"], "a\\b\nc");
        let request: Vec<_> = parsed["t_seconds"]
            .samples
            .iter()
            .filter(|s| s.labels["call"] == "User/RequestInstance")
            .collect();
        let bucket = |le: &str| {
            request
                .iter()
                .find(|s| s.name == "t_seconds_bucket" && s.labels["le"] == le)
                .map(|s| s.value)
        };
        assert_eq!(bucket("0.0005"), Some(0.0));
        assert_eq!(bucket("0.001"), Some(1.0));
        assert_eq!(bucket("10"), Some(1.0), "20 s is above the last bound");
        assert_eq!(bucket("+Inf"), Some(2.0));
        let sum = request.iter().find(|s| s.name == "t_seconds_sum");
        assert!(sum.is_some_and(|s| (s.value - 20.0007).abs() < 1e-9));
    }

    #[test]
    fn the_parser_refuses_what_scrapers_would() {
        for bad in [
            "x 1\n",                                                 // no TYPE
            "# TYPE x counter\nx{a=\"1\",a=\"2\"} 1\n",              // a label twice
            "# TYPE x counter\nx{a=\"1} 1\n",                        // unterminated
            "# TYPE x counter\nx one\n",                             // not a number
            "# TYPE 1x counter\n",                                   // bad name
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_count 2\n", // no +Inf
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn a_gauge_never_goes_below_zero() {
        let gauge = Arc::new(Gauge::default());
        {
            let _open = gauge.track();
            assert_eq!(gauge.get(), 1);
        }
        gauge.dec();
        assert_eq!(gauge.get(), 0);
    }
}
