//! [`Queue`]: asyncio's `Queue`, optionally bounded, in one of three orders
//! ([`Fifo`], [`Lifo`] for [`LifoQueue`], [`Priority`] for [`PriorityQueue`]), and
//! `shutdown` as in Python 3.13.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;

use super::waiters::{Place, Waiters};
use crate::Error;

/// Why a put refused its item, which it gives back.
pub enum PutError<T> {
    /// The queue is full ([`Queue::put_nowait`] only: `put` waits instead).
    Full(T),
    /// The queue was [shut down](Queue::shutdown).
    ShutDown(T),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(item) | PutError::ShutDown(item) => item,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PutError::Full(_) => "Full(..)",
            PutError::ShutDown(_) => "ShutDown(..)",
        })
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PutError::Full(_) => "the queue is full",
            PutError::ShutDown(_) => "the queue is shut down",
        })
    }
}

impl<T> std::error::Error for PutError<T> {}

/// For `?` in code that returns [`Error`]: the item is dropped with the error.
impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Self {
        match e {
            PutError::Full(_) => Error::QueueFull,
            PutError::ShutDown(_) => Error::QueueShutDown,
        }
    }
}

/// Why a get gave no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetError {
    /// The queue is empty ([`Queue::get_nowait`] only: `get` waits instead).
    Empty,
    /// The queue was [shut down](Queue::shutdown) and holds nothing more.
    ShutDown,
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GetError::Empty => "the queue is empty",
            GetError::ShutDown => "the queue is shut down",
        })
    }
}

impl std::error::Error for GetError {}

impl From<GetError> for Error {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Empty => Error::QueueEmpty,
            GetError::ShutDown => Error::QueueShutDown,
        }
    }
}

/// The order a [`Queue`] hands its items out in.
pub trait QueueOrder<T>: Default {
    /// Stores an item.
    fn push(&mut self, item: T);
    /// Takes the next item out.
    fn pop(&mut self) -> Option<T>;
    /// How many items it holds.
    fn len(&self) -> usize;
    /// Whether it holds none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// First in, first out: [`Queue`]'s default order.
pub struct Fifo<T>(VecDeque<T>);

/// Last in, first out: [`LifoQueue`]'s order.
pub struct Lifo<T>(Vec<T>);

/// Smallest first (a min-heap; equal items in no set order): [`PriorityQueue`]'s
/// order. Use `(priority, item)` tuples as asyncio programs do.
pub struct Priority<T: Ord>(BinaryHeap<Reverse<T>>);

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo(VecDeque::new())
    }
}

impl<T> Default for Lifo<T> {
    fn default() -> Self {
        Lifo(Vec::new())
    }
}

impl<T: Ord> Default for Priority<T> {
    fn default() -> Self {
        Priority(BinaryHeap::new())
    }
}

impl<T> QueueOrder<T> for Fifo<T> {
    fn push(&mut self, item: T) {
        self.0.push_back(item)
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl<T> QueueOrder<T> for Lifo<T> {
    fn push(&mut self, item: T) {
        self.0.push(item)
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl<T: Ord> QueueOrder<T> for Priority<T> {
    fn push(&mut self, item: T) {
        self.0.push(Reverse(item))
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop().map(|Reverse(item)| item)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Declares a named queue of one order: a `Queue<T, Order>` with its own `new` (a
/// plain alias would make `Queue::new` ambiguous), and every queue method through
/// `Deref`, as asyncio's subclasses inherit `Queue`'s.
macro_rules! ordered_queue {
    ($(#[$doc:meta])* $name:ident, $order:ident $(, $bound:path)?) => {
        $(#[$doc])*
        pub struct $name<T $(: $bound)?>(Queue<T, $order<T>>);

        impl<T $(: $bound)?> $name<T> {
            /// A queue holding at most `maxsize` items (0: no limit).
            pub fn new(maxsize: usize) -> Self {
                $name(Queue::with_order(maxsize))
            }
        }

        impl<T $(: $bound)?> std::ops::Deref for $name<T> {
            type Target = Queue<T, $order<T>>;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl<T $(: $bound)?> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name(self.0.clone())
            }
        }

        impl<T $(: $bound)?> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

ordered_queue! {
    /// asyncio's `LifoQueue`: the newest item comes out first. Every [`Queue`]
    /// method applies.
    LifoQueue, Lifo
}

ordered_queue! {
    /// asyncio's `PriorityQueue`: the smallest item comes out first (put
    /// `(priority, item)` tuples). Every [`Queue`] method applies.
    PriorityQueue, Priority, Ord
}

struct Inner<T, O> {
    items: RefCell<O>,
    /// 0: unbounded.
    maxsize: usize,
    getters: Waiters,
    putters: Waiters,
    /// Items put and not yet marked done (`task_done`).
    unfinished: Cell<usize>,
    /// Tasks in `join`, woken when `unfinished` comes down to 0.
    joiners: Waiters,
    shut_down: Cell<bool>,
    _items: std::marker::PhantomData<T>,
}

impl<T, O: QueueOrder<T>> Inner<T, O> {
    fn full(&self) -> bool {
        self.maxsize > 0 && self.items.borrow().len() >= self.maxsize
    }
}

/// asyncio's `Queue`: [`put`](Queue::put) waits while the queue is full,
/// [`get`](Queue::get) while it is empty, each first come, first served;
/// [`task_done`](Queue::task_done) and [`join`](Queue::join) count the work on the
/// items; [`shutdown`](Queue::shutdown) ends it. Items come out in the order `O`
/// ([`Fifo`] unless it is a [`LifoQueue`] or a [`PriorityQueue`]). Loop-local
/// (`!Send`); clones share the queue.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let q = shardloop::sync::Queue::<u32>::new(1);
/// let consumer = lp.create_task({
///     let q = q.clone();
///     async move {
///         let mut sum = 0;
///         while let Ok(v) = q.get().await {
///             sum += v;
///             q.task_done()?;
///         }
///         Ok::<u32, shardloop::Error>(sum) // the queue was shut down and emptied
///     }
/// })?;
/// lp.run_until_complete(async {
///     for i in 1..=3 {
///         q.put(i).await.unwrap(); // waits while the one slot is taken
///     }
///     q.join().await; // every item was marked done
///     q.shutdown(false);
/// })?;
/// assert_eq!(lp.run_until_complete(consumer)???, 6);
/// # Ok::<(), shardloop::Error>(())
/// ```
pub struct Queue<T, O = Fifo<T>> {
    inner: Rc<Inner<T, O>>,
}

impl<T, O> Clone for Queue<T, O> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Queue<T> {
    /// A first-in, first-out queue holding at most `maxsize` items (0: no limit).
    pub fn new(maxsize: usize) -> Self {
        Queue::with_order(maxsize)
    }
}

impl<T, O: QueueOrder<T>> Queue<T, O> {
    /// A queue in the order `O` holding at most `maxsize` items (0: no limit).
    pub fn with_order(maxsize: usize) -> Self {
        Queue {
            inner: Rc::new(Inner {
                items: RefCell::new(O::default()),
                maxsize,
                getters: Waiters::default(),
                putters: Waiters::default(),
                unfinished: Cell::new(0),
                joiners: Waiters::default(),
                shut_down: Cell::new(false),
                _items: std::marker::PhantomData,
            }),
        }
    }

    /// Puts `item` in, waiting while the queue is full. `Err(PutError::ShutDown)`,
    /// with the item, once the queue is shut down (a waiting put wakes then).
    pub fn put(&self, item: T) -> impl Future<Output = Result<(), PutError<T>>> + '_ {
        let inner = &*self.inner;
        let mut place = Place::new(&inner.putters);
        let mut item = Some(item);
        poll_fn(move |cx| {
            let go = inner.shut_down.get()
                || if place.is_waiting() {
                    match place.poll_woken(cx) {
                        // Woken for room that someone else took: back in the line.
                        Poll::Ready(()) if inner.full() => place.poll_woken(cx).is_ready(),
                        polled => polled.is_ready(),
                    }
                } else if !inner.full() && inner.putters.is_empty() {
                    true
                } else {
                    // Waits behind earlier putters too, so that room goes to them first.
                    place.poll_woken(cx).is_ready()
                };
            if !go {
                return Poll::Pending;
            }
            let item = item.take().expect("a put polled after it completed");
            if inner.shut_down.get() {
                return Poll::Ready(Err(PutError::ShutDown(item)));
            }
            self.push(item);
            Poll::Ready(Ok(()))
        })
    }

    /// Puts `item` in without waiting; gives it back if the queue is full or shut
    /// down.
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        if self.inner.shut_down.get() {
            return Err(PutError::ShutDown(item));
        }
        if self.inner.full() {
            return Err(PutError::Full(item));
        }
        self.push(item);
        Ok(())
    }

    fn push(&self, item: T) {
        let inner = &*self.inner;
        inner.items.borrow_mut().push(item);
        inner.unfinished.set(inner.unfinished.get() + 1);
        inner.getters.wake_one();
        // Room may be left for the next putter too (a woken putter that found room).
        if !inner.full() && !inner.putters.is_empty() {
            inner.putters.wake_one();
        }
    }

    /// Takes the next item, waiting while the queue is empty.
    /// `Err(GetError::ShutDown)` once the queue is shut down and empty (a waiting
    /// get wakes then); the items left at a non-immediate shutdown still come out.
    pub fn get(&self) -> impl Future<Output = Result<T, GetError>> + '_ {
        let inner = &*self.inner;
        let mut place = Place::new(&inner.getters);
        poll_fn(move |cx| loop {
            if !place.is_waiting() && inner.getters.is_empty() {
                if let Some(item) = self.take() {
                    return Poll::Ready(Ok(item));
                }
            }
            if inner.shut_down.get() {
                return Poll::Ready(self.take().ok_or(GetError::ShutDown));
            }
            match place.poll_woken(cx) {
                Poll::Ready(()) => match self.take() {
                    Some(item) => return Poll::Ready(Ok(item)),
                    None => continue,
                },
                Poll::Pending => return Poll::Pending,
            }
        })
    }

    /// Takes the next item without waiting.
    pub fn get_nowait(&self) -> Result<T, GetError> {
        match self.take() {
            Some(item) => Ok(item),
            None if self.inner.shut_down.get() => Err(GetError::ShutDown),
            None => Err(GetError::Empty),
        }
    }

    fn take(&self) -> Option<T> {
        let inner = &*self.inner;
        let item = inner.items.borrow_mut().pop()?;
        // Only a bounded queue has putters waiting for room.
        if inner.maxsize > 0 {
            inner.putters.wake_one();
        }
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
                    inner.joiners.wake_all();
                }
                Ok(())
            }
        }
    }

    /// Waits until every item put so far was marked done.
    pub async fn join(&self) {
        let inner = &*self.inner;
        // Joiners are woken all at once, when the work is done: one that gave up
        // after that hands nothing on (a joiner that came later waits for later work).
        let mut place = Place::in_broadcast(&inner.joiners);
        poll_fn(|cx| {
            if !place.is_waiting() && inner.unfinished.get() == 0 {
                return Poll::Ready(());
            }
            place.poll_woken(cx)
        })
        .await;
    }

    /// Python 3.13's `shutdown`: from now on puts fail with `PutError::ShutDown`,
    /// and gets fail with `GetError::ShutDown` once the queue is empty; every waiting
    /// put and get wakes to see it. With `immediate`, the items still in the queue
    /// are dropped at once (and count as done for [`join`](Self::join)), so gets
    /// fail right away. Idempotent.
    pub fn shutdown(&self, immediate: bool) {
        let inner = &*self.inner;
        inner.shut_down.set(true);
        if immediate {
            let dropped = std::mem::take(&mut *inner.items.borrow_mut());
            let n = dropped.len();
            drop(dropped);
            let left = inner.unfinished.get().saturating_sub(n);
            inner.unfinished.set(left);
            if left == 0 {
                inner.joiners.wake_all();
            }
        }
        inner.getters.wake_all();
        inner.putters.wake_all();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.get()
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

impl<T, O: QueueOrder<T>> fmt::Debug for Queue<T, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}
