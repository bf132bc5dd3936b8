//! Every NFSv3 procedure gets thousands of random argument buffers, alone and behind a valid
//! handle, and must answer each one (mostly GARBAGE_ARGS or BADHANDLE) without panicking.
//! The same property is fuzzed open-endedly by `fuzz/fuzz_targets/nfs3_procedures.rs`.

use std::sync::Arc;

use export_store::{ExportStore, VolumeOptions};
use nfs_server::nfs3::Nfs3Service;
use oncrpc::{AuthSys, CallContext, Credential, Reply};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn xdr_opaque(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v.resize(4 + data.len().div_ceil(4) * 4, 0);
    v
}

#[test]
fn random_arguments_never_panic_any_procedure() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = ExportStore::open(dir.path()).unwrap();
    store.add_volume("vol", VolumeOptions::default()).unwrap();
    let root = store.volume_by_name("vol").unwrap().root_handle().to_vec();
    let service = Nfs3Service::new(
        Arc::new(store),
        nfs_server::executor::Executor::new(1),
        nfs_server::write_verifier(),
        None,
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut garbage = 0;
    for proc_ in 1..=23u32 {
        for i in 0..600 {
            let len = (rng.next() % 200) as usize;
            let mut args = if i % 2 == 0 {
                xdr_opaque(&root)
            } else {
                Vec::new()
            };
            args.extend(rng.bytes(len));
            let ctx = CallContext {
                xid: i,
                vers: 3,
                proc_,
                credential: Credential::Sys(AuthSys {
                    stamp: 0,
                    machine_name: b"fuzz".to_vec(),
                    uid: 1000,
                    gid: 1000,
                    gids: vec![],
                }),
                peer: "127.0.0.1:1".parse().unwrap(),
            };
            match service.call_blocking(&ctx, &args) {
                Reply::GarbageArgs => garbage += 1,
                Reply::ProcUnavail => assert!(proc_ > 21),
                Reply::Success(_) => assert!(proc_ <= 21),
                other => panic!("procedure {proc_}: unexpected reply {other:?}"),
            }
        }
    }
    assert!(
        garbage > 1000,
        "random bytes should mostly be garbage, got {garbage}"
    );
}
