//! [`LoopTimer`]: `hyper::rt::Timer` on the running loop's timers.
//!
//! hyper requires its sleeps to be `Send + Sync` (`hyper::rt::Sleep: Send + Sync`),
//! while a loop timer ([`TimerHandle`]) is `!Send`: it lives on the loop's thread.
//! So a [`LoopSleep`] keeps only thread-safe state itself — its deadline, and an
//! `Arc` with the "fired" flag and the waker — and the `TimerHandle` it arms stays
//! behind, in a slab local to the thread that armed it, under a key the sleep
//! remembers. On that thread (where hyper's `!Send` connection futures always run)
//! dropping the sleep takes the handle out of the slab and cancels the timer, so a
//! request that arrives in time leaves nothing queued. Should a sleep be dropped on
//! another thread, it cannot reach the slab: its timer then fires harmlessly at its
//! deadline (the waker was taken out first) and removes its own slab entry.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::event_loop::timers::deadline_after;
use crate::{get_running_loop, TimerHandle};

thread_local! {
    /// The loop timers armed by sleeps polled on this thread.
    static ARMED: RefCell<Slab<TimerHandle>> = const { RefCell::new(Slab::new()) };
    /// This thread's number (0: not yet given one).
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

/// A number for the calling thread, unique in the process (unlike a stack or a
/// thread-local's address, never reused by a later thread).
fn this_thread() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    THREAD.with(|t| {
        if t.get() == 0 {
            t.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    })
}

/// `hyper::rt::Timer` for hyper on shardloop: its sleeps are timers on the loop that
/// polls them (see [`LoopSleep`]). Needed for hyper's timeouts, such as the HTTP/1
/// server's `header_read_timeout`, which also closes idle keep-alive connections.
///
/// ```
/// use std::time::{Duration, Instant};
/// use hyper::rt::Timer;
/// shardloop::run(async {
///     let start = Instant::now();
///     shardloop::hyper::LoopTimer.sleep(Duration::from_millis(2)).await;
///     assert!(start.elapsed() >= Duration::from_millis(2));
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopTimer;

impl ::hyper::rt::Timer for LoopTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn ::hyper::rt::Sleep>> {
        Box::pin(LoopSleep::until(deadline_after(Instant::now(), duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn ::hyper::rt::Sleep>> {
        Box::pin(LoopSleep::until(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn ::hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<LoopSleep>() {
            Some(s) => s.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// What the loop timer and the sleep share.
struct Fired {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Fired {
    fn take_waker(&self) -> Option<Waker> {
        self.waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The armed state of a sleep: its timer sits in `ARMED[key]` of thread `thread`.
struct Armed {
    fired: Arc<Fired>,
    thread: u64,
    key: usize,
}

/// A `Send + Sync` sleep on the loop that polls it (the future of [`LoopTimer`]),
/// completing at its deadline, never early.
///
/// It arms a loop timer on its first poll (not when made: hyper makes a sleep per
/// request and mostly drops it unpolled or before it is due) and cancels that timer
/// when dropped or reset on the thread that polled it.
///
/// # Panics
/// When polled before its deadline outside a running loop.
#[must_use = "futures do nothing unless awaited"]
pub struct LoopSleep {
    deadline: Instant,
    armed: Option<Armed>,
}

impl LoopSleep {
    /// A sleep until `deadline`.
    pub fn until(deadline: Instant) -> Self {
        LoopSleep {
            deadline,
            armed: None,
        }
    }

    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (earlier or later); the sleep is pending again until then.
    pub fn reset(&mut self, deadline: Instant) {
        self.disarm();
        self.deadline = deadline;
    }

    /// Cancels the armed timer, if any.
    fn disarm(&mut self) {
        let Some(armed) = self.armed.take() else {
            return;
        };
        // The timer may still fire (on another thread, or if it cannot be cancelled
        // from here): it must find no waker to wake.
        drop(armed.fired.take_waker());
        if armed.thread != this_thread() || armed.fired.done.load(Ordering::Acquire) {
            // Another thread's slab is out of reach (its timer removes its own entry
            // when it fires); a timer that fired already removed its entry, and the
            // key may name another sleep's timer by now.
            return;
        }
        // `try_with`: during thread teardown the slab may be gone already.
        let handle = ARMED
            .try_with(|armed_timers| armed_timers.borrow_mut().try_remove(armed.key))
            .ok()
            .flatten();
        // Cancelled outside the slab's borrow: cancelling drops the timer's callback.
        if let Some(handle) = handle {
            handle.cancel();
        }
    }

    fn arm(&mut self, cx: &mut Context<'_>) {
        let lp =
            get_running_loop().expect("shardloop::hyper::LoopSleep polled outside a running loop");
        let fired = Arc::new(Fired {
            done: AtomicBool::new(false),
            waker: Mutex::new(Some(cx.waker().clone())),
        });
        let key = ARMED.with(|armed_timers| {
            let mut armed_timers = armed_timers.borrow_mut();
            let slot = armed_timers.vacant_entry();
            let key = slot.key();
            let on_fire = fired.clone();
            let handle = lp
                .call_at(self.deadline, move || {
                    // This entry is still ours: a sleep removes it only when it also
                    // cancels this callback, which then never runs.
                    ARMED.with(|armed_timers| armed_timers.borrow_mut().try_remove(key));
                    on_fire.done.store(true, Ordering::Release);
                    if let Some(w) = on_fire.take_waker() {
                        w.wake();
                    }
                })
                .expect("a running loop accepts timers");
            slot.insert(handle);
            key
        });
        self.armed = Some(Armed {
            fired,
            thread: this_thread(),
            key,
        });
    }
}

impl Future for LoopSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &this.armed {
            None => {
                if Instant::now() >= this.deadline {
                    return Poll::Ready(());
                }
                this.arm(cx);
                Poll::Pending
            }
            Some(armed) => {
                if armed.fired.done.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                {
                    let mut waker = armed
                        .fired
                        .waker
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    match &mut *waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        other => *other = Some(cx.waker().clone()),
                    }
                }
                // The timer may have fired (on its thread) between the check above and
                // storing the waker, finding none to wake: look again.
                if armed.fired.done.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
        }
    }
}

impl ::hyper::rt::Sleep for LoopSleep {}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl std::fmt::Debug for LoopSleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopSleep")
            .field("deadline", &self.deadline)
            .field("armed", &self.armed.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::hyper::rt::Timer;

    fn armed_here() -> usize {
        ARMED.with(|a| a.borrow().len())
    }

    #[test]
    fn sleeps_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<LoopSleep>();
        check::<LoopTimer>();
    }

    #[test]
    fn never_early_and_leaves_no_timer_behind() {
        crate::run(async {
            let start = Instant::now();
            LoopTimer.sleep(Duration::from_millis(3)).await;
            assert!(start.elapsed() >= Duration::from_millis(3));
            assert_eq!(armed_here(), 0);
        })
        .unwrap();
    }

    #[test]
    fn dropping_a_pending_sleep_cancels_its_timer() {
        crate::run(async {
            let mut s = LoopTimer.sleep(Duration::from_secs(3600));
            assert!(futures_util::poll!(s.as_mut()).is_pending());
            assert_eq!(armed_here(), 1);
            drop(s);
            assert_eq!(armed_here(), 0);
        })
        .unwrap();
    }

    #[test]
    fn reset_moves_the_deadline_both_ways() {
        crate::run(async {
            let mut s = LoopTimer.sleep(Duration::from_secs(3600));
            assert!(futures_util::poll!(s.as_mut()).is_pending());
            let soon = Instant::now() + Duration::from_millis(2);
            LoopTimer.reset(&mut s, soon);
            assert_eq!(armed_here(), 0, "the far timer was cancelled");
            s.as_mut().await;
            assert!(Instant::now() >= soon);
            // Later again: pending until the new deadline.
            let later = Instant::now() + Duration::from_millis(2);
            LoopTimer.reset(&mut s, later);
            assert!(futures_util::poll!(s.as_mut()).is_pending());
            s.await;
            assert!(Instant::now() >= later);
        })
        .unwrap();
    }

    #[test]
    fn dropped_on_another_thread_the_timer_fires_harmlessly() {
        crate::run(async {
            let mut s = LoopSleep::until(Instant::now() + Duration::from_millis(5));
            assert!(futures_util::poll!(&mut s).is_pending());
            std::thread::spawn(move || drop(s)).join().unwrap();
            assert_eq!(armed_here(), 1, "out of reach from the other thread");
            crate::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(armed_here(), 0, "the timer removed its own entry");
        })
        .unwrap();
    }
}
