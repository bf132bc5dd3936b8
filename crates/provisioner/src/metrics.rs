//! What the provisioner counts: reconciles by controller and result, how long provisioning
//! and deleting take, reconciles in progress, whether this process leads, and the volumes
//! it will not or cannot serve (another identity, missing directory), and the shards it sees.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

fn seconds() -> Histogram {
    // 10 ms .. ~80 s.
    Histogram::new(exponential_buckets(0.01, 2.5, 10))
}

#[derive(Debug)]
pub struct ProvisionerMetrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub in_flight: Gauge,
    pub provision_seconds: Histogram,
    pub delete_seconds: Histogram,
    pub leader: Gauge,
    pub foreign_volumes: Gauge,
    pub missing_volumes: Gauge,
    pub shards: Gauge,
    pub shards_live: Gauge,
}

impl Default for ProvisionerMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            in_flight: Gauge::default(),
            provision_seconds: seconds(),
            delete_seconds: seconds(),
            leader: Gauge::default(),
            foreign_volumes: Gauge::default(),
            missing_volumes: Gauge::default(),
            shards: Gauge::default(),
            shards_live: Gauge::default(),
        }
    }
}

impl ProvisionerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "provisioner_reconciles",
            "Reconciles of claims and volumes, by controller and result",
            m.reconciles.clone(),
        );
        registry.register(
            "provisioner_reconciles_in_flight",
            "Reconciles running now (the work queue being drained)",
            m.in_flight.clone(),
        );
        registry.register(
            "provisioner_provision_duration_seconds",
            "From deciding to provision a claim to its PV being created",
            m.provision_seconds.clone(),
        );
        registry.register(
            "provisioner_delete_duration_seconds",
            "From a released PV being picked up to its data handled and the PV deleted",
            m.delete_seconds.clone(),
        );
        registry.register(
            "provisioner_leader",
            "1 while this process holds the leader Lease (provisions), else 0",
            m.leader.clone(),
        );
        registry.register(
            "provisioner_foreign_volumes",
            "PVs of our provisioner name carrying another identity (never touched)",
            m.foreign_volumes.clone(),
        );
        registry.register(
            "provisioner_missing_volumes",
            "PVs of ours whose directory was missing at the last start",
            m.missing_volumes.clone(),
        );
        registry.register(
            "provisioner_shards",
            "Shards whose Lease this shard sees, live or not (0 without --shards)",
            m.shards.clone(),
        );
        registry.register(
            "provisioner_shards_live",
            "Shards whose Lease was renewed within its duration (0 without --shards)",
            m.shards_live.clone(),
        );
        m
    }

    pub(crate) fn reconciled(&self, controller: &'static str, ok: bool) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }
}
