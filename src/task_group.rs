//! [`TaskGroup`]: asyncio's structured concurrency. Every child runs as its own task,
//! wrapped in a [`Member`] that tells the group when the child ends and how.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::error::panic_message;
use crate::{AnyTask, Error, Task};

/// What the group and its members share.
#[derive(Default)]
struct Group {
    /// The children still running (their futures alive), for cancelling them.
    /// `None` for the moment between a child's slot and its task being made.
    children: RefCell<Slab<Option<AnyTask>>>,
    /// The first child's failure: what `join` returns.
    error: RefCell<Option<Error>>,
    /// A child failed or the group was dropped: the others are being cancelled.
    aborting: Cell<bool>,
    joiner: Cell<Option<Waker>>,
}

impl Group {
    /// Cancels every child still running.
    fn abort(&self) {
        self.aborting.set(true);
        let children: Vec<AnyTask> = self.children.borrow().iter().filter_map(|(_, c)| c.clone()).collect();
        for child in children {
            child.cancel();
        }
    }

    /// A child's future ended (finished, failed or was dropped).
    fn leave(&self, key: usize) {
        let left = {
            let mut children = self.children.borrow_mut();
            let gone = children.try_remove(key);
            let left = children.len();
            drop(children);
            drop(gone);
            left
        };
        if left == 0 {
            if let Some(w) = self.joiner.take() {
                w.wake();
            }
        }
    }

    fn fail(&self, error: Error) {
        self.error.borrow_mut().get_or_insert(error);
        self.abort();
    }
}

pin_project_lite::pin_project! {
    /// A child's future, as its task runs it: a panic is the group's failure (and
    /// then goes on to the task, whose handle and the exception handler see it);
    /// dropping it, whatever the reason, takes the child off the group.
    struct Member<F> {
        #[pin]
        fut: F,
        group: Rc<Group>,
        key: usize,
    }

    impl<F> PinnedDrop for Member<F> {
        fn drop(this: Pin<&mut Self>) {
            this.group.leave(this.key);
        }
    }
}

impl<F: Future> Future for Member<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        match catch_unwind(AssertUnwindSafe(|| this.fut.poll(cx))) {
            Ok(polled) => polled,
            Err(payload) => {
                this.group.fail(Error::Panicked(panic_message(&*payload)));
                resume_unwind(payload)
            }
        }
    }
}

/// asyncio's `TaskGroup`: tasks spawned into it are joined together. The first child
/// to panic cancels the others, and [`join`](Self::join) returns its
/// `Err(Error::Panicked(msg))` once every child has ended. A child cancelled on its
/// own (its `Task::cancel`) is not a failure. Dropping the group before `join`
/// finishes (or dropping the `join` future: the task awaiting it was cancelled)
/// cancels the children still running. Loop-local, on the running loop.
///
/// ```
/// shardloop::run(async {
///     let tg = shardloop::TaskGroup::new();
///     let a = tg.spawn(async { 1 });
///     let b = tg.spawn(async { shardloop::yield_now().await; 2 });
///     tg.join().await?;
///     assert_eq!(a.await? + b.await?, 3);
///
///     let tg = shardloop::TaskGroup::new();
///     let sibling = tg.spawn(std::future::pending::<()>());
///     tg.spawn(async { panic!("boom") }).detach();
///     assert!(matches!(tg.join().await, Err(shardloop::Error::Panicked(m)) if m == "boom"));
///     assert!(matches!(sibling.await, Err(shardloop::Error::Cancelled)));
///     Ok::<(), shardloop::Error>(())
/// })??;
/// # Ok::<(), shardloop::Error>(())
/// ```
#[must_use = "a TaskGroup dropped unjoined cancels its tasks"]
pub struct TaskGroup {
    group: Rc<Group>,
}

impl TaskGroup {
    /// An empty group.
    pub fn new() -> Self {
        TaskGroup {
            group: Rc::new(Group::default()),
        }
    }

    /// Runs `fut` as a task of the group on the running loop. Spawned into a group
    /// that is already cancelling its children, the task is cancelled at once (asyncio
    /// refuses it there).
    ///
    /// # Panics
    /// Outside a running loop, as [`spawn`](crate::spawn) does.
    pub fn spawn<F: Future + 'static>(&self, fut: F) -> Task<F::Output> {
        let key = self.group.children.borrow_mut().insert(None);
        let task = crate::spawn(Member {
            fut,
            group: self.group.clone(),
            key,
        });
        if let Some(slot) = self.group.children.borrow_mut().get_mut(key) {
            *slot = Some(task.any_task());
        }
        if self.group.aborting.get() {
            task.cancel();
        }
        task
    }

    /// How many of its tasks are still running.
    pub fn len(&self) -> usize {
        self.group.children.borrow().len()
    }

    /// Whether none of its tasks is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every task of the group has ended; `Err` with the first child's
    /// panic if one panicked (its siblings were cancelled then).
    pub async fn join(self) -> Result<(), Error> {
        poll_fn(|cx| {
            if self.group.children.borrow().is_empty() {
                return Poll::Ready(());
            }
            self.group.joiner.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
        match self.group.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Default for TaskGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TaskGroup {
    fn drop(&mut self) {
        if !self.group.children.borrow().is_empty() {
            self.group.abort();
        }
    }
}

impl fmt::Debug for TaskGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("running", &self.len())
            .field("aborting", &self.group.aborting.get())
            .finish()
    }
}
