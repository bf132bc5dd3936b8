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
