//! The provisioner against a real Kubernetes control plane: etcd, kube-apiserver and
//! kube-controller-manager started from `$KUBEBUILDER_ASSETS` (see README, "Tests"). The chart
//! is installed with Helm from the old chart's values; the real binary then runs out of cluster
//! with the chart's ServiceAccount token and the environment its pod would have, so every
//! request is authorised by the chart's own RBAC rules and validated by the real API server.
//! Volumes are written and read back with libnfs at the address and path their PV names (the
//! Service's ClusterIP is added to the loopback interface for the run).
//!
//! Shards (`replicaCount: 3`) run as three processes on 127.0.0.2-4 (see `shards`).
//!
//! Without `KUBEBUILDER_ASSETS` the suite says it is skipped and passes.

mod cluster;
mod scenarios;
mod server;
mod shards;
mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_control_plane() {
    let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") else {
        eprintln!(
            "skipped: KUBEBUILDER_ASSETS is not set (a directory with etcd, kube-apiserver and \
             kube-controller-manager; see README)"
        );
        return;
    };
    scenarios::run_all(std::path::Path::new(&assets)).await;
}
