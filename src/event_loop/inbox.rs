//! The threadsafe way into a loop: [`LoopHandle`], its inbox and its wakeup.
//!
//! One inbox per loop (a mutex around a `Vec`: a sender pushes under the lock, the
//! loop swaps the whole batch out under it, once per iteration) plus one
//! `mio::Waker` (an eventfd). A sender writes the eventfd only when the loop is
//! parked ([`Doorbell`], on a cache line of its own). A call made on the loop's own
//! thread while that loop runs skips the inbox and goes straight to the ready queue,
//! so threadsafe and plain calls from the loop thread share one FIFO.
//!
//! Closing happens under the same lock as sending: once the loop has closed its
//! inbox, every message that got in was taken out by the loop (and run or dropped),
//! and every later send is refused. No message is ever stranded in between.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;

use super::bounded::Permits;
use super::doorbell::Doorbell;
use super::mailbox::Mailbox;
use crate::current;
use crate::remote::{self, Remote};
use crate::task::TaskRef;
use crate::Error;

/// What crosses threads into a loop.
pub(crate) enum Msg {
    /// A `call_soon_threadsafe` callback.
    Call(Box<dyn FnOnce() + Send>),
    /// A submitted job holding a permit of a bounded inbox, given back when the loop
    /// takes it out.
    Submit(Box<dyn FnOnce() + Send>),
    /// A task woken on another thread (or while its loop was not running).
    Wake(TaskRef),
    /// The future of `run_until_complete` was woken on another thread.
    WakeMain,
    /// `LoopHandle::stop`.
    Stop,
}

/// A value alone on its cache line(s): the doorbell is written by every sender and
/// read by the loop on every iteration, so nothing else should share its line.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The part of a loop that other threads may touch.
pub(crate) struct Shared {
    pub(crate) doorbell: CachePadded<Doorbell>,
    inbox: Mailbox<Msg>,
    waker: mio::Waker,
    pub(crate) closed: AtomicBool,
    pub(crate) owner: ThreadId,
    pub(crate) name: String,
    /// Set when the inbox is bounded.
    pub(crate) permits: Option<Permits>,
}

impl Shared {
    pub(crate) fn new(
        waker: mio::Waker,
        owner: ThreadId,
        name: String,
        permits: Option<Permits>,
    ) -> Self {
        Shared {
            doorbell: CachePadded(Doorbell::new()),
            inbox: Mailbox::new(),
            waker,
            closed: AtomicBool::new(false),
            owner,
            name,
            permits,
        }
    }

    /// Puts `msg` in the inbox and wakes the loop if it is parked. Gives the message
    /// back if the loop has closed its inbox.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), Msg> {
        self.inbox.send(msg)?;
        self.ring();
        Ok(())
    }

    /// Loop side: swaps everything sent so far into `batch` (which must be empty),
    /// under one lock.
    pub(crate) fn take_batch(&self, batch: &mut Vec<Msg>) {
        self.inbox.take_batch(batch);
    }

    /// Loop side, closing: refuses every later message and returns the ones that got
    /// in (for the caller to drop outside the lock).
    pub(crate) fn close_inbox(&self) -> Vec<Msg> {
        self.inbox.close()
    }

    /// How many messages wait.
    pub(crate) fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// Tells the loop there is news, and wakes it if it is parked.
    pub(crate) fn ring(&self) {
        if self.doorbell.notify() {
            // A failed eventfd write means the counter is saturated: a wakeup is
            // already pending, which is all we need.
            let _ = self.waker.wake();
        }
    }
}

/// Wraps a submitted factory as the callback that runs it as a task on its loop, and
/// the `Remote` that gets its result.
pub(crate) fn job<F, Fut, T>(factory: F) -> (Remote<T>, impl FnOnce() + Send + 'static)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (remote, completer) = remote::pair();
    let job = move || {
        let mut work = Box::pin(completer.complete_with(factory()));
        // Most submitted work finishes at once: poll it here and spare it a task.
        // Work that waits becomes a task, whose first poll registers its real waker.
        if crate::task::poll_detached(work.as_mut()).is_pending() {
            if let Ok(lp) = crate::get_running_loop() {
                // The loop is running (we are one of its callbacks): it cannot be
                // closed, so this only fails by a bug; dropping the work then
                // reports Cancelled.
                let _ = lp.create_task(work);
            }
        }
    };
    (remote, job)
}

/// A `Send + Sync + Clone` handle to a loop, for other threads (and other loops).
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let handle = lp.handle();
/// let worker = std::thread::spawn(move || {
///     let answer = handle.submit(|| async { 40 + 2 }).wait();
///     handle.stop();
///     answer
/// });
/// lp.run_forever()?;
/// assert_eq!(worker.join().unwrap()?, 42);
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<Shared>,
}

impl LoopHandle {
    /// Schedules `f` to run on the loop, from any thread. Wakes the loop if it sleeps.
    ///
    /// Returns `Err(Error::Closed)` if the loop is closed: the callback is then
    /// dropped, never silently kept.
    pub fn call_soon_threadsafe<F: FnOnce() + Send + 'static>(&self, f: F) -> Result<(), Error> {
        if let Some(lp) = current::local_loop_for(&self.shared) {
            return lp.call_soon(f).map(drop);
        }
        self.shared
            .send(Msg::Call(Box::new(f)))
            .map_err(|_| Error::Closed)
    }

    /// Runs the future made by `factory` as a task on the loop and returns its
    /// result as a [`Remote`]: await it from another loop, or `wait()` for it from a
    /// blocking thread. The factory is `Send`; the future it makes need not be.
    ///
    /// Submitting to a closed loop resolves to `Err(Error::Closed)`. If the loop has a
    /// bounded inbox ([`LoopBuilder::inbox_capacity`](crate::LoopBuilder::inbox_capacity))
    /// that is full, a plain thread blocks until there is room, and a thread running
    /// another loop does not block: the returned `Remote` resolves to
    /// `Err(Error::Full)` (a loop that wants to wait for room awaits
    /// [`submit_async`](Self::submit_async); see also [`try_submit`](Self::try_submit)).
    pub fn submit<F, Fut, T>(&self, factory: F) -> Remote<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (remote, job) = job(factory);
        self.send_job(job, remote.state());
        remote
    }

    /// Stops the loop after its current iteration, from any thread; wakes it if it
    /// sleeps. Stopping a loop that is not running makes its next run do one
    /// iteration and return.
    pub fn stop(&self) {
        if let Some(lp) = current::local_loop_for(&self.shared) {
            return lp.stop();
        }
        let _ = self.shared.send(Msg::Stop);
    }

    /// Whether the loop is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// The loop's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("name", &self.shared.name)
            .field("closed", &self.is_closed())
            .finish()
    }
}
