//! What waits in the ready queue: callbacks (behind a [`Handle`]) and tasks.
//!
//! A callback is one `Rc` allocation, erased to `Rc<dyn Runnable>`; a task is a
//! reference to its own allocation; a threadsafe call is a marker for the next
//! callback of the loop's mail queue, where it waits in place. So the ready queue is a
//! plain `VecDeque` of pointers and running an entry is one indirect call.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use super::LoopInner;
use crate::task::TaskRef;

/// One entry of the ready queue (or of the timer queue, which hands its due entries
/// to the ready queue).
pub(crate) trait Runnable {
    /// Runs the callback, or polls the task. Called on the loop's thread only.
    fn run(&self, lp: &LoopInner);
    /// Drops the callback without running it. Returns whether it was still pending.
    fn cancel(&self) -> bool;
    /// Whether `cancel` was called.
    fn is_cancelled(&self) -> bool;
    /// A name for logs (the closure's or future's type name).
    fn name(&self) -> &'static str;
}

/// An entry of the ready queue.
pub(crate) enum Ready {
    /// A callback (behind a `Handle`) or a due timer.
    Entry(Rc<dyn Runnable>),
    /// A task to poll.
    Task(TaskRef),
    /// A `call_soon_threadsafe` callback from another thread: the next one in the
    /// loop's mail queue (`LoopInner::mail`, in the same order as these markers), where
    /// it waits in place, with no allocation of its own.
    Mail,
}

impl Ready {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Ready::Entry(entry) => entry.name(),
            Ready::Task(task) => task.type_name(),
            Ready::Mail => "call_soon_threadsafe callback",
        }
    }
}

/// A callback and its cancelled flag, in one allocation.
struct CallbackCell<F> {
    cancelled: Cell<bool>,
    f: Cell<Option<F>>,
}

impl<F: FnOnce()> Runnable for CallbackCell<F> {
    fn run(&self, _lp: &LoopInner) {
        if let Some(f) = self.f.take() {
            f();
        }
    }

    fn cancel(&self) -> bool {
        self.cancelled.set(true);
        // Take it out first, drop it after: its destructor may re-enter the loop.
        let f = self.f.take();
        f.is_some()
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// Wraps a closure as a ready-queue entry.
pub(crate) fn callback<F: FnOnce() + 'static>(f: F) -> Rc<dyn Runnable> {
    Rc::new(CallbackCell {
        cancelled: Cell::new(false),
        f: Cell::new(Some(f)),
    })
}

/// A callback scheduled with [`EventLoop::call_soon`](crate::EventLoop::call_soon).
///
/// Cancelling it drops the callback at once; a cancelled callback never runs.
/// Dropping the handle does not cancel anything.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let h = lp.call_soon(|| unreachable!("cancelled"))?;
/// h.cancel();
/// assert!(h.cancelled());
/// lp.stop();
/// lp.run_forever()?;
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) entry: Rc<dyn Runnable>,
}

impl Handle {
    /// Cancels the callback: it will not run, and it is dropped now. Idempotent.
    pub fn cancel(&self) {
        self.entry.cancel();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.entry.is_cancelled()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("callback", &self.entry.name())
            .field("cancelled", &self.cancelled())
            .finish()
    }
}
