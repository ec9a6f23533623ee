//! [`Remote`]: the result of work submitted to a loop from elsewhere.
//!
//! A one-shot slot behind a mutex and a condvar, so that both a blocking thread
//! (`wait`, `wait_timeout`) and another loop (`.await`) can receive it. Cancelling a
//! `Remote` wakes the task on the loop, which then drops the work.

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::panic_message;
use crate::Error;

struct Slot<T> {
    result: Option<Result<T, Error>>,
    /// The receiver's waker, when a loop awaits the `Remote`.
    receiver: Option<Waker>,
    /// The working task's waker, so that a cancel can wake it.
    worker: Option<Waker>,
    /// The result has been handed to the receiver.
    taken: bool,
    /// A thread blocks in `wait` / `wait_timeout`: completing must notify the condvar.
    /// (std's `notify_all` is a futex syscall even with no waiter, so a `Remote` that
    /// is awaited on a loop must not pay it.)
    blocking: bool,
}

pub(crate) struct State<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
    cancelled: AtomicBool,
}

impl<T> State<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding this lock can only come from a waker's code; the
        // slot itself stays consistent, so poisoning is ignored.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the result unless one is already there, and wakes the receiver.
    pub(crate) fn complete(&self, result: Result<T, Error>) {
        let (receiver, blocking) = {
            let mut slot = self.lock();
            if slot.result.is_some() || slot.taken {
                return;
            }
            slot.result = Some(result);
            (slot.receiver.take(), slot.blocking)
        };
        if blocking {
            self.ready.notify_all();
        }
        if let Some(w) = receiver {
            w.wake();
        }
    }

    fn cancel(&self, reason: Error) {
        self.cancelled.store(true, Ordering::Release);
        self.complete(Err(reason));
        let worker = self.lock().worker.take();
        if let Some(w) = worker {
            w.wake();
        }
    }
}

/// Makes a connected `Remote` and the completer that the loop side keeps.
pub(crate) fn pair<T>() -> (Remote<T>, Completer<T>) {
    let state = Arc::new(State {
        slot: Mutex::new(Slot {
            result: None,
            receiver: None,
            worker: None,
            taken: false,
            blocking: false,
        }),
        ready: Condvar::new(),
        cancelled: AtomicBool::new(false),
    });
    (
        Remote {
            state: state.clone(),
        },
        Completer { state },
    )
}

/// The result of [`LoopHandle::submit`](crate::LoopHandle::submit) (and of the runtime's
/// `submit_to`): a future on loops, and `wait` / `wait_timeout` on blocking threads.
///
/// Dropping a `Remote` detaches the work (it keeps running); [`cancel`](Self::cancel)
/// or an expired [`wait_timeout`](Self::wait_timeout) stops it.
///
/// ```
/// use std::time::Duration;
/// let lp = shardloop::new_event_loop()?;
/// let handle = lp.handle();
/// let t = std::thread::spawn(move || {
///     let slow = handle.submit(|| shardloop::time::sleep(Duration::from_secs(3600)));
///     let late = slow.wait_timeout(Duration::from_millis(10));
///     handle.stop();
///     late
/// });
/// lp.run_forever()?;
/// assert!(matches!(t.join().unwrap(), Err(shardloop::Error::Timeout)));
/// # Ok::<(), shardloop::Error>(())
/// ```
#[must_use = "a Remote does nothing unless waited for or awaited; dropping it detaches the work"]
pub struct Remote<T> {
    state: Arc<State<T>>,
}

impl<T> Remote<T> {
    pub(crate) fn state(&self) -> Arc<State<T>> {
        self.state.clone()
    }

    /// A `Remote` that is already resolved (for work refused up front).
    pub(crate) fn ready(result: Result<T, Error>) -> Self {
        let (remote, completer) = pair();
        completer.state.complete(result);
        remote
    }

    /// Blocks this thread until the result arrives.
    ///
    /// Never call it on the thread of the loop that runs the work: that loop would be
    /// blocked and the work could never finish.
    pub fn wait(self) -> Result<T, Error> {
        let mut slot = self.state.lock();
        loop {
            if let Some(r) = slot.result.take() {
                slot.taken = true;
                return r;
            }
            slot.blocking = true;
            slot = self
                .state
                .ready
                .wait(slot)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the result arrives or `timeout` passes. On timeout the work is
    /// cancelled (its future is dropped on its loop) and `Err(Error::Timeout)` is
    /// returned, like asyncio's `run_coroutine_threadsafe(...).result(timeout)`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, Error> {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = self.state.lock();
        loop {
            if let Some(r) = slot.result.take() {
                slot.taken = true;
                return r;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d > now => d - now,
                Some(_) => {
                    drop(slot);
                    self.state.cancel(Error::Timeout);
                    // The work may have finished in the meantime; its result wins.
                    let mut slot = self.state.lock();
                    slot.taken = true;
                    return slot.result.take().unwrap_or(Err(Error::Timeout));
                }
                None => Duration::from_secs(3600),
            };
            slot.blocking = true;
            slot = self
                .state
                .ready
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Cancels the work: its future is dropped on its loop at its next wakeup, and
    /// this `Remote` resolves to `Err(Error::Cancelled)` unless it had finished.
    pub fn cancel(&self) {
        self.state.cancel(Error::Cancelled);
    }

    /// Whether the result is there (or was taken).
    pub fn is_finished(&self) -> bool {
        let slot = self.state.lock();
        slot.result.is_some() || slot.taken
    }
}

impl<T> Future for Remote<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.state.lock();
        if let Some(r) = slot.result.take() {
            slot.taken = true;
            return Poll::Ready(r);
        }
        if slot.taken {
            return Poll::Ready(Err(Error::Cancelled));
        }
        match &slot.receiver {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.receiver = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> std::fmt::Debug for Remote<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// The loop side of a [`Remote`]. Dropped without a result (the loop closed, the task
/// was cancelled), it resolves the `Remote` to `Err(Error::Cancelled)`.
pub(crate) struct Completer<T> {
    state: Arc<State<T>>,
}

impl<T> Completer<T> {
    /// Completes the `Remote` with `result`, from any thread (the blocking pool's
    /// workers use it).
    pub(crate) fn complete(self, result: Result<T, Error>) {
        self.state.complete(result);
    }

    /// Whether the `Remote` side cancelled the work.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::Acquire)
    }

    /// Wraps `fut` so that its output (or its panic) completes the `Remote`, and a
    /// cancel from the `Remote` side drops it.
    pub(crate) fn complete_with<F: Future<Output = T>>(self, fut: F) -> Completing<F, T> {
        Completing {
            fut,
            completer: self,
            registered: None,
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        self.state.complete(Err(Error::Cancelled));
    }
}

pin_project_lite::pin_project! {
    /// The future a submitted job runs as on its loop.
    pub(crate) struct Completing<F, T> {
        #[pin]
        fut: F,
        completer: Completer<T>,
        // The waker a cancel wakes, as last registered in the shared state.
        registered: Option<Waker>,
    }
}

impl<F: Future<Output = T>, T> Future for Completing<F, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let state = &this.completer.state;
        if state.cancelled.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        match catch_unwind(AssertUnwindSafe(|| this.fut.poll(cx))) {
            Ok(Poll::Ready(v)) => {
                state.complete(Ok(v));
                Poll::Ready(())
            }
            Ok(Poll::Pending) => {
                // Only work that waits needs to hear of a cancel: register (or update)
                // the waker now, then look again for a cancel that came before it.
                if !this
                    .registered
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.lock().worker = Some(cx.waker().clone());
                    *this.registered = Some(cx.waker().clone());
                    if state.cancelled.load(Ordering::Acquire) {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            }
            Err(payload) => {
                state.complete(Err(Error::Panicked(panic_message(&*payload))));
                // Let the task machinery report it to the exception handler too.
                resume_unwind(payload)
            }
        }
    }
}
