//! What one client may hold, tried as a hostile client would over real sockets: connection
//! caps (in total and per address), idle and slow connections, clients that never read their
//! replies, the memory budget, and a listener surviving file-descriptor exhaustion (the real
//! binary under a descriptor limit).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use nfs_server_provisioner::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ: u32 = 6;

async fn limited(change: impl FnOnce(&mut oncrpc::Limits)) -> Server {
    Server::configured(&[(VOL, VolumeOptions::default())], |c: &mut ServeConfig| {
        change(&mut c.limits)
    })
    .await
}

/// `GET path` on the HTTP port: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    let status = reply
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {reply}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// `/metrics` as `series -> value`.
async fn scrape(http: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metric(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// Whether the server closed `stream`: EOF (or a reset) within `within`, reading and
/// discarding whatever replies come first.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = vec![0u8; 1 << 16];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn null_works(addr: SocketAddr) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    else {
        return false;
    };
    if stream
        .write_all(&call(7, NFS_PROGRAM, 3, 0, &[]))
        .await
        .is_err()
    {
        return false;
    }
    let mut reply = [0u8; 28];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn beyond_max_connections_new_connections_are_closed_and_the_first_keep_working() {
    let s = limited(|l| l.max_connections = 100).await;
    let mut first = Vec::new();
    for _ in 0..100 {
        let mut raw = Raw::connect(s.running.nfs).await;
        assert_eq!(
            raw.call(1, NFS_PROGRAM, 3, 0, &[]).await,
            ReplyKind::Success(vec![])
        );
        first.push(raw);
    }
    // The 101st, on any RPC port, is accepted by the kernel and closed by the server at once.
    for port in [s.running.nfs, s.running.mount] {
        let mut extra = TcpStream::connect(port).await.unwrap();
        let _ = extra.write_all(&call(2, NFS_PROGRAM, 3, 0, &[])).await;
        assert!(
            closed_within(&mut extra, Duration::from_secs(5)).await,
            "connection 101 to {port} was served"
        );
    }
    for (i, raw) in first.iter_mut().enumerate() {
        assert_eq!(
            raw.call(3 + i as u32, NFS_PROGRAM, 3, 0, &[]).await,
            ReplyKind::Success(vec![]),
            "connection {i} stopped working"
        );
    }
    let m = scrape(s.running.http.unwrap()).await;
    assert_eq!(
        metric(
            &m,
            "rpc_connections_refused_total{reason=\"max_connections\"}"
        ),
        2.0
    );
    // A place freed is a place taken again.
    drop(first.pop());
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut raw = Raw::connect(s.running.nfs).await;
        raw.send(&call(9, NFS_PROGRAM, 3, 0, &[])).await;
        if let Some(reply) = raw.recv_record().await {
            again = Some(reply);
            break;
        }
    }
    assert!(again.is_some(), "no connection admitted after one closed");
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let s = limited(|l| l.max_connections_per_address = 5).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = connect_from("127.0.0.1", s.running.nfs).await;
        stream
            .write_all(&call(1, NFS_PROGRAM, 3, 0, &[]))
            .await
            .unwrap();
        let mut reply = [0u8; 28];
        stream.read_exact(&mut reply).await.unwrap();
        held.push(stream);
    }
    let mut sixth = connect_from("127.0.0.1", s.running.nfs).await;
    assert!(closed_within(&mut sixth, Duration::from_secs(5)).await);
    // Another address (all of 127/8 is loopback on Linux) is still served.
    let mut other = connect_from("127.0.0.2", s.running.nfs).await;
    other
        .write_all(&call(2, NFS_PROGRAM, 3, 0, &[]))
        .await
        .unwrap();
    let mut reply = [0u8; 28];
    tokio::time::timeout(Duration::from_secs(5), other.read_exact(&mut reply))
        .await
        .expect("127.0.0.2 answered")
        .unwrap();
    let m = scrape(s.running.http.unwrap()).await;
    assert_eq!(
        metric(
            &m,
            "rpc_connections_refused_total{reason=\"max_connections_per_address\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let s = limited(|l| l.idle_timeout = Duration::from_millis(500)).await;
    let mut idle = Raw::connect(s.running.nfs).await;
    let mut busy = Raw::connect(s.running.nfs).await;
    let started = std::time::Instant::now();
    let mut xid = 0;
    // The busy one calls every 200 ms for 1.5 s, three idle timeouts.
    while started.elapsed() < Duration::from_millis(1500) {
        xid += 1;
        assert_eq!(
            busy.call(xid, NFS_PROGRAM, 3, 0, &[]).await,
            ReplyKind::Success(vec![]),
            "a busy connection was closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        idle.recv_record().await.is_none(),
        "the idle connection is closed without a reply"
    );
    let m = scrape(s.running.http.unwrap()).await;
    assert!(metric(&m, "rpc_connections_closed_total{reason=\"idle\"}") >= 1.0);
}

#[tokio::test]
async fn a_record_that_does_not_arrive_in_time_closes_its_connection_only() {
    let s = limited(|l| l.record_timeout = Duration::from_millis(500)).await;
    // Half a record mark, then nothing.
    let mut stalled = TcpStream::connect(s.running.nfs).await.unwrap();
    stalled.write_all(&[0x80, 0]).await.unwrap();
    // A whole record sent one byte every 100 ms: it would take 4 s.
    let mut slow = TcpStream::connect(s.running.nfs).await.unwrap();
    let wire = call(1, NFS_PROGRAM, 3, 0, &[]);
    let dripping = tokio::spawn(async move {
        for b in wire {
            if slow.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    let mut healthy = Raw::connect(s.running.nfs).await;
    assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);
    let mut slow = dripping.await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
    assert_eq!(
        healthy.call(5, NFS_PROGRAM, 3, 0, &[]).await,
        ReplyKind::Success(vec![])
    );
    let m = scrape(s.running.http.unwrap()).await;
    assert_eq!(
        metric(
            &m,
            "rpc_connections_closed_total{reason=\"record_timeout\"}"
        ),
        2.0
    );
}

/// `n` READ calls of `count` bytes of `fh` at offset 0, record-marked, xids from 1.
fn reads(fh: &[u8], count: u32, n: u32) -> Vec<u8> {
    let args = [xdr_opaque(fh), words(&[0, 0, count])].concat();
    (1..=n)
        .flat_map(|xid| call(xid, NFS_PROGRAM, 3, READ, &args))
        .collect()
}

#[tokio::test]
async fn a_client_that_does_not_read_its_replies_is_disconnected_after_the_send_timeout() {
    let s = limited(|l| l.send_timeout = Duration::from_millis(500)).await;
    std::fs::write(s.vol_path(VOL).join("big"), vec![1u8; 1 << 20]).unwrap();
    let mut c = s.client().await;
    let root = s.root_fh(VOL).await;
    let (big, _) = lookup(&mut c, &root, "big").await.unwrap();
    let mut raw = TcpStream::connect(s.running.nfs).await.unwrap();
    // 64 MiB of replies: far more than the sockets' buffers hold.
    raw.write_all(&reads(&big.data, 1 << 20, 64)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got = 0usize;
    let mut sink = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match raw.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert!(
        got < 64 << 20,
        "all {got} bytes of replies came: the server waited instead of closing"
    );
    let m = scrape(s.running.http.unwrap()).await;
    assert_eq!(
        metric(&m, "rpc_connections_closed_total{reason=\"send_timeout\"}"),
        1.0
    );
    // Everyone else is served.
    assert!(null_works(s.running.nfs).await);
}

#[tokio::test]
async fn replies_nobody_reads_hold_at_most_the_address_budget() {
    const BUDGET: usize = 2 << 20;
    const COUNT: u32 = 60_000; // copied into the reply (below the sendfile threshold)
    let s = limited(|l| l.max_bytes_per_address = BUDGET).await;
    std::fs::write(s.vol_path(VOL).join("f"), vec![2u8; COUNT as usize]).unwrap();
    let mut c = s.client().await;
    let root = s.root_fh(VOL).await;
    let (f, _) = lookup(&mut c, &root, "f").await.unwrap();
    let http = s.running.http.unwrap();
    // Ten connections from one address, each sending 2,000 READs and reading nothing: 1.2 GB
    // of replies asked for.
    let mut writers = Vec::new();
    for _ in 0..10 {
        let wire = reads(&f.data, COUNT, 2000);
        let mut stream = TcpStream::connect(s.running.nfs).await.unwrap();
        writers.push(tokio::spawn(async move {
            // The server stops reading: this write does not finish.
            let _ = tokio::time::timeout(Duration::from_secs(3), stream.write_all(&wire)).await;
            stream
        }));
    }
    let mut peak = 0.0f64;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(metric(&scrape(http).await, "rpc_bytes_in_flight"));
    }
    let m = scrape(http).await;
    assert!(
        peak > (BUDGET / 2) as f64,
        "the replies were held ({peak} bytes at most)"
    );
    assert!(
        peak <= (BUDGET + 64 * 1024) as f64,
        "{peak} bytes held for one address with a budget of {BUDGET}"
    );
    assert!(metric(&m, "rpc_backpressure_waits_total") >= 1.0);
    // Another address is not held back by this one's budget.
    let mut other = connect_from("127.0.0.2", s.running.nfs).await;
    other
        .write_all(&call(2, NFS_PROGRAM, 3, 0, &[]))
        .await
        .unwrap();
    let mut reply = [0u8; 28];
    tokio::time::timeout(Duration::from_secs(5), other.read_exact(&mut reply))
        .await
        .expect("another address answered")
        .unwrap();
    for w in writers {
        drop(w.await.unwrap());
    }
    // Once the connections are gone, their bytes are given back.
    let mut left = f64::MAX;
    for _ in 0..100 {
        left = metric(&scrape(http).await, "rpc_bytes_in_flight");
        if left == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        left, 0.0,
        "bytes still charged after every connection closed"
    );
}

/// The real binary, with at most 64 file descriptors: connections beyond what it can
/// accept wait in the backlog, the listener keeps retrying (it used to stop for good), and
/// once descriptors are free again it serves; the probes say it was failing, then healthy.
#[test]
fn the_listener_survives_file_descriptor_exhaustion() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let dir = export_root();
    // 0 disables the HTTP port: take a free one.
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nfs-server-provisioner"));
    cmd.args(["--log-format", "json", "serve", "--export-root"])
        .arg(dir.path())
        .args([
            "--bind=127.0.0.1",
            "--nfs-port=0",
            "--mount-port=0",
            "--portmap-port=0",
            "--nlm-port=0",
            "--statd-port=0",
            "--no-controller",
        ])
        .arg(format!("--http-port={http_port}"))
        .stderr(std::process::Stdio::piped());
    // SAFETY: only an async-signal-safe setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let mut child = Kill(child);
    let mut lines = std::io::BufReader::new(stderr).lines();
    let (nfs, http) = loop {
        let line = lines
            .next()
            .expect("the server exited before serving")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["fields"]["message"] == "serving NFSv3, NFSv4.1 and NFSv4.2" {
            let addr = |k: &str| -> SocketAddr {
                v["fields"][k]
                    .as_str()
                    .and_then(|s| {
                        s.trim_start_matches("Some(")
                            .trim_end_matches(')')
                            .parse()
                            .ok()
                    })
                    .unwrap_or_else(|| panic!("no {k} address in {line}"))
            };
            break (addr("nfs"), addr("http"));
        }
    };
    // Keep reading the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert_eq!(http_get(http, "/healthz").await.0, 200);
        // 100 connections, each making one call: the server runs out of descriptors.
        let mut held = Vec::new();
        for _ in 0..100 {
            let mut stream = TcpStream::connect(nfs).await.unwrap();
            stream
                .write_all(&call(1, NFS_PROGRAM, 3, 0, &[]))
                .await
                .unwrap();
            held.push(stream);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        // Descriptors come back as the server sees those connections close.
        let mut served = false;
        for _ in 0..100 {
            if null_works(nfs).await {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served, "the NFS listener did not serve again");
        assert_eq!(http_get(http, "/healthz").await.0, 200);
        let (ready, body) = http_get(http, "/readyz").await;
        assert_eq!(ready, 200, "{body}");
        let m = scrape(http).await;
        assert!(
            metric(&m, "rpc_accept_failures_total") >= 1.0,
            "descriptors never ran out: the test proves nothing"
        );
    });
    assert!(child.0.try_wait().unwrap().is_none(), "the server exited");
}

/// A stopping server (SIGTERM) closes its listeners, reads no new calls, and answers every
/// call it already received before the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_calls_already_received_then_closes() {
    let s = Server::start().await;
    std::fs::write(s.vol_path(VOL).join("big"), vec![3u8; 1 << 20]).unwrap();
    let mut c = s.client().await;
    let root = s.root_fh(VOL).await;
    let (big, _) = lookup(&mut c, &root, "big").await.unwrap();
    let mut raw = TcpStream::connect(s.running.nfs).await.unwrap();
    raw.write_all(&reads(&big.data, 1 << 20, 32)).await.unwrap();
    // Let the server read the 32 calls (a few KiB) before it is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = tokio::spawn(async move {
        let mut replies = 0;
        let mut raw = Raw::from_stream(raw);
        while let Some(r) = raw.recv_record().await {
            // RPC header (24), status, post_op_attr (4 + 84), count, eof, data length, data.
            assert_eq!(r.len(), 24 + 4 + 88 + 12 + (1 << 20), "a whole READ reply");
            replies += 1;
        }
        replies
    });
    let left = s.running.shutdown(Duration::from_secs(10)).await;
    assert_eq!(left, 0, "connections still open after the grace period");
    assert_eq!(
        reader.await.unwrap(),
        32,
        "every call received was answered"
    );
    assert!(
        TcpStream::connect(s.running.nfs).await.is_err(),
        "the listener still accepts"
    );
    let (status, body) = http_get(s.running.http.unwrap(), "/readyz").await;
    assert_eq!(status, 503, "{body}");
}
