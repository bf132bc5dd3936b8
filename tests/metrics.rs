//! `/metrics` after a scripted workload: the counters move by exactly what the workload did
//! (calls by procedure and status, bytes per volume, stale handles, connections, rejected
//! messages, latency observations), read over HTTP from the server's own port.

mod common;

use std::collections::HashMap;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The whole HTTP reply to `GET /metrics` on the server's HTTP port.
async fn get_metrics(s: &Server) -> String {
    let addr = s.running.http.expect("http port");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    reply
}

/// `GET /metrics`, parsed into `series -> value` (series with its labels as printed).
async fn scrape(s: &Server) -> HashMap<String, f64> {
    let reply = get_metrics(s).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("application/openmetrics-text"));
    let body = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    assert!(body.trim_end().ends_with("# EOF"), "truncated: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    get(after, series) - get(before, series)
}

fn nfs(procedure: &str, status: &str) -> String {
    format!(
        "nfs_requests_total{{program=\"nfs\",version=\"3\",procedure=\"{procedure}\",status=\"{status}\"}}"
    )
}

#[tokio::test]
async fn counters_move_by_what_a_scripted_workload_did() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    // The exported-volumes gauge follows the registry reload (every 100 ms here).
    let mut before = scrape(&s).await;
    for _ in 0..100 {
        if get(&before, "nfs_volumes_exported") == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        before = scrape(&s).await;
    }
    assert_eq!(get(&before, "nfs_volumes_exported"), 1.0);
    assert!(
        get(&before, "rpc_connections") >= 1.0,
        "the client's connection is open"
    );

    // 3 GETATTRs, a file created, 1000 bytes written and read back.
    for _ in 0..3 {
        getattr(&mut c, &root).await.unwrap();
    }
    let (f, _) = create(&mut c, &root, "data", 0o644).await;
    write(&mut c, &f, 0, &[7u8; 1000]).await;
    assert_eq!(read_all(&mut c, &f).await.len(), 1000);
    // A forged handle: refused, counted as stale.
    let mut forged = root.data.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    assert!(getattr(&mut c, &fh(&forged)).await.is_err());
    // A call with garbage arguments, and one with an RPC version we do not speak.
    let mut raw = Raw::connect(s.running.nfs).await;
    raw.send(&call(1, NFS_PROGRAM, 3, 1, &[0, 0, 0])).await;
    raw.recv().await;
    raw.send(&record(&call_body(2, 3, NFS_PROGRAM, 3, 0, &[])))
        .await;
    raw.recv().await;

    let after = scrape(&s).await;
    let d = |series: &str| delta(&before, &after, series);
    assert_eq!(d(&nfs("GETATTR", "NFS3_OK")), 3.0);
    assert_eq!(d(&nfs("CREATE", "NFS3_OK")), 1.0);
    assert_eq!(d(&nfs("WRITE", "NFS3_OK")), 1.0);
    assert!(d(&nfs("READ", "NFS3_OK")) >= 1.0);
    assert_eq!(
        d(&nfs("GETATTR", "NFS3ERR_BADHANDLE")) + d(&nfs("GETATTR", "NFS3ERR_STALE")),
        1.0
    );
    assert_eq!(d(&nfs("GETATTR", "GARBAGE_ARGS")), 1.0);
    assert_eq!(d("nfs_stale_handles_total"), 1.0);
    assert_eq!(d("nfs_volume_written_bytes_total{volume=\"vol\"}"), 1000.0);
    assert_eq!(d("nfs_volume_read_bytes_total{volume=\"vol\"}"), 1000.0);
    assert_eq!(
        d("rpc_rejected_messages_total{reason=\"rpc_version\"}"),
        1.0
    );
    assert_eq!(
        d("rpc_connections_accepted_total"),
        1.0,
        "the raw connection"
    );
    // Every answered GETATTR was timed (3 OK, 1 stale, 1 garbage).
    assert_eq!(
        d("nfs_request_duration_seconds_count{program=\"nfs\",procedure=\"GETATTR\"}"),
        5.0
    );
    drop(raw);
    // MOUNT is counted under its own program.
    assert!(
        get(
            &after,
            "nfs_requests_total{program=\"mount\",version=\"3\",procedure=\"MNT\",status=\"MNT3_OK\"}"
        ) >= 1.0
    );
}

/// Names as exposed: from `# TYPE name kind` lines (counters get `_total`, histograms
/// `_bucket`, `_sum`, `_count` on their series).
fn exposed_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match kind {
                "counter" => names.push(format!("{name}_total")),
                "histogram" => {
                    for s in ["bucket", "sum", "count"] {
                        names.push(format!("{name}_{s}"));
                    }
                    names.push(name.to_owned());
                }
                _ => names.push(name.to_owned()),
            }
        }
    }
    names
}

/// `nfs_...`, `rpc_...` and `provisioner_...` words in `text`.
fn metric_words(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            (w.starts_with("nfs_") || w.starts_with("rpc_") || w.starts_with("provisioner_"))
                && w.len() > 6
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn worker_gauges_count_the_threads_and_return_to_idle_after_a_workload() {
    let s = Server::start().await;
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    // Calls that take a worker thread (creates, writes, reads, removes), many at once from
    // several connections.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c = s.client().await;
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..20 {
                let (f, _) = create(&mut c, &root, &format!("w{i}-{j}"), 0o644).await;
                write(&mut c, &f, 0, &[1u8; 100]).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    getattr(&mut c, &root).await.unwrap();
    // A thread counts itself idle just after sending its reply.
    let mut m = scrape(&s).await;
    for _ in 0..100 {
        if get(&m, "nfs_worker_threads_busy") == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        m = scrape(&s).await;
    }
    assert_eq!(
        get(&m, "nfs_worker_threads"),
        nfs_server::executor::DEFAULT_THREADS as f64
    );
    // Every call was answered: no thread busy, nothing queued (and never below zero).
    assert_eq!(get(&m, "nfs_worker_threads_busy"), 0.0, "{m:?}");
    assert_eq!(get(&m, "nfs_worker_queued_calls"), 0.0, "{m:?}");
}

#[tokio::test]
async fn documented_and_dashboard_metric_names_are_the_ones_exposed() {
    // A volume with a size, so the size gauge has a series too.
    let sized = VolumeOptions {
        size: Some(1 << 30),
        ..VolumeOptions::default()
    };
    let s = Server::with_volumes(&[(VOL, sized)]).await;
    // Families appear once they have a series: give each one.
    let root = s.root_fh(VOL).await;
    let mut c = s.client().await;
    let (f, _) = create(&mut c, &root, "f", 0o644).await;
    write(&mut c, &f, 0, b"x").await;
    read_all(&mut c, &f).await;
    let mut raw = Raw::connect(s.running.nfs).await;
    raw.send(&record(&call_body(2, 3, NFS_PROGRAM, 3, 0, &[])))
        .await;
    raw.recv().await;
    // The per-volume gauges are refreshed on the reload tick.
    tokio::time::sleep(RELOAD * 3).await;
    let text = get_metrics(&s).await;
    assert!(
        text.contains("nfs_volume_size_bytes{volume=\"vol\"} 1073741824"),
        "{text}"
    );
    let used_line = text
        .lines()
        .find(|l| l.starts_with("nfs_volume_used_bytes{volume=\"vol\"}"))
        .expect("a used-bytes series for vol");
    let used: u64 = used_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        used,
        export_store::quota::measure(&s.vol_path(VOL)).unwrap().0
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let m = provisioner::metrics::ProvisionerMetrics::register(&mut registry);
    m.reconciles
        .get_or_create(&provisioner::metrics::ReconcileLabels {
            controller: "claim",
            result: "ok",
        })
        .inc();
    let mut prov = String::new();
    prometheus_client::encoding::text::encode(&mut prov, &registry).unwrap();
    let mut exposed = exposed_names(&text);
    exposed.extend(exposed_names(&prov));

    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/metrics.md")).unwrap();
    let dash =
        std::fs::read_to_string(format!("{root}/deploy/grafana/nfs-server-provisioner.json"))
            .unwrap();
    let dash_json: serde_json::Value = serde_json::from_str(&dash).unwrap();
    assert!(dash_json["panels"].as_array().unwrap().len() >= 10);
    // The documented names: first column of the tables.
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert!(documented.len() >= 15, "{documented:?}");
    for (source, words) in [
        ("docs/metrics.md", documented),
        ("dashboard", metric_words(&dash)),
    ] {
        for w in words {
            assert!(
                exposed.contains(&w),
                "{source} names {w}, which is not exposed"
            );
        }
    }
    // And everything exposed is documented.
    for name in exposed_names(&text).iter().chain(&exposed_names(&prov)) {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            doc.contains(base),
            "{name} is exposed but not in docs/metrics.md"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: serve needs root");
        return;
    }
    let dir = export_root();
    let out = std::process::Command::new("timeout")
        .arg("2")
        .arg(env!("CARGO_BIN_EXE_nfs-server-provisioner"))
        .args(["--log-format", "json", "serve", "--export-root"])
        .arg(dir.path())
        .args([
            "--bind=127.0.0.1",
            "--nfs-port=0",
            "--mount-port=0",
            "--portmap-port=0",
            "--http-port=0",
            "--nlm-port=0",
            "--statd-port=0",
            "--no-controller",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "serving NFSv3, NFSv4.1 and NFSv4.2")
        .unwrap_or_else(|| panic!("no start line in {stderr}"));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["fields"]["nfs"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}
