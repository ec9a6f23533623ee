//! Counters of what a loop did, cheap enough for the hot path (plain `Cell`s).

use std::cell::Cell;
use std::time::Duration;

#[derive(Default)]
pub(crate) struct StatCounters {
    pub(crate) callbacks_run: Cell<u64>,
    pub(crate) tasks_polled: Cell<u64>,
    pub(crate) tasks_finished: Cell<u64>,
    pub(crate) tasks_cancelled: Cell<u64>,
    io_events: Cell<u64>,
    timers_fired: Cell<u64>,
    longest_callback: Cell<Duration>,
}

impl StatCounters {
    pub(crate) fn add_io_events(&self, n: usize) {
        self.io_events.set(self.io_events.get() + n as u64);
    }

    pub(crate) fn add_timers_fired(&self, n: usize) {
        self.timers_fired.set(self.timers_fired.get() + n as u64);
    }

    /// Counts a task that ended: cancelled, or finished (with a value or a panic).
    pub(crate) fn count_task_end(&self, cancelled: bool) {
        let c = if cancelled {
            &self.tasks_cancelled
        } else {
            &self.tasks_finished
        };
        c.set(c.get() + 1);
    }

    pub(crate) fn record_duration(&self, d: Duration) {
        if d > self.longest_callback.get() {
            self.longest_callback.set(d);
        }
    }

    pub(crate) fn snapshot(&self, inbox_depth: usize, ready_depth: usize) -> LoopStats {
        LoopStats {
            callbacks_run: self.callbacks_run.get(),
            tasks_polled: self.tasks_polled.get(),
            tasks_finished: self.tasks_finished.get(),
            tasks_cancelled: self.tasks_cancelled.get(),
            io_events: self.io_events.get(),
            timers_fired: self.timers_fired.get(),
            inbox_depth,
            ready_depth,
            longest_callback: self.longest_callback.get(),
        }
    }
}

/// What a loop has done so far ([`EventLoop::stats`](crate::EventLoop::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopStats {
    /// Ready-queue entries run (callbacks and task polls).
    pub callbacks_run: u64,
    /// Task polls.
    pub tasks_polled: u64,
    /// Tasks that ran to the end (with a value or a panic).
    pub tasks_finished: u64,
    /// Tasks cancelled before they finished (by `Task::cancel` or by closing the loop).
    pub tasks_cancelled: u64,
    /// I/O readiness events received.
    pub io_events: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Messages waiting in the inbox from other threads.
    pub inbox_depth: usize,
    /// Entries waiting in the ready queue.
    pub ready_depth: usize,
    /// The longest callback or poll seen (measured in debug mode only).
    pub longest_callback: Duration,
}
