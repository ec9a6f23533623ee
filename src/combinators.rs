//! asyncio's combinators over tasks: [`gather`], [`wait`], [`as_completed`] and
//! [`shield`]. Each takes or makes [`Task`]s on the running loop and watches them
//! finish through their join wakers, without polling their futures itself.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::{get_running_loop, Error, Task};

/// asyncio's `gather`: runs each future as a task on the running loop and returns
/// their outputs in input order. The first task to fail (a panic, a cancel) makes
/// `gather` return that error at once; the other tasks keep running, as in asyncio.
/// Dropping `gather` before it returns (its task cancelled, a timeout around it)
/// cancels the tasks it made that still run, as cancelling asyncio's `gather` does.
/// A [`Task`] given to it is a future like any other: the task made for it awaits
/// it, and cancelling that one drops the handle, which detaches the task rather
/// than cancel it (pass the futures themselves, or cancel the tasks you hold).
/// `Err(Error::NoRunningLoop)` outside a running loop.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let out = lp.run_until_complete(shardloop::gather(vec![
///     Box::pin(async { 1u32 }) as std::pin::Pin<Box<dyn std::future::Future<Output = u32>>>,
///     Box::pin(async { shardloop::yield_now().await; 2 }),
/// ]))?;
/// assert_eq!(out?, vec![1, 2]);
/// # Ok::<(), shardloop::Error>(())
/// ```
pub async fn gather<F>(futures: impl IntoIterator<Item = F>) -> Result<Vec<F::Output>, Error>
where
    F: Future + 'static,
{
    let lp = get_running_loop()?;
    let mut running = Gathered(Vec::new());
    for fut in futures {
        running.0.push(Some(lp.create_task(fut)?));
    }
    let mut outputs: Vec<Option<F::Output>> = running.0.iter().map(|_| None).collect();
    let result = poll_fn(|cx| {
        let mut pending = false;
        for (task, output) in running.0.iter_mut().zip(outputs.iter_mut()) {
            let Some(t) = task else { continue };
            match Pin::new(t).poll(cx) {
                Poll::Ready(Ok(v)) => {
                    *output = Some(v);
                    *task = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await;
    // Returned, even with an error: the other tasks run on, detached.
    running.0.drain(..).for_each(drop);
    result?;
    Ok(outputs.into_iter().map(|o| o.expect("every task finished")).collect())
}

/// The tasks of a [`gather`] that has not returned: dropped with it, they are
/// cancelled.
struct Gathered<T>(Vec<Option<Task<T>>>);

impl<T> Drop for Gathered<T> {
    fn drop(&mut self) {
        self.0.iter().flatten().for_each(Task::cancel);
    }
}

/// When [`wait`] returns (asyncio's `FIRST_COMPLETED`, `FIRST_EXCEPTION`,
/// `ALL_COMPLETED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any task has finished.
    FirstCompleted,
    /// As soon as any task has panicked, else when all have finished. A cancelled
    /// task is finished, not failed, as in asyncio (`FIRST_EXCEPTION` does not
    /// count a `CancelledError`).
    FirstException,
    /// When every task has finished.
    AllCompleted,
}

/// asyncio's `wait`: waits for `tasks` as `when` says, or until `timeout` passes,
/// and gives them back split into `(done, pending)`, each in input order. Nothing
/// is cancelled: the pending tasks run on, and their results stay in the handles.
/// An empty `tasks` returns at once (asyncio raises `ValueError` there).
///
/// ```
/// use std::time::Duration;
/// use shardloop::{time::sleep, ReturnWhen};
/// shardloop::run(async {
///     let quick = shardloop::spawn(async { 1 });
///     let slow = shardloop::spawn(async { sleep(Duration::from_secs(60)).await; 2 });
///     let (done, pending) = shardloop::wait(vec![quick, slow], ReturnWhen::FirstCompleted, None).await;
///     assert_eq!((done.len(), pending.len()), (1, 1));
///     pending[0].cancel();
///     for t in done { assert_eq!(t.await.unwrap(), 1); }
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub async fn wait<T>(
    tasks: impl IntoIterator<Item = Task<T>>,
    when: ReturnWhen,
    timeout: Option<Duration>,
) -> (Vec<Task<T>>, Vec<Task<T>>) {
    let tasks: Vec<Task<T>> = tasks.into_iter().collect();
    let mut deadline = timeout.map(crate::time::sleep);
    poll_fn(|cx| {
        let mut finished = 0;
        let mut raised = false;
        for t in &tasks {
            if t.poll_finished(cx).is_ready() {
                finished += 1;
                raised |= t.raised();
            }
        }
        let met = match when {
            ReturnWhen::FirstCompleted => finished > 0,
            ReturnWhen::FirstException => raised,
            ReturnWhen::AllCompleted => false,
        };
        if met || finished == tasks.len() {
            return Poll::Ready(());
        }
        match deadline.as_mut() {
            Some(sleep) => Pin::new(sleep).poll(cx),
            None => Poll::Pending,
        }
    })
    .await;
    tasks.into_iter().partition(Task::is_finished)
}

/// asyncio's `shield`: a new task that awaits `task`, so that cancelling the new
/// one (or dropping it) leaves `task` running, detached. Its output is `task`'s
/// result. (Dropping a plain `Task` handle already detaches rather than cancels;
/// `shield` is for code that hands out a handle others may `cancel()`.)
///
/// # Panics
/// Outside a running loop, as [`spawn`](crate::spawn) does.
///
/// ```
/// shardloop::run(async {
///     let inner = shardloop::spawn(async { shardloop::yield_now().await; 5 });
///     let outer = shardloop::shield(inner);
///     outer.cancel();
///     assert!(matches!(outer.await, Err(shardloop::Error::Cancelled)));
///     // The shielded task ran on to completion meanwhile.
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn shield<T: 'static>(task: Task<T>) -> Task<Result<T, Error>> {
    crate::spawn(task)
}

/// The tasks of an [`as_completed`] whose join wakers fired, in the order they did.
struct Finished {
    order: Mutex<VecDeque<usize>>,
    consumer: Mutex<Option<Waker>>,
}

/// The join waker [`as_completed`] gives task `index`: it records the order.
struct FinishWaker {
    index: usize,
    finished: Arc<Finished>,
}

impl Wake for FinishWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let f = &self.finished;
        f.order.lock().unwrap_or_else(|e| e.into_inner()).push_back(self.index);
        if let Some(w) = f.consumer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

/// The stream of [`as_completed`]: each task's result, in the order they finish.
#[must_use = "streams do nothing unless polled"]
pub struct AsCompleted<T> {
    tasks: Vec<Option<Task<T>>>,
    finished: Arc<Finished>,
    /// Whether task `i`'s waker was registered (it then reports `i` once).
    watched: Vec<bool>,
    left: usize,
}

/// asyncio's `as_completed`: the results of `tasks` as a stream, in the order the
/// tasks finish (not input order). Bound it with
/// [`time::timeout`](crate::time::timeout) for asyncio's `timeout=`.
///
/// ```
/// use futures_util::StreamExt;
/// use std::time::Duration;
/// shardloop::run(async {
///     let slow = shardloop::spawn(async { shardloop::time::sleep(Duration::from_millis(20)).await; "slow" });
///     let fast = shardloop::spawn(async { "fast" });
///     let order: Vec<_> = shardloop::as_completed(vec![slow, fast]).map(|r| r.unwrap()).collect().await;
///     assert_eq!(order, ["fast", "slow"]);
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn as_completed<T>(tasks: impl IntoIterator<Item = Task<T>>) -> AsCompleted<T> {
    let tasks: Vec<Option<Task<T>>> = tasks.into_iter().map(Some).collect();
    AsCompleted {
        watched: vec![false; tasks.len()],
        left: tasks.len(),
        tasks,
        finished: Arc::new(Finished {
            order: Mutex::new(VecDeque::new()),
            consumer: Mutex::new(None),
        }),
    }
}

impl<T> AsCompleted<T> {
    /// How many results are still to come.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// The next result to finish; `None` once every task's result was given.
    pub async fn next(&mut self) -> Option<Result<T, Error>> {
        poll_fn(|cx| self.poll_next_result(cx)).await
    }

    fn poll_next_result(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        *self.finished.consumer.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(cx.waker().clone());
        // Tasks not yet watched get a waker that records their index (an already
        // finished one records it at once).
        for (index, task) in self.tasks.iter().enumerate() {
            let (Some(task), false) = (task, self.watched[index]) else {
                continue;
            };
            self.watched[index] = true;
            let waker = Waker::from(Arc::new(FinishWaker {
                index,
                finished: self.finished.clone(),
            }));
            if task.poll_finished(&mut Context::from_waker(&waker)).is_ready() {
                waker.wake();
            }
        }
        let mut order = self.finished.order.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&index) = order.front() else {
            return Poll::Pending;
        };
        let task = self.tasks[index].as_mut().expect("each task finishes once");
        // Pending only when the task's cooperative budget is spent (it then wakes
        // us): the index stays first in line.
        let result = std::task::ready!(Pin::new(task).poll(cx));
        order.pop_front();
        drop(order);
        self.tasks[index] = None;
        self.left -= 1;
        Poll::Ready(Some(result))
    }
}

impl<T> futures_core::Stream for AsCompleted<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_result(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}
