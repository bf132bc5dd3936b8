//! StorageClass parameters: the old provisioner's (`gid`, `rootSquash`, `mountOptions`) and
//! ours (`onDelete`, `squash`, `anonUID`, `anonGID`, `clients`, `secure`, `async`, `shard`). Keys are case-insensitive; an unknown
//! key or a bad value is an error that names the key, shown to the user as a
//! `ProvisioningFailed` Event.

use std::collections::BTreeMap;

use export_store::Squash;
use thiserror::Error;

/// What to do with a volume's directory when its PV is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDelete {
    /// Remove the directory and its data.
    #[default]
    Delete,
    /// Leave the directory as it is.
    Retain,
    /// Rename it to `archived-pvc-<uid>-<timestamp>`.
    Archive,
}

impl OnDelete {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Retain => "retain",
            Self::Archive => "archive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "delete" => Some(Self::Delete),
            "retain" => Some(Self::Retain),
            "archive" => Some(Self::Archive),
            _ => None,
        }
    }
}

/// The group a volume's directory belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gid {
    /// `gid: none` (and the default): mode 2777, group unchanged.
    #[default]
    None,
    /// `gid: N`: mode 2071, group N.
    Id(u32),
}

/// Parsed StorageClass parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pub gid: Gid,
    pub squash: Squash,
    pub anonuid: Option<u32>,
    pub anongid: Option<u32>,
    /// Deprecated free-text mount options, used only when the class has no `mountOptions`.
    pub mount_options: Option<String>,
    pub on_delete: OnDelete,
    /// Address ranges of the clients that may use the volumes; empty: every client.
    pub clients: Vec<export_store::access::Cidr>,
    /// Calls must come from reserved source ports.
    pub secure: bool,
    /// Replies to changes before they reach the disk (knfsd's `async`; see
    /// `export_store::VolumeOptions::asynchronous`).
    pub asynchronous: bool,
    /// With shards: the shard (pod name or ordinal) every claim of the class goes to.
    pub shard: Option<String>,
}

impl Params {
    /// Directory mode for the volume.
    pub fn dir_mode(&self) -> u32 {
        match self.gid {
            Gid::None => 0o2777,
            Gid::Id(_) => 0o2071,
        }
    }
}

/// A parameter the provisioner cannot accept.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error(
        "invalid StorageClass parameter {0:?}: unknown key (valid: gid, rootSquash, mountOptions, onDelete, squash, anonUID, anonGID, clients, secure, async, shard)"
    )]
    Unknown(String),
    #[error("invalid StorageClass parameter {key:?}: {value:?} {why}")]
    BadValue {
        key: String,
        value: String,
        why: &'static str,
    },
}

fn bad(key: &str, value: &str, why: &'static str) -> ParamError {
    ParamError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        why,
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, ParamError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(bad(key, value, "is not a boolean")),
    }
}

/// Parses a StorageClass's parameters.
pub fn parse(parameters: &BTreeMap<String, String>) -> Result<Params, ParamError> {
    let mut p = Params::default();
    let mut root_squash: Option<bool> = None;
    let mut squash: Option<Squash> = None;
    for (key, value) in parameters {
        match key.to_ascii_lowercase().as_str() {
            "gid" => {
                p.gid = if value.eq_ignore_ascii_case("none") {
                    Gid::None
                } else {
                    Gid::Id(
                        value
                            .parse()
                            .map_err(|_| bad(key, value, "is not \"none\" or a group id"))?,
                    )
                };
            }
            "rootsquash" => root_squash = Some(boolean(key, value)?),
            "secure" => p.secure = boolean(key, value)?,
            "async" => p.asynchronous = boolean(key, value)?,
            "shard" => {
                if value.trim().is_empty() {
                    return Err(bad(key, value, "is not a shard (a pod name or an ordinal)"));
                }
                p.shard = Some(value.trim().to_owned());
            }
            "clients" => {
                p.clients = export_store::access::parse_clients(value).map_err(|_| {
                    bad(
                        key,
                        value,
                        "is not a list of addresses or address ranges (e.g. 10.0.0.0/8, 192.168.1.7)",
                    )
                })?;
            }
            "mountoptions" => p.mount_options = Some(value.clone()),
            "ondelete" => {
                p.on_delete = OnDelete::parse(value)
                    .ok_or_else(|| bad(key, value, "is not delete, retain or archive"))?;
            }
            "squash" => {
                squash = Some(match value.to_ascii_lowercase().as_str() {
                    "root" => Squash::Root,
                    "all" => Squash::All,
                    "none" => Squash::None,
                    _ => return Err(bad(key, value, "is not root, all or none")),
                });
            }
            "anonuid" => {
                p.anonuid = Some(
                    value
                        .parse()
                        .map_err(|_| bad(key, value, "is not a user id"))?,
                );
            }
            "anongid" => {
                p.anongid = Some(
                    value
                        .parse()
                        .map_err(|_| bad(key, value, "is not a group id"))?,
                );
            }
            _ => return Err(ParamError::Unknown(key.clone())),
        }
    }
    p.squash = match (squash, root_squash) {
        (Some(s), Some(r)) if (s == Squash::Root) != r && s != Squash::All => {
            return Err(bad(
                "rootSquash",
                if r { "true" } else { "false" },
                "contradicts the squash parameter",
            ));
        }
        (Some(s), _) => s,
        (None, Some(true)) => Squash::Root,
        (None, _) => Squash::None,
    };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn async_is_a_boolean_off_by_default() {
        assert!(!parse(&map(&[])).unwrap().asynchronous);
        assert!(parse(&map(&[("async", "true")])).unwrap().asynchronous);
        assert!(!parse(&map(&[("Async", "false")])).unwrap().asynchronous);
        let e = parse(&map(&[("async", "sometimes")])).unwrap_err();
        assert!(e.to_string().contains("\"async\""), "{e}");
    }

    #[test]
    fn old_provisioner_parameters_keep_their_meaning() {
        let p = parse(&map(&[
            ("gid", "1000"),
            ("rootSquash", "true"),
            ("mountOptions", "vers=3"),
        ]))
        .unwrap();
        assert_eq!(p.gid, Gid::Id(1000));
        assert_eq!(p.dir_mode(), 0o2071);
        assert_eq!(p.squash, Squash::Root);
        assert_eq!(p.mount_options.as_deref(), Some("vers=3"));
        assert_eq!(parse(&map(&[("gid", "none")])).unwrap().dir_mode(), 0o2777);
        assert_eq!(parse(&map(&[])).unwrap(), Params::default());
    }

    #[test]
    fn keys_are_case_insensitive() {
        let p = parse(&map(&[
            ("ONDELETE", "Archive"),
            ("AnonUid", "7"),
            ("anongid", "8"),
        ]))
        .unwrap();
        assert_eq!(p.on_delete, OnDelete::Archive);
        assert_eq!((p.anonuid, p.anongid), (Some(7), Some(8)));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_parameter() {
        let e = parse(&map(&[("size", "1")])).unwrap_err();
        assert!(e.to_string().contains("\"size\""), "{e}");
        for (k, v) in [
            ("gid", "wheel"),
            ("rootSquash", "maybe"),
            ("onDelete", "shred"),
            ("squash", "some"),
            ("anonUID", "-1"),
            ("clients", "10.0.0.0/8, nonsense"),
            ("clients", "10.0.0.0/40"),
            ("secure", "sometimes"),
        ] {
            let e = parse(&map(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(&format!("{k:?}")), "{e}");
        }
    }

    #[test]
    fn clients_and_secure_restrict_who_may_use_the_volumes() {
        let p = parse(&map(&[
            ("clients", "10.0.0.0/8, 192.168.1.7"),
            ("secure", "true"),
        ]))
        .unwrap();
        assert_eq!(p.clients.len(), 2);
        assert!(p.secure);
        let d = parse(&map(&[])).unwrap();
        assert!(d.clients.is_empty() && !d.secure, "open by default");
    }

    #[test]
    fn contradicting_squash_settings_are_refused() {
        assert!(parse(&map(&[("squash", "none"), ("rootSquash", "true")])).is_err());
        assert_eq!(
            parse(&map(&[("squash", "all"), ("rootSquash", "true")]))
                .unwrap()
                .squash,
            Squash::All
        );
    }
}
