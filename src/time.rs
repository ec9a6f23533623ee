//! Timer futures on the running loop: [`sleep`], [`sleep_until`], [`timeout`],
//! [`interval`].
//!
//! Every one of them arms a timer on the loop that polls it, fires on or after its
//! deadline (never early), and cancels its timer when dropped.

use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::event_loop::timers::deadline_after;
use crate::event_loop::LoopInner;
use crate::{get_running_loop, Error};

/// Completes `delay` from now; never early.
///
/// ```
/// use std::time::{Duration, Instant};
/// shardloop::run(async {
///     let start = Instant::now();
///     shardloop::time::sleep(Duration::from_millis(2)).await;
///     assert!(start.elapsed() >= Duration::from_millis(2));
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn sleep(delay: Duration) -> Sleep {
    sleep_until(deadline_after(Instant::now(), delay))
}

/// Completes at `deadline`; never early.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
    }
}

/// Where a polled [`Sleep`]'s timer entry lives.
struct Entry {
    lp: Weak<LoopInner>,
    key: usize,
}

/// The future of [`sleep`] / [`sleep_until`]. It arms a timer entry on the running
/// loop when first polled; the loop wakes the sleeping task directly when it is
/// due, and dropping the `Sleep` frees the entry. No allocation of its own.
///
/// # Panics
/// When first polled outside a running loop.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    entry: Option<Entry>,
}

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline (earlier or later, also after it completed): the sleep
    /// completes at `deadline` instead. Reuses the timer entry; no allocation.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// shardloop::run(async {
    ///     let mut nap = std::pin::pin!(shardloop::time::sleep(Duration::from_secs(3600)));
    ///     let soon = Instant::now() + Duration::from_millis(1);
    ///     nap.as_mut().reset(soon);
    ///     nap.await;
    ///     assert!(Instant::now() >= soon);
    /// })?;
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let this = self.get_mut();
        this.deadline = deadline;
        if let Some(entry) = &this.entry {
            if let Some(lp) = entry.lp.upgrade() {
                lp.timers.borrow_mut().reset_sleep(entry.key, deadline);
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(entry) = &self.entry {
            if let Some(lp) = entry.lp.upgrade() {
                let fired = lp.timers.borrow_mut().poll_sleep(entry.key, cx.waker());
                return if fired {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            // Its loop is gone: arm it again on the one polling it now.
        }
        let lp = get_running_loop().expect("shardloop::time::sleep polled outside a running loop");
        let key = lp
            .inner
            .timers
            .borrow_mut()
            .insert_sleep(self.deadline, cx.waker().clone());
        self.entry = Some(Entry {
            lp: Rc::downgrade(&lp.inner),
            key,
        });
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let Some(lp) = entry.lp.upgrade() else {
            return;
        };
        // A sleep dropped while its loop's timers are borrowed (never, today) keeps
        // its slot until the loop closes.
        let waker = match lp.timers.try_borrow_mut() {
            Ok(mut timers) => timers.remove_sleep(entry.key),
            Err(_) => None,
        };
        drop(waker);
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Runs `fut` for at most `limit`: its output as `Ok`, or `Err(Error::Timeout)` if
/// the deadline comes first. On expiry the inner future is dropped at once, which
/// cancels whatever it was waiting for (asyncio's `wait_for`).
///
/// ```
/// use std::time::Duration;
/// use shardloop::time::{sleep, timeout};
/// shardloop::run(async {
///     let fast = timeout(Duration::from_secs(5), async { 7 }).await;
///     assert_eq!(fast.unwrap(), 7);
///     let slow = timeout(Duration::from_millis(1), sleep(Duration::from_secs(3600))).await;
///     assert!(matches!(slow, Err(shardloop::Error::Timeout)));
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn timeout<F: Future>(limit: Duration, fut: F) -> Timeout<F> {
    timeout_at(deadline_after(Instant::now(), limit), fut)
}

/// Like [`timeout`], with an absolute deadline.
pub fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut: Some(fut),
        sleep: sleep_until(deadline),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`] / [`timeout_at`].
    ///
    /// # Panics
    /// When polled outside a running loop.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Timeout<F> {
        // `None` once the inner future finished or was dropped on expiry.
        #[pin]
        fut: Option<F>,
        sleep: Sleep,
    }
}

impl<F> Timeout<F> {
    /// When the time runs out.
    pub fn deadline(&self) -> Instant {
        self.sleep.deadline()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            panic!("Timeout polled after it completed");
        };
        // The inner future goes first: a result that is ready wins over a deadline
        // that passed while the loop was busy.
        if let Poll::Ready(v) = fut.poll(cx) {
            this.fut.set(None);
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => {
                this.fut.set(None);
                Poll::Ready(Err(Error::Timeout))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> std::fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("deadline", &self.sleep.deadline())
            .field("finished", &self.fut.is_none())
            .finish()
    }
}

/// Ticks every `period`, the first tick at once. See [`Interval`].
///
/// # Panics
/// If `period` is zero.
///
/// ```
/// use std::time::{Duration, Instant};
/// shardloop::run(async {
///     let start = Instant::now();
///     let mut iv = shardloop::time::interval(Duration::from_millis(2));
///     let first = iv.tick().await; // at once
///     let second = iv.tick().await;
///     // One period later, or a whole number of them if this thread was descheduled.
///     assert_eq!((second - first).as_nanos() % 2_000_000, 0);
///     assert!(second > first && first >= start && Instant::now() >= second);
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// Ticks at `start`, then every `period` after it. See [`Interval`].
///
/// # Panics
/// If `period` is zero.
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "shardloop::time::interval: the period must be non-zero"
    );
    Interval {
        period,
        sleep: sleep_until(start),
    }
}

/// A periodic timer: [`tick`](Self::tick) completes at `start`, `start + period`,
/// `start + 2 * period`, ... and returns the scheduled instant of the tick (never
/// later than the moment it returns: ticks are never early).
///
/// Missed ticks are skipped, not burst: when the loop (or the code between two
/// `tick` calls) stalls past one or more deadlines, the tick that was due completes
/// once, at once, and the next one is the first multiple of the period after the
/// stall. A stalled periodic job thus never runs several times back to back.
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    /// Armed for the next tick; its deadline is the tick's scheduled instant.
    sleep: Sleep,
}

impl Interval {
    /// Waits for the next tick and returns its scheduled instant.
    ///
    /// Cancel-safe: dropping the `tick` future before it completes loses no tick.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick (for hand-written futures); the waker of `cx` is
    /// woken when it is due.
    ///
    /// # Panics
    /// When the tick is not yet due and this is called outside a running loop.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        // A tick already due completes without a trip through the timer queue.
        if !self.sleep.is_elapsed() && Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let tick = self.sleep.deadline();
        let next = next_tick(tick, self.period, Instant::now());
        Pin::new(&mut self.sleep).reset(next);
        Poll::Ready(tick)
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        let next = deadline_after(Instant::now(), self.period);
        Pin::new(&mut self.sleep).reset(next);
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// The tick after `tick`: `tick + period`, or, when that has passed already, the
/// first `tick + k * period` later than `now` (missed ticks are skipped).
fn next_tick(tick: Instant, period: Duration, now: Instant) -> Instant {
    let next = deadline_after(tick, period);
    if next > now {
        return next;
    }
    let period_ns = period.as_nanos();
    let missed = (now - tick).as_nanos() / period_ns + 1;
    let skip = missed.saturating_mul(period_ns);
    let skip = Duration::new(
        u64::try_from(skip / 1_000_000_000).unwrap_or(u64::MAX),
        (skip % 1_000_000_000) as u32,
    );
    deadline_after(tick, skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_tick_skips_to_the_first_multiple_after_now() {
        let t0 = Instant::now();
        let p = Duration::from_millis(10);
        // On time: just the next period.
        assert_eq!(next_tick(t0, p, t0 + Duration::from_millis(3)), t0 + p);
        // 3.5 periods late: ticks 1..=3 are skipped, the next is 4 periods on.
        assert_eq!(next_tick(t0, p, t0 + Duration::from_millis(35)), t0 + 4 * p);
        // Exactly on a multiple: that one is not in the future, so the one after.
        assert_eq!(next_tick(t0, p, t0 + 2 * p), t0 + 3 * p);
    }
}
