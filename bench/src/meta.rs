//! `nfs-bench --meta`: small NFSv3 calls with 1, 16 and 64 calls in flight on ONE connection
//! (the pipelining client in [`crate::pipeline`]).
//!
//! Per target, per depth D and per repetition, in a fresh directory (MKDIR with `nfs3_client`,
//! RMDIR afterwards): NULL x F, CREATE (GUARDED) x F, GETATTR x F of the new handles, ACCESS
//! (all six bits) x F, LOOKUP x F of the names, REMOVE x F, each phase timed on its own with D
//! calls in flight. The targets run in rotated order (repetition 1: ours first, 2: ours
//! second, ...) and the table shows the median run per row plus the median per order.

use std::fmt::Write as _;

use anyhow::{Context, Result, anyhow, bail};
use nfs3_types::nfs3::{
    ACCESS3resok, CREATE3resok, GETATTR3resok, LOOKUP3resok, Nfs3Option, REMOVE3resok, createhow3,
    filename3, ftype3, nfs_fh3, nfsstat3, sattr3,
};
use nfs3_types::xdr_codec::{Opaque, Unpack};

use crate::Target;
use crate::client;
use crate::pipeline::{self, Pipe, Proc, pack};
use crate::report::{self, Measured, Mem, Run};

/// Every access bit of RFC 1813: READ | LOOKUP | MODIFY | EXTEND | DELETE | EXECUTE.
const ACCESS_ALL: u32 = 0x3f;

/// The timed phases of one run, in the order they run.
const PHASES: [Proc; 6] = [
    Proc::Null,
    Proc::Create,
    Proc::Getattr,
    Proc::Access,
    Proc::Lookup,
    Proc::Remove,
];

/// One run of all phases against one server at one depth.
#[derive(Clone, Debug)]
pub struct MetaRun {
    /// Wall time per phase (index as [`PHASES`]).
    pub secs: [f64; 6],
    /// Server CPU seconds per phase.
    pub cpu: [Option<f64>; 6],
    pub ours_first: bool,
}

/// A row of the table (for one depth).
#[derive(Clone, Copy, Debug, PartialEq)]
enum RowKind {
    Phase(usize),
    /// CREATE + GETATTR + REMOVE: 3F calls over the sum of the three phases' times.
    Combined,
}

const ROW_KINDS: [RowKind; 7] = [
    RowKind::Phase(0),
    RowKind::Phase(1),
    RowKind::Phase(2),
    RowKind::Phase(3),
    RowKind::Phase(4),
    RowKind::Phase(5),
    RowKind::Combined,
];

/// Phases that make up the combined row.
const COMBINED: [usize; 3] = [1, 2, 5];

impl RowKind {
    fn name(self) -> &'static str {
        match self {
            Self::Phase(p) => PHASES[p].name(),
            Self::Combined => "CREATE+GETATTR+REMOVE",
        }
    }

    fn calls(self, files: usize) -> usize {
        match self {
            Self::Phase(_) => files,
            Self::Combined => 3 * files,
        }
    }

    fn secs(self, run: &MetaRun) -> f64 {
        match self {
            Self::Phase(p) => run.secs[p],
            Self::Combined => COMBINED.iter().map(|&p| run.secs[p]).sum(),
        }
    }

    fn rate(self, run: &MetaRun, files: usize) -> f64 {
        self.calls(files) as f64 / self.secs(run)
    }

    fn cpu(self, run: &MetaRun) -> Option<f64> {
        match self {
            Self::Phase(p) => run.cpu[p],
            Self::Combined => COMBINED.iter().map(|&p| run.cpu[p]).sum(),
        }
    }

    /// The issue's target for ours / baseline at this depth, if there is one.
    fn goal(self, depth: usize) -> Option<f64> {
        match self {
            Self::Phase(p) if matches!(PHASES[p], Proc::Getattr | Proc::Access | Proc::Lookup) => {
                Some(if depth == 1 { 1.3 } else { 1.2 })
            }
            Self::Combined if depth >= 64 => Some(1.3),
            Self::Combined if depth >= 16 => Some(1.0),
            _ => None,
        }
    }
}

/// The results of a phase's call `i`: the NFS status must be NFS3_OK; then the procedure's
/// `T`. Errors name the procedure, the status and the file.
fn nfs_ok<T: Unpack>(proc: Proc, name: &str, res: &[u8]) -> Result<T> {
    let code = res
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| anyhow!("{} {name}: empty results", proc.name()))?;
    if code != 0 {
        let stat = nfsstat3::unpack(&mut &res[..4])
            .map_or_else(|_| format!("status {code}"), |(s, _)| format!("{s:?}"));
        bail!("{} {name}: server returned {stat}", proc.name());
    }
    let (ok, _) = T::unpack(&mut &res[4..])
        .map_err(|e| anyhow!("{} {name}: undecodable results: {e}", proc.name()))?;
    Ok(ok)
}

fn packed_name(out: &mut Vec<u8>, name: &str) -> Result<()> {
    pack(out, &filename3(Opaque::borrowed(name.as_bytes())))
}

fn cpu_now(pid: Option<u32>) -> Option<f64> {
    pid.and_then(report::read_cpu_secs)
}

/// All phases on `pipe`, in `dir` (blocking; runs on a blocking thread).
fn phases(
    mut pipe: Pipe,
    dir: &nfs_fh3,
    files: usize,
    depth: usize,
    pid: Option<u32>,
) -> Result<MetaRun> {
    let names: Vec<String> = (0..files).map(|i| format!("f{i:06}")).collect();
    let mut dir_xdr = Vec::new();
    pack(&mut dir_xdr, dir)?;
    let mut handles: Vec<Option<nfs_fh3>> = vec![None; files];
    let mut secs = [0.0; 6];
    let mut cpu = [None; 6];
    for (p, proc) in PHASES.into_iter().enumerate() {
        let before = cpu_now(pid);
        let name = |i: usize| names[i].as_str();
        let elapsed = match proc {
            Proc::Null => pipe.run(
                proc,
                files,
                depth,
                |_, _| Ok(()),
                |i, res| {
                    if res.is_empty() {
                        Ok(())
                    } else {
                        bail!("NULL call {i}: {} bytes of results", res.len())
                    }
                },
            ),
            Proc::Create => pipe.run(
                proc,
                files,
                depth,
                |i, out| {
                    out.extend_from_slice(&dir_xdr);
                    packed_name(out, name(i))?;
                    pack(
                        out,
                        &createhow3::GUARDED(sattr3 {
                            mode: Nfs3Option::Some(0o644),
                            ..sattr3::default()
                        }),
                    )
                },
                |i, res| {
                    let ok: CREATE3resok = nfs_ok(proc, name(i), res)?;
                    match ok.obj {
                        Nfs3Option::Some(fh) => handles[i] = Some(fh),
                        Nfs3Option::None => bail!("CREATE {}: no file handle returned", name(i)),
                    }
                    Ok(())
                },
            ),
            Proc::Getattr | Proc::Access => {
                let handles = &handles;
                pipe.run(
                    proc,
                    files,
                    depth,
                    |i, out| {
                        let fh = handles[i].as_ref().context("no handle from CREATE")?;
                        pack(out, fh)?;
                        if proc == Proc::Access {
                            pack(out, &ACCESS_ALL)?;
                        }
                        Ok(())
                    },
                    |i, res| {
                        if proc == Proc::Access {
                            nfs_ok::<ACCESS3resok>(proc, name(i), res)?;
                            return Ok(());
                        }
                        let attr = nfs_ok::<GETATTR3resok>(proc, name(i), res)?.obj_attributes;
                        if attr.type_ != ftype3::NF3REG || attr.size != 0 {
                            bail!(
                                "GETATTR {}: {:?} of size {}, not an empty regular file",
                                name(i),
                                attr.type_,
                                attr.size
                            );
                        }
                        Ok(())
                    },
                )
            }
            Proc::Lookup | Proc::Remove => pipe.run(
                proc,
                files,
                depth,
                |i, out| {
                    out.extend_from_slice(&dir_xdr);
                    packed_name(out, name(i))
                },
                |i, res| {
                    if proc == Proc::Lookup {
                        nfs_ok::<LOOKUP3resok>(proc, name(i), res)?;
                    } else {
                        nfs_ok::<REMOVE3resok>(proc, name(i), res)?;
                    }
                    Ok(())
                },
            ),
        }?;
        secs[p] = elapsed.as_secs_f64();
        cpu[p] = before.zip(cpu_now(pid)).map(|(a, b)| b - a);
    }
    Ok(MetaRun {
        secs,
        cpu,
        ours_first: false,
    })
}

/// One run: MOUNT, MKDIR of a fresh directory, the phases over one pipelined connection,
/// RMDIR, UMNT.
async fn run_once(t: &Target, files: usize, depth: usize, rep: usize) -> Result<MetaRun> {
    let mut conn = client::mount(&t.ep).await?;
    let root = conn.root_nfs_fh3();
    let dirname = format!("nfs-bench-small-{}-d{depth}-r{rep}", std::process::id());
    let dir = client::mkdir(&mut conn, &root, &dirname).await?;
    let measured = match pipeline::connect(&t.ep).await {
        Ok(pipe) => {
            let pid = t.pid;
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || phases(pipe, &dir, files, depth, pid))
                .await
                .unwrap_or_else(|e| Err(anyhow!("benchmark thread panicked: {e}")))
        }
        Err(e) => Err(e),
    };
    let tidy = client::rmdir(&mut conn, &root, &dirname).await;
    client::unmount(conn).await;
    match (measured, tidy) {
        (Ok(run), Ok(())) => Ok(run),
        (Ok(_), Err(e)) => Err(e.context(format!("removing {dirname} after the run"))),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(_)) => Err(e.context(format!("{dirname} left behind"))),
    }
}

/// Options of the metadata mode.
pub struct Config {
    pub files: usize,
    pub depths: Vec<usize>,
    pub repeat: usize,
}

/// Everything measured for one server.
struct TargetRuns {
    name: String,
    idle: Option<Mem>,
    peak: Option<Mem>,
    /// Per depth: the runs, or the error that stopped them.
    runs: Vec<Vec<MetaRun>>,
    errors: Vec<Option<anyhow::Error>>,
}

fn summary(run: &MetaRun, files: usize) -> String {
    let mut s = String::new();
    for kind in ROW_KINDS {
        let _ = write!(
            s,
            "{}{} {:.0}/s",
            if s.is_empty() { "" } else { ", " },
            kind.name(),
            kind.rate(run, files)
        );
    }
    let total: Option<f64> = run.cpu.iter().copied().sum();
    if let Some(c) = total {
        let _ = write!(s, "; server CPU {c:.2} s");
    }
    s
}

/// The runs of one row as [`Run`]s (rate and CPU of that row).
fn row_runs(kind: RowKind, runs: &[MetaRun], files: usize) -> Vec<Run> {
    runs.iter()
        .map(|r| Run {
            m: Measured {
                rate: kind.rate(r, files),
                cpu: kind.cpu(r),
            },
            ours_first: r.ours_first,
        })
        .collect()
}

pub async fn run(targets: &[Target], cfg: &Config) -> Result<()> {
    let mut results: Vec<TargetRuns> = targets
        .iter()
        .map(|t| {
            let idle = t.pid.and_then(report::read_mem);
            if let Some(m) = &idle {
                println!(
                    "{} idle: VmRSS {:.1} MB, VmHWM {:.1} MB",
                    t.name,
                    m.rss_mb(),
                    m.hwm_mb()
                );
            }
            TargetRuns {
                name: t.name.clone(),
                idle,
                peak: None,
                runs: vec![Vec::new(); cfg.depths.len()],
                errors: cfg.depths.iter().map(|_| None).collect(),
            }
        })
        .collect();

    // MOUNT first, so that a server that cannot be mounted fails at once.
    for (t, res) in targets.iter().zip(results.iter_mut()) {
        match client::mount(&t.ep).await {
            Ok(conn) => {
                client::unmount(conn).await;
                println!("{}: MOUNT of {} works", t.name, t.ep.export);
            }
            Err(e) => {
                println!("{}: MOUNT: {e:#}", t.name);
                for slot in &mut res.errors {
                    *slot = Some(anyhow!("MOUNT: {e:#}"));
                }
            }
        }
    }

    println!(
        "small calls: NFSv3 over ONE TCP connection per run, D calls in flight (pipelined), \
         {} files per run in a fresh directory; depths {:?}; {} runs per depth, order rotating \
         (run 1: {} first, run 2: {} second, ...), median shown",
        cfg.files, cfg.depths, cfg.repeat, targets[0].name, targets[0].name
    );
    for (d, &depth) in cfg.depths.iter().enumerate() {
        for rep in 0..cfg.repeat {
            let order = report::rotation(rep, targets.len());
            let ours_first = order.first() == Some(&0);
            for (pos, &i) in order.iter().enumerate() {
                let t = &targets[i];
                if results[i].errors[d].is_some() {
                    continue;
                }
                let prefix = format!(
                    "{} {depth} in flight [{}/{}, {}]",
                    t.name,
                    rep + 1,
                    cfg.repeat,
                    crate::position(pos)
                );
                match run_once(t, cfg.files, depth, rep + 1).await {
                    Ok(mut run) => {
                        run.ours_first = ours_first;
                        println!("{prefix}: {}", summary(&run, cfg.files));
                        results[i].runs[d].push(run);
                    }
                    Err(e) => {
                        println!("{prefix}: FAILED: {e:#}");
                        results[i].errors[d] = Some(e);
                    }
                }
            }
        }
        for res in &results {
            if res.errors[d].is_some() || res.runs[d].is_empty() {
                continue;
            }
            for kind in ROW_KINDS {
                let runs = row_runs(kind, &res.runs[d], cfg.files);
                let (first, second) = report::order_medians(&runs);
                let median = report::median_run(&runs).map(|m| m.rate);
                let f = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.0}"));
                println!(
                    "{} {}, {depth} in flight: median {} ops/s; both orders: {} first {}, \
                     second {}",
                    res.name,
                    kind.name(),
                    f(median),
                    targets[0].name,
                    f(first),
                    f(second)
                );
            }
        }
    }

    for (t, res) in targets.iter().zip(results.iter_mut()) {
        res.peak = t.pid.and_then(report::read_mem);
        if let Some(m) = &res.peak {
            println!(
                "{} after the runs: VmRSS {:.1} MB, VmHWM {:.1} MB",
                t.name,
                m.rss_mb(),
                m.hwm_mb()
            );
        }
    }
    println!();
    print!("{}", table(&results, cfg));
    if results.iter().any(|r| r.errors.iter().any(Option::is_some)) {
        bail!("some measurements failed (see above)");
    }
    Ok(())
}

/// A row's numbers for one target: median rate, its run's CPU, and the per-order medians.
#[derive(Clone, Copy, Default)]
struct Cell {
    rate: Option<f64>,
    cpu: Option<f64>,
    first: Option<f64>,
    second: Option<f64>,
}

fn cell(res: &TargetRuns, d: usize, kind: RowKind, files: usize) -> Cell {
    if res.errors[d].is_some() {
        return Cell::default();
    }
    let runs = row_runs(kind, &res.runs[d], files);
    let median = report::median_run(&runs);
    let (first, second) = report::order_medians(&runs);
    Cell {
        rate: median.map(|m| m.rate),
        cpu: median.and_then(|m| m.cpu),
        first,
        second,
    }
}

fn fmt(v: Option<f64>, decimals: usize, missing: &str) -> String {
    v.map_or_else(|| missing.to_string(), |v| format!("{v:.decimals$}"))
}

fn table(results: &[TargetRuns], cfg: &Config) -> String {
    let compare = results.len() == 2;
    let mut out = String::new();
    let mut header = String::from("| Measurement |");
    let mut rule = String::from("|---|");
    for r in results {
        let _ = write!(header, " {} |", r.name);
        rule.push_str("---:|");
    }
    if compare {
        let (a, b) = (&results[0].name, &results[1].name);
        let _ = write!(
            header,
            " ratio {a}/{b} | median, {a} first ({a} / {b}) | median, {a} second ({a} / {b}) \
             | target | met |"
        );
        rule.push_str("---:|---:|---:|---|---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");

    for (d, &depth) in cfg.depths.iter().enumerate() {
        for kind in ROW_KINDS {
            let cells: Vec<Cell> = results
                .iter()
                .map(|r| cell(r, d, kind, cfg.files))
                .collect();
            let _ = write!(out, "| {}, {depth} in flight (ops/s) |", kind.name());
            for c in &cells {
                let _ = write!(out, " {} |", fmt(c.rate, 0, "error"));
            }
            if compare {
                let ratio = match (cells[0].rate, cells[1].rate) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                let first: Vec<_> = cells.iter().map(|c| c.first).collect();
                let second: Vec<_> = cells.iter().map(|c| c.second).collect();
                let (goal, met) = match kind.goal(depth) {
                    Some(f) => (
                        format!(">= {f:.1}x"),
                        match ratio {
                            Some(r) if r >= f => "yes",
                            Some(_) => "**no**",
                            None => "n/a",
                        },
                    ),
                    None => ("-".to_string(), "-"),
                };
                let _ = write!(
                    out,
                    " {} | {} | {} | {goal} | {met} |",
                    ratio.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}x")),
                    report::order_cell(&first, 0),
                    report::order_cell(&second, 0),
                );
            }
            out.push('\n');
        }
    }
    type MemOf = fn(&TargetRuns) -> Option<f64>;
    let mem_rows: [(&str, MemOf); 2] = [
        ("Idle RSS (MB)", |r| r.idle.map(|m| m.rss_mb())),
        ("Peak RSS, VmHWM (MB)", |r| r.peak.map(|m| m.hwm_mb())),
    ];
    for (label, value) in &mem_rows {
        let _ = write!(out, "| {label} |");
        let values: Vec<_> = results.iter().map(value).collect();
        for v in &values {
            let _ = write!(out, " {} |", fmt(*v, 1, "n/a"));
        }
        if compare {
            let ratio = match (values[0], values[1]) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "n/a".into(),
            };
            let _ = write!(out, " {ratio} | - | - | - | - |");
        }
        out.push('\n');
    }

    // Server CPU: per call, the figure least disturbed by other load on a shared machine.
    if results.iter().any(|r| {
        r.runs
            .iter()
            .flatten()
            .any(|run| run.cpu.iter().any(Option::is_some))
    }) {
        let _ = write!(
            out,
            "\nServer CPU time of the median run (user + system): seconds, and microseconds per \
             call:\n\n| Run |"
        );
        for r in results {
            let _ = write!(out, " {} (s) |", r.name);
        }
        for r in results {
            let _ = write!(out, " {} (us/call) |", r.name);
        }
        let _ = write!(out, "\n|---|");
        for _ in 0..2 * results.len() {
            out.push_str("---:|");
        }
        out.push('\n');
        for (d, &depth) in cfg.depths.iter().enumerate() {
            for kind in ROW_KINDS {
                let cells: Vec<Cell> = results
                    .iter()
                    .map(|r| cell(r, d, kind, cfg.files))
                    .collect();
                let _ = write!(out, "| {}, {depth} in flight |", kind.name());
                for c in &cells {
                    let _ = write!(out, " {} |", fmt(c.cpu, 2, "n/a"));
                }
                for c in &cells {
                    let per_call = c.cpu.map(|s| s * 1e6 / kind.calls(cfg.files) as f64);
                    let _ = write!(out, " {} |", fmt(per_call, 1, "n/a"));
                }
                out.push('\n');
            }
        }
    }

    for r in results {
        for (d, e) in r.errors.iter().enumerate() {
            if let Some(e) = e {
                let _ = writeln!(
                    out,
                    "\n{}, {} in flight failed: {e:#}",
                    r.name, cfg.depths[d]
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secs: [f64; 6], ours_first: bool) -> MetaRun {
        MetaRun {
            secs,
            cpu: [Some(0.1); 6],
            ours_first,
        }
    }

    #[test]
    fn combined_rate_is_three_phases_over_their_time() {
        let r = run([9.0, 1.0, 0.5, 9.0, 9.0, 0.5], true);
        assert_eq!(RowKind::Combined.rate(&r, 100), 300.0 / 2.0);
        assert_eq!(RowKind::Phase(2).rate(&r, 100), 200.0);
        let cpu = RowKind::Combined.cpu(&r).unwrap();
        assert!((cpu - 0.3).abs() < 1e-9);
        assert_eq!(RowKind::Combined.calls(10), 30);
    }

    #[test]
    fn goals_follow_the_issue() {
        let getattr = RowKind::Phase(2);
        assert_eq!(PHASES[2], Proc::Getattr);
        assert_eq!(getattr.goal(1), Some(1.3));
        assert_eq!(getattr.goal(16), Some(1.2));
        assert_eq!(getattr.goal(64), Some(1.2));
        assert_eq!(RowKind::Combined.goal(1), None);
        assert_eq!(RowKind::Combined.goal(16), Some(1.0));
        assert_eq!(RowKind::Combined.goal(64), Some(1.3));
        assert_eq!(RowKind::Phase(0).goal(64), None); // NULL
        assert_eq!(RowKind::Phase(1).goal(64), None); // CREATE
    }

    #[test]
    fn nfs_status_errors_name_procedure_status_and_file() {
        let e = nfs_ok::<REMOVE3resok>(Proc::Remove, "f000003", &2u32.to_be_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("REMOVE f000003"), "{e}");
        assert!(e.contains("NFS3ERR_NOENT"), "{e}");
        let e = nfs_ok::<REMOVE3resok>(Proc::Remove, "x", &9999u32.to_be_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("status 9999"), "{e}");
    }

    #[test]
    fn table_shows_both_orders() {
        let results = vec![
            TargetRuns {
                name: "ours".into(),
                idle: None,
                peak: None,
                runs: vec![vec![
                    run([1.0; 6], true),
                    run([2.0; 6], false),
                    run([1.0; 6], true),
                    run([2.0; 6], false),
                ]],
                errors: vec![None],
            },
            TargetRuns {
                name: "Ganesha".into(),
                idle: None,
                peak: None,
                runs: vec![vec![run([2.0; 6], true); 4]],
                errors: vec![None],
            },
        ];
        let cfg = Config {
            files: 100,
            depths: vec![16],
            repeat: 4,
        };
        let t = table(&results, &cfg);
        let line = t
            .lines()
            .find(|l| l.starts_with("| GETATTR, 16 in flight"))
            .unwrap();
        // Median of ours = 100 (runs sorted 50, 50, 100, 100: the upper middle), Ganesha 50.
        assert!(line.contains("| 100 | 50 | 2.00x |"), "{line}");
        assert!(line.contains("100 / 50 (2.00x)"), "{line}");
        assert!(line.contains("50 / n/a"), "{line}");
        assert!(line.contains(">= 1.2x | yes"), "{line}");
    }
}
