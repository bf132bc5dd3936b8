//! `nfs-server-provisioner`: a userspace NFS server and Kubernetes volume provisioner.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use export_store::{ExportStore, Squash, VolumeOptions};
use nfs_server_provisioner::{ServeConfig, raise_fd_limit, start};

#[derive(Parser)]
#[command(
    name = "nfs-server-provisioner",
    version,
    // A flag given twice takes its last value, as Go's flag package did: the chart's
    // `extraArgs` can override a flag the chart sets itself.
    args_override_self = true,
    about = "A userspace NFS server and Kubernetes provisioner for ReadWriteMany volumes",
    long_about = "A userspace NFS server (NFSv3, NFSv4.0, NFSv4.1 and NFSv4.2) exporting \
one directory per volume under an export root, and a Kubernetes dynamic volume provisioner. \
Volumes are served as /export/<name>, whatever the export root is on disk.\n\n\
Quick start:\n  nfs-server-provisioner volume add demo --export-root /srv/export\n  \
nfs-server-provisioner serve --export-root /srv/export --no-controller\n  \
mount -t nfs SERVER:/export/demo /mnt                              (NFSv4.2 or 4.1)\n  \
mount -t nfs -o vers=3,proto=tcp,nolock SERVER:/export/demo /mnt   (NFSv3)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as human-readable text or as one JSON object per line.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// What one client may hold (docs/configuration.md, "Limits"): beyond these, new
/// connections are closed at once, slow or silent ones are closed, and reading waits.
#[derive(clap::Args, Clone, Debug)]
struct LimitArgs {
    /// Open client connections in total (NFS, MOUNT, portmapper, NLM and NSM together);
    /// connections beyond it are closed at once, existing ones keep working.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Open connections from one client address.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_address: u64,
    /// Seconds after which a connection with nothing in flight and nothing received is
    /// closed (clients reconnect when they next need to).
    #[arg(long, value_name = "SECONDS", default_value_t = 360,
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds within which a request must arrive in full once its first byte came.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    record_timeout: u64,
    /// Seconds a reply may wait for the client to read it before the connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    send_timeout: u64,
    /// Memory for requests and replies in flight, all clients together (e.g. 256Mi); when
    /// it is spent, connections are not read until replies drain.
    #[arg(long, value_name = "SIZE", default_value = "256Mi", value_parser = parse_size)]
    max_bytes_in_flight: u64,
    /// Memory for requests and replies in flight for one client address (e.g. 64Mi).
    #[arg(long, value_name = "SIZE", default_value = "64Mi", value_parser = parse_size)]
    max_bytes_per_address: u64,
}

impl From<LimitArgs> for oncrpc::Limits {
    fn from(a: LimitArgs) -> Self {
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Self {
            max_connections: n(a.max_connections),
            max_connections_per_address: n(a.max_connections_per_address),
            idle_timeout: Duration::from_secs(a.idle_timeout),
            record_timeout: Duration::from_secs(a.record_timeout),
            send_timeout: Duration::from_secs(a.send_timeout),
            max_bytes_in_flight: n(a.max_bytes_in_flight),
            max_bytes_per_address: n(a.max_bytes_per_address),
            ..Self::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve every volume registered under the export root over NFSv3 and NFSv4.0, 4.1 and 4.2,
    /// and run the Kubernetes provisioner when a cluster is found.
    Serve {
        /// Directory holding one subdirectory per volume and the registry.
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: IpAddr,
        /// NFS port (NFSv3 and NFSv4.0/4.1/4.2, TCP).
        #[arg(long, default_value_t = 2049)]
        nfs_port: u16,
        /// MOUNT v3 port (TCP), for NFSv3 clients.
        #[arg(long, default_value_t = 20048)]
        mount_port: u16,
        /// Portmapper (rpcbind) port; 0 disables the portmapper.
        #[arg(long, default_value_t = 111)]
        portmap_port: u16,
        /// Port of /healthz, /readyz and /metrics; 0 disables it.
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// NLM (NFSv3 lock manager, nlockmgr) port, TCP and UDP; 0 picks a free one.
        #[arg(long, default_value_t = 32803)]
        nlm_port: u16,
        /// NSM (rpc.statd, status) port, TCP and UDP; 0 picks a free one.
        #[arg(long, default_value_t = 662)]
        statd_port: u16,
        /// Count requests, bytes and connections for /metrics.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
              num_args = 0..=1, default_missing_value = "true")]
        metrics: bool,
        /// Serve even though the export root is on storage that does not outlive the pod
        /// (emptyDir, tmpfs, the container's own filesystem): every volume is lost with it.
        #[arg(long)]
        allow_ephemeral_export_root: bool,
        /// Grace period after a restart, in seconds, when clients held state before it: they
        /// reclaim their opens and locks, new ones wait. With only NFSv4 clients it ends as
        /// soon as every one of them has reclaimed; NLM hosts get the whole period (the old
        /// provisioner's flag, same meaning).
        #[arg(long, value_name = "SECONDS", default_value_t = 90)]
        grace_period: u64,
        /// NFSv4 lease in seconds: a client silent for longer keeps its opens and locks only until
        /// another client needs them (a courtesy client).
        #[arg(long, value_name = "SECONDS", default_value_t = 90,
              value_parser = clap::value_parser!(u64).range(10..=3600))]
        lease_time: u64,
        /// How often, in seconds, each volume's usage is taken again (from the kernel's project
        /// quota, else by a walk), so files changed beside the server (copied into the export
        /// root) count; corrected only where no operation ran meanwhile. 0: only at start.
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        recount_interval: u64,
        /// Threads running NFS calls that may wait for the disk (quick calls on open handles
        /// run without one). Calls waiting for a shared directory fsync hold a thread each.
        #[arg(long, env = "NFS_THREADS", value_name = "N",
              default_value_t = nfs_server::executor::DEFAULT_THREADS as u64,
              value_parser = clap::value_parser!(u64).range(1..=1024))]
        nfs_threads: u64,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        legacy: LegacyArgs,
    },
    /// Show our volumes as Kubernetes and the export root see them.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Repair after a disaster: lost identity, lost data, orphaned data, new server address.
    // One action; --server-address is an action of its own, or with --bind-orphan the address
    // the new PV names (needed out of cluster, where no Service gives it).
    #[command(group(clap::ArgGroup::new("action").required(true).multiple(true)
        .args(["adopt_identity", "recreate_missing", "bind_orphan", "server_address"])))]
    Recover {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Write ID as the export root's identity (the `Provisioner_Id` of its PVs).
        #[arg(long, value_name = "ID",
              conflicts_with_all = ["recreate_missing", "bind_orphan", "claim", "server_address"])]
        adopt_identity: Option<String>,
        /// Give every PV of ours whose directory is missing an empty one (the data is lost).
        #[arg(long, conflicts_with_all = ["bind_orphan", "claim", "server_address"])]
        recreate_missing: bool,
        /// Hand orphaned directory DIR (no PV) to the claim given by --claim. Out of cluster,
        /// also give --server-address: the NFS server address the new PV names.
        #[arg(long, value_name = "DIR", requires = "claim")]
        bind_orphan: Option<String>,
        /// NAMESPACE/NAME of the claim (Pending, or to be created) for --bind-orphan.
        #[arg(long, value_name = "NAMESPACE/NAME", requires = "bind_orphan")]
        claim: Option<String>,
        /// StorageClass of the PV when the claim does not exist yet.
        #[arg(long, default_value = "nfs")]
        storage_class: String,
        /// Capacity of the PV when the claim does not exist yet.
        #[arg(long, default_value = "1Gi")]
        size: String,
        /// Re-create our PVs with this NFS server address (same names, claims and data). With
        /// --bind-orphan: the address the new PV names (default: the Service's ClusterIP, found
        /// only in the cluster).
        #[arg(long, value_name = "ADDR")]
        server_address: Option<String>,
    },
    /// Add, remove or list volumes (works while `serve` runs).
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
}

const DEFAULT_PROVISIONER: &str = "cluster.local/nfs-server-provisioner";

/// Where `status` and `recover` find the export root and the cluster.
#[derive(clap::Args)]
struct ClusterArgs {
    /// Directory holding one subdirectory per volume and the registry.
    #[arg(long, env = "EXPORT_ROOT")]
    export_root: PathBuf,
    /// Provisioner name StorageClasses use.
    #[arg(long, env = "PROVISIONER", default_value = DEFAULT_PROVISIONER)]
    provisioner: String,
    /// kubeconfig file (default: in-cluster config or $KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This server is one of several shards (`serve --shards`): `status` lists them all.
    #[arg(long, env = "SHARDS", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    shards: bool,
    /// Namespace of the shards' Leases (default: $POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
}

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
    /// auto: adopt a lost identity from our PVs and re-point PVs at a changed server
    /// address; off: only report (and refuse to mint a new identity over existing PVs).
    #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
    recover: String,
    /// At start, a PV of ours whose directory is missing: report it with Warning Events, or
    /// recreate an empty directory so pods can mount again (its data is lost either way).
    #[arg(long, default_value = "report", value_parser = ["report", "recreate"])]
    on_missing_volume: String,
    /// Run as one of several shards (the chart's replicaCount > 1): this pod ($POD_NAME)
    /// holds its own Lease, takes the claims the placer gives it, and writes the ClusterIP
    /// of the Service named like the pod into its PVs.
    #[arg(long, env = "SHARDS", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    shards: bool,
    /// Bytes this shard offers for placement (default: the size of the export root's file
    /// system), e.g. 500Gi.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    shard_capacity: Option<u64>,
}

/// Flags of the old Go provisioner, accepted so that an existing chart's `extraArgs` keep
/// working. Each is either honoured or logged as ignored with the reason.
#[derive(clap::Args)]
#[command(next_help_heading = "Flags kept from the old provisioner")]
struct LegacyArgs {
    /// Ignored: file handles never depend on device numbers here, so they survive moving
    /// the export root to another disk or node.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    device_based_fsids: Option<bool>,
    /// Ignored: every volume's size is enforced on any file system, with kernel project
    /// quotas where the export root's file system has them on, xfs or ext4 (see `status`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_xfs_quota: Option<bool>,
    /// Same as --server-address (the old name).
    #[arg(long, value_name = "ADDRESS")]
    server_hostname: Option<String>,
}

impl LegacyArgs {
    /// Logs what each given old flag does here.
    fn explain(&self) {
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
                "--enable-xfs-quota ignored: volume sizes are enforced on every file system, \
                 with kernel project quotas wherever they are on (see `status`)"
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
        /// Volume name: its directory under the export root and its NFS path /export/NAME.
        name: String,
        /// Directory holding one subdirectory per volume and the registry.
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
        /// Export read-only.
        #[arg(long)]
        read_only: bool,
        /// Map root (or all) callers to the anonymous uid/gid.
        #[arg(long, default_value = "none", value_parser = ["root", "all", "none"])]
        squash: String,
        /// The uid squashed callers act as.
        #[arg(long, default_value_t = 65534)]
        anonuid: u32,
        /// The gid squashed callers act as.
        #[arg(long, default_value_t = 65534)]
        anongid: u32,
        /// Size limit (Kubernetes quantity: 1Gi, 500Mi, 2G; more than 0); writes past it get
        /// "disk quota exceeded" and `df` on clients shows it. Without --size the volume has no
        /// limit of its own (only the export root's file system's free space).
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Address ranges of the clients that may use the volume, comma-separated
        /// (`10.0.0.0/8,192.168.1.7`); others get "access denied" and do not see it in the
        /// export list. Default: every client.
        #[arg(long, value_name = "CIDRS", value_parser = parse_clients)]
        clients: Option<ClientList>,
        /// Calls must come from reserved source ports (below 1024), as only root on a client
        /// can send (clients must not mount with `noresvport`).
        #[arg(long)]
        secure: bool,
        /// Answer changes before they reach the disk (like knfsd's `async` export option):
        /// faster small writes and namespace changes, but a crash of the machine can lose
        /// what was answered in the last seconds (see docs/configuration.md).
        #[arg(long = "async")]
        asynchronous: bool,
    },
    /// Grow a volume's size limit (takes effect at once, also while `serve` runs; never shrinks).
    Resize {
        /// Name of the volume.
        name: String,
        /// Directory holding one subdirectory per volume and the registry.
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
        /// The new size (Kubernetes quantity: 2Gi, 1500Mi; more than 0).
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// Unregister a volume: its clients get "stale file handle"; the data stays on disk.
    Remove {
        /// Name of the volume.
        name: String,
        /// Directory holding one subdirectory per volume and the registry.
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
    },
    /// List registered volumes.
    List {
        /// Directory holding one subdirectory per volume and the registry.
        #[arg(long, env = "EXPORT_ROOT")]
        export_root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(normalize_args(std::env::args_os()));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().with_current_span(true).init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match cli.command {
        Command::Serve {
            export_root,
            bind,
            nfs_port,
            mount_port,
            portmap_port,
            http_port,
            nlm_port,
            statd_port,
            metrics,
            allow_ephemeral_export_root,
            grace_period,
            lease_time,
            nfs_threads,
            recount_interval,
            limits,
            mut kube,
            legacy,
        } => {
            legacy.explain();
            guard_export_root(&export_root, allow_ephemeral_export_root)?;
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
                    recount_interval: (recount_interval > 0)
                        .then(|| Duration::from_secs(recount_interval)),
                    http_port: (http_port != 0).then_some(http_port),
                    metrics,
                    v4: nfs_server::V4Config {
                        lease: Duration::from_secs(lease_time),
                        grace: Duration::from_secs(grace_period),
                        record_clients: true,
                    },
                    locking: nfs_server_provisioner::LockingConfig {
                        nlm_port,
                        statd_port,
                        callback_portmap_port: 111,
                    },
                    limits: limits.into(),
                    nfs_threads: nfs_threads as usize,
                    metric_labels: match (kube.shards, shard_name()) {
                        (true, Some(pod)) => vec![("shard".into(), pod)],
                        _ => Vec::new(),
                    },
                },
                kube,
            )
        }
        Command::Status { cluster } => status(&cluster),
        Command::Volume { command } => volume(command),
        Command::Recover {
            cluster,
            adopt_identity,
            recreate_missing,
            bind_orphan,
            claim,
            storage_class,
            size,
            server_address,
        } => {
            let action = if let Some(id) = adopt_identity {
                RecoverAction::AdoptIdentity(id)
            } else if recreate_missing {
                RecoverAction::RecreateMissing
            } else if let Some(dir) = bind_orphan {
                let (ns, name) = provisioner::recovery::parse_claim(&claim.unwrap_or_default())?;
                RecoverAction::BindOrphan(
                    provisioner::recovery::Orphan {
                        directory: dir,
                        claim_namespace: ns,
                        claim_name: name,
                        storage_class,
                        size,
                    },
                    server_address,
                )
            } else if let Some(addr) = server_address {
                RecoverAction::ServerAddress(addr)
            } else {
                bail!("no action given");
            };
            recover(
                &cluster.export_root,
                &cluster.provisioner,
                cluster.kubeconfig.as_deref(),
                action,
            )
        }
    }
}

/// Refuses an export root that cannot keep volumes, unless told to accept an ephemeral one.
fn guard_export_root(root: &Path, allow_ephemeral: bool) -> anyhow::Result<()> {
    use export_store::durability::{Verdict, check};
    let verdict =
        check(root).with_context(|| format!("cannot check export root {}", root.display()))?;
    match verdict {
        Verdict::Persistent => Ok(()),
        Verdict::NoPersistentHandles(why) => bail!(
            "refusing to serve from export root {}: {why}",
            root.display()
        ),
        Verdict::Ephemeral(why) if allow_ephemeral => {
            tracing::warn!(
                export_root = %root.display(),
                "EPHEMERAL EXPORT ROOT: {why}. Every volume will be lost with it \
                 (--allow-ephemeral-export-root)"
            );
            Ok(())
        }
        Verdict::Ephemeral(why) => bail!(
            "refusing to serve from export root {}: {why}, and every volume would be lost with it. \
             Put the export root on persistent storage (Helm chart: persistence.enabled=true, the \
             default, with persistence.storageClass naming a class of your cluster), or pass \
             --allow-ephemeral-export-root to accept losing every volume",
            root.display()
        ),
    }
}

enum RecoverAction {
    AdoptIdentity(String),
    RecreateMissing,
    /// The orphan, and the address its PV names when given (else found as `serve` finds it).
    BindOrphan(provisioner::recovery::Orphan, Option<String>),
    ServerAddress(String),
}

fn recover(
    root: &Path,
    name: &str,
    kubeconfig: Option<&Path>,
    action: RecoverAction,
) -> anyhow::Result<()> {
    use provisioner::recovery;
    if let RecoverAction::AdoptIdentity(id) = &action {
        recovery::adopt_identity(root, id)?;
        println!(
            "identity {id} adopted in {}; a waiting server picks it up within 10 s",
            root.display()
        );
        return Ok(());
    }
    let store = Arc::new(open(root)?);
    let identity = provisioner::identity::read(root)?.with_context(|| {
        format!(
            "{} has no identity file: adopt one first with --adopt-identity",
            root.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = connect_cli(kubeconfig).await?;
        let mut config = cluster_config(name);
        if let RecoverAction::ServerAddress(addr) | RecoverAction::BindOrphan(_, Some(addr)) =
            &action
        {
            config.server_address = Some(addr.clone());
        }
        let ctx = provisioner::controller::Context::new(
            client,
            store,
            config,
            identity,
            tokio::sync::watch::channel(true).1,
        );
        match action {
            RecoverAction::AdoptIdentity(_) => {}
            RecoverAction::RecreateMissing => {
                let missing = recovery::missing_volumes(&ctx).await?;
                for pv in &missing {
                    recovery::recreate_missing(&ctx, pv).await?;
                    println!("recreated {} (empty: its data is lost)", pv.metadata.name.as_deref().unwrap_or_default());
                }
                println!("{} volume(s) recreated", missing.len());
            }
            RecoverAction::BindOrphan(orphan, _) => {
                recovery::bind_orphan(&ctx, &orphan).await?;
                println!(
                    "PersistentVolume {} created for claim {}/{}; create the claim (class {}, a request \
                     no larger than the PV) if it does not exist yet",
                    orphan.directory, orphan.claim_namespace, orphan.claim_name, orphan.storage_class
                );
            }
            RecoverAction::ServerAddress(addr) => {
                let n = recovery::repoint(&ctx, &addr).await?;
                println!("{n} PersistentVolume(s) now name server {addr}; restart the pods that mount them");
            }
        }
        anyhow::Ok(())
    })
}

/// The controller settings `serve` derives from the pod's environment.
fn cluster_config(name: &str) -> provisioner::controller::Config {
    provisioner::controller::Config {
        namespace: env("POD_NAMESPACE"),
        service_name: env("SERVICE_NAME"),
        pod_ip: env("POD_IP"),
        pod_name: env("POD_NAME"),
        ..provisioner::controller::Config::new(name)
    }
}

/// `config` as shard `shard`. Its address is the ClusterIP of the Service named like its pod;
/// shard 0 keeps the release's Service ($SERVICE_NAME, which the chart then points at pod 0
/// alone), so the volumes a single server made keep their address when it becomes shard 0.
fn shard_config(
    config: provisioner::controller::Config,
    shard: Option<String>,
) -> provisioner::controller::Config {
    match shard {
        Some(pod) => provisioner::controller::Config {
            service_name: if provisioner::shards::ordinal(&pod) == Some(0) {
                config.service_name.clone().or_else(|| Some(pod.clone()))
            } else {
                Some(pod.clone())
            },
            shard: Some(pod),
            ..config
        },
        None => config,
    }
}

/// How long a stopping server keeps answering the calls it already received (within the
/// chart's terminationGracePeriodSeconds of 30).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
            start_provisioner(kube, export_root, running.clone()).await;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: answering the calls already received");
        let left = running.shutdown(SHUTDOWN_GRACE).await;
        if left > 0 {
            tracing::warn!(connections = left, "stopped with calls unanswered");
        }
        Ok(())
    })
}

/// The store for commands that print the volumes (`status`, `recover`, `volume list`): each
/// volume measured, none logged as exported (that is `serve`'s news).
fn open(root: &Path) -> anyhow::Result<ExportStore> {
    ExportStore::open_quiet(root)
        .with_context(|| format!("cannot open export root {}", root.display()))
}

/// The store for commands that only change the registry: no walk of every volume.
fn open_registry(root: &Path) -> anyhow::Result<ExportStore> {
    ExportStore::open_unmeasured(root)
        .with_context(|| format!("cannot open export root {}", root.display()))
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
            size,
            clients,
            secure,
            asynchronous,
        } => {
            let squash: Squash = squash.parse().map_err(anyhow::Error::msg)?;
            std::fs::create_dir_all(&export_root)
                .with_context(|| format!("cannot create {}", export_root.display()))?;
            let store = open_registry(&export_root)?;
            let record = store.add_volume(
                &name,
                VolumeOptions {
                    read_only,
                    squash,
                    anonuid,
                    anongid,
                    size,
                    clients: clients.map(|c| c.0).unwrap_or_default(),
                    secure,
                    asynchronous,
                },
            )?;
            println!(
                "added volume {} (id {}), NFS path /export/{}, size {}",
                record.name,
                record.id,
                record.name,
                size_text(record.options.size)
            );
        }
        VolumeCommand::Resize {
            name,
            export_root,
            size,
        } => {
            let store = open_registry(&export_root)?;
            let record = store.resize_volume(&name, size)?;
            println!(
                "volume {} now has size {}",
                record.name,
                size_text(record.options.size)
            );
        }
        VolumeCommand::Remove { name, export_root } => {
            let store = open_registry(&export_root)?;
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
            println!(
                "{:<30} {:>6} {:<6} {:<6} {:>12} {:>12} PATH",
                "NAME", "ID", "MODE", "SQUASH", "USED", "SIZE"
            );
            for v in store.volumes() {
                println!(
                    "{:<30} {:>6} {:<6} {:<6} {:>12} {:>12} /export/{}",
                    v.name(),
                    v.id(),
                    if v.options().read_only { "ro" } else { "rw" },
                    format!("{:?}", v.options().squash).to_lowercase(),
                    size_text(Some(v.quota.used())),
                    size_text(v.quota.limit()),
                    v.name()
                );
            }
            println!("\nvolume sizes: enforced by {}", store.quota_mode());
        }
    }
    Ok(())
}

/// A volume size for `volume add` and `volume resize`: a Kubernetes quantity of at least one
/// byte (a volume of size 0 could not hold a single block). Sizes above 2^63 - 1 bytes are
/// taken as 2^63 - 1, as Kubernetes does.
/// `--clients`: one value holding a list.
#[derive(Clone, Debug)]
struct ClientList(Vec<export_store::access::Cidr>);

fn parse_clients(s: &str) -> Result<ClientList, String> {
    export_store::access::parse_clients(s).map(ClientList)
}

fn parse_size(s: &str) -> Result<u64, String> {
    match provisioner::quantity::bytes(s) {
        Ok(0) => Err(format!(
            "{s:?} is a size of 0 bytes, which no file fits in: give a size of at least 1 \
             (e.g. 1Gi), or leave --size out for no limit"
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Bytes in binary units for people (`1.0Gi`, `512.0Mi`, `0`), or "unlimited".
fn size_text(bytes: Option<u64>) -> String {
    let Some(b) = bytes else {
        return "unlimited".into();
    };
    const UNITS: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b}")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// What `serve` logs when it finds no cluster to provision for.
const NO_CLUSTER: &str = "provisioner off: no Kubernetes cluster found (not in a pod, no \
--kubeconfig, $KUBECONFIG or ~/.kube/config); serving NFS only. To provision volumes, pass \
--kubeconfig FILE; --no-controller turns the provisioner off without this warning";

/// Whether any Kubernetes configuration is there to try: in a pod, `$KUBECONFIG`, or
/// `~/.kube/config`. Without one, failing to connect is expected, not an error.
fn cluster_configured() -> bool {
    env("KUBERNETES_SERVICE_HOST").is_some()
        || env("KUBECONFIG").is_some()
        || env("HOME").is_some_and(|h| Path::new(&h).join(".kube/config").exists())
}

/// Connects to Kubernetes for `status` and `recover`, saying where it looked when it cannot.
async fn connect_cli(kubeconfig: Option<&Path>) -> anyhow::Result<provisioner::Client> {
    provisioner::connect(kubeconfig)
        .await
        .with_context(|| match kubeconfig {
            Some(path) => format!("cannot use kubeconfig {}", path.display()),
            None if !cluster_configured() => "no Kubernetes cluster found (not in a pod, no \
            $KUBECONFIG or ~/.kube/config): pass --kubeconfig FILE"
                .to_owned(),
            None => "cannot configure the Kubernetes client".to_owned(),
        })
}

/// This pod's shard name: `$POD_NAME`, else `$HOSTNAME` (a StatefulSet pod's hostname is its
/// name).
fn shard_name() -> Option<String> {
    env("POD_NAME").or_else(|| env("HOSTNAME"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Starts the Kubernetes controller beside the NFS server. Without a reachable cluster
/// configuration it logs why and leaves NFS serving alone.
async fn start_provisioner(
    args: KubeArgs,
    export_root: PathBuf,
    running: nfs_server_provisioner::Running,
) {
    let (store, health) = (running.store, running.health);
    // Without a controller, every volume the registry holds is already served: ready.
    let client = match provisioner::connect(args.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) if args.kubeconfig.is_none() && !cluster_configured() => {
            tracing::debug!(error = %e, "no Kubernetes configuration");
            tracing::warn!("{NO_CLUSTER}");
            health.set_ready();
            return;
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "cannot configure the Kubernetes client: the provisioner is off, serving NFS only"
            );
            health.set_ready();
            return;
        }
    };
    let recover = if args.recover == "off" {
        provisioner::recovery::Recover::Off
    } else {
        provisioner::recovery::Recover::Auto
    };
    // Never mint a new identity over PVs that carry one: wait for it to be settled.
    let identity = provisioner::recovery::settle_identity(
        &client,
        &export_root,
        &args.provisioner,
        env("POD_NAME").as_deref(),
        recover,
    )
    .await;
    let namespace = env("POD_NAMESPACE");
    let shard = match (args.shards, shard_name(), &namespace) {
        (false, _, _) => None,
        (true, Some(pod), Some(_)) => Some(pod),
        (true, _, _) => {
            tracing::error!(
                "--shards needs POD_NAME and POD_NAMESPACE (the chart sets both): the \
                 provisioner is off, serving NFS only"
            );
            health.set_ready();
            return;
        }
    };
    // A shard's Lease is how the others see it: shards always campaign.
    let election = match (&namespace, args.leader_elect || shard.is_some()) {
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
        max_exports: args.max_exports.and_then(|n| usize::try_from(n).ok()),
        recover,
        on_missing: if args.on_missing_volume == "recreate" {
            provisioner::recovery::OnMissing::Recreate
        } else {
            provisioner::recovery::OnMissing::Report
        },
        metrics: Arc::new(provisioner::metrics::ProvisionerMetrics::register(
            &mut running.registry.lock().unwrap_or_else(|e| e.into_inner()),
        )),
        shard_capacity: args.shard_capacity,
        ..shard_config(cluster_config(&args.provisioner), shard)
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

fn status(cluster: &ClusterArgs) -> anyhow::Result<()> {
    let (export_root, name, kubeconfig) = (
        cluster.export_root.as_path(),
        cluster.provisioner.as_str(),
        cluster.kubeconfig.as_deref(),
    );
    let store = open(export_root)?;
    let identity = provisioner::identity::read(export_root)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = Arc::new(store);
    let (rows, mut problems, address_known, shards) = runtime.block_on(async {
        let client = connect_cli(kubeconfig).await?;
        let rows = provisioner::status(client.clone(), &store, name, identity.as_deref()).await?;
        let shards = match (&cluster.namespace, cluster.shards) {
            (Some(ns), true) => provisioner::shards::list(&client, ns, name).await?,
            _ => Vec::new(),
        };
        // The address new PVs would get, to spot PVs naming an old one.
        let ctx = provisioner::controller::Context::new(
            client.clone(),
            Arc::clone(&store),
            shard_config(
                cluster_config(name),
                cluster.shards.then(shard_name).flatten(),
            ),
            identity.clone().unwrap_or_default(),
            tokio::sync::watch::channel(true).1,
        );
        let address = ctx.server_address().await.ok();
        let problems = provisioner::recovery::problems(
            &client,
            &store,
            name,
            identity.as_deref(),
            address.as_deref(),
            &shards
                .iter()
                .filter(|s| Some(&s.identity) != identity.as_ref())
                .map(|s| s.identity.clone())
                .collect::<Vec<_>>(),
        )
        .await?;
        anyhow::Ok((rows, problems, address.is_some(), shards))
    })?;
    if let Ok(
        export_store::durability::Verdict::Ephemeral(why)
        | export_store::durability::Verdict::NoPersistentHandles(why),
    ) = export_store::durability::check(export_root)
    {
        problems.insert(
            0,
            provisioner::recovery::Problem {
                what: format!("the export root cannot keep volumes: {why}"),
                fix: "move it to persistent storage (Helm: persistence.enabled=true)".into(),
            },
        );
    }
    if !shards.is_empty() {
        print_shards(&shards);
    }
    // A down shard that held no volumes (one scaled away after draining) is no problem.
    for s in shards.iter().filter(|s| !s.live && s.volumes > 0) {
        problems.push(provisioner::recovery::Problem {
            what: format!(
                "shard {} is down (its Lease was last renewed {} s ago): its {} volume(s) do \
                 not answer until it is back; new claims go to the other shards",
                s.name, s.silent_for, s.volumes
            ),
            fix: format!(
                "kubectl -n {} describe pod {} (a pod waiting for its volume to attach to a new \
                 node cannot start; see docs/shards.md)",
                cluster.namespace.as_deref().unwrap_or("NAMESPACE"),
                s.name
            ),
        });
    }
    println!(
        "volume sizes: enforced by {} (bytes allocated on disk, per volume)\n",
        store.quota_mode()
    );
    println!(
        "{:<40} {:<44} {:<10} {:>8} {:>10} {:>10} {:<9} {:<10} IDENTITY",
        "CLAIM", "VOLUME", "PHASE", "SIZE", "USED", "LIMIT", "EXPORTED", "DIRECTORY"
    );
    let yn = |b: bool| if b { "yes" } else { "no" };
    for r in rows {
        println!(
            "{:<40} {:<44} {:<10} {:>8} {:>10} {:>10} {:<9} {:<10} {}",
            r.claim,
            r.volume,
            r.phase,
            r.size,
            r.used.map_or_else(|| "-".into(), |u| size_text(Some(u))),
            if r.exported {
                size_text(r.limit)
            } else {
                "-".into()
            },
            yn(r.exported),
            if r.directory { "present" } else { "MISSING" },
            if r.identity_match { "ours" } else { "OTHER" }
        );
    }
    if problems.is_empty() {
        println!("\nno problems found");
    } else {
        println!("\nPROBLEMS ({})", problems.len());
        let program = std::env::args().next().unwrap_or_default();
        for p in &problems {
            println!(
                "- {}\n  fix: {}",
                p.what,
                complete_fix(&p.fix, &program, cluster, address_known)
            );
        }
    }
    Ok(())
}

/// The `status` table of shards.
fn print_shards(shards: &[provisioner::shards::Shard]) {
    println!(
        "{:<40} {:<6} {:<16} {:>7} {:>10} {:>10} {:>10}",
        "SHARD", "STATE", "ADDRESS", "VOLUMES", "ALLOCATED", "USED", "CAPACITY"
    );
    for s in shards {
        println!(
            "{:<40} {:<6} {:<16} {:>7} {:>10} {:>10} {:>10}",
            s.name,
            if s.live { "live" } else { "DOWN" },
            if s.address.is_empty() {
                "-"
            } else {
                &s.address
            },
            s.volumes,
            size_text(Some(s.allocated)),
            size_text(Some(s.used)),
            size_text(Some(s.capacity)),
        );
    }
    println!();
}

const PROGRAM: &str = "nfs-server-provisioner";

/// Makes the command in a `status` fix one to paste where the user stands: the program as they
/// ran it, the flags that pointed `status` at this export root and cluster, and, when no
/// server address could be found (out of cluster), the `--server-address` a new PV needs.
/// The fixes the recovery module gives end with their command; other text is left alone.
fn complete_fix(fix: &str, program: &str, cluster: &ClusterArgs, address_known: bool) -> String {
    let command = format!("{PROGRAM} recover ");
    let Some(at) = fix.find(&command) else {
        return fix.to_owned();
    };
    // The name they ran us by, when it is a path (./nfs-server-provisioner, target/release/...).
    let program = if program.contains('/') && program.ends_with(PROGRAM) {
        program
    } else {
        PROGRAM
    };
    let mut out = format!(
        "{}{} {}",
        &fix[..at],
        shell_quote(program),
        &fix[at + PROGRAM.len() + 1..]
    );
    out += &format!(
        " --export-root {}",
        shell_quote(&cluster.export_root.to_string_lossy())
    );
    if let Some(k) = &cluster.kubeconfig {
        out += &format!(" --kubeconfig {}", shell_quote(&k.to_string_lossy()));
    }
    if cluster.provisioner != DEFAULT_PROVISIONER {
        out += &format!(" --provisioner {}", shell_quote(&cluster.provisioner));
    }
    if !address_known && out.contains("--bind-orphan") && !out.contains("--server-address") {
        out += " --server-address ADDR";
    }
    out
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%~".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
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
            grace_period,
            ..
        } = cli.command
        else {
            panic!("not serve");
        };
        assert_eq!(export_root, PathBuf::from("/export"));
        assert_eq!(kube.provisioner, "cluster.local/old");
        assert!(!kube.leader_elect);
        assert_eq!(kube.max_exports, Some(-1));
        assert_eq!(grace_period, 0);
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

    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let args = std::iter::once("nfs-server-provisioner")
            .chain(args.iter().copied())
            .map(std::ffi::OsString::from);
        Cli::try_parse_from(normalize_args(args))
    }

    fn cluster(export_root: &str, provisioner: &str, kubeconfig: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            export_root: export_root.into(),
            provisioner: provisioner.into(),
            kubeconfig: kubeconfig.map(PathBuf::from),
            shards: false,
            namespace: None,
        }
    }

    #[test]
    fn shards_take_the_service_named_like_their_pod_and_shard_0_the_releases() {
        let base = provisioner::controller::Config {
            service_name: Some("rel".into()),
            ..provisioner::controller::Config::new("p")
        };
        let single = shard_config(base.clone(), None);
        assert_eq!(
            (single.service_name.as_deref(), single.shard),
            (Some("rel"), None)
        );
        let zero = shard_config(base.clone(), Some("rel-0".into()));
        assert_eq!(zero.service_name.as_deref(), Some("rel"));
        assert_eq!(zero.shard.as_deref(), Some("rel-0"));
        let two = shard_config(base, Some("rel-2".into()));
        assert_eq!(two.service_name.as_deref(), Some("rel-2"));
    }

    #[test]
    fn status_fixes_carry_the_flags_status_ran_with() {
        let c = cluster(
            "/srv/export",
            DEFAULT_PROVISIONER,
            Some("/home/me/.kube/config"),
        );
        assert_eq!(
            complete_fix(
                "nfs-server-provisioner recover --adopt-identity 6f1f2a3b-0000-4000-8000-00000000abcd",
                "nfs-server-provisioner",
                &c,
                true
            ),
            "nfs-server-provisioner recover --adopt-identity 6f1f2a3b-0000-4000-8000-00000000abcd \
             --export-root /srv/export --kubeconfig /home/me/.kube/config"
        );
        // A provisioner name other than the default, the program as it was run, and a path that
        // needs quoting.
        let c = cluster("/srv/my export", "example.com/nfs", None);
        assert_eq!(
            complete_fix(
                "nfs-server-provisioner recover --recreate-missing",
                "./target/release/nfs-server-provisioner",
                &c,
                true
            ),
            "./target/release/nfs-server-provisioner recover --recreate-missing \
             --export-root '/srv/my export' --provisioner example.com/nfs"
        );
        // Text before the command stays; text without a command is left alone.
        let c = cluster("/export", DEFAULT_PROVISIONER, None);
        assert_eq!(
            complete_fix(
                "none if they belong to another server; if not, run: nfs-server-provisioner \
                 recover --adopt-identity X",
                "/usr/local/bin/other-name",
                &c,
                true
            ),
            "none if they belong to another server; if not, run: nfs-server-provisioner \
             recover --adopt-identity X --export-root /export"
        );
        assert_eq!(
            complete_fix("move it to persistent storage", "x", &c, false),
            "move it to persistent storage"
        );
    }

    #[test]
    fn out_of_cluster_a_bind_orphan_fix_asks_for_the_server_address() {
        let c = cluster("/x", DEFAULT_PROVISIONER, Some("/y"));
        let fix = "nfs-server-provisioner recover --bind-orphan pvc-1 --claim NAMESPACE/NAME";
        assert_eq!(
            complete_fix(fix, "nfs-server-provisioner", &c, false),
            "nfs-server-provisioner recover --bind-orphan pvc-1 --claim NAMESPACE/NAME \
             --export-root /x --kubeconfig /y --server-address ADDR"
        );
        assert_eq!(
            complete_fix(fix, "nfs-server-provisioner", &c, true),
            "nfs-server-provisioner recover --bind-orphan pvc-1 --claim NAMESPACE/NAME \
             --export-root /x --kubeconfig /y"
        );
    }

    #[test]
    fn every_completed_fix_parses_as_a_recover_command() {
        let c = cluster("/srv/my export", "example.com/nfs", Some("/y"));
        for fix in [
            "nfs-server-provisioner recover --adopt-identity 6f1f2a3b-0000-4000-8000-00000000abcd",
            "nfs-server-provisioner recover --recreate-missing",
            "nfs-server-provisioner recover --server-address 10.0.0.1",
            "nfs-server-provisioner recover --bind-orphan pvc-1 --claim apps/data",
        ] {
            let line = complete_fix(fix, "nfs-server-provisioner", &c, false);
            // Split like a shell would for these (only single-quoted words).
            let mut words = Vec::new();
            for (i, part) in line.split('\'').enumerate() {
                if i % 2 == 1 {
                    words.push(part.to_owned());
                } else {
                    words.extend(part.split_whitespace().map(str::to_owned));
                }
            }
            let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            let cli = try_parse(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            let Command::Recover { cluster, .. } = cli.command else {
                panic!("not recover: {line}");
            };
            assert_eq!(cluster.export_root, PathBuf::from("/srv/my export"));
            assert_eq!(cluster.provisioner, "example.com/nfs");
            assert_eq!(cluster.kubeconfig, Some(PathBuf::from("/y")));
        }
    }

    #[test]
    fn bind_orphan_takes_a_server_address_out_of_cluster() {
        let cli = parse(&[
            "recover",
            "--export-root",
            "/srv/export",
            "--kubeconfig",
            "/home/me/.kube/config",
            "--bind-orphan",
            "pvc-3f2c",
            "--claim",
            "apps/restored",
            "--size",
            "5Gi",
            "--server-address",
            "192.0.2.10",
        ]);
        let Command::Recover {
            cluster,
            bind_orphan,
            claim,
            server_address,
            size,
            adopt_identity,
            recreate_missing,
            ..
        } = cli.command
        else {
            panic!("not recover");
        };
        assert_eq!(
            cluster.kubeconfig,
            Some(PathBuf::from("/home/me/.kube/config"))
        );
        assert_eq!(bind_orphan.as_deref(), Some("pvc-3f2c"));
        assert_eq!(claim.as_deref(), Some("apps/restored"));
        assert_eq!(server_address.as_deref(), Some("192.0.2.10"));
        assert_eq!(size, "5Gi");
        assert!(adopt_identity.is_none() && !recreate_missing);
        // --server-address alone is still the re-point action.
        let cli = parse(&[
            "recover",
            "--export-root",
            "/x",
            "--server-address",
            "10.0.0.1",
        ]);
        assert!(matches!(
            cli.command,
            Command::Recover {
                server_address: Some(_),
                bind_orphan: None,
                ..
            }
        ));
    }

    #[test]
    fn recover_takes_one_action() {
        for bad in [
            &["recover", "--export-root", "/x"][..],
            &[
                "recover",
                "--export-root",
                "/x",
                "--adopt-identity",
                "I",
                "--recreate-missing",
            ],
            &[
                "recover",
                "--export-root",
                "/x",
                "--adopt-identity",
                "I",
                "--server-address",
                "a",
            ],
            &[
                "recover",
                "--export-root",
                "/x",
                "--recreate-missing",
                "--server-address",
                "a",
            ],
            &[
                "recover",
                "--export-root",
                "/x",
                "--recreate-missing",
                "--bind-orphan",
                "d",
                "--claim",
                "a/b",
            ],
            &["recover", "--export-root", "/x", "--bind-orphan", "d"],
            &[
                "recover",
                "--export-root",
                "/x",
                "--claim",
                "a/b",
                "--recreate-missing",
            ],
        ] {
            assert!(try_parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_of_zero_are_refused_and_exa_sizes_accepted() {
        for zero in ["0", "0Gi", "0.0", "0e9"] {
            let err = parse_size(zero).unwrap_err();
            assert!(err.contains("0 bytes") && err.contains("--size"), "{err}");
            assert!(
                try_parse(&["volume", "add", "v", "--export-root", "/x", "--size", zero]).is_err()
            );
            assert!(
                try_parse(&[
                    "volume",
                    "resize",
                    "v",
                    "--export-root",
                    "/x",
                    "--size",
                    zero
                ])
                .is_err()
            );
        }
        assert_eq!(parse_size("1Ei"), Ok(1 << 60));
        assert_eq!(parse_size("9E"), Ok(9_000_000_000_000_000_000));
        assert_eq!(
            parse_size("99999999Ei"),
            Ok(i64::MAX as u64),
            "saturates as Kubernetes does"
        );
        assert_eq!(parse_size("1"), Ok(1));
        assert!(
            parse_size("1GB")
                .unwrap_err()
                .contains("not a storage size")
        );
        assert_eq!(size_text(Some(1 << 60)), "1.0Ei");
    }

    #[test]
    fn every_flag_and_subcommand_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let cmd = Cli::command();
        let mut missing = Vec::new();
        walk(&cmd, "nfs-server-provisioner", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
        let about = cmd
            .get_long_about()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            about.contains("NFSv4.1") && about.contains("NFSv3"),
            "{about}"
        );
        for sub in cmd.get_subcommands() {
            let text = format!("{:?} {:?}", sub.get_about(), sub.get_long_about());
            assert!(!text.contains("over NFSv3."), "{}: {text}", sub.get_name());
        }
    }

    #[test]
    fn no_cluster_warning_says_how_to_provision() {
        assert!(!NO_CLUSTER.contains('\n'));
        for needed in [
            "provisioner off",
            "no Kubernetes cluster",
            "--kubeconfig",
            "--no-controller",
        ] {
            assert!(NO_CLUSTER.contains(needed), "{needed}");
        }
    }
}
