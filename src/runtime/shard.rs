//! One shard's thread, from start-up to its graceful end.
//!
//! The thread pins itself, builds its loop, makes it the thread's current loop, runs
//! the start hook, and then tells the builder it runs (from a callback of the running
//! loop, so `build()` returns only once every loop really turns). It then runs the loop
//! until the runtime asks it to shut down. The shutdown: keep running until no task is
//! left and nothing is queued, or until the grace period ends; then close the loop
//! (which cancels the tasks still alive and drops what is queued) and report.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use super::pin;
use super::report::ShardReport;
use crate::error::panic_message;
use crate::time::{sleep_until, Sleep};
use crate::{set_event_loop, Error, EventLoop, LoopBuilder, LoopHandle};

thread_local! {
    /// (runtime id, shard index) on shard threads.
    static CURRENT: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

/// The (runtime id, shard index) of the calling thread, if it is a shard thread.
pub(crate) fn current() -> Option<(u64, usize)> {
    CURRENT.try_with(Cell::get).ok().flatten()
}

/// The start hook.
pub(crate) type StartHook = Arc<dyn Fn(usize) + Send + Sync>;

/// Everything a shard thread needs to start.
pub(crate) struct ShardConfig {
    pub(crate) runtime: u64,
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) cpu: Option<usize>,
    pub(crate) loop_builder: LoopBuilder,
    pub(crate) on_start: Option<StartHook>,
}

/// How a shard tells the builder it started: (index, its loop's handle or the error).
pub(crate) type Started = flume::Sender<(usize, Result<LoopHandle, Error>)>;

/// The runtime's side of a shard thread: when to shut down.
#[derive(Default)]
pub(crate) struct Control {
    deadline: Mutex<Option<Instant>>,
}

impl Control {
    /// Asks the shard to shut down, letting its tasks run until `deadline`. The caller
    /// then stops the shard's loop so that it sees the request.
    pub(crate) fn request_shutdown(&self, deadline: Instant) {
        let mut d = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        d.get_or_insert(deadline);
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shard thread's body. Returns `None` if the shard failed to start (the error
/// went to the builder).
pub(crate) fn run(
    cfg: ShardConfig,
    control: Arc<Control>,
    started: Started,
) -> Option<ShardReport> {
    CURRENT.set(Some((cfg.runtime, cfg.index)));
    let index = cfg.index;
    let lp = match start(cfg) {
        Ok(lp) => lp,
        Err(e) => {
            let _ = started.send((index, Err(e)));
            return None;
        }
    };
    let handle = lp.handle();
    // Runs in the loop's first iteration: the loop is running when the builder hears.
    let announced = lp.call_soon(move || {
        let _ = started.send((index, Ok(handle)));
    });
    debug_assert!(announced.is_ok(), "a new loop accepts callbacks");
    // A shard's loop runs until the runtime shuts down; a stop() by user code just
    // ends one run.
    let deadline = loop {
        let ran = lp.run_forever();
        if let Some(deadline) = control.deadline() {
            break deadline;
        }
        if ran.is_err() {
            // Cannot happen (the loop is ours, open and idle); do not spin if it does.
            break Instant::now();
        }
    };
    let report = shut_down(&lp, index, deadline);
    set_event_loop(None);
    Some(report)
}

/// Pins the thread, builds the loop, makes it current and runs the start hook.
fn start(cfg: ShardConfig) -> Result<EventLoop, Error> {
    let in_shard = |e: std::io::Error| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("shard {}: {e}", cfg.index),
        ))
    };
    if let Some(cpu) = cfg.cpu {
        pin::pin_current(cpu).map_err(in_shard)?;
    }
    let lp = cfg
        .loop_builder
        .name(cfg.name)
        .build()
        .map_err(|e| match e {
            Error::Io(e) => in_shard(e),
            other => other,
        })?;
    set_event_loop(Some(lp.clone()));
    if let Some(hook) = &cfg.on_start {
        catch_unwind(AssertUnwindSafe(|| hook(cfg.index)))
            .map_err(|p| Error::Panicked(panic_message(&*p)))?;
    }
    Ok(lp)
}

/// Lets the work finish until `deadline`, closes the loop and says what happened.
fn shut_down(lp: &EventLoop, shard: usize, deadline: Instant) -> ShardReport {
    let before = lp.stats();
    let mut drain = Drain {
        lp: lp.clone(),
        grace: sleep_until(deadline),
    };
    // A stop() from user code ends a run early; keep draining until done.
    while let Err(Error::StoppedBeforeComplete) = lp.run_until_complete(&mut drain) {}
    drop(drain);
    let dropped = lp.close_counting().unwrap_or_default();
    let after = lp.stats();
    ShardReport {
        shard,
        tasks_finished: after.tasks_finished - before.tasks_finished,
        tasks_cancelled: after.tasks_cancelled - before.tasks_cancelled,
        callbacks_dropped: dropped.callbacks as u64,
    }
}

/// Completes when the loop has nothing left to do but timers, or at the grace
/// deadline, whichever comes first.
struct Drain {
    lp: EventLoop,
    grace: Sleep,
}

impl Future for Drain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (tasks, queued) = self.lp.inner.pending_work();
        if !tasks && !queued {
            return Poll::Ready(());
        }
        if Pin::new(&mut self.grace).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if tasks {
            // Woken when the last task ends.
            self.lp.inner.wake_when_no_tasks(cx.waker().clone());
        }
        if queued {
            // Look again once the queued work has run (the loop is busy anyway).
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}
