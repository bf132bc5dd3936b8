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
    static SERVING: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one that only serves clients' calls (the NFS server's own
/// workers): the identity a call leaves on it is kept for the next call, so consecutive calls
/// from one user cost no system calls. Every other thread is root between calls
/// (see [`Scope`]).
pub fn serve_on_this_thread() {
    SERVING.set(true);
}

/// Whether the calling thread was marked with [`serve_on_this_thread`].
pub fn is_serving_thread() -> bool {
    SERVING.get()
}

/// Scopes the identity switches made while it lives: when it is dropped the thread is root
/// again, unless it is a serving thread (whose next call sets its own identity anyway).
/// Work that runs a client's call on a shared thread (an async reactor thread, a blocking
/// pool shared with the server's own state writers) holds one for the whole call.
#[must_use = "the identity is restored when the scope is dropped"]
pub struct Scope(());

impl Scope {
    pub fn enter() -> Self {
        Self(())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if !SERVING.get()
            && CURRENT.with(|c| c.borrow().as_ref().is_none_or(|id| !id.is_root()))
            && let Err(e) = become_root()
        {
            tracing::error!(error = %e, "cannot switch a thread back to root");
        }
    }
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
    fn a_scope_leaves_a_shared_thread_root_and_a_serving_thread_as_it_was() {
        let user = Identity {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let fsuid = || unsafe { libc::setfsuid(u32::MAX) };
        std::thread::spawn(move || {
            {
                let _scope = Scope::enter();
                become_identity(&user).unwrap();
                assert_eq!(fsuid(), 1000);
            }
            assert_eq!(fsuid(), 0, "a shared thread is root after the scope");
            serve_on_this_thread();
            {
                let _scope = Scope::enter();
                become_identity(&user).unwrap();
            }
            assert_eq!(
                fsuid(),
                1000,
                "a serving thread keeps the identity for the next call"
            );
            become_root().unwrap();
        })
        .join()
        .unwrap();
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
