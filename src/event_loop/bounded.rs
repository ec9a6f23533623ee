//! Backpressure: an optional bound on the jobs submitted to a loop from other threads.
//!
//! The inbox itself stays unbounded, so that task wakeups and `stop` are never refused
//! or delayed (a lost wakeup would hang a task). What is bounded is the number of
//! submitted jobs waiting in it: a submitter takes a *permit* before it queues a job
//! ([`Msg::Submit`]), and the loop gives the permit back when it takes the job out of
//! the inbox.
//!
//! Permits are `()` tokens in a flume channel pre-filled with `capacity` of them, which
//! gives an async take (other loops, and plain threads, which block on it by parking)
//! and a non-blocking take (`try_submit`) for free. Two properties of flume matter here:
//! an async take that is dropped before it completes leaves its token in the channel
//! (flume only *notifies* async receivers, it never hands them an item), so no permit
//! leaks; and the loop holds the channel's only sender, so closing the loop (which
//! drops it) wakes blocked submitters with an error instead of leaving them waiting.
//!
//! A submission from the loop's own thread never takes a permit: it goes straight to
//! the ready queue, so a loop can always submit to itself.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;

use super::inbox::{self, LoopHandle, Msg};
use super::LoopInner;
use crate::current;
use crate::remote::{Remote, State};
use crate::Error;

/// The submitters' side of a bounded inbox.
pub(crate) struct Permits {
    tokens: flume::Receiver<()>,
    capacity: usize,
}

/// Makes the permits of an inbox bounded to `capacity` jobs (at least 1), and the
/// sender through which the loop gives them back. `None`: unbounded, no permits.
pub(crate) fn permits(capacity: Option<usize>) -> (Option<Permits>, Option<flume::Sender<()>>) {
    let Some(capacity) = capacity else {
        return (None, None);
    };
    let capacity = capacity.max(1);
    let (back, tokens) = flume::unbounded();
    for _ in 0..capacity {
        // Cannot fail: we hold the receiver.
        let _ = back.send(());
    }
    (Some(Permits { tokens, capacity }), Some(back))
}

impl LoopInner {
    /// Gives back the permits of `n` jobs just taken out of the inbox.
    pub(super) fn return_permits(&self, n: usize) {
        if let Some(back) = &*self.permit_return.borrow() {
            for _ in 0..n {
                // Cannot fail: `Shared` holds a receiver for as long as the loop lives.
                let _ = back.send(());
            }
        }
    }
}

/// Why [`LoopHandle::try_submit`] (or the runtime's `try_submit`) refused the work; it
/// holds the factory, so nothing is lost.
///
/// ```
/// use shardloop::TrySubmitError;
/// let lp = shardloop::new_event_loop()?;
/// let handle = lp.handle();
/// lp.close()?;
/// match handle.try_submit(|| async { 1 }) {
///     Err(TrySubmitError::Closed(factory)) => drop(factory), // ours again
///     other => panic!("expected Closed, got {other:?}"),
/// }
/// # Ok::<(), shardloop::Error>(())
/// ```
pub enum TrySubmitError<F> {
    /// The inbox is full: try again later (or use the blocking / async submit).
    Full(F),
    /// The loop is closed: it will never run anything again.
    Closed(F),
}

impl<F> TrySubmitError<F> {
    /// The work that was refused.
    pub fn into_inner(self) -> F {
        match self {
            TrySubmitError::Full(f) | TrySubmitError::Closed(f) => f,
        }
    }

    /// Whether the refusal is temporary (the inbox was full).
    pub fn is_full(&self) -> bool {
        matches!(self, TrySubmitError::Full(_))
    }

    /// The refusal as an [`Error`] (`Full` or `Closed`), dropping the work.
    pub fn into_error(self) -> Error {
        match self {
            TrySubmitError::Full(_) => Error::Full,
            TrySubmitError::Closed(_) => Error::Closed,
        }
    }
}

impl<F> fmt::Debug for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySubmitError::Full(_) => "Full(..)",
            TrySubmitError::Closed(_) => "Closed(..)",
        })
    }
}

impl<F> fmt::Display for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySubmitError::Full(_) => "the loop's inbox is full",
            TrySubmitError::Closed(_) => "event loop is closed",
        })
    }
}

impl<F> std::error::Error for TrySubmitError<F> {}

impl LoopHandle {
    /// The bound on submitted jobs waiting in the inbox, if the loop has one
    /// ([`LoopBuilder::inbox_capacity`](crate::LoopBuilder::inbox_capacity)).
    pub fn inbox_capacity(&self) -> Option<usize> {
        self.shared.permits.as_ref().map(|p| p.capacity)
    }

    /// [`submit`](Self::submit) that never waits: if the loop's bounded inbox is full
    /// (or the loop is closed) the factory comes back in the error.
    ///
    /// Submitting from the loop's own thread, or to an unbounded loop, is never
    /// `Full`. If the loop closes between the check and the send, the returned
    /// `Remote` resolves to `Err(Error::Closed)` instead.
    ///
    /// ```
    /// let lp = shardloop::EventLoop::builder().inbox_capacity(Some(1)).build()?;
    /// let handle = lp.handle();
    /// // Another thread submits: the first job fills the inbox, the second is refused.
    /// let h = handle.clone();
    /// let (first, refused) = std::thread::spawn(move || {
    ///     let first = h.try_submit(|| async { 1 }).expect("room for one");
    ///     (first, h.try_submit(|| async { 2 }).unwrap_err())
    /// })
    /// .join()
    /// .unwrap();
    /// assert!(refused.is_full());
    /// let factory = refused.into_inner(); // the work is ours again
    /// assert_eq!(lp.run_until_complete(first)??, 1);
    /// assert_eq!(lp.run_until_complete(handle.submit(factory))??, 2);
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn try_submit<F, Fut, T>(&self, factory: F) -> Result<Remote<T>, TrySubmitError<F>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        if self.is_closed() {
            return Err(TrySubmitError::Closed(factory));
        }
        let Some(permits) = self.permits_needed() else {
            return Ok(self.submit(factory));
        };
        match permits.tokens.try_recv() {
            Ok(()) => {
                let (remote, job) = inbox::job(factory);
                self.send_permitted(job, &remote.state());
                Ok(remote)
            }
            Err(flume::TryRecvError::Empty) => Err(TrySubmitError::Full(factory)),
            Err(flume::TryRecvError::Disconnected) => Err(TrySubmitError::Closed(factory)),
        }
    }

    /// [`submit`](Self::submit) that waits asynchronously for room in a bounded inbox,
    /// then returns the work's [`Remote`]: the way for a loop to submit with
    /// backpressure. `Err(Error::Closed)` if the loop is (or gets) closed first.
    ///
    /// ```
    /// let target = shardloop::EventLoop::builder().inbox_capacity(Some(8)).build()?;
    /// let handle = target.handle();
    /// let worker = std::thread::spawn(move || {
    ///     shardloop::run(async move {
    ///         let remote = handle.submit_async(|| async { 6 * 7 }).await?;
    ///         let answer = remote.await;
    ///         handle.stop();
    ///         answer
    ///     })
    /// });
    /// target.run_forever()?;
    /// assert_eq!(worker.join().unwrap()??, 42);
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub async fn submit_async<F, Fut, T>(&self, factory: F) -> Result<Remote<T>, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let Some(permits) = self.permits_needed() else {
            return Ok(self.submit(factory));
        };
        permits
            .tokens
            .recv_async()
            .await
            .map_err(|_| Error::Closed)?;
        let (remote, job) = inbox::job(factory);
        self.send_permitted(job, &remote.state());
        Ok(remote)
    }

    /// The permits a submission from this thread must take: none on the loop's own
    /// running thread or for an unbounded inbox.
    fn permits_needed(&self) -> Option<&Permits> {
        let permits = self.shared.permits.as_ref()?;
        match current::local_loop_for(&self.shared) {
            Some(_) => None,
            None => Some(permits),
        }
    }

    /// Queues a submitted job, resolving its `Remote` to `Err(Error::Closed)` if the
    /// loop refuses it. With a bounded inbox, waits for a permit first: a plain thread
    /// blocks. A thread running another loop must not block (two loops submitting to
    /// each other would deadlock), and buffering the job there would make the bound
    /// meaningless (one waiting task per job, unbounded), so a full inbox resolves
    /// its `Remote` to `Err(Error::Full)`: such a caller wants `submit_async`.
    pub(crate) fn send_job<J, T>(&self, job: J, state: Arc<State<T>>)
    where
        J: FnOnce() + Send + 'static,
        T: Send + 'static,
    {
        if let Some(lp) = current::local_loop_for(&self.shared) {
            if lp.is_closed() {
                refuse(&state, job);
            } else {
                let _ = lp.call_soon(job);
            }
            return;
        }
        let Some(permits) = &self.shared.permits else {
            if let Err(msg) = self.shared.send(Msg::Call(Box::new(job))) {
                refuse(&state, msg);
            }
            return;
        };
        match permits.tokens.try_recv() {
            Ok(()) => self.send_permitted(job, &state),
            Err(flume::TryRecvError::Disconnected) => refuse(&state, job),
            Err(flume::TryRecvError::Empty) if crate::get_running_loop().is_ok() => {
                refuse_with(&state, job, Error::Full)
            }
            Err(flume::TryRecvError::Empty) => match take_blocking(&permits.tokens) {
                Ok(()) => self.send_permitted(job, &state),
                Err(_) => refuse(&state, job),
            },
        }
    }

    /// Queues a job whose permit is taken.
    fn send_permitted<J, T>(&self, job: J, state: &State<T>)
    where
        J: FnOnce() + Send + 'static,
    {
        if let Err(msg) = self.shared.send(Msg::Submit(Box::new(job))) {
            refuse(state, msg);
        }
    }
}

/// Takes a permit, blocking the thread.
///
/// It waits through `recv_async`, driven by a waker that unparks this thread, not
/// through flume's blocking `recv`: in flume 0.11 (and 0.12) a blocking receiver can
/// be stranded when async receivers wait on the same channel. An async receiver that
/// was woken hands its wakeup on with `fire_nothing`, which takes *every* waiting
/// receiver off the wait list and wakes it without a message; an async receiver
/// registers again when re-polled, but a blocking one parks again, off the list, for
/// good. With only async receivers on the token channel that cannot happen.
fn take_blocking(tokens: &flume::Receiver<()>) -> Result<(), flume::RecvError> {
    let waker = crate::remote::thread_waker();
    let mut cx = Context::from_waker(&waker);
    let mut take = pin!(tokens.recv_async());
    loop {
        if let Poll::Ready(taken) = take.as_mut().poll(&mut cx) {
            return taken;
        }
        // An unpark that came before this park makes it return at once: no wakeup
        // is lost; a spurious return just polls again.
        thread::park();
    }
}

/// Resolves a refused job's `Remote` to `Err(Error::Closed)`, then drops the job (in
/// that order: dropping it first would resolve the `Remote` to `Cancelled`).
fn refuse<T, J>(state: &State<T>, job: J) {
    refuse_with(state, job, Error::Closed);
}

/// Resolves a refused job's `Remote` to `err`, then drops the job.
fn refuse_with<T, J>(state: &State<T>, job: J, err: Error) {
    state.complete(Err(err));
    drop(job);
}
