//! `nfs-server-provisioner`: a userspace NFS server (and, later, Kubernetes provisioner).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use export_store::{ExportStore, Squash, VolumeOptions};
use nfs_server_provisioner::{ServeConfig, raise_fd_limit, start};

#[derive(Parser)]
#[command(
    name = "nfs-server-provisioner",
    version,
    about = "A userspace NFS server for ReadWriteMany volumes",
    long_about = "A userspace NFSv3 server exporting one directory per volume under an export \
root. Volumes are served as /export/<name>, whatever the export root is on disk.\n\n\
Quick start:\n  nfs-server-provisioner volume add demo --export-root /srv/export\n  \
nfs-server-provisioner serve --export-root /srv/export\n  \
mount -t nfs -o vers=3,proto=tcp,nolock SERVER:/export/demo /mnt"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every volume registered under the export root over NFSv3.
    Serve {
        /// Directory holding one subdirectory per volume and the registry.
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: IpAddr,
        #[arg(long, default_value_t = 2049)]
        nfs_port: u16,
        #[arg(long, default_value_t = 20048)]
        mount_port: u16,
        /// Portmapper (rpcbind) port; 0 disables the portmapper.
        #[arg(long, default_value_t = 111)]
        portmap_port: u16,
    },
    /// Add, remove or list volumes (works while `serve` runs).
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// Register a volume; creates <export-root>/<NAME> (mode 0777) if missing.
    Add {
        name: String,
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
        /// Export read-only.
        #[arg(long)]
        read_only: bool,
        /// Map root (or all) callers to the anonymous uid/gid.
        #[arg(long, default_value = "none", value_parser = ["root", "all", "none"])]
        squash: String,
        #[arg(long, default_value_t = 65534)]
        anonuid: u32,
        #[arg(long, default_value_t = 65534)]
        anongid: u32,
    },
    /// Unregister a volume: its clients get "stale file handle"; the data stays on disk.
    Remove {
        name: String,
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
    },
    /// List registered volumes.
    List {
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve {
            export_root,
            bind,
            nfs_port,
            mount_port,
            portmap_port,
        } => serve(ServeConfig {
            export_root,
            bind,
            nfs_port,
            mount_port,
            portmap_port: (portmap_port != 0).then_some(portmap_port),
            reload_interval: Duration::from_secs(1),
        }),
        Command::Volume { command } => volume(command),
    }
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "serve must run as root (it needs CAP_DAC_READ_SEARCH for persistent file handles \
             and CAP_SETUID/CAP_SETGID to act as each client user)"
        );
    }
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        start(config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        Ok(())
    })
}

fn open(root: &Path) -> anyhow::Result<ExportStore> {
    ExportStore::open(root).with_context(|| format!("cannot open export root {}", root.display()))
}

fn volume(command: VolumeCommand) -> anyhow::Result<()> {
    match command {
        VolumeCommand::Add {
            name,
            export_root,
            read_only,
            squash,
            anonuid,
            anongid,
        } => {
            let squash: Squash = squash.parse().map_err(anyhow::Error::msg)?;
            std::fs::create_dir_all(&export_root)
                .with_context(|| format!("cannot create {}", export_root.display()))?;
            let store = open(&export_root)?;
            let record = store.add_volume(
                &name,
                VolumeOptions {
                    read_only,
                    squash,
                    anonuid,
                    anongid,
                },
            )?;
            println!(
                "added volume {} (id {}), NFS path /export/{}",
                record.name, record.id, record.name
            );
        }
        VolumeCommand::Remove { name, export_root } => {
            let store = open(&export_root)?;
            let record = store.remove_volume(&name)?;
            println!(
                "removed volume {} (id {}); its data stays in {}",
                record.name,
                record.id,
                store.root().join(&record.name).display()
            );
        }
        VolumeCommand::List { export_root } => {
            let store = open(&export_root)?;
            let data = store.registry().load()?;
            println!(
                "{:<30} {:>6} {:<6} {:<6} PATH",
                "NAME", "ID", "MODE", "SQUASH"
            );
            for v in data.volumes {
                println!(
                    "{:<30} {:>6} {:<6} {:<6} /export/{}",
                    v.name,
                    v.id,
                    if v.options.read_only { "ro" } else { "rw" },
                    format!("{:?}", v.options.squash).to_lowercase(),
                    v.name
                );
            }
        }
    }
    Ok(())
}
