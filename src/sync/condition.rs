//! [`Condition`] and [`Barrier`]: asyncio's, on the loop.

use std::cell::Cell;
use std::fmt;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use super::semaphore::{Lock, LockGuard};
use super::waiters::{poll_woken, Place, Waiter, Waiters};

/// asyncio's `Condition`: tasks holding its [`Lock`] [`wait`](Condition::wait) (the
/// lock is released while they wait and taken again before `wait` returns) until
/// another task [`notify`](Condition::notify)s them, oldest first.
///
/// A `wait` that is dropped (its task cancelled) leaves the line; unlike asyncio it
/// cannot take the lock again first, so the guard it was given is simply released.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let cond = shardloop::sync::Condition::new();
/// let ready = std::rc::Rc::new(std::cell::Cell::new(false));
/// let waiter = lp.create_task({
///     let (cond, ready) = (cond.clone(), ready.clone());
///     async move {
///         let guard = cond.acquire().await;
///         let _guard = cond.wait_for(guard, || ready.get()).await;
///         "saw it"
///     }
/// })?;
/// lp.run_until_complete(async {
///     shardloop::yield_now().await;
///     let _guard = cond.acquire().await;
///     ready.set(true);
///     cond.notify_all();
/// })?;
/// assert_eq!(lp.run_until_complete(waiter)??, "saw it");
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Condition {
    lock: Lock,
    waiters: Rc<Waiters>,
}

impl Condition {
    /// A condition with a lock of its own.
    pub fn new() -> Condition {
        Condition::with_lock(Lock::new())
    }

    /// A condition over `lock` (shared with whoever else uses it).
    pub fn with_lock(lock: Lock) -> Condition {
        Condition {
            lock,
            waiters: Rc::new(Waiters::default()),
        }
    }

    /// Takes the condition's lock.
    pub async fn acquire(&self) -> LockGuard {
        self.lock.acquire().await
    }

    /// Releases `guard` (the condition's lock), waits to be notified, takes the lock
    /// again and returns its guard.
    pub async fn wait(&self, guard: LockGuard) -> LockGuard {
        let mut place = Place::new(&self.waiters);
        // In line before the lock goes: a notify right after cannot be missed.
        poll_fn(|cx| {
            place.join(cx);
            Poll::Ready(())
        })
        .await;
        drop(guard);
        poll_fn(|cx| place.poll_woken(cx)).await;
        self.lock.acquire().await
    }

    /// Waits (as [`wait`](Self::wait)) until `ready()` is true, checking it with the
    /// lock held; returns the guard.
    pub async fn wait_for(&self, mut guard: LockGuard, mut ready: impl FnMut() -> bool) -> LockGuard {
        while !ready() {
            guard = self.wait(guard).await;
        }
        guard
    }

    /// Wakes the `n` oldest waiters.
    pub fn notify(&self, n: usize) {
        for _ in 0..n {
            if !self.waiters.wake_one() {
                break;
            }
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.waiters.wake_all();
    }

    /// Whether its lock is held.
    pub fn locked(&self) -> bool {
        self.lock.locked()
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").field("locked", &self.locked()).finish()
    }
}

/// asyncio's `Barrier`: [`wait`](Barrier::wait) blocks until `parties` tasks wait,
/// then lets them all go and starts over. Each gets its arrival index (0 to
/// `parties - 1`). A waiter dropped before the barrier fills leaves it.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let barrier = shardloop::sync::Barrier::new(2);
/// let other = lp.create_task({ let b = barrier.clone(); async move { b.wait().await } })?;
/// let mine = lp.run_until_complete({ let b = barrier.clone(); async move { b.wait().await } })?;
/// let theirs = lp.run_until_complete(other)??;
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
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
    waiters: Waiters,
}

impl Barrier {
    /// A barrier for `parties` tasks (at least 1).
    pub fn new(parties: usize) -> Barrier {
        Barrier {
            inner: Rc::new(BarrierInner {
                parties: parties.max(1),
                count: Cell::new(0),
                waiters: Waiters::default(),
            }),
        }
    }

    /// Waits until `parties` tasks wait; returns this task's arrival index.
    pub async fn wait(&self) -> usize {
        let inner = &*self.inner;
        let index = inner.count.get();
        if index + 1 == inner.parties {
            // The last one in: everyone goes, and the next round starts empty.
            inner.count.set(0);
            inner.waiters.wake_all();
            return index;
        }
        inner.count.set(index + 1);
        let mut place = Leaving {
            barrier: inner,
            waiter: None,
        };
        poll_fn(|cx| poll_woken(&mut place.waiter, &inner.waiters, cx)).await;
        index
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

/// A barrier waiter that gives up before the barrier fills leaves the count.
struct Leaving<'a> {
    barrier: &'a BarrierInner,
    waiter: Option<Rc<Waiter>>,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.waiter.take() {
            if !w.is_woken() {
                self.barrier.waiters.remove(&w);
                self.barrier.count.set(self.barrier.count.get() - 1);
            }
        }
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .finish()
    }
}
