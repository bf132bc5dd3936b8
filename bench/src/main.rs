//! `nfs-bench`: one NFSv3 client (the `nfs3_client` crate), or with `--v4` one NFSv4.1 client
//! (the `nfs-rs` crate), measures one or more servers on loopback in a single run and prints a
//! markdown table.
//!
//! Per server: sequential WRITE of `--size-mib` in `--chunk-kib` requests (UNSTABLE, one COMMIT
//! at the end) with 1 and with `--streams` requests in flight, sequential READ of the same data
//! (every byte checked) at 1 and `--streams` in flight, and CREATE + GETATTR + REMOVE of
//! `--files` empty files with one request in flight. "N in flight" means N TCP connections, each
//! with one outstanding request, each covering a disjoint 1/N of the same file: the client crate
//! sends one call and waits for its reply, it does not pipeline. Each measurement runs
//! `--repeat` times with the servers interleaved (so they share the same background load), their
//! order rotating from one repetition to the next (ours first, then ours second, ...), and the
//! median run is reported, plus the median of each order ("both orders").
//!
//! With `--meta`, only the small-call benchmark runs instead (see `meta.rs`): NULL, CREATE,
//! GETATTR, ACCESS, LOOKUP and REMOVE over ONE connection with `--depths` calls in flight, sent
//! by the pipelining client in `pipeline.rs`.
//!
//! With `--aggregate`, every target is measured at the same time instead (see `aggregate.rs`).
//!
//! With `pid=` in a target, the server's VmRSS/VmHWM (from /proc/PID/status) are sampled before
//! any server is touched (idle) and after all runs (peak = VmHWM), and its CPU time
//! (/proc/PID/stat) is recorded for every run.
//!
//! The first target is "ours", the second the baseline; the table shows their ratio and whether
//! the project's targets are met. Only loopback addresses are accepted; every call has a timeout,
//! so the program always ends.

mod aggregate;
mod client;
mod meta;
mod pipeline;
mod report;
mod workload;
mod workload4;

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::client::Endpoint;
use crate::report::{Measured, Run, TargetResult};

#[derive(Parser, Debug)]
#[command(
    name = "nfs-bench",
    about = "NFSv3 (or, with --v4, NFSv4.1) benchmark over loopback; first target vs second"
)]
struct Args {
    /// A server to measure, repeatable (first = ours, second = baseline):
    /// `name=ours,addr=127.0.0.1,nfs=2049,mount=20048,export=/export/bench[,pid=1234]`
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Bytes written and read per sequential run, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Request size in KiB (lowered to the server's FSINFO wtmax/rtmax if those are smaller).
    #[arg(long, default_value_t = 1024)]
    chunk_kib: u32,
    /// Requests in flight for the parallel runs (one connection each).
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Empty files for the metadata run (and per run of `--meta`).
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Runs of each measurement, the targets' order rotating from run to run (keep it even with
    /// two targets so each goes first equally often); the median (by rate) is reported.
    #[arg(long, default_value_t = 6)]
    repeat: usize,
    /// Only the small-call benchmark: NULL, CREATE, GETATTR, ACCESS, LOOKUP and REMOVE over ONE
    /// connection with `--depths` calls in flight (a pipelining client), instead of the data rows.
    #[arg(long)]
    meta: bool,
    /// Calls in flight on the one connection for `--meta`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    depths: Vec<usize>,
    /// Connect from ports below 1024 (needs root).
    #[arg(long)]
    privileged_port: bool,
    /// Measure over NFSv4.1 (the `nfs-rs` client, paths through the pseudo-root) instead of
    /// NFSv3.
    #[arg(long)]
    v4: bool,
    /// Every target at once (shards): sequential write, then read, of `--size-mib` per target
    /// with `--streams` connections each; prints the aggregate rate (see `aggregate.rs`).
    #[arg(long, conflicts_with_all = ["meta", "v4"])]
    aggregate: bool,
}

#[derive(Debug)]
struct Target {
    name: String,
    ep: Endpoint,
    pid: Option<u32>,
}

fn parse_target(spec: &str, privileged_port: bool) -> Result<Target> {
    let (mut name, mut addr, mut nfs, mut mount, mut export, mut pid) =
        (None, None, None, None, None, None);
    for kv in spec.split(',') {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("target item `{kv}` is not key=value"))?;
        match k {
            "name" => name = Some(v.to_string()),
            "addr" => addr = Some(v.parse::<IpAddr>().with_context(|| format!("addr `{v}`"))?),
            "nfs" => {
                nfs = Some(
                    v.parse::<u16>()
                        .with_context(|| format!("nfs port `{v}`"))?,
                )
            }
            "mount" => {
                mount = Some(
                    v.parse::<u16>()
                        .with_context(|| format!("mount port `{v}`"))?,
                )
            }
            "export" => export = Some(v.to_string()),
            "pid" => pid = Some(v.parse::<u32>().with_context(|| format!("pid `{v}`"))?),
            _ => bail!("unknown target key `{k}`"),
        }
    }
    let addr = addr.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if !addr.is_loopback() {
        bail!("{addr} is not a loopback address; nfs-bench only talks to loopback");
    }
    Ok(Target {
        name: name.context("target needs name=")?,
        ep: Endpoint {
            addr,
            nfs_port: nfs.context("target needs nfs=PORT")?,
            mount_port: mount.context("target needs mount=PORT")?,
            export: export.context("target needs export=/PATH")?,
            privileged_port,
        },
        pid,
    })
}

/// Deterministic pseudo-random bytes (splitmix64), generated once.
fn random_data(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The five timed measurements, in the order they run (the reads use the file the writes left).
#[derive(Clone, Copy, Debug)]
enum Kind {
    Write(usize),
    Read(usize),
    Meta(usize),
}

impl Kind {
    fn label(self) -> String {
        match self {
            Self::Write(n) => format!("seq write, {n} in flight"),
            Self::Read(n) => format!("seq read, {n} in flight"),
            Self::Meta(files) => format!("metadata, {files} files"),
        }
    }
}

/// One run of `kind` against `ep`: (rate for the table, description for the log).
async fn run_once(
    kind: Kind,
    ep: &Endpoint,
    data: &Arc<Vec<u8>>,
    chunk: u32,
    v4: bool,
) -> Result<(f64, String)> {
    let seq = |s: workload::Seq| {
        let commit = if s.commit_secs > 0.0 {
            format!(", COMMIT {:.2} s", s.commit_secs)
        } else {
            String::new()
        };
        let text = format!(
            "{:.1} MiB/s ({} MiB in {:.2} s{commit})",
            s.mib_per_sec(),
            s.bytes >> 20,
            s.secs
        );
        (s.mib_per_sec(), text)
    };
    Ok(match kind {
        Kind::Write(n) if v4 => seq(workload4::seq_write(ep, data, chunk, n).await?),
        Kind::Read(n) if v4 => seq(workload4::seq_read(ep, data, chunk, n).await?),
        Kind::Write(n) => seq(workload::seq_write(ep, data, chunk, n).await?),
        Kind::Read(n) => seq(workload::seq_read(ep, data, chunk, n).await?),
        Kind::Meta(files) => {
            let m = if v4 {
                workload4::metadata(ep, files).await?
            } else {
                workload::metadata(ep, files).await?
            };
            let text = format!(
                "{:.0} ops/s (CREATE {:.0}/s, GETATTR {:.0}/s, REMOVE {:.0}/s)",
                m.ops_per_sec(),
                m.files as f64 / m.create_secs,
                m.files as f64 / m.getattr_secs,
                m.files as f64 / m.remove_secs
            );
            (m.ops_per_sec(), text)
        }
    })
}

/// The largest READ/WRITE over NFSv4.1: `nfs-rs` caps its session's channel at 1 MiB
/// including the COMPOUND around the data, so a 1 MiB request never fits.
const V4_MAX_CHUNK: u32 = 512 * 1024;

/// MOUNT + FSINFO: the request size to use with this server.
async fn probe(t: &Target, wanted: u32, v4: bool) -> Result<(u32, Option<String>)> {
    if v4 {
        // The v4 client negotiates its sizes with the session; mounting proves the path.
        workload4::mount(&t.ep).await?.umount().await.ok();
        println!("{}: NFSv4.1 mount of {} works", t.name, t.ep.export);
        if wanted > V4_MAX_CHUNK {
            return Ok((
                V4_MAX_CHUNK,
                Some(format!(
                    "request size lowered to {V4_MAX_CHUNK} bytes (the v4 client's 1 MiB \
                     channel includes the COMPOUND headers)"
                )),
            ));
        }
        return Ok((wanted, None));
    }
    let mut conn = client::mount(&t.ep).await?;
    let root = conn.root_nfs_fh3();
    let (rtmax, wtmax) = client::fsinfo(&mut conn, &root).await?;
    client::unmount(conn).await;
    println!("{}: FSINFO rtmax {rtmax} wtmax {wtmax}", t.name);
    let max = rtmax.min(wtmax);
    if max > 0 && max < wanted {
        return Ok((
            max,
            Some(format!("request size lowered to {max} bytes (FSINFO)")),
        ));
    }
    Ok((wanted, None))
}

/// "1st", "2nd", ... for the log.
fn position(pos: usize) -> String {
    match pos {
        0 => "1st".into(),
        1 => "2nd".into(),
        2 => "3rd".into(),
        n => format!("{}th", n + 1),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"))
}

/// Runs every measurement `reps` times, interleaving the targets run by run so that both see
/// the same background load, in rotated order (repetition 1: ours first, 2: ours second, ...),
/// and keeps the median run of each plus the median per order.
async fn run_all(
    targets: &[Target],
    args: &Args,
    data: &Arc<Vec<u8>>,
    results: &mut [TargetResult],
) {
    let n = args.streams;
    let kinds = [
        Kind::Write(1),
        Kind::Write(n),
        Kind::Read(1),
        Kind::Read(n),
        Kind::Meta(args.files),
    ];
    for (row, kind) in kinds.into_iter().enumerate() {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
        for rep in 0..args.repeat {
            let order = report::rotation(rep, targets.len());
            let ours_first = order.first() == Some(&0);
            for (pos, &i) in order.iter().enumerate() {
                let t = &targets[i];
                let res = &mut results[i];
                if res.chunk == 0 || res.rows[row].is_some() {
                    continue; // probe failed, or this measurement already failed
                }
                let cpu_before = t.pid.and_then(report::read_cpu_secs);
                let outcome = run_once(kind, &t.ep, data, res.chunk, args.v4).await;
                let cpu = cpu_before
                    .zip(t.pid.and_then(report::read_cpu_secs))
                    .map(|(a, b)| b - a);
                let prefix = format!(
                    "{} {} [{}/{}, {}]",
                    t.name,
                    kind.label(),
                    rep + 1,
                    args.repeat,
                    position(pos)
                );
                match outcome {
                    Ok((rate, text)) => {
                        let cpu_s =
                            cpu.map_or_else(String::new, |c| format!(", server CPU {c:.2} s"));
                        println!("{prefix}: {text}{cpu_s}");
                        runs[i].push(Run {
                            m: Measured { rate, cpu },
                            ours_first,
                        });
                    }
                    Err(e) => {
                        println!("{prefix}: FAILED: {e:#}");
                        res.rows[row] = Some(Err(e));
                    }
                }
            }
        }
        for ((t, res), r) in targets.iter().zip(results.iter_mut()).zip(runs) {
            if res.rows[row].is_none()
                && let Some(median) = report::median_run(&r)
            {
                let (first, second) = report::order_medians(&r);
                println!(
                    "{} {}: median {:.1}; both orders: {} first {}, {} second {}",
                    t.name,
                    kind.label(),
                    median.rate,
                    targets[0].name,
                    fmt_opt(first),
                    targets[0].name,
                    fmt_opt(second)
                );
                res.rows[row] = Some(Ok(median));
                res.orders[row] = (first, second);
            }
        }
        if row == 3 {
            // The last read is done: the data file is no longer needed.
            for (t, res) in targets.iter().zip(results.iter()) {
                if res.chunk == 0 {
                    continue;
                }
                let cleaned = if args.v4 {
                    workload4::cleanup(&t.ep).await
                } else {
                    workload::cleanup(&t.ep).await
                };
                if let Err(e) = cleaned {
                    println!("{}: cleanup of {}: {e:#}", t.name, workload::DATA_FILE);
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.streams == 0 || args.size_mib == 0 || args.chunk_kib == 0 || args.repeat == 0 {
        bail!("--streams, --size-mib, --chunk-kib and --repeat must be positive");
    }
    let targets = args
        .targets
        .iter()
        .map(|s| parse_target(s, args.privileged_port))
        .collect::<Result<Vec<_>>>()?;
    if args.meta {
        if args.v4 {
            bail!("--meta measures NFSv3 only");
        }
        if args.files == 0
            || args.depths.is_empty()
            || args
                .depths
                .iter()
                .any(|&d| d == 0 || d > pipeline::MAX_DEPTH)
        {
            bail!(
                "--files must be positive and --depths a list of 1..={}",
                pipeline::MAX_DEPTH
            );
        }
        let cfg = meta::Config {
            files: args.files,
            depths: args.depths.clone(),
            repeat: args.repeat,
        };
        return meta::run(&targets, &cfg).await;
    }
    let size = usize::try_from(args.size_mib << 20).context("--size-mib too large")?;
    if args.aggregate {
        let mut chunk = args.chunk_kib.saturating_mul(1024);
        for t in &targets {
            chunk = chunk.min(probe(t, chunk, false).await?.0);
        }
        let data = Arc::new(random_data(size));
        println!(
            "aggregate: {} targets at once, {} MiB each, {} connections each, {} runs, median shown",
            targets.len(),
            args.size_mib,
            args.streams,
            args.repeat
        );
        return aggregate::run(&targets, &data, chunk, args.streams, args.repeat).await;
    }

    // Idle memory of every server before any of them is touched.
    let mut results = Vec::new();
    for t in &targets {
        let idle = t.pid.and_then(report::read_mem);
        if let Some(m) = &idle {
            println!(
                "{} idle: VmRSS {:.1} MB, VmHWM {:.1} MB",
                t.name,
                m.rss_mb(),
                m.hwm_mb()
            );
        }
        results.push(TargetResult::new(&t.name, idle));
    }

    let wanted = args.chunk_kib.saturating_mul(1024);
    for (t, res) in targets.iter().zip(results.iter_mut()) {
        match probe(t, wanted, args.v4).await {
            Ok((chunk, note)) => {
                res.chunk = chunk;
                res.notes.extend(note);
            }
            Err(e) => {
                let e = e.context("MOUNT + FSINFO probe");
                println!("{}: {e:#}", t.name);
                res.fail_all(&format!("{e:#}"));
            }
        }
    }

    let data = Arc::new(random_data(size));
    println!(
        "data: {} MiB of pseudo-random bytes; {} in flight = {} TCP connections, one outstanding \
         request each, disjoint regions of one file (the client does not pipeline); \
         {} runs each, targets interleaved, median shown",
        args.size_mib, args.streams, args.streams, args.repeat
    );
    run_all(&targets, &args, &data, &mut results).await;

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
    println!(
        "Protocol: {}",
        if args.v4 {
            "NFSv4.1 (nfs-rs client, one mount = one session per stream)"
        } else {
            "NFSv3 (nfs3_client)"
        }
    );
    print!("{}", report::table(&results, args.streams, args.files));
    if results.iter().any(TargetResult::any_failed) {
        bail!("some measurements failed (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target() {
        let t = parse_target(
            "name=ours,nfs=2049,mount=20048,export=/export/b,pid=7",
            false,
        )
        .expect("valid spec");
        assert_eq!(t.name, "ours");
        assert_eq!(t.ep.nfs_port, 2049);
        assert_eq!(t.pid, Some(7));
        assert!(parse_target("name=x,addr=10.0.0.1,nfs=1,mount=2,export=/e", false).is_err());
    }

    #[test]
    fn random_data_has_requested_length() {
        let d = random_data(1001);
        assert_eq!(d.len(), 1001);
        assert_ne!(d[..8], d[8..16]);
    }
}
