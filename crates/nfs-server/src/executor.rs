//! The threads that run clients' file-system work.
//!
//! A fixed set of threads owned by the NFS server, fed through one queue. They run nothing
//! else: the identity a call switches a thread to (`export_store::cred`) never leaks into
//! the provisioner's or the state writers' work, and a thread keeps the last caller's
//! identity so consecutive calls from one user cost no system calls. Threads that wait for
//! the disk (a shared directory fsync, a stable write) wait here, not on the async reactor.
//!
//! An idle thread waits on its own; a new call wakes the thread that went idle last. With
//! few calls in flight one or two warm threads then do all the work, instead of each call
//! waking the coldest of 64 (a condition variable wakes waiters in arrival order). A lone
//! call that arrives while the only busy thread is sending its reply wakes nobody: that
//! thread takes it next (with one call in flight, the client's next call often arrives
//! before the thread that answered the last one is back at the queue).
//!
//! The queue holds only calls that have been read and admitted by the RPC layer, whose
//! per-connection limit on calls in flight and connection limit bound it; it needs no bound
//! of its own. A job that panics is caught: its call is answered by the RPC layer's guard and
//! the thread goes on.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;

use prometheus_client::metrics::gauge::Gauge;

/// One unit of work: a call to run and answer.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Worker threads serving calls.
pub struct Executor {
    queue: Arc<Queue>,
    threads: usize,
}

#[derive(Default)]
struct Queue {
    jobs: Mutex<Jobs>,
    /// Threads whose call is done (its reply being sent, or sent) and that have not yet come
    /// back to the queue.
    finishing: AtomicUsize,
    /// Busy threads and queued calls, once metrics are kept.
    gauges: OnceLock<(Gauge, Gauge)>,
}

#[derive(Default)]
struct Jobs {
    waiting: VecDeque<Job>,
    /// Threads waiting for a call, the one that went idle last at the end.
    idle: Vec<Thread>,
    /// Threads that took a call and have not come back for the next.
    running: usize,
    closed: bool,
}

/// Threads when nothing says otherwise: as many as one connection may have calls in flight,
/// so that a burst of creates from one client all wait for the same shared directory fsync
/// (measured: 16 threads left CREATE and REMOVE at 64 in flight below NFS-Ganesha on a
/// journaled ext4, 64 put them above); each idle thread costs a few pages.
pub const DEFAULT_THREADS: usize = 64;

impl Executor {
    /// Starts `threads` workers (at least one). Called inside a tokio runtime, the workers
    /// run in its context (a call may start async work, e.g. a callback probe).
    pub fn new(threads: usize) -> Arc<Self> {
        let threads = threads.max(1);
        let queue = Arc::new(Queue::default());
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut started = 0;
        for i in 0..threads {
            let q = Arc::clone(&queue);
            let rt = runtime.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("nfs-worker-{i}"))
                // Calls need little stack: no recursion, buffers on the heap.
                .stack_size(256 * 1024)
                .spawn(move || {
                    let _context = rt.as_ref().map(tokio::runtime::Handle::enter);
                    work(&q);
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "cannot start an NFS worker thread"),
            }
        }
        assert!(started > 0, "no NFS worker thread could be started");
        Arc::new(Self {
            queue,
            threads: started,
        })
    }

    /// How many threads run calls.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues `job` for the next free thread.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let mut jobs = self.queue.lock();
        jobs.waiting.push_back(Box::new(job));
        // One call, with every running thread done with its own and about to look at the
        // queue: it is left to them, without a wake-up. With one call in flight on a busy CPU
        // that saves a second thread's switch in and out. Not when some thread is still at
        // work (waiting for the disk, say) or more calls wait: a finishing thread may be
        // preempted before it looks, and the calls would wait for it beside idle threads.
        let coming = self.queue.finishing.load(Ordering::SeqCst);
        let leave = jobs.waiting.len() == 1 && coming > 0 && jobs.running <= coming;
        let wake = if leave { None } else { jobs.idle.pop() };
        drop(jobs);
        if let Some((_, queued)) = self.queue.gauges.get() {
            queued.inc();
        }
        if let Some(thread) = wake {
            thread.unpark();
        }
    }

    /// Queues a call that makes its reply with `call` and sends it with `send`. Between the
    /// two the thread counts as finishing: sending may wake the client, which on a busy CPU
    /// runs first and sends its next call before this thread is back at the queue; that call
    /// is then left to this thread, warm and about to look, instead of waking another.
    pub fn run_then_send<R: 'static>(
        &self,
        call: impl FnOnce() -> R + Send + 'static,
        send: impl FnOnce(R) + Send + 'static,
    ) {
        let queue = Arc::clone(&self.queue);
        self.run(move || {
            let reply = call();
            queue.finishing.fetch_add(1, Ordering::SeqCst);
            SAID_FINISHING.set(true);
            send(reply);
        });
    }

    /// Keeps `busy` (threads running a call) and `queued` (calls waiting) up to date.
    pub fn observe(&self, busy: Gauge, queued: Gauge) {
        let _ = self.queue.gauges.set((busy, queued));
    }

    /// Calls queued and not yet started.
    pub fn queued(&self) -> usize {
        self.queue.lock().waiting.len()
    }
}

impl Drop for Executor {
    /// The threads finish the queued calls and end.
    fn drop(&mut self) {
        let mut jobs = self.queue.lock();
        jobs.closed = true;
        let idle = std::mem::take(&mut jobs.idle);
        drop(jobs);
        for thread in idle {
            thread.unpark();
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

thread_local! {
    /// On a worker: whether the running call has already counted itself as finishing.
    static SAID_FINISHING: Cell<bool> = const { Cell::new(false) };
}

fn work(queue: &Queue) {
    export_store::cred::serve_on_this_thread();
    oncrpc::server::reply_directly_from_this_thread();
    let me = std::thread::current();
    let mut finished = false;
    loop {
        let job = {
            let mut jobs = queue.lock();
            if finished {
                queue.finishing.fetch_sub(1, Ordering::SeqCst);
                jobs.running -= 1;
            }
            loop {
                if let Some(job) = jobs.waiting.pop_front() {
                    jobs.running += 1;
                    break job;
                }
                if jobs.closed {
                    return;
                }
                jobs.idle.push(me.clone());
                drop(jobs);
                std::thread::park();
                jobs = queue.lock();
                // Woken without being taken off the list (a spurious wake-up): leave it, so
                // that a call never wakes a thread that is not waiting.
                if let Some(i) = jobs.idle.iter().rposition(|t| t.id() == me.id()) {
                    jobs.idle.remove(i);
                }
            }
        };
        let gauges = queue.gauges.get();
        if let Some((busy, queued)) = gauges {
            queued.dec();
            busy.inc();
        }
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a call panicked on an NFS worker thread (a bug); the thread goes on");
        }
        if let Some((busy, _)) = gauges {
            busy.dec();
        }
        if !SAID_FINISHING.replace(false) {
            queue.finishing.fetch_add(1, Ordering::SeqCst);
        }
        finished = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn every_job_runs_on_one_of_the_named_threads_and_a_panic_does_not_stop_them() {
        let ex = Executor::new(3);
        assert_eq!(ex.threads(), 3);
        let (tx, rx) = mpsc::channel();
        ex.run(|| panic!("a job that panics"));
        for i in 0..100 {
            let tx = tx.clone();
            ex.run(move || {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tx.send((i, name, export_store::cred::is_serving_thread()))
                    .unwrap();
            });
        }
        let mut seen: Vec<_> = (0..100).map(|_| rx.recv().unwrap()).collect();
        seen.sort_by_key(|(i, _, _)| *i);
        for (i, (n, name, serving)) in seen.into_iter().enumerate() {
            assert_eq!(n, i);
            assert!(name.starts_with("nfs-worker-"), "{name}");
            assert!(serving);
        }
    }

    #[test]
    fn one_call_at_a_time_keeps_running_on_the_thread_that_went_idle_last() {
        let ex = Executor::new(8);
        let (tx, rx) = mpsc::channel();
        let mut names = Vec::new();
        for _ in 0..20 {
            // Every thread is waiting (and the last call's thread has gone back to waiting).
            while ex.queue.lock().idle.len() < ex.threads() {
                std::thread::yield_now();
            }
            let tx = tx.clone();
            ex.run(move || {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tx.send(name).unwrap();
            });
            names.push(rx.recv().unwrap());
        }
        // The first call takes the last thread to start waiting; every later one the same.
        assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
    }

    /// A call that arrives while the only running call sends its reply (which woke the
    /// client, who answered at once) is left to that thread. One that arrives while the
    /// running call is still working, or while another call is, wakes another thread.
    #[test]
    fn a_lone_call_arriving_as_the_only_busy_thread_finishes_is_left_to_it() {
        let ex = Executor::new(4);
        let name = || std::thread::current().name().unwrap_or("").to_string();
        for case in ["finishing", "working", "finishing beside a busy call"] {
            while ex.queue.lock().idle.len() < ex.threads() {
                std::thread::yield_now();
            }
            let (release, held) = mpsc::channel::<()>();
            if case == "finishing beside a busy call" {
                ex.run(move || {
                    let _ = held.recv();
                });
                while ex.queue.lock().running < 1 {
                    std::thread::yield_now();
                }
            }
            let (tx, rx) = mpsc::channel();
            let next = Arc::clone(&ex);
            // Long enough for a woken thread to run it on a busy machine.
            let wait =
                std::time::Duration::from_millis(if case == "finishing" { 300 } else { 10_000 });
            let send_then_next_call = move || {
                let (tx2, rx2) = mpsc::channel();
                next.run(move || tx2.send(name()).unwrap());
                // This call has not returned: the next runs elsewhere, or after it.
                let meanwhile = rx2.recv_timeout(wait).ok();
                tx.send((name(), meanwhile, rx2)).unwrap();
            };
            if case == "working" {
                ex.run(send_then_next_call);
            } else {
                ex.run_then_send(|| (), move |()| send_then_next_call());
            }
            let (first, meanwhile, rx2) = rx.recv().unwrap();
            if case == "finishing" {
                assert_eq!(meanwhile, None, "{case}: no other thread was woken for it");
                let second = rx2
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .unwrap();
                assert_eq!(second, first, "{case}");
            } else {
                let second = meanwhile.expect("another thread ran it while the first worked");
                assert_ne!(second, first, "{case}");
            }
            drop(release);
        }
        // Back at the queue, every thread has taken itself off both counts.
        while ex.queue.lock().idle.len() < ex.threads() {
            std::thread::yield_now();
        }
        assert_eq!(ex.queue.finishing.load(Ordering::SeqCst), 0);
        assert_eq!(ex.queue.lock().running, 0);
    }

    #[test]
    fn jobs_run_concurrently_up_to_the_thread_count() {
        let ex = Executor::new(4);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let (tx, rx) = mpsc::channel();
        for _ in 0..4 {
            let (running, peak, barrier, tx) = (
                Arc::clone(&running),
                Arc::clone(&peak),
                Arc::clone(&barrier),
                tx.clone(),
            );
            ex.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // All four must be running at once to pass the barrier.
                barrier.wait();
                running.fetch_sub(1, Ordering::SeqCst);
                tx.send(()).unwrap();
            });
        }
        for _ in 0..4 {
            rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        assert_eq!(ex.queued(), 0);
    }
}
