//! What every load scenario keeps and prints: per-operation latency histograms (HdrHistogram, in
//! microseconds) with success, rejection and error counts, the table of throughput and
//! percentiles, the error breakdown and the list of targets met or missed.
//!
//! A scenario names its operations once ([`Stats::new`]), records each outcome by the operation's
//! index ([`Stats::record`]), keeps one [`Stats`] per client task (no shared lock on the hot path)
//! and merges them when the run ends ([`Stats::merge`]).

use hdrhistogram::{AdditionError, CreationError, Histogram};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The largest latency a histogram tells apart: 60 s, in microseconds. Longer ones count as 60 s.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant decimal digits the histograms keep (0.1 % precision).
const SIGNIFICANT_DIGITS: u8 = 3;

/// How one operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It succeeded, taking this long.
    Ok(Duration),
    /// The hub refused it for a business reason the scenario expects (e.g. stock ran short): not
    /// an error, and not in the latency figures.
    Rejected,
    /// It failed: a transport error, a timeout or an unexpected status, described briefly.
    Error(String),
}

/// The record of one operation: latencies of its successes, and how many were rejected or failed.
#[derive(Debug, Clone)]
pub struct OpStats {
    pub latency_us: Histogram<u64>,
    pub rejected: u64,
    pub errors: u64,
    /// Errors by kind, e.g. `timeout` or `HTTP 500 internal`.
    pub error_kinds: BTreeMap<String, u64>,
}

impl OpStats {
    pub fn new() -> Result<OpStats, CreationError> {
        Ok(OpStats {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)?,
            rejected: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
        })
    }

    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok(took) => {
                let micros = u64::try_from(took.as_micros())
                    .unwrap_or(u64::MAX)
                    .clamp(1, MAX_LATENCY_US);
                self.latency_us.saturating_record(micros);
            }
            Outcome::Rejected => self.rejected += 1,
            Outcome::Error(kind) => {
                self.errors += 1;
                *self.error_kinds.entry(kind).or_default() += 1;
            }
        }
    }

    /// Adds `other`'s figures to these.
    pub fn merge(&mut self, other: &OpStats) -> Result<(), AdditionError> {
        self.latency_us.add(&other.latency_us)?;
        self.rejected += other.rejected;
        self.errors += other.errors;
        for (kind, n) in &other.error_kinds {
            *self.error_kinds.entry(kind.clone()).or_default() += n;
        }
        Ok(())
    }

    /// Successful operations.
    pub fn ok(&self) -> u64 {
        self.latency_us.len()
    }
}

/// The records of a scenario's operations, in the order they were named.
#[derive(Debug, Clone)]
pub struct Stats {
    ops: Vec<(&'static str, OpStats)>,
}

impl Stats {
    /// One record per operation name; operations are then addressed by their index in `names`.
    pub fn new(names: &[&'static str]) -> Result<Stats, CreationError> {
        let ops = names
            .iter()
            .map(|name| OpStats::new().map(|s| (*name, s)))
            .collect::<Result<_, _>>()?;
        Ok(Stats { ops })
    }

    /// Records an outcome of operation `op` (an index into the names; others are ignored).
    pub fn record(&mut self, op: usize, outcome: Outcome) {
        if let Some((_, stats)) = self.ops.get_mut(op) {
            stats.record(outcome);
        }
    }

    /// Adds `other`'s figures, operation by operation (by name).
    pub fn merge(&mut self, other: &Stats) -> Result<(), AdditionError> {
        for (name, theirs) in &other.ops {
            if let Some((_, mine)) = self.ops.iter_mut().find(|(n, _)| n == name) {
                mine.merge(theirs)?;
            }
        }
        Ok(())
    }

    /// The record of the operation called `name`.
    pub fn get(&self, name: &str) -> Option<&OpStats> {
        self.ops.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &OpStats)> {
        self.ops.iter().map(|(n, s)| (*n, s))
    }

    /// All operations together, as if they were one.
    pub fn combined(&self) -> Result<OpStats, CombineError> {
        let mut all = OpStats::new()?;
        for (_, stats) in &self.ops {
            all.merge(stats)?;
        }
        Ok(all)
    }

    /// The summary of the operation called `name` over a measured window (all zeros if there is
    /// no such operation).
    pub fn summary(&self, name: &str, window: Duration) -> Summary {
        match self.get(name) {
            Some(stats) => Summary::of(name, stats, window),
            None => Summary::empty(name),
        }
    }

    /// One summary row per operation over a measured window.
    pub fn summaries(&self, window: Duration) -> Vec<Summary> {
        self.ops
            .iter()
            .map(|(name, stats)| Summary::of(name, stats, window))
            .collect()
    }
}

/// Why histograms could not be combined (not expected: they share their bounds).
#[derive(Debug, thiserror::Error)]
pub enum CombineError {
    #[error("cannot create a histogram: {0}")]
    Creation(#[from] CreationError),
    #[error("cannot add histograms: {0}")]
    Addition(#[from] AdditionError),
}

/// One row of the table: an operation's figures over a measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub name: String,
    /// Successful operations.
    pub count: u64,
    /// Successful operations per second of the window.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub rejected: u64,
    pub errors: u64,
}

impl Summary {
    /// A row for an operation that never ran.
    pub fn empty(name: &str) -> Summary {
        Summary {
            name: name.to_string(),
            count: 0,
            per_second: 0.0,
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            rejected: 0,
            errors: 0,
        }
    }

    pub fn of(name: &str, stats: &OpStats, window: Duration) -> Summary {
        let h = &stats.latency_us;
        Summary {
            name: name.to_string(),
            count: stats.ok(),
            per_second: per_second(stats.ok(), window),
            p50_ms: percentile_ms(h, 0.50),
            p95_ms: percentile_ms(h, 0.95),
            p99_ms: percentile_ms(h, 0.99),
            max_ms: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            },
            rejected: stats.rejected,
            errors: stats.errors,
        }
    }
}

/// Operations per second of `window` (0 for an empty window).
pub fn per_second(count: u64, window: Duration) -> f64 {
    let seconds = window.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The latency at quantile `q` (0.0..=1.0) in milliseconds; 0 for an empty histogram.
pub fn percentile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1000.0
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// The table: operation, count, ops/s, p50, p95, p99, max (ms), rejected, errors.
pub fn render_table(rows: &[Summary]) -> String {
    const HEADERS: [&str; 9] = [
        "operation",
        "count",
        "ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "rejected",
        "errors",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.count.to_string(),
                format!("{:.1}", r.per_second),
                format!("{:.2}", r.p50_ms),
                format!("{:.2}", r.p95_ms),
                format!("{:.2}", r.p99_ms),
                format!("{:.2}", r.max_ms),
                r.rejected.to_string(),
                r.errors.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<w$}");
            } else {
                let _ = write!(out, "  {cell:>w$}");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&HEADERS.map(String::from));
    let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// The errors by operation and kind, most frequent first; empty when there were none.
pub fn render_errors(stats: &Stats) -> String {
    let mut out = String::new();
    for (name, op) in stats.iter() {
        let mut kinds: Vec<(&String, &u64)> = op.error_kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (kind, n) in kinds {
            let _ = writeln!(out, "  {name}: {n} x {kind}");
        }
    }
    out
}

/// A goal a figure is held against.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The goal, e.g. `durable add p99 ≤ 10 ms`.
    pub goal: String,
    /// What was measured, e.g. `7.81 ms (in the mix)`.
    pub measured: String,
    /// Met, missed, or `None` when there was nothing to judge.
    pub met: Option<bool>,
}

/// One line per target: the goal, the measured figure and whether it was met.
pub fn render_targets(targets: &[Target]) -> String {
    let goal_width = targets
        .iter()
        .map(|t| t.goal.chars().count())
        .max()
        .unwrap_or(0);
    let measured_width = targets
        .iter()
        .map(|t| t.measured.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for t in targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "  {:<goal_width$}  {:<measured_width$}  {verdict}",
            t.goal, t.measured
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Outcome {
        Outcome::Ok(Duration::from_millis(n))
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut op = OpStats::new().unwrap();
        for n in 1..=100 {
            op.record(ms(n));
        }
        let h = &op.latency_us;
        // 3 significant digits: within 0.1 %.
        for (q, expected) in [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0), (1.0, 100.0)] {
            let got = percentile_ms(h, q);
            assert!(
                (got - expected).abs() <= expected * 0.001,
                "q={q}: {got} vs {expected}"
            );
        }
        let s = Summary::of("x", &op, Duration::from_secs(10));
        assert_eq!(s.count, 100);
        assert!((s.per_second - 10.0).abs() < 1e-9);
        assert!((s.max_ms - 100.0).abs() <= 0.1);
    }

    #[test]
    fn empty_histograms_and_windows_give_zeros_not_nan() {
        let op = OpStats::new().unwrap();
        assert_eq!(percentile_ms(&op.latency_us, 0.99), 0.0);
        let s = Summary::of("none", &op, Duration::ZERO);
        assert_eq!(
            (s.count, s.per_second, s.p99_ms, s.max_ms),
            (0, 0.0, 0.0, 0.0)
        );
        assert_eq!(percent(1.0, 0.0), 0.0);
        assert!((percent(1.0, 4.0) - 25.0).abs() < 1e-9);
    }

    #[test]
    fn latencies_out_of_range_saturate_instead_of_being_lost() {
        let mut op = OpStats::new().unwrap();
        op.record(Outcome::Ok(Duration::ZERO));
        op.record(Outcome::Ok(Duration::from_secs(3600)));
        assert_eq!(op.ok(), 2);
        assert!(percentile_ms(&op.latency_us, 1.0) >= 59_000.0);
    }

    #[test]
    fn rejections_and_errors_are_counted_apart_from_successes() {
        let mut stats = Stats::new(&["add", "view"]).unwrap();
        stats.record(0, ms(2));
        stats.record(0, Outcome::Rejected);
        stats.record(0, Outcome::Error("timeout".into()));
        stats.record(0, Outcome::Error("timeout".into()));
        stats.record(1, Outcome::Error("HTTP 500 internal".into()));
        stats.record(7, ms(1)); // unknown index: ignored
        let add = stats.get("add").unwrap();
        assert_eq!(
            stats.summary("nothing", Duration::from_secs(1)),
            Summary::empty("nothing")
        );
        assert_eq!(stats.summary("add", Duration::from_secs(1)).count, 1);
        assert_eq!((add.ok(), add.rejected, add.errors), (1, 1, 2));
        assert_eq!(
            render_errors(&stats),
            "  add: 2 x timeout\n  view: 1 x HTTP 500 internal\n"
        );
    }

    #[test]
    fn merging_adds_every_figure_by_name() {
        let mut a = Stats::new(&["add", "view"]).unwrap();
        let mut b = Stats::new(&["add", "view"]).unwrap();
        a.record(0, ms(1));
        b.record(0, ms(3));
        b.record(1, Outcome::Error("connect".into()));
        a.merge(&b).unwrap();
        assert_eq!(a.get("add").unwrap().ok(), 2);
        assert_eq!(a.get("view").unwrap().error_kinds.get("connect"), Some(&1));
        let all = a.combined().unwrap();
        assert_eq!((all.ok(), all.errors), (2, 1));
    }

    #[test]
    fn the_table_lines_up_its_columns() {
        let rows = vec![
            Summary {
                name: "browse".into(),
                count: 1234,
                per_second: 61.7,
                p50_ms: 1.5,
                p95_ms: 3.25,
                p99_ms: 9.999,
                max_ms: 12.0,
                rejected: 0,
                errors: 2,
            },
            Summary {
                name: "add to basket".into(),
                count: 7,
                per_second: 0.36,
                p50_ms: 4.0,
                p95_ms: 5.0,
                p99_ms: 6.0,
                max_ms: 120.5,
                rejected: 3,
                errors: 0,
            },
        ];
        let table = render_table(&rows);
        let expected = "\
operation      count  ops/s  p50 ms  p95 ms  p99 ms  max ms  rejected  errors
-----------------------------------------------------------------------------
browse          1234   61.7    1.50    3.25   10.00   12.00         0       2
add to basket      7    0.4    4.00    5.00    6.00  120.50         3       0
";
        assert_eq!(table, expected);
        let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{table}");
    }

    #[test]
    fn targets_say_met_missed_or_not_measured() {
        let targets = [
            Target {
                goal: "durable add p99 ≤ 10 ms".into(),
                measured: "7.81 ms".into(),
                met: Some(true),
            },
            Target {
                goal: "add throughput ≥ 25% of bare".into(),
                measured: "3.1%".into(),
                met: Some(false),
            },
            Target {
                goal: "memory".into(),
                measured: "-".into(),
                met: None,
            },
        ];
        let text = render_targets(&targets);
        assert_eq!(
            text,
            "  durable add p99 ≤ 10 ms       7.81 ms  met\n  add throughput ≥ 25% of bare  3.1%     MISSED\n  memory                        -        not measured\n"
        );
    }
}
