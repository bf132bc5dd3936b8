//! Shared by the chart and RBAC tests: Kubernetes manifests parsed from YAML, and the helm
//! binaries that render the chart.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/helm/nfs-server-provisioner"
);
pub const PLAIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/kubernetes/nfs-server-provisioner.yaml"
);
/// Release name and namespace the plain manifests are rendered with.
pub const PLAIN_RELEASE: &str = "nfs-server-provisioner";
pub const PLAIN_NAMESPACE: &str = "nfs-server-provisioner";

/// The objects of a multi-document YAML stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests(pub Vec<Value>);

impl Manifests {
    pub fn parse(yaml: &str) -> Self {
        let docs = serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|d| {
                serde_json::Value::deserialize(d)
                    .unwrap_or_else(|e| panic!("invalid YAML: {e}\n{yaml}"))
            })
            .filter(|v| !v.is_null())
            .collect();
        Self(docs)
    }

    pub fn load(path: &str) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap())
    }

    /// `(kind, name)` of every object, sorted.
    pub fn objects(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .0
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap_or_default().to_owned(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    }

    pub fn find(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind`, as its typed Kubernetes struct.
    pub fn one<T: DeserializeOwned>(&self, kind: &str) -> T {
        let found = self.find(kind);
        assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
        serde_json::from_value(found[0].clone())
            .unwrap_or_else(|e| panic!("{kind} does not parse as its Kubernetes type: {e}"))
    }
}

use serde::Deserialize;

/// Helm `major` (3 or 4): `$HELM3`/`$HELM4`, else `target/tools/helmN` as
/// `scripts/fetch-helm.sh` leaves it. `None` when absent, unless `$REQUIRE_HELM` is set (CI),
/// where absence fails the test.
pub fn helm(major: u8) -> Option<PathBuf> {
    let path = std::env::var_os(format!("HELM{major}"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/tools/helm{major}"))
        });
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("REQUIRE_HELM").is_none(),
        "helm {major} not found at {} (run scripts/fetch-helm.sh)",
        path.display()
    );
    eprintln!(
        "SKIPPED: helm {major} not found; run scripts/fetch-helm.sh to test the chart with it"
    );
    None
}

/// Every helm available, as (major, path).
pub fn helms() -> Vec<(u8, PathBuf)> {
    [3, 4]
        .into_iter()
        .filter_map(|m| helm(m).map(|p| (m, p)))
        .collect()
}

/// Runs helm: its stdout when it succeeds, else its stdout and stderr together.
pub fn try_run_helm(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("helm-test-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("helm-test-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("helm-test-data"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs helm; panics with its output on failure.
pub fn run_helm(helm: &Path, args: &[&str]) -> String {
    try_run_helm(helm, args)
        .unwrap_or_else(|out| panic!("{} {args:?} failed:\n{out}", helm.display()))
}

/// `helm template RELEASE CHART -n NAMESPACE [-f values]...`.
pub fn template(helm: &Path, release: &str, namespace: &str, values: &[&str]) -> String {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    for v in values {
        args.extend(["-f", v]);
    }
    run_helm(helm, &args)
}

/// A values file of tests/chart/.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/chart/{name}", env!("CARGO_MANIFEST_DIR"))
}
