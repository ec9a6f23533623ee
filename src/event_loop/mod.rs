//! [`EventLoop`]: asyncio's event loop, one per thread.
//!
//! The data path, top to bottom: `call_soon` (or the inbox, for other threads) puts a
//! callback in the ready queue; `call_later` puts it in the timer queue, which hands it
//! to the ready queue when due; [`run_once`](EventLoop::run_once) runs one snapshot
//! of the ready queue. Nothing here is shared with other threads but [`inbox::Shared`].

pub(crate) mod bounded;
pub(crate) mod doorbell;
pub(crate) mod exception;
pub(crate) mod inbox;
mod mailbox;
mod radix_heap;
pub(crate) mod ready;
pub(crate) mod stats;
pub(crate) mod timers;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::current;
use crate::error::panic_message;
use crate::io::reactor::Reactor;
use crate::task::raw::{self, Header};
use crate::task::{coop, Task, TaskRef};
use crate::Error;
use exception::{default_exception_handler, ExceptionContext};
use inbox::{LoopHandle, Msg, Shared};
use ready::{callback, Handle, Ready, Runnable};
use stats::{LoopStats, StatCounters};
use timers::{deadline_after, TimerHandle, TimerQueue};

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
}

impl Default for LoopBuilder {
    fn default() -> Self {
        LoopBuilder {
            name: None,
            debug: std::env::var_os("SHARDLOOP_DEBUG").is_some_and(|v| v == "1"),
            slow_callback_duration: DEFAULT_SLOW_CALLBACK,
            event_interval: DEFAULT_EVENT_INTERVAL,
            spin_before_park: Duration::ZERO,
            inbox_capacity: None,
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

    /// Bounds how many submitted jobs ([`LoopHandle::submit`] and friends) may wait in
    /// the loop's inbox (default `None`: unbounded; a bound is at least 1). When it is
    /// full, `submit` blocks a plain thread and resolves to `Err(Error::Full)` on
    /// another loop, [`LoopHandle::submit_async`] waits for room asynchronously, and
    /// [`LoopHandle::try_submit`] gives the work back. Wakeups, `stop` and
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

    /// Creates the loop. It is not made the thread's current loop.
    pub fn build(self) -> Result<EventLoop, Error> {
        let id = NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed);
        let name = self.name.unwrap_or_else(|| format!("loop-{id}"));
        let reactor = Reactor::new()?;
        let (permits, permit_return) = bounded::permits(self.inbox_capacity);
        let shared = Arc::new(Shared::new(
            reactor.waker()?,
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
                due_wakers: RefCell::new(Vec::new()),
                timers: RefCell::new(TimerQueue::new()),
                tasks: RefCell::new(Slab::new()),
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

type ExceptionHandler = Rc<dyn Fn(&ExceptionContext)>;

/// The loop's state. Borrows of its `RefCell`s are never held while user code runs.
pub(crate) struct LoopInner {
    pub(crate) shared: Arc<Shared>,
    /// The inbox's batch is swapped into this (kept to reuse its allocation).
    inbox_batch: RefCell<Vec<Msg>>,
    ready: RefCell<VecDeque<Ready>>,
    pub(crate) timers: RefCell<TimerQueue>,
    /// The wakers of sleeps that fell due (kept to reuse its allocation).
    due_wakers: RefCell<Vec<Waker>>,
    /// Every task whose future is alive: the loop's reference to it.
    tasks: RefCell<Slab<TaskRef>>,
    pub(crate) reactor: Reactor,
    running: Cell<bool>,
    stopping: Cell<bool>,
    /// Busy iterations left before the next non-blocking I/O poll.
    io_countdown: Cell<u32>,
    /// The `run_until_complete` future's turn has come in this snapshot.
    main_due: Cell<bool>,
    main_marker: Rc<dyn Runnable>,
    main_waker: Arc<MainWaker>,
    main_waker_handle: Waker,
    exception_handler: RefCell<Option<ExceptionHandler>>,
    debug: bool,
    slow_callback_duration: Duration,
    event_interval: u32,
    spin_before_park: Duration,
    pub(crate) stats: StatCounters,
    /// The default executor of `run_in_executor` (src/executor.rs).
    pub(crate) executor: crate::executor::LoopExecutor,
    /// Signal handlers, main-thread loops only (src/signal.rs).
    pub(crate) signals: crate::signal::LoopSignals,
    /// Bounded inboxes: where the loop gives back a submitter's permit (dropped on
    /// close, which wakes blocked submitters with an error).
    permit_return: RefCell<Option<flume::Sender<()>>>,
    /// Woken once the task table becomes empty (the runtime's shutdown waits on it).
    when_no_tasks: Cell<Option<Waker>>,
}

/// What closing a loop dropped.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Dropped {
    /// Tasks cancelled.
    pub(crate) tasks: usize,
    /// Callbacks and timers dropped without running, submitted jobs included.
    pub(crate) callbacks: usize,
}

impl LoopInner {
    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    fn check_schedulable(&self) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if self.debug && std::thread::current().id() != self.shared.owner {
            return Err(Error::WrongThread);
        }
        Ok(())
    }

    /// Queues a woken task (its waker, on this loop's running thread). Gives it
    /// back in the rare case that the ready queue is borrowed right now (the caller
    /// then sends it through the inbox).
    #[inline]
    pub(crate) fn push_ready_task(&self, task: TaskRef) -> Option<TaskRef> {
        match self.ready.try_borrow_mut() {
            Ok(mut ready) => {
                ready.push_back(Ready::Task(task));
                None
            }
            Err(_) => Some(task),
        }
    }

    /// Takes a finished task off the table (the loop's reference to it).
    pub(crate) fn remove_task(&self, key: usize, task: NonNull<Header>) {
        let mut tasks = self.tasks.borrow_mut();
        if !tasks.get(key).is_some_and(|t| t.is(task)) {
            return;
        }
        let removed = tasks.remove(key);
        let none_left = tasks.is_empty();
        drop(tasks);
        // Never the last reference: whoever finished the task holds one.
        drop(removed);
        if none_left {
            if let Some(w) = self.when_no_tasks.take() {
                self.wake_reporting(w, || "the runtime's shutdown");
            }
        }
    }

    /// Wakes `waker` (which may be user code), reporting a panic instead of
    /// unwinding into the loop's bookkeeping.
    pub(crate) fn wake_reporting(&self, waker: Waker, whose: fn() -> &'static str) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || waker.wake())) {
            self.report_panic("waker", whose(), panic_message(&*payload));
            raw::drop_payload(payload);
        }
    }

    fn schedule_main(&self) {
        match self.ready.try_borrow_mut() {
            Ok(mut ready) => ready.push_back(Ready::Entry(self.main_marker.clone())),
            // Never today; if the queue is ever borrowed here, the inbox delivers it.
            Err(_) => {
                let _ = self.shared.send(Msg::WakeMain);
            }
        }
    }

    /// Moves everything other threads sent into the ready queue, in one batch taken
    /// under one lock.
    #[inline]
    fn drain_inbox(&self) {
        if !self.shared.doorbell.take_notified() {
            return;
        }
        let mut batch = self.inbox_batch.take();
        self.shared.take_batch(&mut batch);
        let mut permits = 0;
        {
            let mut ready = self.ready.borrow_mut();
            for msg in batch.drain(..) {
                match msg {
                    Msg::Call(f) => ready.push_back(Ready::Call(f)),
                    Msg::Submit(f) => {
                        permits += 1;
                        ready.push_back(Ready::Call(f));
                    }
                    Msg::Wake(task) => ready.push_back(Ready::Task(task)),
                    Msg::WakeMain => ready.push_back(Ready::Entry(self.main_marker.clone())),
                    Msg::Stop => self.stopping.set(true),
                }
            }
        }
        self.inbox_batch.replace(batch);
        if permits > 0 {
            self.return_permits(permits);
        }
    }

    /// Mail that happened-before a call on the loop's thread runs before it
    /// (asyncio's one ready deque): one atomic load when there is none.
    #[inline]
    fn drain_inbox_first(&self) {
        if self.shared.doorbell.has_news() {
            self.drain_inbox();
        }
    }

    /// Polls I/O without blocking once every `event_interval` calls: the loop's
    /// iterations that did not park.
    fn count_down_to_io_poll(&self) {
        if self.io_countdown.get() <= 1 {
            self.io_countdown.set(self.event_interval);
            let events = self.reactor.poll(Some(Duration::ZERO), &self.ready);
            self.stats.add_io_events(events);
        } else {
            self.io_countdown.set(self.io_countdown.get() - 1);
        }
    }

    /// Spins up to `spin_before_park` (never past `deadline`) until there is work:
    /// mail from another thread, or I/O readiness that made something ready to run.
    /// Returns whether it found any.
    fn spin_for_work(&self, deadline: Option<Instant>) -> bool {
        if self.spin_before_park.is_zero() {
            return false;
        }
        let window_end = Instant::now().checked_add(self.spin_before_park);
        let until = match (window_end, deadline) {
            (Some(w), Some(d)) => Some(w.min(d)),
            (w, d) => w.or(d),
        };
        loop {
            for _ in 0..64 {
                if self.shared.doorbell.has_news() {
                    return true;
                }
                std::hint::spin_loop();
            }
            // Checked before yielding: a yield on a busy core can last a time slice.
            if until.is_some_and(|u| Instant::now() >= u) {
                return false;
            }
            // A thread that shares this core (a client, another shard) runs now
            // rather than when the window ends: on a busy machine a pure spin
            // delays the very work it waits for.
            std::thread::yield_now();
            let events = self.reactor.poll(Some(Duration::ZERO), &self.ready);
            // I/O was just polled: the busy-path countdown starts over.
            self.io_countdown.set(self.event_interval);
            self.stats.add_io_events(events);
            if !self.ready.borrow().is_empty() {
                return true;
            }
        }
    }

    pub(crate) fn report_panic(&self, kind: &str, name: &'static str, msg: String) {
        self.call_exception_handler(&ExceptionContext::panic(kind, name, msg, &self.shared.name));
    }

    fn call_exception_handler(&self, ctx: &ExceptionContext) {
        let handler = self.exception_handler.borrow().clone();
        let result = catch_unwind(AssertUnwindSafe(|| match handler {
            Some(h) => h(ctx),
            None => default_exception_handler(ctx),
        }));
        if let Err(payload) = result {
            log::error!(
                "[{}] the exception handler panicked ({}) while handling: {ctx}",
                self.shared.name,
                panic_message(&*payload)
            );
        }
    }

    /// Runs one ready-queue entry; a panic is caught and reported.
    #[inline]
    fn run_entry(&self, entry: Ready) {
        let panicked = match entry {
            Ready::Entry(entry) => catch_unwind(AssertUnwindSafe(|| entry.run(self)))
                .map_err(|payload| (entry.name(), payload)),
            // A task catches its own panics (they resolve it).
            Ready::Task(task) => {
                task.run(self);
                Ok(())
            }
            Ready::Call(f) => catch_unwind(AssertUnwindSafe(f))
                .map_err(|payload| ("call_soon_threadsafe callback", payload)),
        };
        if let Err((name, payload)) = panicked {
            self.report_panic("callback", name, panic_message(&*payload));
            raw::drop_payload(payload);
        }
    }

    /// Cancels a callback entry (dropping the callback), reporting a panicking
    /// destructor instead of unwinding. Whether it was still pending.
    fn cancel_reporting(&self, entry: &Rc<dyn Runnable>) -> bool {
        match catch_unwind(AssertUnwindSafe(|| entry.cancel())) {
            Ok(was_pending) => was_pending,
            Err(payload) => {
                self.report_panic(
                    "callback destructor",
                    entry.name(),
                    panic_message(&*payload),
                );
                raw::drop_payload(payload);
                true
            }
        }
    }

    /// Drops `value` (user code: a callback, its captures), reporting a panicking
    /// destructor instead of unwinding.
    fn drop_reporting<T>(&self, what: &str, name: &'static str, value: T) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
            self.report_panic(what, name, panic_message(&*payload));
            raw::drop_payload(payload);
        }
    }

    /// Debug mode's `run_entry`: also times the entry and logs it if slow.
    fn run_entry_timed(&self, entry: Ready) {
        let name = entry.name();
        let started = Instant::now();
        self.run_entry(entry);
        let took = started.elapsed();
        self.stats.record_duration(took);
        if took >= self.slow_callback_duration {
            log::warn!(
                "[{}] executing {} took {:.3} seconds",
                self.shared.name,
                name,
                took.as_secs_f64()
            );
        }
    }

    /// Drops everything pending (the loop is closing), with no borrow held while
    /// destructors run, and every panicking destructor caught and reported. The
    /// inbox is closed first, under its lock: what got in is dropped here, and
    /// anything sent later (by these very destructors, say) is refused.
    fn drop_pending(&self) -> Dropped {
        let mail = self.shared.close_inbox();
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        let (timers, sleeps) = self.timers.borrow_mut().take_all();
        let tasks: Vec<TaskRef> = self.tasks.borrow_mut().drain().collect();
        let mut dropped = Dropped::default();
        for task in &tasks {
            // Drops the future in place; a panic there is caught and reported inside
            // (this catch is only a backstop, so that one task cannot stop the rest
            // from being cancelled).
            match catch_unwind(AssertUnwindSafe(|| task.cancel_now(self))) {
                Ok(cancelled) => dropped.tasks += usize::from(cancelled),
                Err(payload) => {
                    self.report_panic("task cancel", task.name(), panic_message(&*payload));
                    raw::drop_payload(payload);
                }
            }
        }
        drop(tasks);
        for entry in &timers {
            dropped.callbacks += usize::from(self.cancel_reporting(entry));
        }
        drop(timers);
        drop(sleeps);
        for entry in ready {
            match entry {
                Ready::Entry(e) => dropped.callbacks += usize::from(self.cancel_reporting(&e)),
                // Only a reference: the task itself was cancelled above.
                Ready::Task(task) => drop(task),
                Ready::Call(f) => {
                    dropped.callbacks += 1;
                    self.drop_reporting("callback destructor", "call_soon_threadsafe callback", f);
                }
            }
        }
        for msg in mail {
            if let Msg::Call(_) | Msg::Submit(_) = &msg {
                dropped.callbacks += 1;
            }
            self.drop_reporting("callback destructor", "call_soon_threadsafe callback", msg);
        }
        dropped
    }
}

/// What the runtime's graceful shutdown looks at.
impl LoopInner {
    /// What is left to do besides timers: (any task alive, anything in the ready
    /// queue or the inbox).
    pub(crate) fn pending_work(&self) -> (bool, bool) {
        let tasks = !self.tasks.borrow().is_empty();
        (
            tasks,
            !self.ready.borrow().is_empty() || self.shared.inbox_len() > 0,
        )
    }

    /// Wakes `waker` (once) when the last alive task ends.
    pub(crate) fn wake_when_no_tasks(&self, waker: Waker) {
        self.when_no_tasks.set(Some(waker));
    }
}

impl Drop for LoopInner {
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.drop_pending();
        }
    }
}

/// The ready-queue entry that gives the `run_until_complete` future its turn.
struct MainMarker;

impl Runnable for MainMarker {
    fn run(&self, lp: &LoopInner) {
        lp.main_due.set(true);
    }
    fn cancel(&self) -> bool {
        false
    }
    fn is_cancelled(&self) -> bool {
        false
    }
    fn name(&self) -> &'static str {
        "run_until_complete"
    }
}

/// The waker of the `run_until_complete` future.
struct MainWaker {
    shared: Arc<Shared>,
    scheduled: AtomicBool,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        match current::local_loop_for(&self.shared) {
            Some(lp) => lp.inner.schedule_main(),
            None => {
                let _ = self.shared.send(Msg::WakeMain);
            }
        }
    }
}

/// Resets the loop's running state however `run_forever` / `run_until_complete` end
/// (a panic from the `run_until_complete` future included).
struct RunningGuard<'a> {
    lp: &'a EventLoop,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.lp.inner.running.set(false);
        self.lp.inner.stopping.set(false);
        current::leave_running();
    }
}

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
        self.inner.check_schedulable()?;
        self.inner.drain_inbox_first();
        let mut tasks = self.inner.tasks.borrow_mut();
        let slot = tasks.vacant_entry();
        let (table, queued, handle) = raw::allocate(fut, self.inner.shared.clone(), slot.key());
        slot.insert(table);
        drop(tasks);
        self.inner.ready.borrow_mut().push_back(Ready::Task(queued));
        Ok(Task::from_raw(handle))
    }

    /// Runs until [`stop`](Self::stop) is called.
    pub fn run_forever(&self) -> Result<(), Error> {
        let _guard = self.enter()?;
        loop {
            self.run_once(&mut || {});
            if self.inner.stopping.get() {
                return Ok(());
            }
        }
    }

    /// Runs until `fut` completes and returns its output. The future is polled in
    /// its turn in the ready queue, like asyncio's wrapping task.
    ///
    /// `Err(Error::StoppedBeforeComplete)` if the loop is stopped first (the future is
    /// then dropped). A panic in `fut` itself propagates to the caller.
    pub fn run_until_complete<F: Future>(&self, fut: F) -> Result<F::Output, Error> {
        let _guard = self.enter()?;
        let inner = &*self.inner;
        let mut fut = pin!(fut);
        let mut output = None;
        inner.main_waker.scheduled.store(true, Ordering::Release);
        inner.schedule_main();
        let waker = inner.main_waker_handle.clone();
        let mut poll_main = || {
            if output.is_some() {
                return;
            }
            inner.main_waker.scheduled.store(false, Ordering::Release);
            let _budget = coop::Budget::enter();
            if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                output = Some(v);
                inner.stopping.set(true);
            }
        };
        loop {
            self.run_once(&mut poll_main);
            if inner.stopping.get() {
                break;
            }
        }
        output.ok_or(Error::StoppedBeforeComplete)
    }

    /// Marks this loop running on this thread, or says why it cannot run.
    fn enter(&self) -> Result<RunningGuard<'_>, Error> {
        if self.inner.is_closed() {
            return Err(Error::Closed);
        }
        if self.inner.running.get() {
            return Err(Error::AlreadyRunning);
        }
        current::enter_running(self)?;
        self.inner.running.set(true);
        Ok(RunningGuard { lp: self })
    }

    /// One iteration: drain the inbox, poll I/O (blocking only when nothing is
    /// ready), move due timers to the ready queue, then run the callbacks that are
    /// ready now; what they schedule waits for the next iteration.
    fn run_once(&self, main: &mut dyn FnMut()) {
        let inner = &*self.inner;
        inner.drain_inbox();
        let idle = !inner.stopping.get() && inner.ready.borrow().is_empty();
        if idle {
            let deadline = inner.timers.borrow_mut().next_deadline();
            // Parks only if nothing was sent since the drain above (or during the
            // spin); else the drain below picks it up.
            if inner.spin_for_work(deadline) {
                // The loop did not park: I/O readiness is due as if callbacks kept
                // it busy, or a stream of mail ending every spin starves it.
                inner.count_down_to_io_poll();
            } else if inner.shared.doorbell.try_sleep() {
                let events = inner.reactor.park(deadline, &inner.ready);
                inner.shared.doorbell.woke();
                inner.stats.add_io_events(events);
                inner.io_countdown.set(inner.event_interval);
            }
            inner.drain_inbox();
        } else {
            inner.count_down_to_io_poll();
        }
        {
            let mut timers = inner.timers.borrow_mut();
            if !timers.is_empty() {
                let mut wake = inner.due_wakers.take();
                let fired =
                    timers.move_due(Instant::now(), &mut inner.ready.borrow_mut(), &mut wake);
                drop(timers);
                inner.stats.add_timers_fired(fired);
                // A due sleep's task joins this very snapshot.
                for w in wake.drain(..) {
                    inner.wake_reporting(w, || "a sleep's waker");
                }
                inner.due_wakers.replace(wake);
            }
        }
        let snapshot = inner.ready.borrow().len();
        for _ in 0..snapshot {
            let Some(entry) = inner.ready.borrow_mut().pop_front() else {
                break;
            };
            if inner.debug {
                inner.run_entry_timed(entry);
            } else {
                inner.run_entry(entry);
            }
            if inner.main_due.replace(false) {
                main();
            }
        }
        let run = &inner.stats.callbacks_run;
        run.set(run.get() + snapshot as u64);
    }

    /// Stops the loop after the current iteration. Called before `run_forever`, it
    /// makes that run do exactly one iteration.
    pub fn stop(&self) {
        self.inner.stopping.set(true);
    }

    /// Closes the loop: pending callbacks, timers and tasks are dropped (tasks resolve
    /// to `Err(Error::Cancelled)`), and every later scheduling or run call fails with
    /// `Err(Error::Closed)`. Closing twice is a no-op; closing a running loop is
    /// `Err(Error::CloseWhileRunning)`.
    pub fn close(&self) -> Result<(), Error> {
        self.close_counting().map(drop)
    }

    /// [`close`](Self::close), saying what it dropped (nothing if already closed).
    pub(crate) fn close_counting(&self) -> Result<Dropped, Error> {
        if self.inner.running.get() {
            return Err(Error::CloseWhileRunning);
        }
        if self.inner.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(Dropped::default());
        }
        self.inner.permit_return.borrow_mut().take();
        let dropped = self.inner.drop_pending();
        self.inner.signals.close(&self.inner.reactor);
        self.inner.executor.close();
        self.inner.reactor.wake_all();
        Ok(dropped)
    }

    /// Whether the loop is running (inside `run_forever` / `run_until_complete`).
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
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
