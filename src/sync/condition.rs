//! [`Condition`]: asyncio's, on the loop.

use std::fmt;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use super::semaphore::{Lock, LockGuard};
use super::waiters::{Place, Waiters};

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
