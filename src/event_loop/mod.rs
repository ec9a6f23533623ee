//! [`EventLoop`]: asyncio's event loop, one per thread.
//!
//! The data path, in the order a callback travels it (one file each):
//! - `mod.rs`: the public scheduling calls. `call_soon` and `create_task` push onto the
//!   ready queue (`ready.rs`); `call_later`/`call_at` push into the timer queue
//!   (`timers.rs` over `radix_heap.rs`).
//! - From other threads: [`LoopHandle`] (`handle.rs`) and its `submit` family
//!   (`submit.rs`, with the optional bound on submitted jobs in `bounded.rs`) send
//!   messages into the inbox (`inbox.rs`: a locked batch queue, `mailbox.rs`, and the
//!   no-lost-wakeup handshake, `doorbell.rs`). The loop's side of the inbox, the
//!   drain into the ready queue, is in `inbox.rs` too.
//! - `run.rs`: `run_forever` / `run_until_complete` repeat `run_once`: drain the inbox,
//!   poll I/O or park (after spinning, `spin.rs`), move due timers to the ready queue,
//!   run one snapshot of the ready queue.
//! - `user_code.rs`: every call into user code, its panics caught and reported to the
//!   exception handler (`exception.rs`); `stats.rs` counts what the loop did.
//! - `teardown.rs`: `close`, which drops everything pending.
//! - `state.rs` holds the loop's state ([`LoopInner`]); `builder.rs` assembles it.
//!
//! Nothing here is shared with other threads but `inbox::Shared`. Features that add
//! methods to `EventLoop` keep them beside their own machinery: file descriptor
//! watchers in `io/fd.rs`, signal handlers in `signal.rs`, the default executor in
//! `executor.rs`. `docs/architecture.md` tells the whole story.

pub(crate) mod bounded;
mod builder;
pub(crate) mod doorbell;
pub(crate) mod exception;
mod handle;
pub(crate) mod inbox;
mod mailbox;
mod radix_heap;
pub(crate) mod ready;
mod run;
pub(crate) mod send_call;
mod spin;
mod state;
pub(crate) mod stats;
mod submit;
mod teardown;
pub(crate) mod timers;
mod user_code;

use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::task::raw;
use crate::task::Task;
use crate::Error;
pub use builder::LoopBuilder;
use exception::ExceptionContext;
pub use handle::LoopHandle;
use ready::{callback, Handle, Ready};
pub(crate) use state::LoopInner;
use stats::LoopStats;
pub use submit::TrySubmitError;
use timers::{deadline_after, TimerHandle};

/// asyncio's event loop: callbacks, timers, tasks and I/O on one thread.
///
/// `EventLoop` is `!Send`; cloning it gives another reference to the same loop. Other
/// threads reach it through its [`LoopHandle`].
///
/// ```
/// use std::time::Duration;
/// let lp = shardloop::new_event_loop()?;
/// lp.call_soon(|| println!("soon"))?;
/// let stopper = lp.clone();
/// lp.call_later(Duration::from_millis(5), move || stopper.stop())?;
/// lp.run_forever()?;
/// let answer = lp.run_until_complete(async { 6 * 7 })?;
/// assert_eq!(answer, 42);
/// lp.close()?;
/// assert!(lp.is_closed());
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone)]
pub struct EventLoop {
    pub(crate) inner: Rc<LoopInner>,
}

impl EventLoop {
    /// A new loop with default settings (not made current).
    pub fn new() -> Result<Self, Error> {
        LoopBuilder::default().build()
    }

    /// Settings for a new loop.
    pub fn builder() -> LoopBuilder {
        LoopBuilder::default()
    }

    /// Schedules `f` to run on the next iteration. Callbacks run in the order they
    /// were scheduled.
    pub fn call_soon<F: FnOnce() + 'static>(&self, f: F) -> Result<Handle, Error> {
        self.inner.check_schedulable()?;
        self.inner.drain_inbox_first();
        let entry = callback(f);
        self.inner
            .ready
            .borrow_mut()
            .push_back(Ready::Entry(entry.clone()));
        Ok(Handle { entry })
    }

    /// Schedules `f` to run `delay` from now (`call_at(time() + delay)`). A zero delay
    /// runs it on the next iteration; huge delays are clamped, never overflow.
    pub fn call_later<F: FnOnce() + 'static>(
        &self,
        delay: Duration,
        f: F,
    ) -> Result<TimerHandle, Error> {
        self.call_at(deadline_after(self.time(), delay), f)
    }

    /// Schedules `f` to run at `when` (never before). A past deadline runs it on the
    /// next iteration; equal deadlines run in scheduling order.
    pub fn call_at<F: FnOnce() + 'static>(
        &self,
        when: Instant,
        f: F,
    ) -> Result<TimerHandle, Error> {
        self.inner.check_schedulable()?;
        Ok(self.inner.timers.borrow_mut().push(when, callback(f)))
    }

    /// The loop's clock (monotonic).
    pub fn time(&self) -> Instant {
        Instant::now()
    }

    /// Runs `fut` as a task on this loop. The future may be `!Send`.
    pub fn create_task<F: Future + 'static>(&self, fut: F) -> Result<Task<F::Output>, Error> {
        self.spawn_task(fut, None)
    }

    /// [`create_task`](Self::create_task) with a name (asyncio's `name=`), which
    /// [`Task::name`], [`current_task`](crate::current_task) and logs show; unnamed
    /// tasks are called `Task-N` (N counts this loop's tasks from 1).
    ///
    /// ```
    /// let lp = shardloop::new_event_loop()?;
    /// let t = lp.create_task_named("fetcher", async {
    ///     shardloop::current_task().map(|me| me.name())
    /// })?;
    /// assert_eq!(t.name(), "fetcher");
    /// assert_eq!(lp.run_until_complete(t)??.as_deref(), Some("fetcher"));
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn create_task_named<F: Future + 'static>(
        &self,
        name: &str,
        fut: F,
    ) -> Result<Task<F::Output>, Error> {
        self.spawn_task(fut, Some(Box::new(name.to_owned())))
    }

    fn spawn_task<F: Future + 'static>(
        &self,
        fut: F,
        name: Option<raw::TaskName>,
    ) -> Result<Task<F::Output>, Error> {
        self.inner.check_schedulable()?;
        self.inner.drain_inbox_first();
        let id = self.inner.tasks_created.get() + 1;
        self.inner.tasks_created.set(id);
        let mut tasks = self.inner.tasks.borrow_mut();
        let slot = tasks.vacant_entry();
        let (table, queued, handle) =
            raw::allocate(fut, self.inner.shared.clone(), slot.key(), id, name);
        slot.insert(table);
        drop(tasks);
        self.inner.ready.borrow_mut().push_back(Ready::Task(queued));
        Ok(Task::from_raw(handle))
    }

    /// Whether the loop is running (inside `run_forever` / `run_until_complete`).
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// Whether it is a proactor loop (io_uring; see [`LoopBuilder::proactor`]).
    pub fn is_proactor(&self) -> bool {
        self.inner.reactor.is_proactor()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// A `Send + Sync` handle for other threads.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: self.inner.shared.clone(),
        }
    }

    /// The loop's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// Whether debug mode is on.
    pub fn get_debug(&self) -> bool {
        self.inner.debug
    }

    /// Sets the handler that receives panics from callbacks and tasks (instead of
    /// the default, which logs them).
    pub fn set_exception_handler<F: Fn(&ExceptionContext) + 'static>(&self, handler: F) {
        // The old handler is dropped after the borrow ends: its destructor is user
        // code, which may report to the handler slot.
        let old = self.inner.exception_handler.replace(Some(Rc::new(handler)));
        drop(old);
    }

    /// Goes back to the default exception handler.
    pub fn clear_exception_handler(&self) {
        let old = self.inner.exception_handler.take();
        drop(old);
    }

    /// Calls the loop's exception handler with `ctx`.
    pub fn call_exception_handler(&self, ctx: &ExceptionContext) {
        self.inner.call_exception_handler(ctx);
    }

    /// Counters of what this loop has done so far.
    pub fn stats(&self) -> LoopStats {
        self.inner.stats.snapshot(
            self.inner.shared.inbox_len(),
            self.inner.ready.borrow().len(),
        )
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("name", &self.name())
            .field("running", &self.is_running())
            .field("closed", &self.is_closed())
            .field("debug", &self.get_debug())
            .finish()
    }
}
