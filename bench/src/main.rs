//! `nfs-bench`: one NFSv3 client (the `nfs3_client` crate) measures one or more servers on
//! loopback, one after the other, in a single run, and prints a markdown table.
//!
//! Per server: sequential WRITE of `--size-mib` in `--chunk-kib` requests (UNSTABLE, one COMMIT
//! at the end) with 1 and with `--streams` requests in flight, sequential READ of the same data
//! (every byte checked) at 1 and `--streams` in flight, and CREATE + GETATTR + REMOVE of
//! `--files` empty files with one request in flight. "N in flight" means N TCP connections, each
//! with one outstanding request, each covering a disjoint 1/N of the same file: the client crate
//! sends one call and waits for its reply, it does not pipeline.
//!
//! With `pid=` in a target, the server's VmRSS/VmHWM (from /proc/PID/status) are sampled before
//! any target is touched (idle) and after its run (peak = VmHWM).
//!
//! The first target is "ours", the second the baseline; the table shows their ratio and whether
//! the project's targets are met. Only loopback addresses are accepted; every call has a timeout,
//! so the program always ends.

mod client;
mod report;
mod workload;

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::client::Endpoint;
use crate::report::{Mem, TargetResult};

#[derive(Parser, Debug)]
#[command(
    name = "nfs-bench",
    about = "NFSv3 benchmark over loopback; first target vs second"
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
    /// Empty files for the metadata run.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Runs of each measurement; the median (by rate) is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Connect from ports below 1024 (needs root).
    #[arg(long)]
    privileged_port: bool,
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

/// Runs `f` `reps` times (stopping at the first error), prints each run and returns the run
/// with the median `key`.
async fn median<T, F, Fut>(
    label: &str,
    reps: usize,
    key: fn(&T) -> f64,
    fmt: &dyn Fn(&T) -> String,
    f: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut runs = Vec::with_capacity(reps);
    for i in 1..=reps {
        match f().await {
            Ok(v) => {
                println!("   {label} [{i}/{reps}]: {}", fmt(&v));
                runs.push(v);
            }
            Err(e) => {
                println!("   {label} [{i}/{reps}]: FAILED: {e:#}");
                return Err(e);
            }
        }
    }
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = runs.len() / 2;
    runs.into_iter().nth(mid).context("no runs")
}

async fn run_target(
    t: &Target,
    args: &Args,
    data: &Arc<Vec<u8>>,
    idle: Option<Mem>,
) -> TargetResult {
    let mut res = TargetResult::new(&t.name, idle);
    let mut chunk = args.chunk_kib.saturating_mul(1024);
    println!(
        "== {} ({}:{} mount {} export {})",
        t.name, t.ep.addr, t.ep.nfs_port, t.ep.mount_port, t.ep.export
    );
    let probe = async {
        let mut conn = client::mount(&t.ep).await?;
        let root = conn.root_nfs_fh3();
        let sizes = client::fsinfo(&mut conn, &root).await?;
        client::unmount(conn).await;
        anyhow::Ok(sizes)
    };
    match probe.await {
        Ok((rtmax, wtmax)) => {
            println!("   FSINFO rtmax {rtmax} wtmax {wtmax}");
            if wtmax.min(rtmax) < chunk && wtmax.min(rtmax) > 0 {
                chunk = wtmax.min(rtmax);
                res.notes
                    .push(format!("request size lowered to {chunk} bytes (FSINFO)"));
            }
        }
        Err(e) => {
            let e = e.context("MOUNT + FSINFO probe");
            println!("   {e:#}");
            res.fail_all(&format!("{e:#}"));
            res.peak = t.pid.and_then(report::read_mem);
            return res;
        }
    }
    res.chunk = chunk;
    let n = args.streams;
    let seq = |s: &workload::Seq| {
        format!(
            "{:.1} MiB/s ({} MiB in {:.2} s{})",
            s.mib_per_sec(),
            s.bytes >> 20,
            s.secs,
            if s.commit_secs > 0.0 {
                format!(", COMMIT {:.2} s", s.commit_secs)
            } else {
                String::new()
            }
        )
    };

    let meta = |m: &workload::Meta| {
        format!(
            "{:.0} ops/s ({} files: CREATE {:.0}/s, GETATTR {:.0}/s, REMOVE {:.0}/s)",
            m.ops_per_sec(),
            m.files,
            m.files as f64 / m.create_secs,
            m.files as f64 / m.getattr_secs,
            m.files as f64 / m.remove_secs
        )
    };
    let reps = args.repeat;
    let rate = workload::Seq::mib_per_sec;

    let label = "seq write, 1 in flight";
    res.write1 = median(label, reps, rate, &seq, || {
        workload::seq_write(&t.ep, data, chunk, 1)
    })
    .await;
    let label = format!("seq write, {n} in flight");
    res.write_n = median(&label, reps, rate, &seq, || {
        workload::seq_write(&t.ep, data, chunk, n)
    })
    .await;
    let label = "seq read, 1 in flight";
    res.read1 = median(label, reps, rate, &seq, || {
        workload::seq_read(&t.ep, data, chunk, 1)
    })
    .await;
    let label = format!("seq read, {n} in flight");
    res.read_n = median(&label, reps, rate, &seq, || {
        workload::seq_read(&t.ep, data, chunk, n)
    })
    .await;
    if let Err(e) = workload::cleanup(&t.ep).await {
        println!("   cleanup of {}: {e:#}", workload::DATA_FILE);
    }
    let ops = workload::Meta::ops_per_sec;
    res.meta = median("metadata", reps, ops, &meta, || {
        workload::metadata(&t.ep, args.files)
    })
    .await;
    res.peak = t.pid.and_then(report::read_mem);
    if let Some(m) = &res.peak {
        println!(
            "   memory after run: VmRSS {:.1} MB, VmHWM {:.1} MB",
            m.rss_mb(),
            m.hwm_mb()
        );
    }
    res
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
    let size = usize::try_from(args.size_mib << 20).context("--size-mib too large")?;

    // Idle memory of every server before any of them is touched.
    let idle: Vec<Option<Mem>> = targets
        .iter()
        .map(|t| t.pid.and_then(report::read_mem))
        .collect();
    for (t, m) in targets.iter().zip(&idle) {
        if let Some(m) = m {
            println!(
                "{} idle: VmRSS {:.1} MB, VmHWM {:.1} MB",
                t.name,
                m.rss_mb(),
                m.hwm_mb()
            );
        }
    }

    let data = Arc::new(random_data(size));
    println!(
        "data: {} MiB of pseudo-random bytes; {} in flight = {} TCP connections, one outstanding \
         request each, disjoint regions of one file (the client does not pipeline)",
        args.size_mib, args.streams, args.streams
    );

    let mut results = Vec::new();
    for (t, idle) in targets.iter().zip(idle) {
        results.push(run_target(t, &args, &data, idle).await);
    }

    println!();
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
