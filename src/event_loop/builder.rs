//! [`LoopBuilder`]: a loop's settings, and the assembly of a new loop's state.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use slab::Slab;

use super::bounded;
use super::inbox::Shared;
use super::run::{MainMarker, MainWaker};
use super::stats::StatCounters;
use super::timers::TimerQueue;
use super::{EventLoop, LoopInner};
use crate::current;
use crate::io::bell::Bell;
use crate::io::reactor::Reactor;
use crate::Error;

/// Iterations between non-blocking I/O polls while callbacks keep the loop busy.
const DEFAULT_EVENT_INTERVAL: u32 = 61;
/// asyncio's default `slow_callback_duration`.
const DEFAULT_SLOW_CALLBACK: Duration = Duration::from_millis(100);

static NEXT_LOOP_ID: AtomicU64 = AtomicU64::new(0);

/// Settings for a new [`EventLoop`].
///
/// ```
/// use std::time::Duration;
/// let lp = shardloop::EventLoop::builder()
///     .name("worker")
///     .debug(true)
///     .slow_callback_duration(Duration::from_millis(50))
///     .event_interval(31)
///     .build()?;
/// assert!(lp.get_debug());
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LoopBuilder {
    name: Option<String>,
    debug: bool,
    slow_callback_duration: Duration,
    event_interval: u32,
    spin_before_park: Duration,
    inbox_capacity: Option<usize>,
    proactor: bool,
    ring_entries: u32,
}

/// The variable that makes [`LoopBuilder::proactor`] default to on (`=1`): it runs a
/// program, or the whole test suite, on the proactor without changing its code.
pub(crate) const PROACTOR_ENV: &str = "SHARDLOOP_PROACTOR";

impl Default for LoopBuilder {
    fn default() -> Self {
        LoopBuilder {
            name: None,
            debug: std::env::var_os("SHARDLOOP_DEBUG").is_some_and(|v| v == "1"),
            slow_callback_duration: DEFAULT_SLOW_CALLBACK,
            event_interval: DEFAULT_EVENT_INTERVAL,
            spin_before_park: Duration::ZERO,
            inbox_capacity: None,
            proactor: std::env::var_os(PROACTOR_ENV).is_some_and(|v| v == "1"),
            ring_entries: crate::io::uring::DEFAULT_ENTRIES,
        }
    }
}

impl LoopBuilder {
    /// The loop's name, used in logs (default `loop-N`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Debug mode: log slow callbacks and refuse scheduling calls from foreign
    /// threads. Defaults to on when the environment has `SHARDLOOP_DEBUG=1`.
    pub fn debug(mut self, on: bool) -> Self {
        self.debug = on;
        self
    }

    /// In debug mode, callbacks running longer than this are logged (default 100 ms).
    pub fn slow_callback_duration(mut self, d: Duration) -> Self {
        self.slow_callback_duration = d;
        self
    }

    /// While callbacks keep the loop busy, poll for I/O every this many iterations
    /// (default 61; at least 1).
    pub fn event_interval(mut self, n: u32) -> Self {
        self.event_interval = n.max(1);
        self
    }

    /// Bounds how many submitted jobs ([`LoopHandle::submit`](crate::LoopHandle::submit) and friends) may wait in
    /// the loop's inbox (default `None`: unbounded; a bound is at least 1). When it is
    /// full, `submit` blocks a plain thread and resolves to `Err(Error::Full)` on
    /// another loop, [`LoopHandle::submit_async`](crate::LoopHandle::submit_async) waits for room asynchronously, and
    /// [`LoopHandle::try_submit`](crate::LoopHandle::try_submit) gives the work back. Wakeups, `stop` and
    /// `call_soon_threadsafe` are never refused or delayed by the bound.
    pub fn inbox_capacity(mut self, capacity: Option<usize>) -> Self {
        self.inbox_capacity = capacity;
        self
    }

    /// Before parking in `epoll_wait`, spend up to this long looking for work
    /// (default zero: park at once): mail from other threads, and, each time the
    /// thread has yielded its core (`sched_yield`), I/O readiness, with a poll that
    /// does not block. Work found within the window is picked up without the sleep,
    /// eventfd write and wakeup that parking costs, which cuts cross-shard round trips
    /// and the context switches of a busy server. Yielding means a client or another
    /// shard sharing the core runs meanwhile rather than after the window. The price
    /// is a core that looks busy for up to that long each time the loop runs dry.
    /// The spin ends at the next timer's deadline (a timer is late by one round of
    /// looks at most, plus a yield that outlasts it on a busy core), and while mail
    /// keeps ending spins I/O is still polled every
    /// [`event_interval`](Self::event_interval) iterations, as when callbacks keep
    /// the loop busy.
    pub fn spin_before_park(mut self, window: Duration) -> Self {
        self.spin_before_park = window;
        self
    }

    /// asyncio's `ProactorEventLoop`: the loop waits on an io_uring instead of
    /// epoll. One `io_uring_enter` per iteration submits everything queued since the
    /// last and waits, with the nearest timer as its timeout. TCP and Unix streams'
    /// reads are the kernel's (`IORING_OP_RECV` into a ring of buffers the loop
    /// provides, from Linux 5.19, so that a stream waiting for its peer lends the
    /// kernel no memory; before, into buffers the stream owns; with `read_owned`,
    /// into the caller's); every other fd's readiness comes from a multishot poll on
    /// the ring. Everything else (the
    /// types, the traits, the semantics) is the same on both loops. Defaults to off,
    /// or on with `SHARDLOOP_PROACTOR=1` in the environment. Where the kernel
    /// refuses io_uring (`ENOSYS`, `EPERM`, `kernel.io_uring_disabled`), or lacks
    /// what the loop needs (Linux 5.11's `IORING_FEAT_EXT_ARG`), [`build`](Self::build)
    /// fails with `Error::Io` saying so: it never falls back to epoll silently.
    ///
    /// ```
    /// match shardloop::EventLoop::builder().proactor(true).build() {
    ///     Ok(lp) => {
    ///         assert!(lp.is_proactor());
    ///         assert_eq!(lp.run_until_complete(async { 1 + 1 })?, 2);
    ///     }
    ///     Err(e) => eprintln!("no io_uring here: {e}"),
    /// }
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn proactor(mut self, on: bool) -> Self {
        self.proactor = on;
        self
    }

    /// The size of a proactor loop's submission queue (default 256; the completion
    /// queue is twice as large, and what overflows it the kernel keeps until it is
    /// read). A fuller queue is submitted and refilled, so a small ring only costs
    /// system calls: it is for tests of that path, and for loops with little I/O.
    /// `build` fails with `Error::Io` for 0 or more than 32768. No effect on an epoll
    /// loop.
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }

    /// Creates the loop. It is not made the thread's current loop.
    pub fn build(self) -> Result<EventLoop, Error> {
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        let name = self.name.unwrap_or_else(|| format!("loop-{id}"));
        let bell = Bell::new()?;
        let ring = self.proactor.then_some(self.ring_entries);
        let reactor = Reactor::new(ring, bell.as_raw_fd())?;
        let (permits, permit_return) = bounded::permits(self.inbox_capacity);
        let shared = Arc::new(Shared::new(
            bell,
            std::thread::current().id(),
            name,
            permits,
        ));
        let main_waker = Arc::new(MainWaker {
            shared: shared.clone(),
            scheduled: AtomicBool::new(false),
        });
        let lp = EventLoop {
            inner: Rc::new(LoopInner {
                shared,
                inbox_batch: RefCell::new(Vec::new()),
                ready: RefCell::new(VecDeque::new()),
                mail: RefCell::new(VecDeque::new()),
                due_wakers: RefCell::new(Vec::new()),
                timers: RefCell::new(TimerQueue::new()),
                tasks: RefCell::new(Slab::new()),
                tasks_created: Cell::new(0),
                current_task: Cell::new(super::state::NO_TASK),
                reactor,
                running: Cell::new(false),
                stopping: Cell::new(false),
                io_countdown: Cell::new(1),
                main_due: Cell::new(false),
                main_marker: Rc::new(MainMarker),
                main_waker: main_waker.clone(),
                main_waker_handle: Waker::from(main_waker),
                exception_handler: RefCell::new(None),
                debug: self.debug,
                slow_callback_duration: self.slow_callback_duration,
                event_interval: self.event_interval,
                spin_before_park: self.spin_before_park,
                stats: StatCounters::default(),
                executor: Default::default(),
                signals: Default::default(),
                permit_return: RefCell::new(permit_return),
                when_no_tasks: Cell::new(None),
            }),
        };
        current::register_owned(&lp.inner);
        Ok(lp)
    }
}
