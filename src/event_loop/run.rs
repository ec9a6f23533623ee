//! Running a loop: `run_forever`, `run_until_complete` and the iteration they repeat
//! (`run_once`: drain the inbox, poll I/O or park, fire due timers, run one snapshot
//! of the ready queue).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::Instant;

use super::inbox::{Msg, Shared};
use super::ready::Runnable;
use super::{EventLoop, LoopInner};
use crate::current;
use crate::task::coop;
use crate::Error;

impl LoopInner {
    /// Polls I/O without blocking once every `event_interval` calls: the loop's
    /// iterations that did not park.
    pub(super) fn count_down_to_io_poll(&self) {
        if self.io_countdown.get() <= 1 {
            self.io_countdown.set(self.event_interval);
            let events = self.reactor.poll_now(&self.ready);
            self.stats.add_io_events(events);
        } else {
            self.io_countdown.set(self.io_countdown.get() - 1);
        }
    }
}

/// The ready-queue entry that gives the `run_until_complete` future its turn.
pub(super) struct MainMarker;

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
pub(super) struct MainWaker {
    pub(super) shared: Arc<Shared>,
    pub(super) scheduled: AtomicBool,
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
        if let Some(ring) = self.lp.inner.reactor.ring() {
            ring.submit_queued();
        }
        self.lp.inner.running.set(false);
        self.lp.inner.stopping.set(false);
        current::leave_running();
    }
}

impl EventLoop {
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
}
