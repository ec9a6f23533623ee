//! The default executor behind [`EventLoop::run_in_executor`]: a bounded pool of
//! blocking threads, one pool per loop, created on first use.
//!
//! Jobs enter a crossbeam-deque `Injector`; a worker takes a batch of them into its
//! own deque and works through it, and a worker with nothing to do steals from the
//! injector or from the other workers' deques. Threads are started lazily (a job is
//! queued, no worker is idle, and there are fewer than the maximum), park on a
//! condvar when there is no work (no spinning), and exit after being idle for a
//! while. Results go back to the loop through [`Remote`], whose waker takes the
//! loop's threadsafe path.
//!
//! No lost wakeups: a producer publishes its job and then reads the idle count; a
//! worker about to park publishes itself as idle and then looks for work again.
//! Both sides put a SeqCst fence between the two steps, so at least one of them
//! sees the other: either the producer wakes the worker, or the worker finds the
//! job.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use crate::error::panic_message;
use crate::remote::{self, Remote};
use crate::{Error, EventLoop};

/// How long a worker waits for work before its thread exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A queued job. Called with `None` it runs; called with `Some(error)` it completes
/// its `Remote` with that error instead (the pool could not start a thread for it).
/// Dropped without a call, its `Remote` resolves to `Err(Error::Cancelled)`.
type Job = Box<dyn FnOnce(Option<Error>) + Send>;

/// asyncio's (and `concurrent.futures`') default: `min(32, cpus + 4)` threads.
fn default_max_threads() -> usize {
    (num_cpus::get() + 4).min(32)
}

/// What the workers and the loop change together, under one mutex.
struct PoolState {
    /// Live worker threads (started, not yet exited).
    threads: usize,
    /// Parked workers that nobody has woken yet.
    idle: usize,
    /// Wakeups sent but not yet taken by a parked worker.
    wakeups: usize,
    /// No new jobs; workers finish the queue and exit.
    shutdown: bool,
    next_id: usize,
    handles: Vec<JoinHandle<()>>,
}

struct Pool {
    injector: Injector<Job>,
    /// The deques of the live workers, by worker id, for stealing.
    stealers: RwLock<Vec<(usize, Stealer<Job>)>>,
    state: Mutex<PoolState>,
    /// Parked workers wait here.
    wake: Condvar,
    /// `shutdown` waits here for the workers to exit.
    exited: Condvar,
    /// Copies of `state.idle` and `state.threads`, readable without the lock.
    idle: AtomicUsize,
    threads: AtomicUsize,
    /// A shutdown timed out: queued jobs are dropped (their `Remote`s say
    /// `Cancelled`) instead of run.
    abandon: AtomicBool,
    max_threads: usize,
    idle_timeout: Duration,
}

impl Pool {
    fn new(max_threads: usize, idle_timeout: Duration) -> Self {
        Pool {
            injector: Injector::new(),
            stealers: RwLock::new(Vec::new()),
            state: Mutex::new(PoolState {
                threads: 0,
                idle: 0,
                wakeups: 0,
                shutdown: false,
                next_id: 0,
                handles: Vec::new(),
            }),
            wake: Condvar::new(),
            exited: Condvar::new(),
            idle: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            abandon: AtomicBool::new(false),
            max_threads: max_threads.max(1),
            idle_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Only our own bookkeeping runs under this lock (never user code), so a
        // poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stealers(&self) -> std::sync::RwLockReadGuard<'_, Vec<(usize, Stealer<Job>)>> {
        self.stealers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, st: &PoolState) {
        self.idle.store(st.idle, SeqCst);
        self.threads.store(st.threads, SeqCst);
    }

    /// Queues `job`: wakes an idle worker, or starts a thread if there is none and
    /// the pool is not full (otherwise a busy worker will take it).
    fn execute(self: &Arc<Self>, job: Job) {
        self.injector.push(job);
        fence(SeqCst);
        if self.idle.load(SeqCst) == 0 && self.threads.load(SeqCst) >= self.max_threads {
            return; // the fast path: every worker is busy and will come back for it
        }
        let mut st = self.lock();
        if st.idle > 0 {
            self.wake_one(&mut st);
            return;
        }
        if st.threads >= self.max_threads {
            return;
        }
        st.threads += 1;
        let id = st.next_id;
        st.next_id += 1;
        st.handles.retain(|h| !h.is_finished());
        self.publish(&st);
        drop(st);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("shardloop-executor-{id}"))
            .spawn(move || pool.work(id));
        let mut st = self.lock();
        match spawned {
            Ok(handle) => st.handles.push(handle),
            Err(e) => {
                st.threads -= 1;
                self.publish(&st);
                let stranded = st.threads == 0;
                drop(st);
                log::error!("the blocking executor could not start a thread: {e}");
                if stranded {
                    // No worker will ever take the queued jobs: fail them, not lose them.
                    self.fail_queued(&e);
                }
            }
        }
    }

    fn fail_queued(&self, e: &std::io::Error) {
        loop {
            match self.injector.steal() {
                Steal::Success(job) => job(Some(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("the blocking executor could not start a thread: {e}"),
                )))),
                Steal::Retry => {}
                Steal::Empty => return,
            }
        }
    }

    fn wake_one(&self, st: &mut PoolState) {
        st.idle -= 1;
        st.wakeups += 1;
        self.publish(st);
        self.wake.notify_one();
    }

    /// A worker holds more queued jobs than the one it runs: wake an idle worker to
    /// steal some, so that no job waits behind a long one while a thread sleeps.
    fn share_work(&self) {
        fence(SeqCst);
        if self.idle.load(SeqCst) > 0 {
            let mut st = self.lock();
            if st.idle > 0 {
                self.wake_one(&mut st);
            }
        }
    }

    /// The next job for the worker owning `local`: its own deque first, then a batch
    /// from the injector, then a batch stolen from another worker.
    fn find_job(&self, local: &Worker<Job>) -> Option<Job> {
        if let Some(job) = local.pop() {
            return Some(job);
        }
        loop {
            let mut retry = false;
            match self.injector.steal_batch_and_pop(local) {
                Steal::Success(job) => return Some(job),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            for (_, stealer) in self.stealers().iter() {
                match stealer.steal_batch_and_pop(local) {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers().iter().any(|(_, s)| !s.is_empty())
    }

    /// Parks a worker that found no work. Returns false when its thread should exit
    /// (idle too long, or shut down with nothing left to do).
    fn park(&self) -> bool {
        let mut st = self.lock();
        st.idle += 1;
        self.publish(&st);
        fence(SeqCst);
        let deadline = Instant::now().checked_add(self.idle_timeout);
        loop {
            if st.wakeups > 0 {
                // A producer woke us and already took us off the idle count.
                st.wakeups -= 1;
                return true;
            }
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if self.has_work() || st.shutdown || expired {
                st.idle -= 1;
                if self.has_work() {
                    self.publish(&st);
                    return true;
                }
                st.threads -= 1;
                self.publish(&st);
                self.exited.notify_all();
                return false;
            }
            st = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// A worker thread's life: run jobs while there are any, park when there are
    /// none, exit when parked too long or shut down.
    fn work(self: Arc<Self>, id: usize) {
        let local = Worker::new_fifo();
        self.stealers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, local.stealer()));
        loop {
            if let Some(job) = self.find_job(&local) {
                if self.abandon.load(SeqCst) {
                    drop(job);
                    continue;
                }
                if !local.is_empty() {
                    self.share_work();
                }
                // The job catches the user's panics itself; this catches the rest
                // (a panicking destructor of a result nobody awaits) so that the
                // thread and the pool's counts survive.
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job(None))) {
                    log::error!(
                        "a blocking executor job panicked outside its function: {}",
                        panic_message(&*payload)
                    );
                }
            } else if !self.park() {
                break;
            }
        }
        self.stealers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != id);
    }

    /// Stops the pool. Queued and running jobs finish; with `wait`, blocks until the
    /// threads exit or the time is up (then the jobs still queued are dropped and
    /// `Err(Error::Timeout)` is returned).
    fn shutdown(&self, wait: Option<Duration>) -> Result<(), Error> {
        let mut st = self.lock();
        st.shutdown = true;
        self.wake.notify_all();
        let Some(wait) = wait else {
            return Ok(());
        };
        let deadline = Instant::now().checked_add(wait);
        while st.threads > 0 {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                self.abandon.store(true, SeqCst);
                return Err(Error::Timeout);
            }
            st = self
                .exited
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let handles = std::mem::take(&mut st.handles);
        drop(st);
        for h in handles {
            // The thread has left its loop; this only waits for it to unwind.
            let _ = h.join();
        }
        Ok(())
    }
}

/// A loop's default executor: created on first use, refused after shutdown.
#[derive(Default)]
pub(crate) struct LoopExecutor {
    pool: RefCell<Option<Arc<Pool>>>,
    shut_down: Cell<bool>,
    /// Overrides [`IDLE_TIMEOUT`] for a pool not yet created (tests).
    idle_timeout: Cell<Option<Duration>>,
}

impl LoopExecutor {
    fn pool(&self) -> Result<Arc<Pool>, Error> {
        if self.shut_down.get() {
            return Err(Error::Closed);
        }
        let mut pool = self.pool.borrow_mut();
        let pool = pool.get_or_insert_with(|| {
            Arc::new(Pool::new(
                default_max_threads(),
                self.idle_timeout.get().unwrap_or(IDLE_TIMEOUT),
            ))
        });
        Ok(pool.clone())
    }

    /// Refuses new jobs and stops the pool; with `wait`, joins its threads.
    fn shutdown(&self, wait: Option<Duration>) -> Result<(), Error> {
        self.shut_down.set(true);
        let pool = self.pool.borrow_mut().take();
        match pool {
            Some(pool) => pool.shutdown(wait),
            None => Ok(()),
        }
    }

    /// The loop closes: stop the pool without waiting. Jobs already queued still
    /// run (like `concurrent.futures`' `shutdown(wait=False)`), then the threads exit.
    pub(crate) fn close(&self) {
        let _ = self.shutdown(None);
    }
}

impl Drop for LoopExecutor {
    fn drop(&mut self) {
        self.close();
    }
}

impl EventLoop {
    /// Runs the blocking function `f` on the loop's default executor and returns its
    /// result as a [`Remote`], which the loop awaits (asyncio's
    /// `run_in_executor(None, f)`).
    ///
    /// The executor is a bounded pool of `min(32, cpus + 4)` threads, started on
    /// first use, whose idle threads exit after a while. A panic in `f` resolves to
    /// `Err(Error::Panicked(message))`. On a closed loop, or after
    /// [`shutdown_default_executor`](Self::shutdown_default_executor), the result is
    /// `Err(Error::Closed)`. Dropping the `Remote` does not stop `f`; [`Remote::cancel`]
    /// skips it if it has not started yet.
    ///
    /// ```
    /// let lp = shardloop::new_event_loop()?;
    /// let out = lp.run_until_complete(async {
    ///     let lp = shardloop::get_running_loop().unwrap();
    ///     lp.run_in_executor(|| std::fs::metadata("/").is_ok()).await
    /// })?;
    /// assert!(out?);
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn run_in_executor<F, T>(&self, f: F) -> Remote<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (remote, completer) = remote::pair();
        let pool = if self.is_closed() {
            Err(Error::Closed)
        } else {
            self.inner.executor.pool()
        };
        match pool {
            Err(e) => completer.complete(Err(e)),
            Ok(pool) => pool.execute(Box::new(move |refused| {
                if let Some(e) = refused {
                    return completer.complete(Err(e));
                }
                if completer.is_cancelled() {
                    return; // the Remote already says Cancelled
                }
                let result = catch_unwind(AssertUnwindSafe(f))
                    .map_err(|payload| Error::Panicked(panic_message(&*payload)));
                completer.complete(result);
            })),
        }
        remote
    }

    /// Shuts the default executor down (asyncio's `shutdown_default_executor`): no
    /// new jobs are accepted (later [`run_in_executor`](Self::run_in_executor) calls
    /// give `Err(Error::Closed)`), the jobs already queued or running finish, and
    /// its threads are joined.
    ///
    /// Blocks this thread for up to `timeout`. If the jobs have not finished by then,
    /// the ones not yet started are dropped (their results say `Err(Cancelled)`), the
    /// running ones are left to finish on their own, and `Err(Error::Timeout)` is
    /// returned. Do not wait here for a job that itself waits for this loop.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lp = shardloop::new_event_loop()?;
    /// let job = lp.run_in_executor(|| 2 + 2);
    /// lp.shutdown_default_executor(Duration::from_secs(30))?;
    /// assert_eq!(lp.run_until_complete(job)??, 4);
    /// let late = lp.run_until_complete(lp.run_in_executor(|| 0))?;
    /// assert!(matches!(late, Err(shardloop::Error::Closed)));
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn shutdown_default_executor(&self, timeout: Duration) -> Result<(), Error> {
        self.inner.executor.shutdown(Some(timeout))
    }
}

#[cfg(test)]
mod tests;
