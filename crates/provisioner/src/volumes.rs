//! The file-system side of provisioning: create a volume's directory with the mode and group
//! the class asks for and export it; on deletion unexport it first, then delete, archive or
//! retain the directory. All functions block (run them on a blocking worker).

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use export_store::registry::{RegistryError, sync_dir};
use export_store::{ExportStore, StoreError, VolumeOptions};

use crate::params::{Gid, OnDelete, Params};

/// An I/O error on `path`, named in the message.
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
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
    // Refuse a reserved or unsafe name before anything is created in the export root.
    export_store::registry::validate_name(name)?;
    // The export root is root's; make sure of the thread's identity (NFS calls run on the
    // server's own threads, but a blocking-pool thread could still carry another).
    let dir = store.root().join(name);
    export_store::cred::become_root().map_err(io_err(&dir))?;
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(&dir)(e)),
    }
    if let Gid::Id(gid) = params.gid {
        chown(&dir, None, Some(gid)).map_err(io_err(&dir))?;
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(params.dir_mode()))
        .map_err(io_err(&dir))?;
    // The new directory entry is made durable by the registry write below (one fsync of the
    // export root shared by every volume added at the same moment).
    let options = VolumeOptions {
        read_only,
        squash: params.squash,
        anonuid: params.anonuid.unwrap_or(65534),
        anongid: params.anongid.unwrap_or(65534),
        size,
        clients: params.clients.clone(),
        secure: params.secure,
        asynchronous: params.asynchronous,
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
    export_store::cred::become_root().map_err(io_err(store.root()))?;
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
        OnDelete::Delete => fs::remove_dir_all(&dir).map_err(io_err(&dir))?,
        OnDelete::Archive => {
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let archived = store.root().join(format!("archived-{name}-{stamp}"));
            fs::rename(&dir, &archived).map_err(io_err(&archived))?;
        }
    }
    sync_dir(store.root()).map_err(io_err(store.root()))
}

/// Removes a volume that was created for a claim that disappeared meanwhile.
pub fn abandon(store: &ExportStore, name: &str) -> Result<(), StoreError> {
    discard(store, name, OnDelete::Delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExportStore::open_unmeasured(dir.path()).unwrap();
        let err = provision(
            &store,
            crate::identity::IDENTITY_FILE,
            &Params::default(),
            false,
            None,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Registry(RegistryError::ReservedName { .. })
            ),
            "{err}"
        );
        assert!(!dir.path().join(crate::identity::IDENTITY_FILE).exists());
    }

    #[test]
    fn class_options_reach_the_registry_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExportStore::open_unmeasured(dir.path()).unwrap();
        let mut params = crate::params::parse(
            &[("async", "true"), ("squash", "all"), ("secure", "true")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        provision(&store, "pvc-a", &params, false, Some(1 << 30)).unwrap();
        let opts = store.volume_by_name("pvc-a").unwrap().options().clone();
        assert!(opts.asynchronous && opts.secure);
        assert_eq!(opts.squash, export_store::Squash::All);
        assert_eq!(opts.size, Some(1 << 30));
        // And the default is durable.
        params.asynchronous = false;
        provision(&store, "pvc-b", &params, false, None).unwrap();
        assert!(
            !store
                .volume_by_name("pvc-b")
                .unwrap()
                .options()
                .asynchronous
        );
    }

    #[test]
    fn io_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = ExportStore::open_unmeasured(dir.path()).unwrap();
        // A file where the volume's directory should be.
        fs::write(store.root().join("pvc-1"), b"").unwrap();
        let err = provision(&store, "pvc-1", &Params::default(), false, None).unwrap_err();
        let path = store.root().join("pvc-1").display().to_string();
        assert!(err.to_string().contains(&path), "{err}");
    }
}
