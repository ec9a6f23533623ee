//! Timer futures on the running loop: [`sleep`], [`sleep_until`].

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::event_loop::timers::deadline_after;
use crate::{get_running_loop, TimerHandle};

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
        timer: None,
    }
}

struct Fired {
    done: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// The future of [`sleep`] / [`sleep_until`]. It arms a timer on the running loop
/// when first polled; dropping it cancels the timer.
///
/// # Panics
/// When polled outside a running loop.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    timer: Option<(TimerHandle, Rc<Fired>)>,
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
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((_, fired)) = &self.timer {
            if fired.done.get() {
                return Poll::Ready(());
            }
            fired.waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        let fired = Rc::new(Fired {
            done: Cell::new(false),
            waker: Cell::new(Some(cx.waker().clone())),
        });
        let on_fire = fired.clone();
        let lp = get_running_loop().expect("shardloop::time::sleep polled outside a running loop");
        let timer = lp
            .call_at(self.deadline, move || {
                on_fire.done.set(true);
                if let Some(w) = on_fire.waker.take() {
                    w.wake();
                }
            })
            .expect("a running loop accepts timers");
        self.timer = Some((timer, fired));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((timer, _)) = &self.timer {
            timer.cancel();
        }
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}
