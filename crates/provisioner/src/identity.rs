//! The provisioner's identity: `<export root>/nfs-provisioner.identity`, a random UUID
//! string, mode 0600, no trailing newline, created once — the same file the old
//! provisioner wrote, so an export root it managed is adopted with its PVs.

use std::fs;
use std::io;
use std::path::Path;

/// File name inside the export root (a name `volume add` refuses).
pub const IDENTITY_FILE: &str = export_store::registry::IDENTITY_FILE;

/// `e` with the path it happened on in its message (same kind, so callers can still match).
fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Reads the identity, or `None` when there is none yet. Errors name the file.
pub fn read(export_root: &Path) -> io::Result<Option<String>> {
    let path = export_root.join(IDENTITY_FILE);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(at(&path)(e)),
    }
}

/// Reads the identity, creating it (durably) if missing. Errors name the file.
pub fn load_or_create(export_root: &Path) -> io::Result<String> {
    if let Some(id) = read(export_root)? {
        return Ok(id);
    }
    let id = new_uuid()?;
    let path = export_root.join(IDENTITY_FILE);
    export_store::registry::write_atomically(&path, id.as_bytes(), 0o600).map_err(at(&path))?;
    Ok(id)
}

/// A random (version 4) UUID in its canonical text form.
pub fn new_uuid() -> io::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn identity_is_created_once_as_the_old_provisioner_did() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        assert_eq!(id.len(), 36);
        let raw = fs::read(dir.path().join(IDENTITY_FILE)).unwrap();
        assert_eq!(raw, id.as_bytes(), "no trailing newline");
        let mode = fs::metadata(dir.path().join(IDENTITY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), id);
    }

    #[test]
    fn errors_name_the_identity_file() {
        let dir = tempfile::tempdir().unwrap();
        // What `volume add nfs-provisioner.identity` used to leave behind.
        fs::create_dir(dir.path().join(IDENTITY_FILE)).unwrap();
        let path = dir.path().join(IDENTITY_FILE).display().to_string();
        for err in [
            read(dir.path()).unwrap_err(),
            load_or_create(dir.path()).unwrap_err(),
        ] {
            assert!(err.to_string().contains(&path), "{err}");
            assert_eq!(err.raw_os_error(), None);
        }
    }

    #[test]
    fn an_existing_identity_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(IDENTITY_FILE),
            "0c4a3b52-1111-4222-8333-444455556666",
        )
        .unwrap();
        assert_eq!(
            load_or_create(dir.path()).unwrap(),
            "0c4a3b52-1111-4222-8333-444455556666"
        );
    }
}
