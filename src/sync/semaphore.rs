//! [`Semaphore`], [`BoundedSemaphore`] and [`Lock`]: asyncio's, FIFO-fair, with
//! guards that give the permit back when dropped.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::waiters::{poll_woken, Waiter, Waiters};
use crate::Error;

/// The shared state: free permits, and the tasks waiting for one. A released permit
/// goes straight to the oldest waiter (handed over, never up for grabs), which is
/// what makes acquisition first-come, first-served.
struct Permits {
    free: Cell<usize>,
    waiters: Waiters,
    /// `BoundedSemaphore`: a `release` may not take `free` above this.
    bound: Option<usize>,
}

impl Permits {
    fn new(n: usize, bound: Option<usize>) -> Rc<Permits> {
        Rc::new(Permits {
            free: Cell::new(n),
            waiters: Waiters::default(),
            bound,
        })
    }

    /// One permit comes back: to the oldest waiter, or to the free ones.
    fn give_back(&self) {
        if !self.waiters.wake_one() {
            self.free.set(self.free.get() + 1);
        }
    }
}

/// The future of an `acquire`: a permit at once when one is free and nobody waits
/// before us, else a place in line.
struct Acquire {
    permits: Rc<Permits>,
    waiter: Option<Rc<Waiter>>,
}

impl Acquire {
    fn poll_permit(&mut self, cx: &Context<'_>) -> Poll<()> {
        let p = &self.permits;
        if self.waiter.is_none() && p.free.get() > 0 && p.waiters.is_empty() {
            p.free.set(p.free.get() - 1);
            return Poll::Ready(());
        }
        poll_woken(&mut self.waiter, &p.waiters, cx)
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let Some(w) = self.waiter.take() {
            if w.is_woken() {
                // Handed a permit it will never use: it goes to the next in line.
                self.permits.give_back();
            } else {
                self.permits.waiters.remove(&w);
            }
        }
    }
}

/// asyncio's `Semaphore`: `n` permits; [`acquire`](Semaphore::acquire) waits for one,
/// first come, first served, and the [`SemaphorePermit`] gives it back when dropped.
/// Loop-local (`!Send`); clones share the permits.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let sem = shardloop::sync::Semaphore::new(2);
/// lp.run_until_complete(async {
///     let a = sem.acquire().await;
///     let _b = sem.acquire().await;
///     assert_eq!(sem.available_permits(), 0);
///     drop(a);
///     assert_eq!(sem.available_permits(), 1);
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    permits: Rc<Permits>,
}

impl Semaphore {
    /// A semaphore with `n` permits.
    pub fn new(n: usize) -> Semaphore {
        Semaphore {
            permits: Permits::new(n, None),
        }
    }

    /// Waits for a permit. Dropping the future gives up its place in line (and a
    /// permit it was just handed goes to the next task).
    pub fn acquire(&self) -> impl Future<Output = SemaphorePermit> {
        let mut acquire = Acquire {
            permits: self.permits.clone(),
            waiter: None,
        };
        std::future::poll_fn(move |cx| {
            acquire.poll_permit(cx).map(|()| SemaphorePermit {
                permits: Some(acquire.permits.clone()),
            })
        })
    }

    /// A permit if one is free and nobody waits for one, without waiting.
    pub fn try_acquire(&self) -> Option<SemaphorePermit> {
        let p = &self.permits;
        (p.free.get() > 0 && p.waiters.is_empty()).then(|| {
            p.free.set(p.free.get() - 1);
            SemaphorePermit {
                permits: Some(p.clone()),
            }
        })
    }

    /// Adds one permit (asyncio's `release` without a matching acquire).
    pub fn release(&self) {
        self.permits.give_back();
    }

    /// How many permits are free now.
    pub fn available_permits(&self) -> usize {
        self.permits.free.get()
    }

    /// Whether an `acquire` would wait (asyncio's `locked`).
    pub fn locked(&self) -> bool {
        self.permits.free.get() == 0 || !self.permits.waiters.is_empty()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available_permits", &self.available_permits())
            .finish()
    }
}

/// A permit of a [`Semaphore`] (or [`BoundedSemaphore`]), given back when dropped.
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct SemaphorePermit {
    permits: Option<Rc<Permits>>,
}

impl SemaphorePermit {
    /// Keeps the permit taken for good (the semaphore has one fewer).
    pub fn forget(mut self) {
        self.permits = None;
    }
}

impl Drop for SemaphorePermit {
    fn drop(&mut self) {
        if let Some(p) = self.permits.take() {
            p.give_back();
        }
    }
}

impl fmt::Debug for SemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphorePermit")
    }
}

/// asyncio's `BoundedSemaphore`: a [`Semaphore`] whose [`release`](Self::release)
/// refuses to raise the free permits above the initial count.
///
/// ```
/// let sem = shardloop::sync::BoundedSemaphore::new(1);
/// assert!(matches!(sem.release(), Err(shardloop::Error::InvalidState)));
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `n` permits.
    pub fn new(n: usize) -> BoundedSemaphore {
        BoundedSemaphore {
            inner: Semaphore {
                permits: Permits::new(n, Some(n)),
            },
        }
    }

    /// Waits for a permit, as [`Semaphore::acquire`].
    pub fn acquire(&self) -> impl Future<Output = SemaphorePermit> {
        self.inner.acquire()
    }

    /// Adds a permit back; `Err(Error::InvalidState)` if that would make more than the
    /// initial count free ("released too many times").
    pub fn release(&self) -> Result<(), Error> {
        let p = &self.inner.permits;
        if p.waiters.is_empty() && Some(p.free.get()) >= p.bound {
            return Err(Error::InvalidState);
        }
        p.give_back();
        Ok(())
    }

    /// How many permits are free now.
    pub fn available_permits(&self) -> usize {
        self.inner.available_permits()
    }

    /// Whether an `acquire` would wait.
    pub fn locked(&self) -> bool {
        self.inner.locked()
    }
}

/// asyncio's `Lock`, with a guard: [`acquire`](Lock::acquire) waits, first come,
/// first served; dropping the [`LockGuard`] unlocks. Loop-local (`!Send`).
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let lock = shardloop::sync::Lock::new();
/// lp.run_until_complete(async {
///     let guard = lock.acquire().await;
///     assert!(lock.locked());
///     drop(guard);
///     assert!(!lock.locked());
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    sem: Semaphore,
}

impl Default for Lock {
    fn default() -> Self {
        Lock::new()
    }
}

impl Lock {
    /// An unlocked lock.
    pub fn new() -> Lock {
        Lock {
            sem: Semaphore::new(1),
        }
    }

    /// Waits for the lock.
    pub async fn acquire(&self) -> LockGuard {
        LockGuard {
            _permit: self.sem.acquire().await,
        }
    }

    /// The lock if it is free and nobody waits for it.
    pub fn try_acquire(&self) -> Option<LockGuard> {
        self.sem.try_acquire().map(|p| LockGuard { _permit: p })
    }

    /// Whether it is held.
    pub fn locked(&self) -> bool {
        self.sem.available_permits() == 0
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").field("locked", &self.locked()).finish()
    }
}

/// A held [`Lock`]; unlocks when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    _permit: SemaphorePermit,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}
