//! Looking at the loop's tasks from inside: [`current_task`], [`all_tasks`] and the
//! untyped [`AnyTask`] they return (asyncio's `current_task()` / `all_tasks()`).

use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use super::raw::TaskRef;
use crate::get_running_loop;

/// A task of any output type, as [`current_task`] and [`all_tasks`] see it: its
/// name, its number, and a way to cancel it. Holding one keeps the task's memory
/// (not its future) alive; it never reads or drops the output, which stays with
/// the [`Task`](crate::Task) handle. Loop-local (`!Send`).
#[derive(Clone)]
pub struct AnyTask {
    raw: TaskRef,
    _local: PhantomData<Rc<()>>,
}

impl AnyTask {
    /// Its name (see [`Task::name`](crate::Task::name)).
    pub fn name(&self) -> String {
        self.raw.name()
    }

    /// Renames it.
    pub fn set_name(&self, name: &str) {
        self.raw.set_name(name)
    }

    /// Its number on its loop (see [`Task::id`](crate::Task::id)).
    pub fn id(&self) -> u64 {
        self.raw.id()
    }

    /// Asks it to stop, as [`Task::cancel`](crate::Task::cancel) does.
    pub fn cancel(&self) {
        self.raw.request_cancel()
    }

    /// Whether it has finished.
    pub fn is_finished(&self) -> bool {
        self.raw.is_finished()
    }
}

impl PartialEq for AnyTask {
    fn eq(&self, other: &Self) -> bool {
        self.raw.same(&other.raw)
    }
}

impl Eq for AnyTask {}

impl fmt::Debug for AnyTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyTask")
            .field("name", &self.name())
            .field("future", &self.raw.type_name())
            .finish()
    }
}

pub(super) fn wrap(raw: TaskRef) -> AnyTask {
    AnyTask {
        raw,
        _local: PhantomData,
    }
}

/// The task whose future is being polled right now on this thread's running loop;
/// `None` in a callback or outside a loop (asyncio's `current_task()`). The future
/// given to [`run_until_complete`](crate::EventLoop::run_until_complete) or
/// [`run`](crate::run) is polled in place, not as a task (it may borrow from the
/// caller's stack), so there it is `None` too, where asyncio has a wrapping task.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let t = lp.create_task(async { shardloop::current_task().unwrap().id() })?;
/// let id = t.id();
/// assert_eq!(lp.run_until_complete(t)??, id);
/// assert!(shardloop::current_task().is_none());
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn current_task() -> Option<AnyTask> {
    get_running_loop().ok()?.inner.current_task().map(wrap)
}

/// Every unfinished task of this thread's running loop (asyncio's `all_tasks()`);
/// empty outside a running loop.
pub fn all_tasks() -> Vec<AnyTask> {
    let Ok(lp) = get_running_loop() else {
        return Vec::new();
    };
    lp.inner.all_tasks().into_iter().map(wrap).collect()
}
