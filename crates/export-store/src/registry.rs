//! The export registry: which volumes exist, with their id, generation and options.
//!
//! It lives in `<export root>/.nfs-server-provisioner/registry.json` and is only ever replaced
//! whole (write temp + fsync + rename + fsync dir) under an exclusive `flock`, so concurrent
//! `volume add` commands and a running server never see a half-written file. Volume ids are
//! never reused; each volume also gets a random generation so that even a registry recreated
//! from scratch cannot make an old handle alias a new volume.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cred::Squash;

/// Name of the state directory inside the export root.
pub const STATE_DIR: &str = ".nfs-server-provisioner";
const REGISTRY_FILE: &str = "registry.json";
const LOCK_FILE: &str = "lock";
/// The provisioner's identity file in the export root (the name the old provisioner used).
pub const IDENTITY_FILE: &str = "nfs-provisioner.identity";
/// Prefixes of the names deleted volumes' directories are given (`onDelete: archive`).
pub const RESERVED_PREFIXES: [&str; 1] = ["archived-"];

/// Options of one export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOptions {
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub squash: Squash,
    #[serde(default = "nobody")]
    pub anonuid: u32,
    #[serde(default = "nobody")]
    pub anongid: u32,
    /// The volume's size in bytes (its hard limit); none: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

fn nobody() -> u32 {
    65534
}

impl Default for VolumeOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            squash: Squash::None,
            anonuid: nobody(),
            anongid: nobody(),
            size: None,
        }
    }
}

/// One registered volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub id: u32,
    pub generation: u32,
    #[serde(flatten)]
    pub options: VolumeOptions,
}

/// The registry file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryData {
    pub next_id: u32,
    pub volumes: Vec<VolumeRecord>,
}

/// Registry errors.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(
        "volume name {0:?} is not valid: use 1-200 characters from [A-Za-z0-9._-], not starting with '.'"
    )]
    InvalidName(String),
    #[error("volume name {name:?} is reserved: {why}; choose another name")]
    ReservedName { name: String, why: &'static str },
    #[error("volume {0:?} already exists")]
    Exists(String),
    #[error("volume {0:?} does not exist")]
    NotFound(String),
    #[error("volume {name:?} cannot shrink from {from} to {to} bytes")]
    Shrink { name: String, from: u64, to: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks that a volume name is a single safe directory name, and not one of the names the
/// export root keeps for itself: the state directory and every other name starting with '.',
/// the identity file, and the names deleted volumes are archived under.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(RegistryError::InvalidName(name.to_owned()));
    }
    let reserved = |why| {
        Err(RegistryError::ReservedName {
            name: name.to_owned(),
            why,
        })
    };
    if name == IDENTITY_FILE {
        return reserved("it is the provisioner's identity file in the export root");
    }
    if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return reserved(
            "names starting with \"archived-\" are given to deleted volumes' directories",
        );
    }
    Ok(())
}

/// Access to the registry of one export root.
#[derive(Debug, Clone)]
pub struct Registry {
    state_dir: PathBuf,
}

impl Registry {
    /// Opens (creating the state directory if needed) the registry of `export_root`.
    pub fn open(export_root: &Path) -> Result<Self, RegistryError> {
        let state_dir = export_root.join(STATE_DIR);
        match fs::create_dir(&state_dir) {
            Ok(()) => {
                fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err(&state_dir))?;
                sync_dir(export_root).map_err(io_err(export_root))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&state_dir)(e)),
        }
        Ok(Self { state_dir })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn path(&self) -> PathBuf {
        self.state_dir.join(REGISTRY_FILE)
    }

    /// Reads the current registry (empty if none was written yet).
    pub fn load(&self) -> Result<RegistryData, RegistryError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| RegistryError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RegistryData {
                next_id: 1,
                volumes: Vec::new(),
            }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Applies `change` to the registry under an exclusive lock and writes it durably.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut RegistryData) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let lock_path = self.state_dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: plain syscall on an open descriptor; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&lock_path)(io::Error::last_os_error()));
        }
        let mut data = self.load()?;
        let out = change(&mut data)?;
        let bytes = serde_json::to_vec_pretty(&data).map_err(|source| RegistryError::Corrupt {
            path: self.path(),
            source,
        })?;
        write_atomically(&self.path(), &bytes, 0o600).map_err(io_err(&self.path()))?;
        Ok(out)
    }

    /// Registers a new volume with a fresh id and random generation.
    pub fn add(&self, name: &str, options: VolumeOptions) -> Result<VolumeRecord, RegistryError> {
        validate_name(name)?;
        self.update(|data| {
            if data.volumes.iter().any(|v| v.name == name) {
                return Err(RegistryError::Exists(name.to_owned()));
            }
            let record = VolumeRecord {
                name: name.to_owned(),
                id: data.next_id.max(1),
                generation: random_u32(),
                options,
            };
            data.next_id = record.id + 1;
            data.volumes.push(record.clone());
            Ok(record)
        })
    }

    /// Sets a volume's size (its hard limit); a volume never shrinks.
    pub fn resize(&self, name: &str, size: u64) -> Result<VolumeRecord, RegistryError> {
        self.update(|data| {
            let pos = position(data, name)?;
            let v = &mut data.volumes[pos];
            if let Some(from) = v.options.size
                && size < from
            {
                return Err(RegistryError::Shrink {
                    name: name.to_owned(),
                    from,
                    to: size,
                });
            }
            v.options.size = Some(size);
            Ok(v.clone())
        })
    }

    /// Unregisters a volume (its directory is left alone).
    pub fn remove(&self, name: &str) -> Result<VolumeRecord, RegistryError> {
        self.update(|data| {
            let pos = position(data, name)?;
            Ok(data.volumes.remove(pos))
        })
    }
}

/// Where volume `name` is in the list.
fn position(data: &RegistryData, name: &str) -> Result<usize, RegistryError> {
    data.volumes
        .iter()
        .position(|v| v.name == name)
        .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // A generation only needs to differ from earlier ones; fall back to the clock.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
            .unwrap_or(1);
        return t;
    }
    u32::from_ne_bytes(b)
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes`: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_after_remove() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let a = reg.add("a", VolumeOptions::default()).unwrap();
        reg.remove("a").unwrap();
        let b = reg.add("a", VolumeOptions::default()).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(reg.load().unwrap().volumes, vec![b]);
    }

    #[test]
    fn duplicate_and_unsafe_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        reg.add("vol", VolumeOptions::default()).unwrap();
        assert!(matches!(
            reg.add("vol", VolumeOptions::default()),
            Err(RegistryError::Exists(_))
        ));
        for bad in ["", "..", ".hidden", STATE_DIR, "a/b", "a\0b"] {
            assert!(matches!(
                reg.add(bad, VolumeOptions::default()),
                Err(RegistryError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn names_the_export_root_keeps_for_itself_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        for reserved in [IDENTITY_FILE, "archived-pvc-1-1700000000"] {
            let err = reg.add(reserved, VolumeOptions::default()).unwrap_err();
            assert!(
                matches!(err, RegistryError::ReservedName { .. }),
                "{reserved}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(reserved) && text.contains("reserved"),
                "{text}"
            );
        }
        assert!(reg.load().unwrap().volumes.is_empty());
        // Names merely resembling them are fine.
        for ok in ["nfs-provisioner", "identity", "archive", "pvc-archived-1"] {
            reg.add(ok, VolumeOptions::default()).unwrap();
        }
    }
}
