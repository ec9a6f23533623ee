//! [`Remote`]: the result of work submitted to a loop from elsewhere.
//!
//! An atomic one-shot: one state word, the result's slot, and two `AtomicWaker`s
//! (the receiver's, and the working task's, which a cancel wakes). No lock is taken
//! on any path; a thread that blocks in `wait` parks, woken through the same waker
//! slot as a loop that awaits the `Remote`.
//!
//! The protocol on the state word (every step is a read-modify-write or an
//! acquire load of it):
//! - a completer *claims* the slot (`WRITING`); only the first claim writes, so the
//!   result is written once, by one thread; it then publishes it (`COMPLETE`) and
//!   wakes the receiver if the receiver said it may wait (`LISTENING`);
//! - the receiver reads the result only after seeing `COMPLETE` (Acquire); it is
//!   the only reader (a `Remote` is not `Clone`). Before it registers a waker it
//!   sets `LISTENING`, then looks again: the two RMWs are ordered, so either the
//!   completer sees `LISTENING` and wakes it, or the receiver sees `COMPLETE`. A
//!   result that is there before the receiver looks costs no wake at all;
//! - a cancel sets `CANCELLED` (which the working task sees at its next poll),
//!   then tries to complete with the cancel's error: the work's own result wins if
//!   it claimed first.
//!
//! The loom model at the end of this file checks every interleaving of it.

use std::cell::UnsafeCell;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

#[cfg(not(loom))]
use atomic_waker::AtomicWaker;

/// Under loom, its `AtomicWaker`, so that the model sees the wakeup's ordering too.
#[cfg(loom)]
struct AtomicWaker(loom::future::AtomicWaker);
#[cfg(loom)]
impl AtomicWaker {
    fn new() -> Self {
        AtomicWaker(loom::future::AtomicWaker::new())
    }
    fn register(&self, waker: &Waker) {
        self.0.register_by_ref(waker)
    }
    fn wake(&self) {
        self.0.wake()
    }
}

#[cfg(loom)]
use loom::sync::atomic::{AtomicU8, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::panic_message;
use crate::task::coop;
use crate::Error;

/// A completer has claimed the slot and is writing the result.
const WRITING: u8 = 1;
/// The result is in the slot.
const COMPLETE: u8 = 2;
/// The receiver registered a waker: completing must wake it.
const LISTENING: u8 = 4;
/// The receiver cancelled the work.
const CANCELLED: u8 = 8;

pub(crate) struct State<T> {
    flags: AtomicU8,
    /// Written once by the claiming completer, read once by the receiver.
    result: UnsafeCell<Option<Result<T, Error>>>,
    receiver: AtomicWaker,
    worker: AtomicWaker,
}

// SAFETY: `result` is written by exactly one thread (the one whose claim set
// WRITING) before it publishes COMPLETE with Release, and read only by the single
// receiver after it saw COMPLETE with Acquire, so the two never overlap; the value
// crosses threads, hence `T: Send`. Everything else is atomic.
unsafe impl<T: Send> Sync for State<T> {}
// SAFETY: as above: the state owns a `T`, which may be dropped on any thread.
unsafe impl<T: Send> Send for State<T> {}

impl<T> State<T> {
    fn new() -> Self {
        State {
            flags: AtomicU8::new(0),
            result: UnsafeCell::new(None),
            receiver: AtomicWaker::new(),
            worker: AtomicWaker::new(),
        }
    }

    /// Sets the result unless a completer came first, and wakes the receiver.
    /// Whether this call set it.
    pub(crate) fn complete(&self, result: Result<T, Error>) -> bool {
        if self.flags.fetch_or(WRITING, Ordering::Acquire) & WRITING != 0 {
            return false;
        }
        // SAFETY: our claim is the only one that succeeds, and the receiver reads
        // only after the COMPLETE below.
        unsafe { *self.result.get() = Some(result) };
        if self.flags.fetch_or(COMPLETE, Ordering::AcqRel) & LISTENING != 0 {
            self.receiver.wake();
        }
        true
    }

    /// The receiver's side: the result, once it is there. After it was taken, a
    /// second look says `Cancelled` (a `Remote` polled after it completed).
    fn take(&self) -> Option<Result<T, Error>> {
        if self.flags.load(Ordering::Acquire) & COMPLETE == 0 {
            return None;
        }
        // SAFETY: COMPLETE was seen with Acquire: the one write is done and
        // visible, and no other thread reads or writes the slot again (we are the
        // one receiver).
        let result = unsafe { (*self.result.get()).take() };
        Some(result.unwrap_or(Err(Error::Cancelled)))
    }

    /// The receiver's side, before it may wait: registers `waker` to be woken by the
    /// completion (see the protocol above).
    fn listen(&self, waker: &Waker) {
        if self.flags.load(Ordering::Relaxed) & LISTENING == 0 {
            self.flags.fetch_or(LISTENING, Ordering::AcqRel);
        }
        self.receiver.register(waker);
    }

    /// The receiver gave up: the work is told to stop, and the `Remote` resolves to
    /// `reason` unless the work finished first.
    fn cancel(&self, reason: Error) {
        self.flags.fetch_or(CANCELLED, Ordering::Release);
        self.complete(Err(reason));
        self.worker.wake();
    }

    fn is_cancelled(&self) -> bool {
        self.flags.load(Ordering::Acquire) & CANCELLED != 0
    }

    /// Waits (briefly) for a completer that claimed the slot to publish it.
    fn take_after_claim(&self) -> Result<T, Error> {
        loop {
            if let Some(r) = self.take() {
                return r;
            }
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            thread::yield_now();
        }
    }
}

/// Makes a connected `Remote` and the completer that the loop side keeps.
pub(crate) fn pair<T>() -> (Remote<T>, Completer<T>) {
    let state = Arc::new(State::new());
    (
        Remote {
            state: state.clone(),
        },
        Completer { state },
    )
}

/// Unparks a thread blocked in `wait`.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's unpark waker, made once: blocking waits allocate nothing.
    static THREAD_WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
}

/// A waker that unparks the calling thread.
pub(crate) fn thread_waker() -> Waker {
    THREAD_WAKER.with(Waker::clone)
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
        self.block(None)
    }

    /// Blocks until the result arrives or `timeout` passes. On timeout the work is
    /// cancelled (its future is dropped on its loop) and `Err(Error::Timeout)` is
    /// returned, like asyncio's `run_coroutine_threadsafe(...).result(timeout)`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, Error> {
        self.block(Instant::now().checked_add(timeout))
    }

    fn block(self, deadline: Option<Instant>) -> Result<T, Error> {
        let state = &*self.state;
        if let Some(r) = state.take() {
            return r;
        }
        state.listen(&thread_waker());
        loop {
            if let Some(r) = state.take() {
                return r;
            }
            match deadline {
                None => thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        state.cancel(Error::Timeout);
                        // The work may have finished in the meantime; its result wins.
                        return state.take_after_claim();
                    }
                    thread::park_timeout(d - now);
                }
            }
        }
    }

    /// Cancels the work: its future is dropped on its loop at its next wakeup, and
    /// this `Remote` resolves to `Err(Error::Cancelled)` unless it had finished.
    pub fn cancel(&self) {
        self.state.cancel(Error::Cancelled);
    }

    /// Whether the result is there (or was taken).
    pub fn is_finished(&self) -> bool {
        self.state.flags.load(Ordering::Acquire) & COMPLETE != 0
    }
}

impl<T> Future for Remote<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = &*self.state;
        coop::poll_budgeted(cx, |cx| {
            if let Some(r) = state.take() {
                return Poll::Ready(r);
            }
            state.listen(cx.waker());
            // Looked at again: a completion between the first look and the register
            // may have found no waker to wake.
            match state.take() {
                Some(r) => Poll::Ready(r),
                None => Poll::Pending,
            }
        })
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
        self.state.is_cancelled()
    }

    /// Wraps `fut` so that its output (or its panic) completes the `Remote`, and a
    /// cancel from the `Remote` side drops it.
    pub(crate) fn complete_with<F: Future<Output = T>>(self, fut: F) -> Completing<F, T> {
        Completing {
            fut,
            completer: self,
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
    }
}

impl<F: Future<Output = T>, T> Future for Completing<F, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let state = &this.completer.state;
        if state.is_cancelled() {
            return Poll::Ready(());
        }
        match catch_unwind(AssertUnwindSafe(|| this.fut.poll(cx))) {
            Ok(Poll::Ready(v)) => {
                state.complete(Ok(v));
                Poll::Ready(())
            }
            Ok(Poll::Pending) => {
                // Only work that waits needs to hear of a cancel: register the waker,
                // then look again for a cancel that came before it.
                state.worker.register(cx.waker());
                if state.is_cancelled() {
                    return Poll::Ready(());
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

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// The work completes while the receiver cancels: exactly one result is
    /// written, the receiver reads it once, and it is the work's or the cancel's.
    #[test]
    fn complete_races_cancel() {
        loom::model(|| {
            let state = Arc::new(State::<u32>::new());
            let worker = {
                let state = state.clone();
                thread::spawn(move || state.complete(Ok(7)))
            };
            state.cancel(Error::Timeout);
            let got = state.take_after_claim();
            let worker_won = worker.join().unwrap();
            match got {
                Ok(7) => assert!(worker_won),
                Err(Error::Timeout) => assert!(!worker_won),
                other => panic!("unexpected {other:?}"),
            }
            assert!(matches!(state.take(), Some(Err(Error::Cancelled))));
        });
    }

    /// Two completers (the work's result and its completer's drop): one wins, and
    /// the receiver sees that one.
    /// A receiver that waits is woken by a completion racing its registration:
    /// a lost wakeup would leave `block_on` parked forever, which loom reports.
    #[test]
    fn a_waiting_receiver_is_woken() {
        loom::model(|| {
            let (remote, completer) = pair::<u32>();
            let worker = thread::spawn(move || completer.complete(Ok(5)));
            let got = loom::future::block_on(remote);
            assert!(matches!(got, Ok(5)), "{got:?}");
            worker.join().unwrap();
        });
    }

    #[test]
    fn two_completers_one_result() {
        loom::model(|| {
            let state = Arc::new(State::<u32>::new());
            let a = {
                let state = state.clone();
                thread::spawn(move || state.complete(Ok(1)))
            };
            let b_won = state.complete(Err(Error::Cancelled));
            let a_won = a.join().unwrap();
            assert!(a_won != b_won);
            let got = state.take_after_claim();
            assert_eq!(matches!(got, Ok(1)), a_won);
        });
    }
}
