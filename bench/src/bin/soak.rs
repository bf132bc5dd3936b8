//! Soak benchmark: many well-behaved clients doing small I/O while misbehaving ones attack,
//! against the real server binary on loopback. Prints the well-behaved clients' latency and
//! errors, the server's resident memory over time, and what the server refused or closed.
//!
//! Well-behaved: `--clients` connections (spread over 10 source addresses, 127.0.1.x, as
//! nodes would be), each alternating GETATTR and a 4 KiB READ every `--interval-ms`.
//! Misbehaving: `--attackers` connections from 127.0.2.x, a quarter each of
//! - idle: connect and send nothing;
//! - slow: drip a record one byte per second;
//! - deaf: pipeline 1 MiB READs and never read a reply;
//! - junk: records without an RPC header, and calls of unknown programs, in a loop;
//!
//! each reconnecting whenever the server closes it.
//!
//! `cargo run --release -p nfs-bench --bin soak -- [--seconds 300] [--clients 1000]
//!  [--attackers 100] [--server target/release/nfs-server-provisioner] [-- SERVE_ARGS...]`
//! Needs root (the server runs as root).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 100)]
    attackers: usize,
    /// Pause between one well-behaved client's calls.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    #[arg(long, default_value = "target/release/nfs-server-provisioner")]
    server: String,
    /// Extra flags for `serve` (after `--`).
    #[arg(last = true)]
    serve_args: Vec<String>,
}

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn opaque(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v.resize(v.len() + (4 - data.len() % 4) % 4, 0);
    v
}

/// A record-marked call with AUTH_SYS root credentials.
fn call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut cred = words(&[1]);
    cred.extend(opaque(b"soak"));
    cred.extend(words(&[0, 0, 0]));
    let mut body = words(&[xid, 0, 2, prog, vers, proc_, 1]);
    body.extend(opaque(&cred));
    body.extend(words(&[0, 0]));
    body.extend_from_slice(args);
    let mut v = (body.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
    v.extend(body);
    v
}

async fn read_record(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).await?;
        let h = u32::from_be_bytes(h);
        let start = out.len();
        out.resize(start + (h & 0x7fff_ffff) as usize, 0);
        s.read_exact(&mut out[start..]).await?;
        if h & 0x8000_0000 != 0 {
            return Ok(out);
        }
    }
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// MNT /export/bench over TCP: the root handle.
async fn mount(addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            s.write_all(&call(1, MOUNT, 3, 1, &opaque(b"/export/bench")))
                .await?;
            let r = read_record(&mut s).await?;
            // xid, REPLY, ACCEPTED, verifier (2), SUCCESS, mountstat3, fhandle.
            let len = u32::from_be_bytes(r[28..32].try_into()?) as usize;
            if u32::from_be_bytes(r[24..28].try_into()?) != 0 {
                bail!("MNT failed");
            }
            return Ok(r[32..32 + len].to_vec());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server did not start")
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
}

/// One well-behaved client: GETATTR and READ 4 KiB in turn, each answered before the next.
async fn client(
    source: Ipv4Addr,
    nfs: SocketAddr,
    root: Arc<Vec<u8>>,
    file: Arc<Vec<u8>>,
    interval: Duration,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<u32> {
    let mut micros = Vec::new();
    let mut conn: Option<TcpStream> = None;
    let mut xid = 0u32;
    // Spread the start over one interval.
    tokio::time::sleep(interval.mul_f64(rand_fraction(source, nfs.port()))).await;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match connect_from(source, nfs).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                }
                Err(_) => {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(interval).await;
                    continue;
                }
            }
        }
        let Some(s) = conn.as_mut() else { continue };
        xid = xid.wrapping_add(1);
        let msg = if xid.is_multiple_of(2) {
            call(xid, NFS, 3, 1, &opaque(&root))
        } else {
            call(
                xid,
                NFS,
                3,
                6,
                &[opaque(&file), words(&[0, 0, 4096])].concat(),
            )
        };
        let started = Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            s.write_all(&msg).await?;
            read_record(s).await
        })
        .await;
        match answered {
            Ok(Ok(r)) if r.len() >= 28 && r[..4] == xid.to_be_bytes() => {
                micros.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                tally.calls.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                tally.reconnects.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
        tokio::time::sleep(interval).await;
    }
    micros
}

fn rand_fraction(source: Ipv4Addr, salt: u16) -> f64 {
    let mut x = (u64::from(u32::from(source)) * 0x9e37_79b9_7f4a_7c15) ^ u64::from(salt);
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    Idle,
    Slow,
    Deaf,
    Junk,
}

/// One misbehaving client, reconnecting whenever it is closed.
async fn attacker(
    kind: Attack,
    source: Ipv4Addr,
    nfs: SocketAddr,
    big: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    closed: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = connect_from(source, nfs).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut sink = vec![0u8; 1 << 16];
        match kind {
            Attack::Idle => {
                // Wait until the server closes it.
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut sink)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
            }
            Attack::Slow => {
                let msg = call(1, NFS, 3, 0, &[0u8; 64]);
                for b in msg {
                    if stop.load(Ordering::Relaxed) || s.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Attack::Deaf => {
                let args = [opaque(&big), words(&[0, 0, 1 << 20])].concat();
                let mut xid = 0;
                while !stop.load(Ordering::Relaxed) {
                    xid += 1;
                    let sent = tokio::time::timeout(
                        Duration::from_secs(1),
                        s.write_all(&call(xid, NFS, 3, 6, &args)),
                    )
                    .await;
                    if matches!(sent, Ok(Err(_))) {
                        break;
                    }
                    // Never read; find out whether the server closed us.
                    if let Ok(Ok(0)) | Ok(Err(_)) =
                        tokio::time::timeout(Duration::from_millis(1), s.peek(&mut [0u8; 1])).await
                    {
                        break;
                    }
                }
            }
            Attack::Junk => {
                // A record too short to hold an xid and a message type.
                let mut junk = (2u32 | 0x8000_0000).to_be_bytes().to_vec();
                junk.extend([0xffu8; 2]);
                let unknown = call(2, 300_000, 1, 0, &[]);
                if s.write_all(&unknown).await.is_ok() && s.write_all(&junk).await.is_ok() {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), s.read(&mut sink)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
    }
}

async fn metrics(http: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect(http).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

fn series(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = std::env::var("BENCH_TMP").unwrap_or_else(|_| "target/bench-tmp".into());
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base)?;
    let status = std::process::Command::new(&args.server)
        .args(["volume", "add", "bench", "--export-root"])
        .arg(dir.path())
        .status()
        .with_context(|| format!("run {}", args.server))?;
    if !status.success() {
        bail!("volume add failed");
    }
    std::fs::write(dir.path().join("bench/small"), vec![7u8; 4096])?;
    std::fs::write(dir.path().join("bench/big"), vec![9u8; 1 << 20])?;
    let (nfs_port, mount_port, http_port) = (free_port(), free_port(), free_port());
    let mut child = std::process::Command::new(&args.server)
        .args([
            "serve",
            "--no-controller",
            "--bind",
            "127.0.0.1",
            "--export-root",
        ])
        .arg(dir.path())
        .args([
            format!("--nfs-port={nfs_port}"),
            format!("--mount-port={mount_port}"),
            format!("--http-port={http_port}"),
            "--portmap-port=0".into(),
            "--nlm-port=0".into(),
            "--statd-port=0".into(),
        ])
        .args(&args.serve_args)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    let lo = Ipv4Addr::LOCALHOST;
    let nfs = SocketAddr::new(IpAddr::V4(lo), nfs_port);
    let http = SocketAddr::new(IpAddr::V4(lo), http_port);
    let root = Arc::new(mount(SocketAddr::new(IpAddr::V4(lo), mount_port)).await?);
    // LOOKUP the two files.
    let lookup = |name: &'static str| {
        let root = Arc::clone(&root);
        async move {
            let mut s = TcpStream::connect(nfs).await?;
            s.write_all(&call(
                1,
                NFS,
                3,
                3,
                &[opaque(&root), opaque(name.as_bytes())].concat(),
            ))
            .await?;
            let r = read_record(&mut s).await?;
            let len = u32::from_be_bytes(r[28..32].try_into()?) as usize;
            anyhow::Ok(Arc::new(r[32..32 + len].to_vec()))
        }
    };
    let small = lookup("small").await?;
    let big = lookup("big").await?;
    let rss_start = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let closed = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_millis(args.interval_ms);
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let source = Ipv4Addr::new(127, 0, 1, 1 + (i % 10) as u8);
        clients.push(tokio::spawn(client(
            source,
            nfs,
            Arc::clone(&root),
            Arc::clone(&small),
            interval,
            Arc::clone(&stop),
            Arc::clone(&tally),
        )));
    }
    let kinds = [Attack::Idle, Attack::Slow, Attack::Deaf, Attack::Junk];
    let mut attackers = Vec::new();
    for i in 0..args.attackers {
        let kind = kinds[i % kinds.len()];
        let source = Ipv4Addr::new(127, 0, 2, 1 + (i % 4) as u8);
        attackers.push(tokio::spawn(attacker(
            kind,
            source,
            nfs,
            Arc::clone(&big),
            Arc::clone(&stop),
            Arc::clone(&closed),
        )));
    }
    let started = Instant::now();
    let mut samples = vec![(0u64, rss_start)];
    let mut peak = rss_start;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(pid);
        peak = peak.max(rss);
        let t = started.elapsed().as_secs();
        if t.is_multiple_of(30) || (t <= 10 && t.is_multiple_of(5)) {
            samples.push((t, rss));
            eprintln!(
                "{t:>4} s  rss {:>7} KiB  calls {:>8}  errors {:>5}",
                rss,
                tally.calls.load(Ordering::Relaxed),
                tally.errors.load(Ordering::Relaxed)
            );
        }
    }
    let text = metrics(http).await;
    let rss_end = rss_kib(pid);
    peak = peak.max(rss_end);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await?);
    }
    for a in attackers {
        a.abort();
    }
    let _ = child.kill();
    let _ = child.wait();
    all.sort_unstable();

    println!(
        "## Soak: {} clients (GETATTR / READ 4 KiB every {} ms) + {} attackers, {} s",
        args.clients, args.interval_ms, args.attackers, args.seconds
    );
    println!();
    println!("| well-behaved calls | errors | p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        all.len(),
        tally.errors.load(Ordering::Relaxed),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        percentile(&all, 1.0)
    );
    println!();
    println!("| server RSS | KiB |");
    println!("|---|---:|");
    println!("| before the load | {rss_start} |");
    for (t, rss) in &samples[1..] {
        println!("| at {t} s | {rss} |");
    }
    println!("| at the end ({} s) | {rss_end} |", args.seconds);
    println!("| peak | {peak} |");
    println!();
    println!(
        "Attacker connections closed by the server and reopened: {}",
        closed.load(Ordering::Relaxed)
    );
    for prefix in [
        "rpc_connections_closed_total",
        "rpc_connections_refused_total",
        "rpc_rejected_messages_total",
        "rpc_backpressure_waits_total",
        "rpc_connections ",
    ] {
        for l in series(&text, prefix) {
            println!("    {l}");
        }
    }
    Ok(())
}
