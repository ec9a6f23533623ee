//! [`Barrier`]: asyncio's, on the loop, with `reset` and `abort`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::rc::Rc;

use super::waiters::{poll_woken, Waiter, Waiters};

/// Why a [`Barrier::wait`] failed: the barrier was reset or aborted while it waited,
/// or is broken (aborted) now (asyncio's `BrokenBarrierError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokenBarrier;

impl fmt::Display for BrokenBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the barrier is broken")
    }
}

impl std::error::Error for BrokenBarrier {}

impl From<BrokenBarrier> for crate::Error {
    fn from(_: BrokenBarrier) -> Self {
        crate::Error::BrokenBarrier
    }
}

/// How a round of waiters ended: `None` while it fills, then whether it was
/// released (`Some(true)`) or broken by `reset`/`abort` (`Some(false)`). Each waiter
/// holds its round's, so it reads its own outcome however late it is polled.
type Round = Rc<Cell<Option<bool>>>;

/// asyncio's `Barrier`: [`wait`](Barrier::wait) blocks until `parties` tasks wait,
/// then lets them all go and starts over. Each gets its arrival index (0 to
/// `parties - 1`). A waiter dropped before the barrier fills leaves it.
/// [`reset`](Barrier::reset) and [`abort`](Barrier::abort) fail the waiting tasks
/// with [`BrokenBarrier`]; after `abort` every wait fails until `reset`.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let barrier = shardloop::sync::Barrier::new(2);
/// let other = lp.create_task({ let b = barrier.clone(); async move { b.wait().await } })?;
/// let mine = lp.run_until_complete({ let b = barrier.clone(); async move { b.wait().await } })?;
/// let theirs = lp.run_until_complete(other)??;
/// assert_eq!(mine.unwrap() + theirs.unwrap(), 1); // indices 0 and 1
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    inner: Rc<BarrierInner>,
}

struct BarrierInner {
    parties: usize,
    /// Tasks waiting in this round.
    count: Cell<usize>,
    round: RefCell<Round>,
    /// Aborted: waits fail until `reset`.
    broken: Cell<bool>,
    waiters: Waiters,
}

impl BarrierInner {
    /// Ends the round with `released`, wakes its waiters, and starts a new one.
    fn end_round(&self, released: bool) {
        let ended = std::mem::take(&mut *self.round.borrow_mut());
        ended.set(Some(released));
        self.count.set(0);
        self.waiters.wake_all();
    }
}

impl Barrier {
    /// A barrier for `parties` tasks (at least 1).
    pub fn new(parties: usize) -> Barrier {
        Barrier {
            inner: Rc::new(BarrierInner {
                parties: parties.max(1),
                count: Cell::new(0),
                round: RefCell::new(Round::default()),
                broken: Cell::new(false),
                waiters: Waiters::default(),
            }),
        }
    }

    /// Waits until `parties` tasks wait; returns this task's arrival index, or
    /// `Err(BrokenBarrier)` if the barrier is broken or was reset or aborted meanwhile.
    pub async fn wait(&self) -> Result<usize, BrokenBarrier> {
        let inner = &*self.inner;
        if inner.broken.get() {
            return Err(BrokenBarrier);
        }
        let index = inner.count.get();
        if index + 1 == inner.parties {
            // The last one in: everyone goes, and the next round starts empty.
            inner.end_round(true);
            return Ok(index);
        }
        inner.count.set(index + 1);
        let round = inner.round.borrow().clone();
        let mut place = Leaving {
            barrier: inner,
            round: round.clone(),
            waiter: None,
        };
        poll_fn(|cx| {
            if round.get().is_some() {
                // Ended, even if this waiter's wakeup is still on its way.
                place.waiter = None;
                return std::task::Poll::Ready(());
            }
            poll_woken(&mut place.waiter, &inner.waiters, cx)
        })
        .await;
        match round.get() {
            Some(true) => Ok(index),
            _ => Err(BrokenBarrier),
        }
    }

    /// asyncio's `reset`: the tasks waiting now fail with [`BrokenBarrier`], and the
    /// barrier is empty and whole again (also after an [`abort`](Self::abort)).
    pub fn reset(&self) {
        let inner = &*self.inner;
        if inner.count.get() > 0 {
            inner.end_round(false);
        }
        inner.broken.set(false);
    }

    /// asyncio's `abort`: the barrier breaks; the tasks waiting now and every later
    /// `wait` fail with [`BrokenBarrier`] until [`reset`](Self::reset).
    pub fn abort(&self) {
        self.inner.broken.set(true);
        self.inner.end_round(false);
    }

    /// Whether it is broken (aborted and not reset).
    pub fn broken(&self) -> bool {
        self.inner.broken.get()
    }

    /// How many tasks it waits for.
    pub fn parties(&self) -> usize {
        self.inner.parties
    }

    /// How many wait now.
    pub fn n_waiting(&self) -> usize {
        self.inner.count.get()
    }
}

/// A barrier waiter that gives up before its round ends leaves the count.
struct Leaving<'a> {
    barrier: &'a BarrierInner,
    round: Round,
    waiter: Option<Rc<Waiter>>,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if self.round.get().is_some() {
            return;
        }
        if let Some(w) = self.waiter.take() {
            self.barrier.waiters.remove(&w);
        }
        self.barrier.count.set(self.barrier.count.get() - 1);
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}
