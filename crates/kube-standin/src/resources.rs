//! The table of resource types the stand-in serves, and parsing of API paths into
//! (resource, namespace, name, subresource) targets.

/// One served resource type: where it lives in the API and how it is scoped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group (served under `/api/v1`).
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Lower-case plural used in paths, e.g. `persistentvolumeclaims`.
    pub plural: String,
    /// Kind, e.g. `PersistentVolumeClaim`.
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the type has a `status` subresource: writes to the main resource then keep the
    /// stored `.status`, and writes to `/status` change only `.status`.
    pub status_subresource: bool,
}

impl ResourceType {
    /// A resource type without a status subresource.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            kind: kind.to_string(),
            namespaced,
            status_subresource: false,
        }
    }

    /// The same type with a status subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// `v1` for the core group, `GROUP/VERSION` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` for the core group, `plural.group` otherwise (kubectl's notation); also what
    /// Kubernetes puts in error messages.
    pub fn id(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The resource types served by default.
pub(crate) fn default_resources() -> Vec<ResourceType> {
    vec![
        ResourceType::new(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
        )
        .with_status(),
        ResourceType::new("", "v1", "persistentvolumes", "PersistentVolume", false).with_status(),
        ResourceType::new("", "v1", "services", "Service", true).with_status(),
        ResourceType::new("", "v1", "events", "Event", true),
        ResourceType::new("", "v1", "configmaps", "ConfigMap", true),
        ResourceType::new("", "v1", "pods", "Pod", true).with_status(),
        ResourceType::new(
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "StorageClass",
            false,
        ),
        ResourceType::new("events.k8s.io", "v1", "events", "Event", true),
        ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true),
    ]
}

/// Finds a resource by `plural.group` id, by bare plural (first in table order, so `events`
/// is the core one) or by kind.
pub(crate) fn resolve(table: &[ResourceType], name: &str) -> Option<usize> {
    table
        .iter()
        .position(|r| r.id() == name)
        .or_else(|| table.iter().position(|r| r.plural == name))
        .or_else(|| table.iter().position(|r| r.kind == name))
}

/// What an API path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub res: usize,
    /// Namespace from the path (`None` for cluster-scoped types and all-namespaces lists).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/GROUP/VERSION/...` paths; `None` means 404.
pub(crate) fn parse_path(table: &[ResourceType], path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, plural, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] => (Some(*ns), *plural, tail),
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return None,
    };
    if tail.len() > 2 {
        return None;
    }
    let res = table
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)?;
    let rt = &table[res];
    if namespace.is_some() && !rt.namespaced {
        return None;
    }
    // A name in the path of a namespaced type needs the namespace too.
    if rt.namespaced && namespace.is_none() && !tail.is_empty() {
        return None;
    }
    let subresource = tail.get(1).map(|s| s.to_string());
    if let Some(sub) = &subresource
        && !(sub == "status" && rt.status_subresource)
    {
        return None;
    }
    Some(Target {
        res,
        namespace: namespace.map(str::to_string),
        name: tail.first().map(|s| s.to_string()),
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        let t = default_resources();
        let pvc = parse_path(&t, "/api/v1/namespaces/ns1/persistentvolumeclaims/a/status")
            .expect("pvc status");
        assert_eq!(t[pvc.res].kind, "PersistentVolumeClaim");
        assert_eq!(pvc.namespace.as_deref(), Some("ns1"));
        assert_eq!(pvc.name.as_deref(), Some("a"));
        assert_eq!(pvc.subresource.as_deref(), Some("status"));
        let all = parse_path(&t, "/api/v1/persistentvolumeclaims").expect("all ns");
        assert_eq!(all.namespace, None);
        assert!(parse_path(&t, "/api/v1/persistentvolumeclaims/x").is_none());
        assert!(parse_path(&t, "/api/v1/namespaces/a/persistentvolumes").is_none());
        let sc = parse_path(&t, "/apis/storage.k8s.io/v1/storageclasses/std").expect("sc");
        assert_eq!(t[sc.res].kind, "StorageClass");
        assert!(parse_path(&t, "/apis/storage.k8s.io/v1/storageclasses/std/status").is_none());
        let ev = parse_path(&t, "/apis/events.k8s.io/v1/namespaces/d/events").expect("ev");
        assert_eq!(t[ev.res].group, "events.k8s.io");
        assert!(parse_path(&t, "/api/v1/namespaces/d").is_none());
        assert!(parse_path(&t, "/foo").is_none());
        assert_eq!(resolve(&t, "events"), resolve(&t, "Event"));
        assert_ne!(resolve(&t, "events"), resolve(&t, "events.events.k8s.io"));
        assert!(resolve(&t, "leases").is_some());
    }
}
