//! [`LoopInner`]: what one loop owns (its queues, its task table, its reactor), and
//! the small operations on that state that the rest of the crate calls.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use slab::Slab;

use super::exception::ExceptionContext;
use super::inbox::{Msg, Shared};
use super::ready::{Ready, Runnable};
use super::run::MainWaker;
use super::send_call::SendCall;
use super::stats::StatCounters;
use super::timers::TimerQueue;
use crate::io::reactor::Reactor;
use crate::task::raw::Header;
use crate::task::TaskRef;
use crate::Error;

/// `current_task` when no task is being polled.
pub(crate) const NO_TASK: usize = usize::MAX;

pub(super) type ExceptionHandler = Rc<dyn Fn(&ExceptionContext)>;

/// The loop's state. Borrows of its `RefCell`s are never held while user code runs.
pub(crate) struct LoopInner {
    pub(crate) shared: Arc<Shared>,
    /// The inbox's batch is swapped into this (kept to reuse its allocation).
    pub(super) inbox_batch: RefCell<Vec<Msg>>,
    pub(super) ready: RefCell<VecDeque<Ready>>,
    /// The threadsafe callbacks that `Ready::Mail` markers stand for, in order.
    pub(super) mail: RefCell<VecDeque<SendCall>>,
    pub(crate) timers: RefCell<TimerQueue>,
    /// The wakers of sleeps that fell due (kept to reuse its allocation).
    pub(super) due_wakers: RefCell<Vec<Waker>>,
    /// Every task whose future is alive: the loop's reference to it.
    pub(super) tasks: RefCell<Slab<TaskRef>>,
    /// How many tasks were created: the next one's number (`Task-N`).
    pub(super) tasks_created: Cell<u64>,
    /// The table key of the task being polled now, `NO_TASK` between polls.
    pub(crate) current_task: Cell<usize>,
    pub(crate) reactor: Reactor,
    pub(super) running: Cell<bool>,
    pub(super) stopping: Cell<bool>,
    /// Busy iterations left before the next non-blocking I/O poll.
    pub(super) io_countdown: Cell<u32>,
    /// The `run_until_complete` future's turn has come in this snapshot.
    pub(super) main_due: Cell<bool>,
    pub(super) main_marker: Rc<dyn Runnable>,
    pub(super) main_waker: Arc<MainWaker>,
    pub(super) main_waker_handle: Waker,
    pub(super) exception_handler: RefCell<Option<ExceptionHandler>>,
    pub(super) debug: bool,
    pub(super) slow_callback_duration: Duration,
    pub(super) event_interval: u32,
    pub(super) spin_before_park: Duration,
    pub(crate) stats: StatCounters,
    /// The default executor of `run_in_executor` (src/executor.rs).
    pub(crate) executor: crate::executor::LoopExecutor,
    /// Signal handlers, main-thread loops only (src/signal.rs).
    pub(crate) signals: crate::signal::LoopSignals,
    /// Bounded inboxes: where the loop gives back a submitter's permit (dropped on
    /// close, which wakes blocked submitters with an error).
    pub(super) permit_return: RefCell<Option<flume::Sender<()>>>,
    /// Woken once the task table becomes empty (the runtime's shutdown waits on it).
    pub(super) when_no_tasks: Cell<Option<Waker>>,
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
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    pub(super) fn check_schedulable(&self) -> Result<(), Error> {
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

    /// The task being polled now (`current_task()`).
    pub(crate) fn current_task(&self) -> Option<TaskRef> {
        self.tasks.borrow().get(self.current_task.get()).cloned()
    }

    /// Every task whose future is alive (`all_tasks()`), in table order.
    pub(crate) fn all_tasks(&self) -> Vec<TaskRef> {
        self.tasks.borrow().iter().map(|(_, t)| t.clone()).collect()
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

    /// Queues a ready-queue entry (a transport that has more to read, say) for the
    /// next iteration, without the allocation of a `call_soon`. Nothing on a closed
    /// loop, which runs nothing more.
    pub(crate) fn push_ready_entry(&self, entry: Rc<dyn Runnable>) {
        if !self.is_closed() {
            self.ready.borrow_mut().push_back(Ready::Entry(entry));
        }
    }

    pub(super) fn schedule_main(&self) {
        match self.ready.try_borrow_mut() {
            Ok(mut ready) => ready.push_back(Ready::Entry(self.main_marker.clone())),
            // Never today; if the queue is ever borrowed here, the inbox delivers it.
            Err(_) => {
                let _ = self.shared.send(Msg::WakeMain);
            }
        }
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
