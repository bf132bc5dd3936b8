//! Results, process memory sampling and the markdown table.

use std::fmt::Write as _;

use anyhow::{Result, anyhow};

/// Resident memory of a process, from /proc/PID/status (bytes).
#[derive(Clone, Copy, Debug)]
pub struct Mem {
    pub rss: u64,
    pub hwm: u64,
}

impl Mem {
    pub fn rss_mb(&self) -> f64 {
        self.rss as f64 / 1e6
    }
    pub fn hwm_mb(&self) -> f64 {
        self.hwm as f64 / 1e6
    }
}

/// VmRSS and VmHWM of `pid`, or `None` if the process is gone.
pub fn read_mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// User + system CPU seconds of `pid` so far (all threads), from /proc/PID/stat.
pub fn read_cpu_secs(pid: u32) -> Option<f64> {
    /// USER_HZ: fixed at 100 in the Linux ABI for /proc tick counts.
    const TICKS_PER_SEC: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (state); utime and stime
    // are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// The median run of one measurement.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// MiB/s for sequential runs, ops/s for metadata.
    pub rate: f64,
    /// Server CPU seconds (user + system) during that run.
    pub cpu: Option<f64>,
}

/// One run of a measurement and whether the first target ("ours") ran first in that
/// repetition.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub m: Measured,
    pub ours_first: bool,
}

/// The order in which the targets run in repetition `rep` (0-based): rotated left by `rep`, so
/// with two targets ours runs first in repetitions 1, 3, 5, ... and second in 2, 4, 6, ...
/// (counting from 1). On this VM the first server of a pair is slower at writing fresh pages;
/// alternating spreads that over both.
pub fn rotation(rep: usize, n: usize) -> Vec<usize> {
    (0..n).map(|k| (k + rep) % n).collect()
}

/// Index of the median of `items` by `key`: the element at position len/2 when sorted (for an
/// even count the upper of the two middle ones), so the median is always a real run and its
/// CPU time can be shown with it.
pub fn median_index<T>(items: &[T], key: impl Fn(&T) -> f64) -> Option<usize> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.sort_by(|&a, &b| key(&items[a]).total_cmp(&key(&items[b])));
    idx.get(idx.len() / 2).copied()
}

/// The median run of `runs` (see [`median_index`]).
pub fn median_run(runs: &[Run]) -> Option<Measured> {
    median_index(runs, |r| r.m.rate).map(|i| runs[i].m)
}

/// Median rate of the runs in which ours ran first, and of those in which it ran later.
pub fn order_medians(runs: &[Run]) -> (Option<f64>, Option<f64>) {
    let of = |first: bool| {
        let rates: Vec<f64> = runs
            .iter()
            .filter(|r| r.ours_first == first)
            .map(|r| r.m.rate)
            .collect();
        median_index(&rates, |&r| r).map(|i| rates[i])
    };
    (of(true), of(false))
}

/// A table cell for one order: "ours / baseline (ratio)" with two targets, otherwise the
/// values separated by " / ".
pub fn order_cell(values: &[Option<f64>], decimals: usize) -> String {
    let v = |x: &Option<f64>| x.map_or_else(|| "n/a".to_string(), |x| format!("{x:.decimals$}"));
    match values {
        [Some(a), Some(b)] if *b > 0.0 => {
            format!("{a:.decimals$} / {b:.decimals$} ({:.2}x)", a / b)
        }
        _ => values.iter().map(v).collect::<Vec<_>>().join(" / "),
    }
}

/// Number of measured rows (write 1, write N, read 1, read N, metadata).
pub const ROWS: usize = 5;

/// Everything measured for one server.
pub struct TargetResult {
    pub name: String,
    /// Request size; 0 until the FSINFO probe succeeded.
    pub chunk: u32,
    pub idle: Option<Mem>,
    pub peak: Option<Mem>,
    /// Write 1, write N, read 1, read N, metadata; `None` = not run.
    pub rows: [Option<Result<Measured>>; ROWS],
    /// Per row: median rate of the runs in which ours ran first, and second.
    pub orders: [(Option<f64>, Option<f64>); ROWS],
    pub notes: Vec<String>,
}

impl TargetResult {
    pub fn new(name: &str, idle: Option<Mem>) -> Self {
        Self {
            name: name.to_string(),
            chunk: 0,
            idle,
            peak: None,
            rows: Default::default(),
            orders: Default::default(),
            notes: Vec::new(),
        }
    }

    pub fn fail_all(&mut self, why: &str) {
        for row in &mut self.rows {
            *row = Some(Err(anyhow!("{why}")));
        }
    }

    pub fn any_failed(&self) -> bool {
        self.rows.iter().any(|r| !matches!(r, Some(Ok(_))))
    }

    fn rate(&self, row: usize) -> Option<f64> {
        match &self.rows[row] {
            Some(Ok(m)) => Some(m.rate),
            _ => None,
        }
    }

    fn cpu(&self, row: usize) -> Option<f64> {
        match &self.rows[row] {
            Some(Ok(m)) => m.cpu,
            _ => None,
        }
    }
}

/// How a row's target is judged.
enum Goal {
    /// ours / baseline >= factor.
    AtLeast(f64),
    /// ours <= an absolute value in MB.
    AbsMaxMb(f64),
    /// ours <= baseline.
    NotAbove,
}

struct Row {
    label: String,
    values: Vec<Option<f64>>,
    decimals: usize,
    goal: Goal,
    /// Shown when a value is missing: "error" for measurements, "n/a" for unsampled memory.
    missing: &'static str,
}

const IDLE_RSS_MAX_MB: f64 = 15.0;

/// The markdown table: one column per target, then ratio, target and verdict when there are two.
pub fn table(results: &[TargetResult], streams: usize, files: usize) -> String {
    let col = |f: &dyn Fn(&TargetResult) -> Option<f64>| results.iter().map(f).collect::<Vec<_>>();
    let rows = [
        Row {
            label: "Seq write, 1 in flight (MiB/s)".into(),
            values: col(&|r| r.rate(0)),
            decimals: 1,
            goal: Goal::AtLeast(1.2),
            missing: "error",
        },
        Row {
            label: format!("Seq write, {streams} in flight (MiB/s)"),
            values: col(&|r| r.rate(1)),
            decimals: 1,
            goal: Goal::AtLeast(1.2),
            missing: "error",
        },
        Row {
            label: "Seq read, 1 in flight (MiB/s)".into(),
            values: col(&|r| r.rate(2)),
            decimals: 1,
            goal: Goal::AtLeast(1.2),
            missing: "error",
        },
        Row {
            label: format!("Seq read, {streams} in flight (MiB/s)"),
            values: col(&|r| r.rate(3)),
            decimals: 1,
            goal: Goal::AtLeast(1.2),
            missing: "error",
        },
        Row {
            label: format!("Metadata, {files} x CREATE+GETATTR+REMOVE (ops/s)"),
            values: col(&|r| r.rate(4)),
            decimals: 0,
            goal: Goal::AtLeast(2.0),
            missing: "error",
        },
        Row {
            label: "Idle RSS (MB)".into(),
            values: col(&|r| r.idle.map(|m| m.rss_mb())),
            decimals: 1,
            goal: Goal::AbsMaxMb(IDLE_RSS_MAX_MB),
            missing: "n/a",
        },
        Row {
            label: "Peak RSS, VmHWM (MB)".into(),
            values: col(&|r| r.peak.map(|m| m.hwm_mb())),
            decimals: 1,
            goal: Goal::NotAbove,
            missing: "n/a",
        },
    ];

    let compare = results.len() == 2;
    let mut out = String::new();
    let mut header = String::from("| Measurement |");
    let mut rule = String::from("|---|");
    for r in results {
        let _ = write!(header, " {} |", r.name);
        rule.push_str("---:|");
    }
    if compare {
        let _ = write!(
            header,
            " ratio {}/{} | target | met |",
            results[0].name, results[1].name
        );
        rule.push_str("---:|---|---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");

    for row in &rows {
        let _ = write!(out, "| {} |", row.label);
        for v in &row.values {
            match v {
                Some(v) => {
                    let _ = write!(out, " {v:.prec$} |", prec = row.decimals);
                }
                None => {
                    let _ = write!(out, " {} |", row.missing);
                }
            }
        }
        if compare {
            let ours = row.values[0];
            let base = row.values[1];
            let ratio = match (ours, base) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let ratio_s = ratio.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}x"));
            let (goal_s, met) = match row.goal {
                Goal::AtLeast(f) => (format!(">= {f}x"), ratio.map(|r| r >= f)),
                Goal::AbsMaxMb(mb) => (
                    format!("<= {mb} MB ({})", results[0].name),
                    ours.map(|v| v <= mb),
                ),
                Goal::NotAbove => (
                    format!("<= {}", results[1].name),
                    ours.zip(base).map(|(a, b)| a <= b),
                ),
            };
            let met_s = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            let _ = write!(out, " {ratio_s} | {goal_s} | {met_s} |");
        }
        out.push('\n');
    }

    // Server CPU time: less sensitive to other load on a shared machine than wall time.
    let _ = write!(
        out,
        "\nServer CPU time (user + system, s) of the median run:\n\n| Run |"
    );
    for r in results {
        let _ = write!(out, " {} |", r.name);
    }
    let _ = write!(out, "\n|---|");
    for _ in results {
        out.push_str("---:|");
    }
    out.push('\n');
    let labels = [
        "Seq write, 1 in flight".to_string(),
        format!("Seq write, {streams} in flight"),
        "Seq read, 1 in flight".to_string(),
        format!("Seq read, {streams} in flight"),
        format!("Metadata, {files} files"),
    ];
    for (i, label) in labels.iter().enumerate() {
        let _ = write!(out, "| {label} |");
        for r in results {
            match r.cpu(i) {
                Some(c) => {
                    let _ = write!(out, " {c:.2} |");
                }
                None => out.push_str(" n/a |"),
            }
        }
        out.push('\n');
    }

    if compare {
        let _ = write!(
            out,
            "\nBoth orders: median of the runs in which {0} ran first, and of those in which \
             it ran second, as {0} / {1} (ratio); MiB/s, metadata ops/s:\n\n| Measurement | {0} first | {0} second |\n\
             |---|---:|---:|\n",
            results[0].name, results[1].name
        );
        for (i, label) in labels.iter().enumerate() {
            let decimals = if i < 4 { 1 } else { 0 };
            let first: Vec<_> = results.iter().map(|r| r.orders[i].0).collect();
            let second: Vec<_> = results.iter().map(|r| r.orders[i].1).collect();
            let _ = writeln!(
                out,
                "| {label} | {} | {} |",
                order_cell(&first, decimals),
                order_cell(&second, decimals)
            );
        }
    }

    for r in results {
        let _ = writeln!(
            out,
            "\n{}: request size {} KiB{}",
            r.name,
            r.chunk / 1024,
            if r.notes.is_empty() {
                String::new()
            } else {
                format!("; {}", r.notes.join("; "))
            }
        );
        for (label, row) in labels.iter().zip(&r.rows) {
            match row {
                Some(Err(e)) => {
                    let _ = writeln!(out, "- {label} failed: {e:#}");
                }
                None => {
                    let _ = writeln!(out, "- {label}: not run");
                }
                Some(Ok(_)) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, ours_first: bool) -> Run {
        Run {
            m: Measured { rate, cpu: None },
            ours_first,
        }
    }

    #[test]
    fn order_alternates() {
        assert_eq!(rotation(0, 2), [0, 1]);
        assert_eq!(rotation(1, 2), [1, 0]);
        assert_eq!(rotation(2, 2), [0, 1]);
        assert_eq!(rotation(5, 2), [1, 0]);
        assert_eq!(rotation(1, 3), [1, 2, 0]);
        assert_eq!(rotation(3, 1), [0]);
        // Over an even number of repetitions ours is first exactly half the time.
        let firsts = (0..6).filter(|&r| rotation(r, 2)[0] == 0).count();
        assert_eq!(firsts, 3);
    }

    #[test]
    fn medians_overall_and_per_order() {
        let runs = [
            run(10.0, true),
            run(50.0, false),
            run(30.0, true),
            run(20.0, false),
            run(40.0, true),
            run(60.0, false),
        ];
        // Six runs: the upper of the two middle ones (30, 40).
        assert_eq!(median_run(&runs).map(|m| m.rate), Some(40.0));
        assert_eq!(order_medians(&runs), (Some(30.0), Some(50.0)));
        assert_eq!(order_medians(&runs[..1]), (Some(10.0), None));
        assert_eq!(order_medians(&[]), (None, None));
        assert!(median_run(&[]).is_none());
    }

    #[test]
    fn median_keeps_the_run() {
        let runs = [
            Run {
                m: Measured {
                    rate: 2.0,
                    cpu: Some(0.5),
                },
                ours_first: true,
            },
            Run {
                m: Measured {
                    rate: 1.0,
                    cpu: Some(0.9),
                },
                ours_first: false,
            },
            Run {
                m: Measured {
                    rate: 3.0,
                    cpu: Some(0.1),
                },
                ours_first: true,
            },
        ];
        assert_eq!(median_run(&runs).and_then(|m| m.cpu), Some(0.5));
    }

    #[test]
    fn order_cells() {
        assert_eq!(order_cell(&[Some(30.0), Some(20.0)], 0), "30 / 20 (1.50x)");
        assert_eq!(order_cell(&[Some(30.0), None], 1), "30.0 / n/a");
        assert_eq!(order_cell(&[Some(7.25)], 1), "7.2");
    }
}
