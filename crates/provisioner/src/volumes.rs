//! The file-system side of provisioning: create a volume's directory with the mode and group
//! the class asks for and export it; on deletion unexport it first, then delete, archive or
//! retain the directory. All functions block (run them on a blocking worker).

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, chown};
use std::time::{SystemTime, UNIX_EPOCH};

use export_store::registry::{RegistryError, sync_dir};
use export_store::{ExportStore, StoreError, VolumeOptions};

use crate::params::{Gid, OnDelete, Params};

fn io_err(e: io::Error) -> StoreError {
    StoreError::Io {
        path: "volume".into(),
        source: e,
    }
}

/// Creates (or adopts) directory `name` and exports it with a size limit of `size` bytes.
/// Idempotent: a retry after a crash between any two steps ends with one directory and one
/// export.
pub fn provision(
    store: &ExportStore,
    name: &str,
    params: &Params,
    read_only: bool,
    size: Option<u64>,
) -> Result<(), StoreError> {
    // This runs on a blocking-pool thread that may have served an NFS call as a client's
    // uid; the export root is root's.
    export_store::cred::become_root().map_err(io_err)?;
    let dir = store.root().join(name);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Gid::Id(gid) = params.gid {
        chown(&dir, None, Some(gid)).map_err(io_err)?;
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(params.dir_mode())).map_err(io_err)?;
    sync_dir(store.root()).map_err(io_err)?;
    let options = VolumeOptions {
        read_only,
        squash: params.squash,
        anonuid: params.anonuid.unwrap_or(65534),
        anongid: params.anongid.unwrap_or(65534),
        size,
    };
    match store.add_volume(name, options) {
        Ok(_) | Err(StoreError::Registry(RegistryError::Exists(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the volume's directory exists.
pub fn present(store: &ExportStore, name: &str) -> bool {
    store.root().join(name).is_dir()
}

/// Registers an existing directory (adopting an old provisioner's volume) if it is not yet.
pub fn adopt(store: &ExportStore, name: &str) -> Result<bool, StoreError> {
    if store.volume_by_name(name).is_some()
        || store
            .registry()
            .load()?
            .volumes
            .iter()
            .any(|v| v.name == name)
    {
        return Ok(false);
    }
    match store.add_volume(name, VolumeOptions::default()) {
        Ok(_) => Ok(true),
        Err(StoreError::Registry(RegistryError::Exists(_))) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Unexports the volume, then applies `on_delete` to its directory. Idempotent.
pub fn discard(store: &ExportStore, name: &str, on_delete: OnDelete) -> Result<(), StoreError> {
    export_store::cred::become_root().map_err(io_err)?;
    match store.remove_volume(name) {
        Ok(_) | Err(StoreError::Registry(RegistryError::NotFound(_))) => {}
        Err(e) => return Err(e),
    }
    let dir = store.root().join(name);
    if !dir.exists() {
        return Ok(());
    }
    match on_delete {
        OnDelete::Retain => return Ok(()),
        OnDelete::Delete => fs::remove_dir_all(&dir).map_err(io_err)?,
        OnDelete::Archive => {
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let archived = store.root().join(format!("archived-{name}-{stamp}"));
            fs::rename(&dir, archived).map_err(io_err)?;
        }
    }
    sync_dir(store.root()).map_err(io_err)
}

/// Removes a volume that was created for a claim that disappeared meanwhile.
pub fn abandon(store: &ExportStore, name: &str) -> Result<(), StoreError> {
    discard(store, name, OnDelete::Delete)
}
