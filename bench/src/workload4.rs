//! The same workloads as `workload` over NFSv4.1, with the independent `nfs-rs` client: one
//! mount (one client, one session, one TCP connection) per stream, each with one request in
//! flight over a disjoint region of the same file, so the numbers compare with the NFSv3 ones.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use nfs_rs::{Mount, OPEN_BOTH, OPEN_READ, parse_url_and_mount};
use tokio::task::JoinSet;

use crate::client::Endpoint;
use crate::workload::{DATA_FILE, Meta, Seq, regions};

fn url(ep: &Endpoint) -> String {
    format!(
        "nfs://{}{}?version=4.1&nfsport={}&noresvport=true&uid=0&gid=0",
        ep.addr, ep.export, ep.nfs_port
    )
}

pub async fn mount(ep: &Endpoint) -> Result<Box<dyn Mount>> {
    parse_url_and_mount(&url(ep))
        .await
        .with_context(|| format!("NFSv4.1 mount of {}", url(ep)))
}

async fn mounts(ep: &Endpoint, n: usize) -> Result<Vec<Box<dyn Mount>>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(mount(ep).await?);
    }
    Ok(v)
}

/// Recreates [`DATA_FILE`] and writes `data` with UNSTABLE writes over `streams` mounts, each
/// COMMITting its part at the end.
pub async fn seq_write(
    ep: &Endpoint,
    data: &Arc<Vec<u8>>,
    chunk: u32,
    streams: usize,
) -> Result<Seq> {
    let first = mount(ep).await?;
    let _ = first.remove_path(DATA_FILE).await;
    let created = first.create_path(DATA_FILE, Some(0o644)).await?;
    first.close(created.fh).await?;
    let ms = mounts(ep, streams).await?;
    let mut opened = Vec::with_capacity(streams);
    for m in &ms {
        opened.push(m.open_path(DATA_FILE, OPEN_BOTH).await?.fh);
    }
    let size = data.len() as u64;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut commit_secs = 0.0;
    for ((m, fh), (s, e)) in ms.into_iter().zip(opened).zip(regions(size, streams)) {
        let data = Arc::clone(data);
        tasks.spawn(async move {
            let mut off = s;
            while off < e {
                let len = (e - off).min(u64::from(chunk)) as usize;
                let buf = Bytes::copy_from_slice(&data[off as usize..off as usize + len]);
                let w = m.write(fh.clone(), off, buf).await?;
                if w.count == 0 {
                    bail!("WRITE offset {off}: 0 bytes accepted");
                }
                off += u64::from(w.count);
            }
            let c0 = Instant::now();
            m.commit(fh.clone(), s, (e - s) as u32).await?;
            let c = c0.elapsed().as_secs_f64();
            m.close(fh).await?;
            Ok::<_, anyhow::Error>(c)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let c = joined.context("write task panicked")??;
        commit_secs = f64::max(commit_secs, c);
    }
    Ok(Seq {
        bytes: size,
        secs: start.elapsed().as_secs_f64(),
        commit_secs,
    })
}

/// Reads [`DATA_FILE`] back over `streams` mounts and checks every byte.
pub async fn seq_read(
    ep: &Endpoint,
    data: &Arc<Vec<u8>>,
    chunk: u32,
    streams: usize,
) -> Result<Seq> {
    let ms = mounts(ep, streams).await?;
    let mut opened = Vec::with_capacity(streams);
    for m in &ms {
        opened.push(m.open_path(DATA_FILE, OPEN_READ).await?.fh);
    }
    let size = data.len() as u64;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for ((m, fh), (s, e)) in ms.into_iter().zip(opened).zip(regions(size, streams)) {
        let data = Arc::clone(data);
        tasks.spawn(async move {
            let mut off = s;
            while off < e {
                let want = (e - off).min(u64::from(chunk)) as u32;
                let got = m.read(fh.clone(), off, want).await?;
                if got.is_empty() {
                    bail!("READ offset {off}: 0 bytes before the end of the file");
                }
                if got[..] != data[off as usize..off as usize + got.len()] {
                    bail!("READ offset {off}: wrong data");
                }
                off += got.len() as u64;
            }
            m.close(fh).await?;
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("read task panicked")??;
    }
    Ok(Seq {
        bytes: size,
        secs: start.elapsed().as_secs_f64(),
        commit_secs: 0.0,
    })
}

pub async fn cleanup(ep: &Endpoint) -> Result<()> {
    mount(ep).await?.remove_path(DATA_FILE).await?;
    Ok(())
}

/// `files` x CREATE (an OPEN with create, then CLOSE: what a v4 client does), GETATTR,
/// REMOVE, one request in flight.
pub async fn metadata(ep: &Endpoint, files: usize) -> Result<Meta> {
    let m = mount(ep).await?;
    let dir = "nfs-bench-meta";
    let _ = m.rmdir_path(dir).await;
    m.mkdir_path(dir, 0o755).await?;
    let names: Vec<String> = (0..files).map(|i| format!("{dir}/f{i}")).collect();
    let t0 = Instant::now();
    for n in &names {
        let c = m.create_path(n, Some(0o644)).await?;
        m.close(c.fh).await?;
    }
    let create_secs = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for n in &names {
        m.getattr_path(n).await?;
    }
    let getattr_secs = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for n in &names {
        m.remove_path(n).await?;
    }
    let remove_secs = t0.elapsed().as_secs_f64();
    m.rmdir_path(dir).await?;
    Ok(Meta {
        files,
        create_secs,
        getattr_secs,
        remove_secs,
    })
}
