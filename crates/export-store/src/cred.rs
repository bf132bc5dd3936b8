//! Credentials: who a request runs as, squashing, and switching the calling thread to it.
//!
//! Each worker thread remembers the identity it runs as, so consecutive requests from one
//! user cost no system calls.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::sys;

/// A file-system identity: uid, primary gid and supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether `gid` is the primary group or a supplementary one.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Which callers are mapped to the anonymous uid/gid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Squash {
    /// Nobody is squashed.
    #[default]
    None,
    /// uid 0 becomes anonuid, gid 0 becomes anongid.
    Root,
    /// Everybody becomes anonuid/anongid.
    All,
}

impl std::str::FromStr for Squash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "no_root_squash" => Ok(Self::None),
            "root" | "root_squash" => Ok(Self::Root),
            "all" | "all_squash" => Ok(Self::All),
            other => Err(format!("unknown squash mode {other:?} (root, all or none)")),
        }
    }
}

impl Squash {
    /// The identity a caller's identity is mapped to.
    pub fn apply(self, id: Identity, anonuid: u32, anongid: u32) -> Identity {
        match self {
            Self::None => id,
            Self::All => Identity {
                uid: anonuid,
                gid: anongid,
                groups: Vec::new(),
            },
            Self::Root => {
                let squash_gid = |g: u32| if g == 0 { anongid } else { g };
                Identity {
                    uid: if id.uid == 0 { anonuid } else { id.uid },
                    gid: squash_gid(id.gid),
                    groups: id.groups.into_iter().map(squash_gid).collect(),
                }
            }
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Identity>> = const { RefCell::new(None) };
    static QUOTA_BOUND: Cell<bool> = const { Cell::new(false) };
}

/// Set once kernel project quotas enforce volume sizes: from then on every thread that
/// switches identity (the worker threads serving clients, and the server's own background
/// work) gives up `CAP_SYS_RESOURCE`, so the kernel's limits bind it (root would pass them on
/// ext4).
static KERNEL_QUOTAS: AtomicBool = AtomicBool::new(false);

/// Makes the threads that switch identity from now on subject to kernel quota limits.
pub fn bind_to_kernel_quotas() {
    KERNEL_QUOTAS.store(true, Ordering::Relaxed);
}

/// Makes the calling thread's file-system calls run as `id`.
pub fn become_identity(id: &Identity) -> io::Result<()> {
    if KERNEL_QUOTAS.load(Ordering::Relaxed) && !QUOTA_BOUND.get() {
        crate::projquota::drop_sys_resource()?;
        QUOTA_BOUND.set(true);
    }
    CURRENT.with(|cur| {
        let mut cur = cur.borrow_mut();
        if cur.as_ref() == Some(id) {
            return Ok(());
        }
        // Forget the cached identity first: if the switch fails half-way, the next call
        // must switch again rather than trust the cache.
        *cur = None;
        sys::set_thread_creds(id.uid, id.gid, &id.groups)?;
        *cur = Some(id.clone());
        Ok(())
    })
}

/// Switches the calling thread back to root (needed to resolve handles).
pub fn become_root() -> io::Result<()> {
    become_identity(&Identity::root())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            groups: vec![0, 10],
        }
    }

    #[test]
    fn root_squash_maps_root_and_group_zero_only() {
        let id = Squash::Root.apply(user(), 65534, 65533);
        assert_eq!((id.uid, id.gid, id.groups), (65534, 65533, vec![65533, 10]));
        let other = Identity {
            uid: 5,
            gid: 6,
            groups: vec![],
        };
        assert_eq!(Squash::Root.apply(other.clone(), 1, 1), other);
    }

    #[test]
    fn all_squash_maps_everyone() {
        let id = Squash::All.apply(
            Identity {
                uid: 5,
                gid: 6,
                groups: vec![7],
            },
            9,
            9,
        );
        assert_eq!((id.uid, id.gid, id.groups.len()), (9, 9, 0));
    }
}
