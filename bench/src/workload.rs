//! The measured workloads: sequential WRITE/READ with N streams and a metadata loop.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use nfs3_client::nfs3_types::nfs3::nfs_fh3;
use tokio::task::JoinSet;

use crate::client::{self, Client, Endpoint};

/// Name of the data file in the export.
pub const DATA_FILE: &str = "nfs-bench.bin";

/// One sequential run.
#[derive(Clone, Debug)]
pub struct Seq {
    pub bytes: u64,
    /// Wall time of the whole run, including the final COMMIT for writes.
    pub secs: f64,
    /// Time of the final COMMIT alone (writes only).
    pub commit_secs: f64,
}

impl Seq {
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.secs
    }
}

/// One metadata run: `files` x (CREATE, GETATTR, REMOVE), one phase after the other.
#[derive(Clone, Debug)]
pub struct Meta {
    pub files: usize,
    pub create_secs: f64,
    pub getattr_secs: f64,
    pub remove_secs: f64,
}

impl Meta {
    pub fn ops_per_sec(&self) -> f64 {
        (3 * self.files) as f64 / (self.create_secs + self.getattr_secs + self.remove_secs)
    }
}

/// Regions `[start, end)` of `size` split into `streams` parts.
pub fn regions(size: u64, streams: usize) -> Vec<(u64, u64)> {
    let n = streams as u64;
    (0..n).map(|i| (size * i / n, size * (i + 1) / n)).collect()
}

async fn open_streams(ep: &Endpoint, streams: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(streams);
    for _ in 0..streams {
        clients.push(client::connect_nfs(ep).await?);
    }
    Ok(clients)
}

async fn write_region(
    mut c: Client,
    fh: nfs_fh3,
    data: Arc<Vec<u8>>,
    (start, end): (u64, u64),
    chunk: u32,
) -> Result<Option<[u8; 8]>> {
    let mut verf = None;
    let mut off = start;
    while off < end {
        let len = (end - off).min(u64::from(chunk)) as usize;
        let buf = &data[off as usize..off as usize + len];
        let (count, v) = client::write(&mut c, &fh, off, buf).await?;
        if let Some(prev) = verf
            && prev != v
        {
            bail!("WRITE offset {off}: write verifier changed during the run (server restart?)");
        }
        verf = Some(v);
        off += u64::from(count);
    }
    Ok(verf)
}

async fn read_region(
    mut c: Client,
    fh: nfs_fh3,
    data: Arc<Vec<u8>>,
    (start, end): (u64, u64),
    chunk: u32,
) -> Result<()> {
    let mut off = start;
    while off < end {
        let want = (end - off).min(u64::from(chunk)) as u32;
        let (got, eof) = client::read(&mut c, &fh, off, want).await?;
        if got.is_empty() {
            bail!("READ offset {off} count {want}: 0 bytes (eof={eof}) before the end of the file");
        }
        let expect = &data[off as usize..off as usize + got.len()];
        if got != expect {
            let pos = got
                .iter()
                .zip(expect)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!(
                "READ offset {off} count {want}: wrong data at file offset {}",
                off + pos as u64
            );
        }
        off += got.len() as u64;
    }
    Ok(())
}

/// Recreates [`DATA_FILE`], writes `data` with UNSTABLE writes over `streams` connections, then
/// COMMITs once.
pub async fn seq_write(
    ep: &Endpoint,
    data: &Arc<Vec<u8>>,
    chunk: u32,
    streams: usize,
) -> Result<Seq> {
    let mut conn = client::mount(ep).await?;
    let root = conn.root_nfs_fh3();
    if client::lookup(&mut conn, &root, DATA_FILE).await?.is_some() {
        client::remove(&mut conn, &root, DATA_FILE).await?;
    }
    let fh = client::create(&mut conn, &root, DATA_FILE).await?;
    let clients = open_streams(ep, streams).await?;
    let size = data.len() as u64;

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (c, region) in clients.into_iter().zip(regions(size, streams)) {
        tasks.spawn(write_region(c, fh.clone(), Arc::clone(data), region, chunk));
    }
    let mut verf = None;
    while let Some(joined) = tasks.join_next().await {
        let v = joined.context("write task panicked")??;
        if let (Some(a), Some(b)) = (verf, v)
            && a != b
        {
            bail!("write verifiers differ between connections (server restart?)");
        }
        verf = verf.or(v);
    }
    let commit_start = Instant::now();
    let committed = client::commit(&mut conn, &fh).await?;
    let end = Instant::now();
    if verf.is_some_and(|v| v != committed) {
        bail!("COMMIT verifier differs from the WRITE verifier: unstable data may be lost");
    }

    let attr = client::getattr(&mut conn, &fh).await?;
    if attr.size != size {
        bail!(
            "GETATTR after writing {size} bytes reports size {}",
            attr.size
        );
    }
    client::unmount(conn).await;
    Ok(Seq {
        bytes: size,
        secs: (end - start).as_secs_f64(),
        commit_secs: (end - commit_start).as_secs_f64(),
    })
}

/// Reads [`DATA_FILE`] over `streams` connections and checks every byte against `data`.
pub async fn seq_read(
    ep: &Endpoint,
    data: &Arc<Vec<u8>>,
    chunk: u32,
    streams: usize,
) -> Result<Seq> {
    let mut conn = client::mount(ep).await?;
    let root = conn.root_nfs_fh3();
    let Some(fh) = client::lookup(&mut conn, &root, DATA_FILE).await? else {
        bail!("LOOKUP {DATA_FILE}: not found (the write run must come first)");
    };
    let size = data.len() as u64;
    let attr = client::getattr(&mut conn, &fh).await?;
    if attr.size != size {
        bail!(
            "GETATTR {DATA_FILE}: size {} but {size} bytes were written",
            attr.size
        );
    }
    let clients = open_streams(ep, streams).await?;

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (c, region) in clients.into_iter().zip(regions(size, streams)) {
        tasks.spawn(read_region(c, fh.clone(), Arc::clone(data), region, chunk));
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("read task panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    client::unmount(conn).await;
    Ok(Seq {
        bytes: size,
        secs,
        commit_secs: 0.0,
    })
}

/// Removes [`DATA_FILE`] if it is there.
pub async fn cleanup(ep: &Endpoint) -> Result<()> {
    let mut conn = client::mount(ep).await?;
    let root = conn.root_nfs_fh3();
    if client::lookup(&mut conn, &root, DATA_FILE).await?.is_some() {
        client::remove(&mut conn, &root, DATA_FILE).await?;
    }
    client::unmount(conn).await;
    Ok(())
}

/// In a fresh directory: CREATE `files` empty files, GETATTR each, REMOVE each; one request in
/// flight.
pub async fn metadata(ep: &Endpoint, files: usize) -> Result<Meta> {
    let mut conn = client::mount(ep).await?;
    let root = conn.root_nfs_fh3();
    let dirname = format!("nfs-bench-meta-{}", std::process::id());
    let dir = client::mkdir(&mut conn, &root, &dirname).await?;
    let names: Vec<String> = (0..files).map(|i| format!("f{i:06}")).collect();
    let mut handles = Vec::with_capacity(files);

    let t0 = Instant::now();
    for name in &names {
        handles.push(client::create(&mut conn, &dir, name).await?);
    }
    let t1 = Instant::now();
    for (fh, name) in handles.iter().zip(&names) {
        let attr = client::getattr(&mut conn, fh).await?;
        if attr.size != 0 {
            bail!("GETATTR {name}: size {} for a new empty file", attr.size);
        }
    }
    let t2 = Instant::now();
    for name in &names {
        client::remove(&mut conn, &dir, name).await?;
    }
    let t3 = Instant::now();

    client::rmdir(&mut conn, &root, &dirname).await?;
    client::unmount(conn).await;
    Ok(Meta {
        files,
        create_secs: (t1 - t0).as_secs_f64(),
        getattr_secs: (t2 - t1).as_secs_f64(),
        remove_secs: (t3 - t2).as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::regions;

    #[test]
    fn regions_cover_the_file() {
        let r = regions(1000, 8);
        assert_eq!(r.first().map(|r| r.0), Some(0));
        assert_eq!(r.last().map(|r| r.1), Some(1000));
        assert!(r.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
