//! Fuzzes every NFSv3 procedure's argument decoding and handling against a real export store
//! in a temporary directory: the first byte picks the procedure, the rest are its arguments.
//! Any input must produce a reply (usually GARBAGE_ARGS or BADHANDLE), never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use export_store::{ExportStore, VolumeOptions};
use libfuzzer_sys::fuzz_target;
use nfs_server::nfs3::Nfs3Service;
use oncrpc::{CallContext, Credential};

fn service() -> &'static Nfs3Service {
    static SERVICE: OnceLock<(tempfile::TempDir, Nfs3Service)> = OnceLock::new();
    &SERVICE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = ExportStore::open(dir.path()).expect("store");
            store.add_volume("vol", VolumeOptions::default()).expect("volume");
            (dir, Nfs3Service::new(Arc::new(store)))
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let Some((&proc_, args)) = data.split_first() else {
        return;
    };
    let ctx = CallContext {
        xid: 1,
        vers: 3,
        proc_: u32::from(proc_ % 23),
        credential: Credential::None,
        peer: "127.0.0.1:1".parse().expect("address"),
    };
    let _ = service().call_blocking(&ctx, args);
});
