//! Tasks: futures (`!Send` allowed) driven by their loop, and their [`Task`] handles.
//!
//! A task is one `Rc` allocation (the future, later its output, and the join waker)
//! plus one small `Arc<TaskWaker>` that other threads may hold. The waker never points
//! at the future: it names the task by its slot in the loop's task table, so a waker
//! that outlives its task, or crosses threads, can never touch a `!Send` future. Waking
//! on the loop's own thread pushes the task straight into the ready queue; waking
//! anywhere else sends it through the loop's inbox.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::current;
use crate::error::panic_message;
use crate::event_loop::inbox::{Msg, Shared};
use crate::event_loop::ready::Runnable;
use crate::event_loop::LoopInner;
use crate::Error;

/// The `Send + Sync` part of a task: what its `Waker` holds.
pub(crate) struct TaskWaker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: usize,
    /// Set while the task sits in the ready queue (or the inbox), so that a burst of
    /// wakes schedules it once.
    scheduled: AtomicBool,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(lp) = current::local_loop_for(&self.shared) {
            lp.inner.schedule_task(self);
        } else {
            // A closed loop has already dropped the task; nothing is left to wake.
            let _ = self.shared.send(Msg::Wake(self.clone()));
        }
    }
}

enum Stage<F: Future> {
    Running(F),
    Done(Result<F::Output, Error>),
    /// The output was handed out, or nobody will ever read it.
    Taken,
}

/// A task's future, its result slot and its bookkeeping, in one allocation.
struct TaskCell<F: Future> {
    stage: RefCell<Stage<F>>,
    cancel_requested: Cell<bool>,
    detached: Cell<bool>,
    join_waker: Cell<Option<Waker>>,
    waker: Waker,
    wake_state: Arc<TaskWaker>,
}

impl<F: Future> TaskCell<F> {
    /// Stores the result (or drops it if detached), frees the task's slot and wakes
    /// whoever awaits the `Task`.
    fn finish(&self, lp: &LoopInner, result: Result<F::Output, Error>) {
        lp.stats
            .count_task_end(matches!(result, Err(Error::Cancelled)));
        let next = if self.detached.get() {
            Stage::Taken
        } else {
            Stage::Done(result)
        };
        // Dropped after the borrow ends: the future's destructor is user code.
        let old = self.stage.replace(next);
        drop(old);
        lp.remove_task(self.wake_state.key, &self.wake_state);
        if let Some(w) = self.join_waker.take() {
            w.wake();
        }
    }
}

impl<F: Future> Runnable for TaskCell<F> {
    fn run(&self, lp: &LoopInner) {
        self.wake_state.scheduled.store(false, Ordering::Release);
        lp.stats.tasks_polled.set(lp.stats.tasks_polled.get() + 1);
        let outcome = {
            let mut stage = self.stage.borrow_mut();
            let Stage::Running(fut) = &mut *stage else {
                return;
            };
            if self.cancel_requested.get() {
                Some(Err(Error::Cancelled))
            } else {
                // SAFETY: the future lives inside this Rc allocation, which never
                // moves; the future is never moved out of `stage`, only dropped in
                // place when the stage is replaced. So it is pinned for its whole life.
                let fut = unsafe { Pin::new_unchecked(fut) };
                let mut cx = Context::from_waker(&self.waker);
                match catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx))) {
                    Ok(Poll::Ready(v)) => Some(Ok(v)),
                    Ok(Poll::Pending) => None,
                    Err(payload) => {
                        let msg = panic_message(&*payload);
                        drop(stage);
                        lp.report_panic("task", self.name(), msg.clone());
                        Some(Err(Error::Panicked(msg)))
                    }
                }
            }
        };
        if let Some(result) = outcome {
            self.finish(lp, result);
        }
    }

    /// Drops the future now (the loop is closing) and resolves the task to
    /// `Err(Cancelled)`.
    fn cancel(&self) -> bool {
        self.cancel_requested.set(true);
        let running = matches!(&*self.stage.borrow(), Stage::Running(_));
        if running {
            let next = if self.detached.get() {
                Stage::Taken
            } else {
                Stage::Done(Err(Error::Cancelled))
            };
            drop(self.stage.replace(next));
            if let Some(w) = self.join_waker.take() {
                w.wake();
            }
        }
        running
    }

    fn is_cancelled(&self) -> bool {
        self.cancel_requested.get()
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// The `Task<T>` side of a task cell.
trait Join<T> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, Error>>;
    fn request_cancel(&self);
    fn is_finished(&self) -> bool;
    fn detach(&self);
}

impl<F: Future> Join<F::Output> for TaskCell<F> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, Error>> {
        // A task awaiting its own handle finds its stage borrowed: it stays pending.
        let Ok(mut stage) = self.stage.try_borrow_mut() else {
            return Poll::Pending;
        };
        match std::mem::replace(&mut *stage, Stage::Taken) {
            Stage::Done(result) => Poll::Ready(result),
            Stage::Taken => Poll::Ready(Err(Error::Cancelled)),
            running @ Stage::Running(_) => {
                *stage = running;
                self.join_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }

    fn request_cancel(&self) {
        if !self.is_finished() && !self.cancel_requested.replace(true) {
            self.waker.wake_by_ref();
        }
    }

    fn is_finished(&self) -> bool {
        match self.stage.try_borrow() {
            Ok(stage) => !matches!(&*stage, Stage::Running(_)),
            Err(_) => false,
        }
    }

    fn detach(&self) {
        self.detached.set(true);
        if let Ok(mut stage) = self.stage.try_borrow_mut() {
            if let Stage::Done(_) = &*stage {
                let done = std::mem::replace(&mut *stage, Stage::Taken);
                drop(stage);
                drop(done);
            }
        }
    }
}

/// A waker that does nothing, for a first poll made outside any task.
struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

thread_local! {
    static NOOP_WAKER: Waker = Waker::from(Arc::new(NoopWake));
}

/// Polls `fut` once with a waker that does nothing. For work that may finish at once
/// and otherwise becomes a task: the task's first poll gives the future its real
/// waker, as the `Future` contract says every poll may.
pub(crate) fn poll_detached<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    NOOP_WAKER.with(|waker| fut.poll(&mut Context::from_waker(waker)))
}

/// Makes a task for `fut` on `lp`: returns the ready-queue entry (already marked
/// scheduled, for the caller to queue), and the handle.
pub(crate) fn new_task<F: Future + 'static>(
    lp: &LoopInner,
    key: usize,
    fut: F,
) -> (Rc<dyn Runnable>, Arc<TaskWaker>, Task<F::Output>) {
    let wake_state = Arc::new(TaskWaker {
        shared: lp.shared.clone(),
        key,
        scheduled: AtomicBool::new(true),
    });
    let cell = Rc::new(TaskCell {
        stage: RefCell::new(Stage::Running(fut)),
        cancel_requested: Cell::new(false),
        detached: Cell::new(false),
        join_waker: Cell::new(None),
        waker: Waker::from(wake_state.clone()),
        wake_state: wake_state.clone(),
    });
    (cell.clone(), wake_state, Task { cell })
}

/// A future running on a loop; itself a future of its result.
///
/// Awaiting a `Task` gives `Ok(output)`, `Err(Error::Cancelled)` if it was cancelled
/// (or its loop closed first), or `Err(Error::Panicked(msg))` if it panicked.
/// Dropping a `Task` detaches it: the future keeps running.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let task = lp.create_task(async { 7 })?;
/// assert_eq!(lp.run_until_complete(task)??, 7);
/// # Ok::<(), shardloop::Error>(())
/// ```
#[must_use = "dropping a Task detaches it; await it or call cancel()"]
pub struct Task<T> {
    cell: Rc<dyn Join<T>>,
}

impl<T> Task<T> {
    /// Asks the task to stop: its future is dropped the next time the loop runs it,
    /// and the task resolves to `Err(Error::Cancelled)`. No effect once it finished.
    pub fn cancel(&self) {
        self.cell.request_cancel();
    }

    /// Whether the task has finished (completed, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.cell.is_finished()
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.cell.poll_join(cx)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.cell.detach();
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("finished", &self.is_finished())
            .finish()
    }
}
