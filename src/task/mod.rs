//! Tasks: futures (`!Send` allowed) driven by their loop, and their [`Task`] handles.
//!
//! A task is one allocation: a header (state word, vtable, owning loop) followed by
//! the future, later its output ([`raw`]). Its waker points at the header: a wake on
//! the loop's own thread pushes it straight into the ready queue, a wake anywhere else
//! sends it through the loop's inbox, and a waker that outlives its loop does nothing.
//! The future is dropped in place, exactly once, and never moved after its first poll.

pub(crate) mod coop;
mod introspect;
pub(crate) mod raw;
mod yield_now;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::Error;
pub(crate) use raw::TaskRef;
pub use introspect::{all_tasks, current_task, AnyTask};
pub use yield_now::{yield_now, YieldNow};

/// A waker that does nothing, for a first poll made outside any task.
struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

thread_local! {
    static NOOP_WAKER: Waker = Waker::from(Arc::new(NoopWake));
}

/// A waker that does nothing.
#[cfg(test)]
pub(crate) fn noop_waker() -> Waker {
    NOOP_WAKER.with(Waker::clone)
}

/// Polls `fut` once with a waker that does nothing. For work that may finish at once
/// and otherwise becomes a task: the task's first poll gives the future its real
/// waker, as the `Future` contract says every poll may.
pub(crate) fn poll_detached<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    NOOP_WAKER.with(|waker| fut.poll(&mut Context::from_waker(waker)))
}

/// A future running on a loop; itself a future of its result.
///
/// Awaiting a `Task` gives `Ok(output)`, `Err(Error::Cancelled)` if it was cancelled
/// (or its loop closed first), `Err(Error::Panicked(msg))` if it panicked, or
/// `Err(Error::AwaitedItself)` if awaited from inside its own future. Dropping a
/// `Task` detaches it: the future keeps running, and its output is dropped.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let task = lp.create_task(async { 7 })?;
/// assert!(!task.is_finished());
/// assert_eq!(lp.run_until_complete(task)??, 7);
///
/// let background = lp.create_task(async { println!("runs on") })?;
/// background.detach();
/// lp.stop();
/// lp.run_forever()?;
/// # Ok::<(), shardloop::Error>(())
/// ```
#[must_use = "dropping a Task detaches it; await it, detach() it or cancel() it"]
pub struct Task<T> {
    raw: TaskRef,
    /// `!Send` (the output is read on the loop's thread) and typed by the output.
    _output: std::marker::PhantomData<std::rc::Rc<T>>,
}

impl<T> Task<T> {
    pub(crate) fn from_raw(raw: TaskRef) -> Self {
        Task {
            raw,
            _output: std::marker::PhantomData,
        }
    }

    /// Asks the task to stop: its future is dropped the next time the loop runs it,
    /// and the task resolves to `Err(Error::Cancelled)`. No effect once it finished.
    pub fn cancel(&self) {
        self.raw.request_cancel();
    }

    /// Whether the task has finished (completed, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.raw.is_finished()
    }

    /// Its name: the one given to [`create_task_named`](crate::EventLoop::create_task_named)
    /// or [`set_name`](Self::set_name), else `Task-N` (asyncio's `get_name`).
    pub fn name(&self) -> String {
        self.raw.name()
    }

    /// Renames it (asyncio's `set_name`).
    pub fn set_name(&self, name: &str) {
        self.raw.set_name(name)
    }

    /// Its number on its loop (1 for the first task the loop made): what
    /// [`AnyTask::id`] compares against.
    pub fn id(&self) -> u64 {
        self.raw.id()
    }

    /// An untyped reference to it, as [`current_task`] and [`all_tasks`] give: to
    /// compare with theirs, or to name or cancel it from code that cannot hold the
    /// typed handle.
    pub fn any_task(&self) -> AnyTask {
        introspect::wrap(self.raw.clone())
    }

    /// Whether it finished with an error (`Panicked`, `Cancelled`) that awaiting
    /// it would return. False while it runs and once its result was taken.
    pub fn failed(&self) -> bool {
        self.raw.failure().is_some()
    }

    /// Whether it finished cancelled (asyncio's `Task.cancelled()`): awaiting it
    /// would return `Err(Error::Cancelled)`. False while it runs and once its
    /// result was taken.
    pub fn cancelled(&self) -> bool {
        self.raw.failure() == Some(raw::Failure::Cancelled)
    }

    /// Whether it finished with an error other than a cancel (a panic): what
    /// asyncio's `wait(FIRST_EXCEPTION)` returns on.
    pub(crate) fn raised(&self) -> bool {
        self.raw.failure() == Some(raw::Failure::Error)
    }

    /// Ready when the task has finished, leaving its result in place (for
    /// combinators that pick finished tasks without taking their output).
    pub(crate) fn poll_finished(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.raw.poll_finished(cx)
    }

    /// Lets the task run on without a handle: the same as dropping the `Task`, said
    /// out loud. Its output is dropped when it finishes.
    pub fn detach(self) {
        drop(self);
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        coop::poll_budgeted(cx, |cx| {
            let mut out: Poll<Result<T, Error>> = Poll::Pending;
            // SAFETY: `out` has the task's output type: the handle was made for this
            // task with `T = F::Output`.
            unsafe {
                self.raw
                    .poll_join(&mut out as *mut Poll<Result<T, Error>> as *mut (), cx)
            };
            out
        })
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.raw.detach();
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.raw.name())
            .field("future", &self.raw.type_name())
            .field("finished", &self.is_finished())
            .finish()
    }
}
