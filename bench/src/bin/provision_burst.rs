//! Provisioning burst benchmark: N claims created at once against the in-process Kubernetes
//! API stand-in (real HTTP, the same controller code as `serve`), a real export store on
//! disk; prints how long after the last claim the last PV appeared. The old provisioner
//! needed 48 s for 100 claims because its API client was capped at 5 requests/s.
//!
//! `cargo run --release -p nfs-bench --bin provision-burst -- [CLAIMS] [RUNS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube_standin::StandIn;
use serde_json::json;

const NAME: &str = "bench.local/nfs";

async fn run_once(claims: usize) -> anyhow::Result<(Duration, Duration, usize)> {
    let base = std::env::var("BENCH_TMP").unwrap_or_else(|_| "target/bench-tmp".into());
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base)?;
    let store = Arc::new(export_store::ExportStore::open(dir.path())?);
    let api = StandIn::start().await;
    api.insert(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "nfs"}, "provisioner": NAME, "reclaimPolicy": "Delete",
    }))
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse()?))?;
    let identity = provisioner::identity::load_or_create(dir.path())?;
    let config = provisioner::controller::Config {
        server_address: Some("10.0.0.1".into()),
        ..provisioner::controller::Config::new(NAME)
    };
    tokio::spawn(provisioner::run(
        client,
        Arc::clone(&store),
        config,
        identity,
        None,
    ));
    // Let the controller list and start watching before the burst.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    for i in 0..claims {
        api.insert(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": format!("claim-{i}"), "namespace": "bench",
                         "annotations": {"volume.kubernetes.io/storage-provisioner": NAME}},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"},
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let last_claim = Instant::now();
    let done = api
        .wait_for(Duration::from_secs(120), |a| {
            (a.list("persistentvolumes").len() >= claims).then_some(())
        })
        .await;
    done.context("not every claim got a PV within 120 s")?;
    let requests = api.request_log().len();
    Ok((last_claim.elapsed(), start.elapsed(), requests))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let claims: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    println!(
        "| run | claims | last claim -> last PV (s) | first claim -> last PV (s) | API requests |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut worst = Duration::ZERO;
    for run in 1..=runs {
        let (after_last, total, requests) = run_once(claims).await?;
        worst = worst.max(after_last);
        println!(
            "| {run} | {claims} | {:.2} | {:.2} | {requests} |",
            after_last.as_secs_f64(),
            total.as_secs_f64()
        );
    }
    println!(
        "\nworst: all {claims} PVs {:.2} s after the last claim (target <= 2 s: {})",
        worst.as_secs_f64(),
        if worst <= Duration::from_secs(2) {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
