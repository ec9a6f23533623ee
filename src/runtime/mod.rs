//! The thread-per-core [`Runtime`]: one independent [`EventLoop`] per shard thread,
//! optionally pinned to its own CPU, and cross-shard work as messages.
//!
//! Nothing is shared between shards but their inboxes: [`Runtime::submit_to`] hands a
//! future's factory to a shard (the factory is `Send`, the future it makes need not be)
//! and returns a [`Remote`] for the result, to `.await` on a loop or `wait()` for on a
//! plain thread. Submitting to the shard the caller runs on skips the inbox.

mod builder;
mod pin;
mod report;
mod shard;
mod shard_hash;

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use builder::Builder;
pub use report::{ShardReport, ShutdownReport};
pub use shard_hash::{shard_index, shard_index_bytes};

use crate::event_loop::timers::deadline_after;
use crate::remote::Remote;
use crate::{Error, EventLoop, LoopHandle, LoopStats, TrySubmitError};
use shard::Control;

/// The grace period of a `Runtime` that is dropped without [`Runtime::shutdown`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The index of the shard the calling code runs on: `Some(i)` on shard `i`'s thread,
/// `None` elsewhere.
///
/// ```
/// let rt = shardloop::Runtime::builder().shards(2).build()?;
/// assert_eq!(shardloop::current_shard(), None);
/// let on = rt.submit_to(1, || async { shardloop::current_shard() }).wait()?;
/// assert_eq!(on, Some(1));
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn current_shard() -> Option<usize> {
    shard::current().map(|(_, i)| i)
}

/// A thread-per-core runtime: `len()` shard threads, each running its own
/// [`EventLoop`] forever, until [`shutdown`](Self::shutdown) (or drop, which shuts
/// down with [`DEFAULT_SHUTDOWN_GRACE`]).
///
/// `Runtime` is `Send + Sync`: share it (`Arc<Runtime>`, or by reference with scoped
/// threads) to submit from many threads.
///
/// Where a future runs: [`submit_to`](Self::submit_to) (and
/// [`submit_to_async`](Self::submit_to_async), [`try_submit`](Self::try_submit),
/// [`broadcast`](Self::broadcast)) run it on a shard. [`block_on`](Self::block_on)
/// does **not**: unlike tokio's `Runtime::block_on`, it runs the future on the
/// calling thread's own loop, which is how a main thread awaits the shards'
/// [`Remote`]s.
///
/// ```
/// let rt = shardloop::Runtime::builder().shards(2).build()?;
/// // Route by key: the same key always goes to the same shard.
/// let shard = rt.shard_for("user:42");
/// let doubled = rt.submit_to(shard, || async { 21 * 2 }).wait()?;
/// assert_eq!(doubled, 42);
/// // One future per shard, results in shard order.
/// let ids: Vec<usize> = rt
///     .broadcast(|i| async move { i })
///     .into_iter()
///     .map(|r| r.wait())
///     .collect::<Result<_, _>>()?;
/// assert_eq!(ids, [0, 1]);
/// let report = rt.shutdown(std::time::Duration::from_secs(1))?;
/// assert_eq!(report.cancelled(), 0);
/// # Ok::<(), shardloop::Error>(())
/// ```
pub struct Runtime {
    id: u64,
    handles: Vec<LoopHandle>,
    cpus: Vec<Option<usize>>,
    controls: Vec<Arc<Control>>,
    threads: Mutex<Vec<JoinHandle<Option<ShardReport>>>>,
    /// Set by shutdown: the runtime refuses new submissions.
    closed: AtomicBool,
}

impl Runtime {
    /// Settings for a new runtime.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A runtime with default settings: one shard per CPU, not pinned.
    pub fn new() -> Result<Self, Error> {
        Builder::default().build()
    }

    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: a runtime has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Shard `i`'s loop handle (for `call_soon_threadsafe`, `submit`, ...).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn shard(&self, i: usize) -> &LoopHandle {
        &self.handles[i]
    }

    /// Every shard's loop handle, in shard order.
    pub fn shards(&self) -> &[LoopHandle] {
        &self.handles
    }

    /// The CPU shard `i` is pinned to (`None` without pinning).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn pinned_cpu(&self, i: usize) -> Option<usize> {
        self.cpus[i]
    }

    /// The shard for `key`: [`shard_index`]`(key, len())`, *shard hash v1* (fixed,
    /// unseeded, the same on every platform) over the bytes the key's `Hash`
    /// writes, so the same key maps to the same shard for the life of the runtime
    /// and in every process with as many shards. For a route that peers compute
    /// from a key's bytes alone, use [`shard_index_bytes`]`(bytes, rt.len())`.
    ///
    /// ```
    /// let rt = shardloop::Runtime::builder().shards(2).build()?;
    /// assert_eq!(rt.shard_for(&"session-7"), rt.shard_for(&"session-7"));
    /// assert_eq!(rt.shard_for(&12345u64), shardloop::shard_index(&12345u64, 2));
    /// assert!(rt.shard_for(&12345u64) < rt.len());
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn shard_for<K: Hash + ?Sized>(&self, key: &K) -> usize {
        shard_index(key, self.len())
    }

    /// Runs the future made by `factory` as a task on shard `i` and returns its
    /// result as a [`Remote`] (`.await` it on a loop, `wait()` for it elsewhere).
    /// The factory crosses threads; the future it makes may be `!Send`.
    ///
    /// On shard `i`'s own thread it skips the inbox. After [`shutdown`](Self::shutdown)
    /// it resolves to `Err(Error::Closed)`. With a bounded inbox that is full, a plain
    /// thread blocks until there is room; a thread running a loop does not block:
    /// the `Remote` resolves to `Err(Error::Full)` (use
    /// [`submit_to_async`](Self::submit_to_async) to wait for room, which holds the
    /// producer back, or [`try_submit`](Self::try_submit) to get the work back).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn submit_to<F, Fut, T>(&self, i: usize, factory: F) -> Remote<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let shard = self.shard_checked(i);
        if self.is_closed() {
            return Remote::ready(Err(Error::Closed));
        }
        shard.submit(factory)
    }

    /// [`submit_to`](Self::submit_to) that waits asynchronously for room in shard
    /// `i`'s bounded inbox (at once if unbounded), then returns the [`Remote`]: the
    /// way for code on a loop to submit with backpressure.
    ///
    /// ```
    /// let rt = shardloop::Runtime::builder().shards(2).inbox_capacity(64).build()?;
    /// let rt = std::sync::Arc::new(rt);
    /// let rt2 = rt.clone();
    /// let sum = rt
    ///     .submit_to(0, move || async move {
    ///         let mut sum = 0;
    ///         for i in 0..1000u64 {
    ///             sum += rt2.submit_to_async(1, move || async move { i }).await?.await?;
    ///         }
    ///         Ok::<_, shardloop::Error>(sum)
    ///     })
    ///     .wait()??;
    /// assert_eq!(sum, 499_500);
    /// rt.shutdown(std::time::Duration::from_secs(1))?;
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    ///
    /// # Panics
    /// If `i >= len()`.
    pub async fn submit_to_async<F, Fut, T>(&self, i: usize, factory: F) -> Result<Remote<T>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let shard = self.shard_checked(i);
        if self.is_closed() {
            return Err(Error::Closed);
        }
        shard.submit_async(factory).await
    }

    /// [`submit_to`](Self::submit_to) that never waits: when shard `i`'s bounded inbox
    /// is full, or the runtime is shut down, the factory comes back in the error.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn try_submit<F, Fut, T>(
        &self,
        i: usize,
        factory: F,
    ) -> Result<Remote<T>, TrySubmitError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let shard = self.shard_checked(i);
        if self.is_closed() {
            return Err(TrySubmitError::Closed(factory));
        }
        shard.try_submit(factory)
    }

    /// Runs `factory(i)` on every shard `i`; the results in shard order.
    pub fn broadcast<F, Fut, T>(&self, factory: F) -> Vec<Remote<T>>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let factory = Arc::new(factory);
        (0..self.len())
            .map(|i| {
                let f = factory.clone();
                self.submit_to(i, move || f(i))
            })
            .collect()
    }

    /// Runs `fut` on the calling thread's own event loop, **not on a shard**, and
    /// blocks until it completes.
    ///
    /// This is not tokio's `Runtime::block_on`: no shard polls `fut`, and sockets or
    /// timers it creates belong to the calling thread's loop. To run work on the
    /// shards, hand it to them with [`submit_to`](Self::submit_to) (or
    /// [`broadcast`](Self::broadcast)) and wait for the [`Remote`]: with `wait()`
    /// from a plain thread, or by awaiting it inside `block_on`.
    ///
    /// The loop is the thread's current one ([`get_event_loop`](crate::get_event_loop));
    /// a thread without one gets a fresh loop, which becomes its current loop. On a
    /// thread whose loop is running (a shard, for one) this is
    /// `Err(Error::AlreadyRunning)`.
    ///
    /// ```
    /// use shardloop::current_shard;
    /// let rt = shardloop::Runtime::builder().shards(2).build()?;
    /// // block_on: the future runs here, on this thread's loop.
    /// assert_eq!(rt.block_on(async { current_shard() })?, None);
    /// // submit_to: the future runs on shard 1; wait() blocks this thread for it.
    /// assert_eq!(rt.submit_to(1, || async { current_shard() }).wait()?, Some(1));
    /// // Both: this thread's loop awaits what shard 0 computes.
    /// let n = rt.block_on(async { rt.submit_to(0, || async { 5 }).await })??;
    /// assert_eq!(n, 5);
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn block_on<F: Future>(&self, fut: F) -> Result<F::Output, Error> {
        let lp = match crate::get_event_loop() {
            Ok(lp) => lp,
            Err(Error::NoCurrentLoop { .. }) => {
                let lp = EventLoop::new()?;
                crate::set_event_loop(Some(lp.clone()));
                lp
            }
            Err(e) => return Err(e),
        };
        lp.run_until_complete(fut)
    }

    /// Each shard's [`LoopStats`], in shard order. Blocks until every shard answers,
    /// so it is refused with `Err(Error::BlockingInShard)` on a shard of this runtime
    /// (use [`stats_async`](Self::stats_async) there); `Err(Error::Closed)` after
    /// shutdown. Answered even when an inbox is full.
    pub fn stats(&self) -> Result<Vec<LoopStats>, Error> {
        if self.own_shard().is_some() {
            return Err(Error::BlockingInShard);
        }
        self.ask_stats()?
            .into_iter()
            .map(|rx| rx.recv().map_err(|_| Error::Closed)?)
            .collect()
    }

    /// [`stats`](Self::stats) for code on a loop.
    pub async fn stats_async(&self) -> Result<Vec<LoopStats>, Error> {
        let mut all = Vec::with_capacity(self.len());
        for rx in self.ask_stats()? {
            all.push(rx.recv_async().await.map_err(|_| Error::Closed)??);
        }
        Ok(all)
    }

    /// Asks every shard for its stats: one answer channel per shard.
    fn ask_stats(&self) -> Result<Vec<flume::Receiver<Result<LoopStats, Error>>>, Error> {
        self.handles
            .iter()
            .map(|h| {
                let (tx, rx) = flume::bounded(1);
                h.call_soon_threadsafe(move || {
                    let _ = tx.send(crate::get_running_loop().map(|lp| lp.stats()));
                })?;
                Ok(rx)
            })
            .collect()
    }

    /// Shuts the runtime down: refuses new submissions (`Err(Error::Closed)`), lets
    /// the shards run until their tasks are done and nothing is queued, or until
    /// `grace` has passed, then closes every loop (tasks still running are cancelled:
    /// their `Task` / `Remote` resolve to `Err(Error::Cancelled)`), joins the threads
    /// and reports what happened.
    ///
    /// A task that blocks its thread (instead of awaiting) delays the end past
    /// `grace`: a loop can only cancel a task at an await point.
    ///
    /// `Err(Error::Closed)` if already shut down; `Err(Error::BlockingInShard)` on a
    /// shard of this runtime (it would have to join its own thread).
    pub fn shutdown(&self, grace: Duration) -> Result<ShutdownReport, Error> {
        if self.own_shard().is_some() {
            return Err(Error::BlockingInShard);
        }
        if self.closed.swap(true, Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.stop_and_join(grace)
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Asks every shard to shut down by `now + grace`.
    fn request_shutdown(&self, grace: Duration) {
        let deadline = deadline_after(Instant::now(), grace);
        for (control, handle) in self.controls.iter().zip(&self.handles) {
            control.request_shutdown(deadline);
            handle.stop();
        }
    }

    /// Asks every shard to shut down by `now + grace`, then joins them (but not the
    /// calling thread, if it is one of them: it ends once this call returns).
    fn stop_and_join(&self, grace: Duration) -> Result<ShutdownReport, Error> {
        self.request_shutdown(grace);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let me = self.own_shard();
        let mut shards = Vec::with_capacity(threads.len());
        let mut panicked = None;
        for (i, t) in threads.into_iter().enumerate() {
            if me == Some(i) {
                continue;
            }
            match t.join() {
                Ok(Some(report)) => shards.push(report),
                Ok(None) => {}
                Err(p) => {
                    let msg = crate::error::panic_message(&*p);
                    panicked.get_or_insert(Error::Panicked(format!("shard {i}: {msg}")));
                }
            }
        }
        match panicked {
            Some(e) => Err(e),
            None => Ok(ShutdownReport { shards }),
        }
    }

    /// The calling thread's shard index, if it is a shard of this runtime.
    fn own_shard(&self) -> Option<usize> {
        shard::current()
            .filter(|(rt, _)| *rt == self.id)
            .map(|(_, i)| i)
    }

    fn shard_checked(&self, i: usize) -> &LoopHandle {
        self.handles.get(i).unwrap_or_else(|| {
            panic!(
                "shard index {i} out of range for a runtime of {} shards",
                self.len()
            )
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.own_shard().is_some() {
            // Dropped on one of its own shards (a task owned the runtime): joining
            // the others from here would block this shard's loop for the whole grace
            // period. Ask every shard to shut down and let the threads finish on
            // their own, this one as soon as this callback returns.
            self.request_shutdown(DEFAULT_SHUTDOWN_GRACE);
            drop(std::mem::take(
                &mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()),
            ));
            return;
        }
        if let Err(e) = self.stop_and_join(DEFAULT_SHUTDOWN_GRACE) {
            log::error!("shutting down the runtime on drop: {e}");
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.len())
            .field("pinned_cpus", &self.cpus)
            .field("closed", &self.is_closed())
            .finish()
    }
}
