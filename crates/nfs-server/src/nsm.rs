//! NSM, the network status monitor (rpc.statd's protocol, program 100024 version 1), and the
//! reboot bookkeeping NLM needs from it.
//!
//! This module owns:
//! - our NSM state number, kept in the state directory and raised at every start (odd while
//!   up), so peers can tell that we restarted;
//! - the durable list of hosts holding NLM locks (name and address), rewritten atomically
//!   whenever a host gains its first or loses its last lock, and read at start to send each
//!   of them SM_NOTIFY, so they reclaim their locks during the grace period;
//! - the NSM service: SM_STAT, SM_MON, SM_UNMON, SM_UNMON_ALL, SM_SIMU_CRASH and SM_NOTIFY,
//!   where SM_NOTIFY (a client rebooted) releases everything that client held, via
//!   [`crate::nlm::NlmState::host_rebooted`], if it comes from where that client's lock
//!   requests came from; SM_SIMU_CRASH is taken only from a local peer
//!   ([`crate::nlm::peers`]). Both are answered either way (their replies carry nothing).
//!
//! It does not know about locks themselves (that is [`crate::nlm`] over [`crate::locks`]).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oncrpc::client::{self, Call, CallCred, Transport};
use oncrpc::{CallArgs, CallContext, CallNames, Reply, ReplySender, RpcService};
use tracing::{debug, info, warn};

use crate::nlm::wire::{Dec, Enc, SM_MAXSTRLEN};
use crate::nlm::{NlmState, Notified};
use crate::statefile::StateFiles;

/// NSM's RPC program number.
pub const NSM_PROGRAM: u32 = 100_024;
/// The only NSM version.
pub const NSM_VERSION: u32 = 1;
const SM_NOTIFY: u32 = 6;
const STATE_FILE: &str = "nsm-state";
const HOSTS_FILE: &str = "nlm-hosts";
/// SM_MON registrations kept (only a local lock manager registers; ours is in-process).
const MAX_MONITORS: usize = 1024;

/// One SM_MON registration: who to watch, and who asked (`my_name`, prog, vers, proc).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Monitor {
    mon_name: Vec<u8>,
    my_name: Vec<u8>,
    my_prog: u32,
    my_vers: u32,
    my_proc: u32,
}

/// Our NSM state and the hosts we would have to notify after a restart.
pub struct Nsm {
    dir: PathBuf,
    state: AtomicU32,
    hosts: Mutex<BTreeMap<Vec<u8>, IpAddr>>,
    monitors: Mutex<Vec<Monitor>>,
}

impl Nsm {
    /// Reads the state directory: raises the state number to the next odd value and keeps it,
    /// and loads the hosts that held locks before this start (they stay listed until they are
    /// released, so a second restart before they reclaim notifies them again). Blocking.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let old = std::fs::read_to_string(state_dir.join(STATE_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0);
        // The next odd number (odd: up); after 2^32 - 1 it starts again from 1.
        let state = old
            .checked_add(1)
            .map(|n| n | 1)
            .filter(|n| *n > old)
            .unwrap_or(1);
        write_atomically(&state_dir.join(STATE_FILE), format!("{state}\n").as_bytes())?;
        let hosts = std::fs::read_to_string(state_dir.join(HOSTS_FILE))
            .map(|s| parse_hosts(&s))
            .unwrap_or_default();
        Ok(Self {
            dir: state_dir.to_owned(),
            state: AtomicU32::new(state),
            hosts: Mutex::new(hosts),
            monitors: Mutex::new(Vec::new()),
        })
    }

    /// Our current state number (odd: up).
    pub fn state(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }

    fn hosts_guard(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, IpAddr>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every host listed (name, address).
    pub fn hosts(&self) -> Vec<(Vec<u8>, IpAddr)> {
        self.hosts_guard()
            .iter()
            .map(|(n, a)| (n.clone(), *a))
            .collect()
    }

    /// Records that `name` at `addr` holds locks; writes the list if it changed and waits
    /// until it is on disk. Blocking.
    pub fn note(&self, name: &[u8], addr: IpAddr) {
        let mut hosts = self.hosts_guard();
        if hosts.get(name) == Some(&addr) {
            return;
        }
        hosts.insert(name.to_vec(), addr);
        let seq = self.save(&hosts);
        drop(hosts);
        StateFiles::global().wait(seq);
    }

    /// Records that `name` holds no locks any more; writes the list and waits until it is on
    /// disk. Blocking.
    pub fn forget(&self, name: &[u8]) {
        let mut hosts = self.hosts_guard();
        if hosts.remove(name).is_some() {
            let seq = self.save(&hosts);
            drop(hosts);
            StateFiles::global().wait(seq);
        }
    }

    /// Hands the list to the state-file writer (no I/O under the lock); returns what to wait
    /// for.
    fn save(&self, hosts: &BTreeMap<Vec<u8>, IpAddr>) -> u64 {
        StateFiles::global().submit(self.dir.join(HOSTS_FILE), format_hosts(hosts).into_bytes())
    }

    fn monitors(&self) -> std::sync::MutexGuard<'_, Vec<Monitor>> {
        self.monitors.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// This machine's host name (what we call ourselves in SM_NOTIFY and callbacks).
pub fn local_host_name() -> Vec<u8> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        buf.split(|b| *b == 0).next().unwrap_or(&[]).to_vec()
    } else {
        Vec::new()
    };
    if name.is_empty() {
        b"localhost".to_vec()
    } else {
        name
    }
}

/// At start (before any client is served): the state number must be on disk before anyone
/// is told it.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    export_store::registry::write_atomically(path, bytes, 0o600)
}

/// One line per host: the address, a space, the name in hex (names are arbitrary bytes).
fn format_hosts(hosts: &BTreeMap<Vec<u8>, IpAddr>) -> String {
    hosts
        .iter()
        .map(|(name, addr)| {
            let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
            format!("{addr} {hex}\n")
        })
        .collect()
}

fn parse_hosts(text: &str) -> BTreeMap<Vec<u8>, IpAddr> {
    text.lines()
        .filter_map(|line| {
            let (addr, hex) = line.split_once(' ')?;
            let addr = addr.parse().ok()?;
            if !hex.len().is_multiple_of(2) || hex.len() > 2 * SM_MAXSTRLEN {
                return None;
            }
            let name = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some((name, addr))
        })
        .collect()
}

/// `stat_chge`: the SM_NOTIFY arguments.
pub fn encode_notify(mon_name: &[u8], state: u32) -> Vec<u8> {
    let mut e = Enc::default();
    e.opaque(&mon_name[..mon_name.len().min(SM_MAXSTRLEN)])
        .u32(state);
    e.0
}

/// Sends SM_NOTIFY (`our_name`, `state`) to the statd of each host, in the background: the
/// host's portmapper (on `portmap_port`) is asked where statd listens over UDP, then TCP; each
/// host is tried a few times with growing pauses. Never blocks the caller.
pub fn notify_hosts(
    hosts: Vec<(Vec<u8>, IpAddr)>,
    our_name: Vec<u8>,
    state: u32,
    portmap_port: u16,
) {
    for (name, addr) in hosts {
        let our_name = our_name.clone();
        tokio::spawn(async move {
            let shown = String::from_utf8_lossy(&name).into_owned();
            let mut pause = Duration::from_millis(500);
            for attempt in 1..=6 {
                match notify_once(addr, portmap_port, &our_name, state).await {
                    Ok(transport) => {
                        info!(host = %shown, %addr, state, ?transport, "sent SM_NOTIFY");
                        return;
                    }
                    Err(e) => debug!(host = %shown, %addr, attempt, error = %e, "SM_NOTIFY failed"),
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            warn!(host = %shown, %addr, "gave up sending SM_NOTIFY; its locks may not be reclaimed");
        });
    }
}

async fn notify_once(
    addr: IpAddr,
    portmap_port: u16,
    our_name: &[u8],
    state: u32,
) -> Result<Transport, client::ClientError> {
    let timeout = Duration::from_secs(3);
    let args = encode_notify(our_name, state);
    let cred = CallCred::Root {
        machine_name: our_name.to_vec(),
    };
    let call = Call {
        prog: NSM_PROGRAM,
        vers: NSM_VERSION,
        proc_: SM_NOTIFY,
        cred: &cred,
        args: &args,
    };
    let portmapper = SocketAddr::new(addr, portmap_port);
    let mut last = client::ClientError::NotRegistered;
    for transport in [Transport::Udp, Transport::Tcp] {
        let port =
            match client::getport(portmapper, NSM_PROGRAM, NSM_VERSION, transport, timeout).await {
                Ok(p) => p,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
        match client::call(SocketAddr::new(addr, port), transport, &call, timeout).await {
            Ok(_) => return Ok(transport),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The NSM program.
pub struct NsmService {
    nsm: Arc<Nsm>,
    nlm: Arc<NlmState>,
}

impl NsmService {
    pub fn new(nsm: Arc<Nsm>, nlm: Arc<NlmState>) -> Self {
        Self { nsm, nlm }
    }

    fn sm_stat_res(&self, ok: bool) -> Reply {
        let mut e = Enc::default();
        e.u32(if ok { 0 } else { 1 }).u32(self.nsm.state());
        Reply::Success(e.0)
    }

    fn sm_stat(&self) -> Reply {
        let mut e = Enc::default();
        e.u32(self.nsm.state());
        Reply::Success(e.0)
    }
}

fn my_id(d: &mut Dec<'_>) -> Option<(Vec<u8>, u32, u32, u32)> {
    Some((d.opaque(SM_MAXSTRLEN)?, d.u32()?, d.u32()?, d.u32()?))
}

fn mon_id(d: &mut Dec<'_>) -> Option<Monitor> {
    let mon_name = d.opaque(SM_MAXSTRLEN)?;
    let (my_name, my_prog, my_vers, my_proc) = my_id(d)?;
    Some(Monitor {
        mon_name,
        my_name,
        my_prog,
        my_vers,
        my_proc,
    })
}

impl RpcService for NsmService {
    fn program(&self) -> u32 {
        NSM_PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (NSM_VERSION, NSM_VERSION)
    }

    fn call_names(&self, _vers: u32, proc_: u32) -> CallNames {
        const NAMES: [&str; 7] = [
            "NULL",
            "SM_STAT",
            "SM_MON",
            "SM_UNMON",
            "SM_UNMON_ALL",
            "SM_SIMU_CRASH",
            "SM_NOTIFY",
        ];
        CallNames {
            program: "status",
            version: "1",
            procedure: NAMES.get(proc_ as usize).copied().unwrap_or("unknown"),
        }
    }

    fn call(&self, ctx: CallContext, args: CallArgs, reply: ReplySender) {
        let d = &mut Dec::new(args.bytes());
        let answer = match ctx.proc_ {
            0 => Reply::Success(Vec::new()),
            // SM_STAT: we are up; our state.
            1 => match d.opaque(SM_MAXSTRLEN) {
                Some(_) => self.sm_stat_res(true),
                None => Reply::GarbageArgs,
            },
            // SM_MON: remember the registration.
            2 => match (mon_id(d), d.fixed(16)) {
                (Some(m), Some(_priv)) => {
                    let mut monitors = self.nsm.monitors();
                    let known = monitors.contains(&m);
                    if !known && monitors.len() >= MAX_MONITORS {
                        drop(monitors);
                        self.sm_stat_res(false)
                    } else {
                        if !known {
                            monitors.push(m);
                        }
                        drop(monitors);
                        self.sm_stat_res(true)
                    }
                }
                _ => Reply::GarbageArgs,
            },
            3 => match mon_id(d) {
                Some(m) => {
                    self.nsm.monitors().retain(|x| x != &m);
                    self.sm_stat()
                }
                None => Reply::GarbageArgs,
            },
            4 => match my_id(d) {
                Some((name, prog, vers, proc_)) => {
                    self.nsm.monitors().retain(|x| {
                        (&x.my_name, x.my_prog, x.my_vers, x.my_proc) != (&name, prog, vers, proc_)
                    });
                    self.sm_stat()
                }
                None => Reply::GarbageArgs,
            },
            // SM_SIMU_CRASH: as if we had restarted: a new (odd) state number.
            5 if !self.nlm.is_local(ctx.peer.ip()) => {
                if let Some(suppressed) = oncrpc::throttle::allow("nsm_simu_crash_ignored") {
                    warn!(
                        peer = %ctx.peer,
                        suppressed,
                        "SM_SIMU_CRASH ignored: only the local lock manager may send it"
                    );
                }
                Reply::Success(Vec::new())
            }
            5 => {
                let state = self.nsm.state.fetch_add(2, Ordering::Relaxed) + 2;
                let path = self.nsm.dir.join(STATE_FILE);
                StateFiles::global().submit(path, format!("{state}\n").into_bytes());
                Reply::Success(Vec::new())
            }
            // SM_NOTIFY: the peer restarted; everything it held is gone.
            6 => match (d.opaque(SM_MAXSTRLEN), d.u32()) {
                (Some(name), Some(state)) => {
                    let nlm = Arc::clone(&self.nlm);
                    let peer = ctx.peer.ip();
                    tokio::task::spawn_blocking(move || {
                        match nlm.host_rebooted(&name, peer) {
                            Notified::Released(released) => info!(
                                host = %String::from_utf8_lossy(&name),
                                %peer,
                                state,
                                released,
                                "SM_NOTIFY: the host restarted; its locks are released"
                            ),
                            // Logged (at a bounded rate) by host_rebooted.
                            Notified::Ignored => {}
                        }
                        reply.send(Reply::Success(Vec::new()));
                    });
                    return;
                }
                _ => Reply::GarbageArgs,
            },
            _ => Reply::ProcUnavail,
        };
        reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_list_survives_a_round_trip_and_ignores_junk() {
        let mut hosts = BTreeMap::new();
        hosts.insert(b"client a".to_vec(), "10.0.0.1".parse().unwrap());
        hosts.insert(vec![0, 255, b'\n'], "::1".parse().unwrap());
        let text = format_hosts(&hosts);
        assert_eq!(parse_hosts(&text), hosts);
        let junk = format!("{text}garbage\n1.2.3.4 abc\nnot-an-ip 6161\n1.2.3.4 zz\n");
        assert_eq!(parse_hosts(&junk), hosts);
    }

    #[test]
    fn state_number_is_odd_and_grows_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let first = Nsm::open(dir.path()).unwrap().state();
        let second = Nsm::open(dir.path()).unwrap().state();
        assert_eq!(first % 2, 1);
        assert_eq!(second % 2, 1);
        assert!(second > first);
        std::fs::write(dir.path().join(STATE_FILE), "10\n").unwrap();
        assert_eq!(Nsm::open(dir.path()).unwrap().state(), 11);
    }

    #[test]
    fn hosts_are_written_whatever_identity_the_thread_carries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let nsm = Nsm::open(dir.path()).unwrap();
        crate::statefile::on_a_user_thread(|| nsm.note(b"client", "10.0.0.9".parse().unwrap()));
        let again = Nsm::open(dir.path()).unwrap();
        assert_eq!(again.hosts().len(), 1);
    }

    #[test]
    fn noted_hosts_are_persisted_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let nsm = Nsm::open(dir.path()).unwrap();
        nsm.note(b"a", "10.0.0.1".parse().unwrap());
        nsm.note(b"b", "10.0.0.2".parse().unwrap());
        nsm.forget(b"a");
        let again = Nsm::open(dir.path()).unwrap();
        assert_eq!(
            again.hosts(),
            vec![(b"b".to_vec(), "10.0.0.2".parse().unwrap())]
        );
    }
}
