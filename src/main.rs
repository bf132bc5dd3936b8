//! `nfs-server-provisioner`: a userspace NFS server and Kubernetes volume provisioner.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use export_store::{ExportStore, Squash, VolumeOptions};
use nfs_server_provisioner::http::Health;
use nfs_server_provisioner::{ServeConfig, raise_fd_limit, start};

#[derive(Parser)]
#[command(
    name = "nfs-server-provisioner",
    version,
    // A flag given twice takes its last value, as Go's flag package did: the chart's
    // `extraArgs` can override a flag the chart sets itself.
    args_override_self = true,
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
        /// Port of the /healthz and /readyz probes; 0 disables it.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        legacy: LegacyArgs,
    },
    /// Show our volumes as Kubernetes and the export root see them.
    Status {
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
        /// Provisioner name StorageClasses use.
        #[arg(long, env = "PROVISIONER", default_value = DEFAULT_PROVISIONER)]
        provisioner: String,
        /// kubeconfig file (default: in-cluster config or $KUBECONFIG).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Add, remove or list volumes (works while `serve` runs).
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
}

const DEFAULT_PROVISIONER: &str = "cluster.local/nfs-server-provisioner";

/// The Kubernetes provisioner that runs inside `serve`.
#[derive(clap::Args)]
struct KubeArgs {
    /// Provisioner name StorageClasses use.
    #[arg(long, env = "PROVISIONER", default_value = DEFAULT_PROVISIONER)]
    provisioner: String,
    /// Serve NFS only: no Kubernetes controller.
    #[arg(long)]
    no_controller: bool,
    /// kubeconfig file for out-of-cluster runs (default: in-cluster config or $KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// NFS server address written into PVs (default: the ClusterIP of Service $SERVICE_NAME
    /// in $POD_NAMESPACE, else $POD_IP).
    #[arg(long)]
    server_address: Option<String>,
    /// Elect one active controller with a Lease in $POD_NAMESPACE (NFS serving never waits).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Provision at most this many volumes; a negative value means no limit.
    #[arg(long, allow_negative_numbers = true)]
    max_exports: Option<i64>,
}

/// Flags of the old Go provisioner, accepted so that an existing chart's `extraArgs` keep
/// working. Each is either honoured or logged as ignored with the reason.
#[derive(clap::Args)]
#[command(next_help_heading = "Flags kept from the old provisioner")]
struct LegacyArgs {
    /// Seconds of NFSv4 grace after a restart. This server speaks NFSv3 only so far, which
    /// has no grace period; accepted and ignored.
    #[arg(long, value_name = "SECONDS")]
    grace_period: Option<u64>,
    /// Ignored: file handles never depend on device numbers here, so they survive moving
    /// the export root to another disk or node.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    device_based_fsids: Option<bool>,
    /// Ignored for now: volume sizes are not enforced yet on any filesystem.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_xfs_quota: Option<bool>,
    /// Same as --server-address (the old name).
    #[arg(long, value_name = "ADDRESS")]
    server_hostname: Option<String>,
}

impl LegacyArgs {
    /// Logs what each given old flag does here.
    fn explain(&self) {
        if let Some(secs) = self.grace_period {
            tracing::info!(
                grace_period = secs,
                "--grace-period ignored: NFSv3 has no grace period, so clients resume at once \
                 after a restart"
            );
        }
        if let Some(v) = self.device_based_fsids {
            tracing::info!(
                device_based_fsids = v,
                "--device-based-fsids ignored: file handles are built from the filesystem's own \
                 handles and a volume id, never from device numbers"
            );
        }
        if let Some(v) = self.enable_xfs_quota {
            tracing::warn!(
                enable_xfs_quota = v,
                "--enable-xfs-quota ignored: volume sizes are not enforced yet on any filesystem"
            );
        }
    }
}

/// Accepts the old provisioner's Go-style flags (`-provisioner=NAME`): a single-dash word
/// becomes the long flag it names. We have no multi-letter short flags, so nothing is
/// ambiguous.
fn normalize_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some(s)
                if s.len() > 2
                    && s.starts_with('-')
                    && s.as_bytes()[1].is_ascii_alphabetic()
                    && s.as_bytes()[2] != b'=' =>
            {
                format!("-{s}").into()
            }
            _ => a,
        })
        .collect()
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
    let cli = Cli::parse_from(normalize_args(std::env::args_os()));
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
            http_port,
            mut kube,
            legacy,
        } => {
            legacy.explain();
            if kube.server_address.is_none() {
                kube.server_address = legacy.server_hostname;
            }
            serve(
                ServeConfig {
                    export_root,
                    bind,
                    nfs_port,
                    mount_port,
                    portmap_port: (portmap_port != 0).then_some(portmap_port),
                    reload_interval: Duration::from_secs(1),
                    http_port: (http_port != 0).then_some(http_port),
                },
                kube,
            )
        }
        Command::Status {
            export_root,
            provisioner,
            kubeconfig,
        } => status(&export_root, &provisioner, kubeconfig.as_deref()),
        Command::Volume { command } => volume(command),
    }
}

fn serve(config: ServeConfig, kube: KubeArgs) -> anyhow::Result<()> {
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
        let export_root = config.export_root.clone();
        let running = start(config).await?;
        if kube.no_controller {
            running.health.set_ready();
        } else {
            start_provisioner(kube, export_root, running.store, running.health).await;
        }
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

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Starts the Kubernetes controller beside the NFS server. Without a reachable cluster
/// configuration it logs why and leaves NFS serving alone.
async fn start_provisioner(
    args: KubeArgs,
    export_root: PathBuf,
    store: Arc<ExportStore>,
    health: Arc<Health>,
) {
    // Without a controller, every volume the registry holds is already served: ready.
    let client = match provisioner::connect(args.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                error = %e,
                "no Kubernetes configuration: serving NFS only (pass --no-controller to say so, \
                 or --kubeconfig to provision)"
            );
            health.set_ready();
            return;
        }
    };
    let identity = match provisioner::identity::load_or_create(&export_root) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot read or create the identity file; not provisioning");
            health.set_ready();
            return;
        }
    };
    let namespace = env("POD_NAMESPACE");
    let election = match (&namespace, args.leader_elect) {
        (Some(ns), true) => Some(provisioner::Election {
            namespace: ns.clone(),
            holder: format!(
                "{}_{}",
                env("POD_NAME")
                    .or_else(|| env("HOSTNAME"))
                    .unwrap_or_else(|| "nfs-server-provisioner".into()),
                &provisioner::identity::new_uuid().unwrap_or_default()[..8]
            ),
            timing: provisioner::leader::Timing::default(),
        }),
        (None, true) => {
            tracing::warn!("POD_NAMESPACE is not set: leader election is off");
            None
        }
        _ => None,
    };
    let config = provisioner::controller::Config {
        server_address: args.server_address,
        namespace,
        service_name: env("SERVICE_NAME"),
        pod_ip: env("POD_IP"),
        max_exports: args.max_exports.and_then(|n| usize::try_from(n).ok()),
        ..provisioner::controller::Config::new(&args.provisioner)
    };
    tracing::info!(provisioner = %config.name, %identity, "starting the provisioner");
    tokio::spawn(provisioner::run_then(
        client,
        store,
        config,
        identity,
        election,
        move || health.set_ready(),
    ));
}

fn status(export_root: &Path, name: &str, kubeconfig: Option<&Path>) -> anyhow::Result<()> {
    let store = open(export_root)?;
    let identity = provisioner::identity::read(export_root)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(async {
        let client = provisioner::connect(kubeconfig).await?;
        provisioner::status(client, &store, name, identity.as_deref()).await
    })?;
    println!(
        "{:<40} {:<44} {:<10} {:>8} {:<9} {:<10} IDENTITY",
        "CLAIM", "VOLUME", "PHASE", "SIZE", "EXPORTED", "DIRECTORY"
    );
    let yn = |b: bool| if b { "yes" } else { "no" };
    for r in rows {
        println!(
            "{:<40} {:<44} {:<10} {:>8} {:<9} {:<10} {}",
            r.claim,
            r.volume,
            r.phase,
            r.size,
            yn(r.exported),
            if r.directory { "present" } else { "MISSING" },
            if r.identity_match { "ours" } else { "OTHER" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let args = std::iter::once("nfs-server-provisioner")
            .chain(args.iter().copied())
            .map(std::ffi::OsString::from);
        Cli::try_parse_from(normalize_args(args)).unwrap()
    }

    #[test]
    fn the_old_provisioners_go_style_flags_are_accepted() {
        let cli = parse(&[
            "serve",
            "-export-root=/export",
            "-provisioner=cluster.local/old",
            "-grace-period=0",
            "-device-based-fsids=false",
            "-enable-xfs-quota",
            "-leader-elect=false",
            "-max-exports=-1",
            "-server-hostname=nfs.example",
        ]);
        let Command::Serve {
            export_root,
            kube,
            legacy,
            ..
        } = cli.command
        else {
            panic!("not serve");
        };
        assert_eq!(export_root, PathBuf::from("/export"));
        assert_eq!(kube.provisioner, "cluster.local/old");
        assert!(!kube.leader_elect);
        assert_eq!(kube.max_exports, Some(-1));
        assert_eq!(legacy.grace_period, Some(0));
        assert_eq!(legacy.device_based_fsids, Some(false));
        assert_eq!(legacy.enable_xfs_quota, Some(true));
        assert_eq!(legacy.server_hostname.as_deref(), Some("nfs.example"));
    }

    #[test]
    fn chart_style_flags_and_negative_values_parse() {
        let cli = parse(&[
            "serve",
            "--export-root",
            "/export",
            "--leader-elect",
            "--max-exports",
            "-1",
            "--http-port=0",
        ]);
        let Command::Serve {
            kube, http_port, ..
        } = cli.command
        else {
            panic!("not serve");
        };
        assert!(kube.leader_elect);
        assert_eq!(kube.max_exports, Some(-1));
        assert_eq!(http_port, 0);
    }
}
