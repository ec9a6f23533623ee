//! [`Queue`]: asyncio's `Queue`, first in first out, optionally bounded.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;

use super::event::Event;
use super::waiters::{Place, Waiters};
use crate::Error;

/// Why [`Queue::put_nowait`] refused: the queue is full. Holds the item.
pub struct QueueFull<T>(pub T);

impl<T> fmt::Debug for QueueFull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueueFull(..)")
    }
}

impl<T> fmt::Display for QueueFull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is full")
    }
}

impl<T> std::error::Error for QueueFull<T> {}

/// Why [`Queue::get_nowait`] refused: the queue is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEmpty;

impl fmt::Display for QueueEmpty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is empty")
    }
}

impl std::error::Error for QueueEmpty {}

struct Inner<T> {
    items: RefCell<VecDeque<T>>,
    /// 0: unbounded.
    maxsize: usize,
    getters: Waiters,
    putters: Waiters,
    /// Items put and not yet marked done (`task_done`).
    unfinished: Cell<usize>,
    /// Set whenever `unfinished` is 0 (what `join` waits for).
    finished: Event,
}

impl<T> Inner<T> {
    fn full(&self) -> bool {
        self.maxsize > 0 && self.items.borrow().len() >= self.maxsize
    }
}

/// asyncio's `Queue`: [`put`](Queue::put) waits while the queue is full,
/// [`get`](Queue::get) while it is empty, each first come, first served;
/// [`task_done`](Queue::task_done) and [`join`](Queue::join) count the work on the
/// items. Loop-local (`!Send`); clones share the queue.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let q = shardloop::sync::Queue::<u32>::new(1);
/// let consumer = lp.create_task({
///     let q = q.clone();
///     async move {
///         let mut sum = 0;
///         for _ in 0..3 {
///             sum += q.get().await;
///             q.task_done()?;
///         }
///         Ok::<u32, shardloop::Error>(sum)
///     }
/// })?;
/// lp.run_until_complete(async {
///     for i in 1..=3 {
///         q.put(i).await; // waits while the one slot is taken
///     }
///     q.join().await; // every item was marked done
/// })?;
/// assert_eq!(lp.run_until_complete(consumer)???, 6);
/// # Ok::<(), shardloop::Error>(())
/// ```
pub struct Queue<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Queue<T> {
    /// A queue holding at most `maxsize` items (0: no limit).
    pub fn new(maxsize: usize) -> Queue<T> {
        let finished = Event::new();
        finished.set();
        Queue {
            inner: Rc::new(Inner {
                items: RefCell::new(VecDeque::new()),
                maxsize,
                getters: Waiters::default(),
                putters: Waiters::default(),
                unfinished: Cell::new(0),
                finished,
            }),
        }
    }

    /// Puts `item` in, waiting while the queue is full.
    pub async fn put(&self, item: T) {
        let inner = &*self.inner;
        let mut place = Place::new(&inner.putters);
        // Waits behind earlier putters too, so that room goes to them first.
        poll_fn(|cx| {
            if !place.is_waiting() && !inner.full() && inner.putters.is_empty() {
                return Poll::Ready(());
            }
            match place.poll_woken(cx) {
                Poll::Ready(()) if inner.full() => place.poll_woken(cx),
                other => other,
            }
        })
        .await;
        drop(place);
        self.push(item);
    }

    /// Puts `item` in without waiting; gives it back if the queue is full.
    pub fn put_nowait(&self, item: T) -> Result<(), QueueFull<T>> {
        if self.inner.full() {
            return Err(QueueFull(item));
        }
        self.push(item);
        Ok(())
    }

    fn push(&self, item: T) {
        let inner = &*self.inner;
        inner.items.borrow_mut().push_back(item);
        inner.unfinished.set(inner.unfinished.get() + 1);
        inner.finished.clear();
        inner.getters.wake_one();
        // Room may be left for the next putter too (a woken putter that found room).
        if !inner.full() && !inner.putters.is_empty() {
            inner.putters.wake_one();
        }
    }

    /// Takes the oldest item, waiting while the queue is empty.
    pub fn get(&self) -> impl Future<Output = T> + '_ {
        let inner = &*self.inner;
        let mut place = Place::new(&inner.getters);
        poll_fn(move |cx| loop {
            if !place.is_waiting() && inner.getters.is_empty() {
                if let Some(item) = self.take() {
                    return Poll::Ready(item);
                }
            }
            match place.poll_woken(cx) {
                Poll::Ready(()) => match self.take() {
                    Some(item) => return Poll::Ready(item),
                    None => continue,
                },
                Poll::Pending => return Poll::Pending,
            }
        })
    }

    /// Takes the oldest item without waiting.
    pub fn get_nowait(&self) -> Result<T, QueueEmpty> {
        self.take().ok_or(QueueEmpty)
    }

    fn take(&self) -> Option<T> {
        let inner = &*self.inner;
        let item = inner.items.borrow_mut().pop_front()?;
        inner.putters.wake_one();
        // Items may be left for the next getter too.
        if !inner.items.borrow().is_empty() {
            inner.getters.wake_one();
        }
        Some(item)
    }

    /// Marks one item taken out as processed. `Err(Error::InvalidState)` if called
    /// more often than items were put ("task_done() called too many times").
    pub fn task_done(&self) -> Result<(), Error> {
        let inner = &*self.inner;
        match inner.unfinished.get() {
            0 => Err(Error::InvalidState),
            n => {
                inner.unfinished.set(n - 1);
                if n == 1 {
                    inner.finished.set();
                }
                Ok(())
            }
        }
    }

    /// Waits until every item put so far was marked done.
    pub async fn join(&self) {
        if self.inner.unfinished.get() > 0 {
            self.inner.finished.wait().await;
        }
    }

    /// How many items it holds.
    pub fn qsize(&self) -> usize {
        self.inner.items.borrow().len()
    }

    /// Whether it holds no item.
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether a `put` would wait.
    pub fn full(&self) -> bool {
        self.inner.full()
    }

    /// The bound given to [`new`](Queue::new) (0: none).
    pub fn maxsize(&self) -> usize {
        self.inner.maxsize
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .finish()
    }
}
