//! Submitting work to a loop from another thread: the whole path of
//! [`LoopHandle::submit`] and its variants, from the factory to the job queued in the
//! inbox (with a permit when the inbox is bounded, see `bounded.rs`), and the
//! [`Remote`] that gets the result.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;

use super::bounded::Permits;
use super::handle::LoopHandle;
use super::inbox::Msg;
use super::send_call::SendCall;
use crate::current;
use crate::remote::{self, Remote, State};
use crate::Error;

/// Wraps a submitted factory as the callback that runs it as a task on its loop, and
/// the `Remote` that gets its result.
pub(crate) fn job<F, Fut, T>(factory: F) -> (Remote<T>, impl FnOnce() + Send + 'static)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (remote, completer) = remote::pair();
    let job = move || {
        let mut work = Box::pin(completer.complete_with(factory()));
        // Most submitted work finishes at once: poll it here and spare it a task.
        // Work that waits becomes a task, whose first poll registers its real waker.
        if crate::task::poll_detached(work.as_mut()).is_pending() {
            if let Ok(lp) = crate::get_running_loop() {
                // The loop is running (we are one of its callbacks): it cannot be
                // closed, so this only fails by a bug; dropping the work then
                // reports Cancelled.
                let _ = lp.create_task(work);
            }
        }
    };
    (remote, job)
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
    /// Runs the future made by `factory` as a task on the loop and returns its
    /// result as a [`Remote`]: await it from another loop, or `wait()` for it from a
    /// blocking thread. The factory is `Send`; the future it makes need not be.
    ///
    /// Submitting to a closed loop resolves to `Err(Error::Closed)`. If the loop has a
    /// bounded inbox ([`LoopBuilder::inbox_capacity`](crate::LoopBuilder::inbox_capacity))
    /// that is full, a plain thread blocks until there is room, and a thread running
    /// another loop does not block: the returned `Remote` resolves to
    /// `Err(Error::Full)` (a loop that wants to wait for room awaits
    /// [`submit_async`](Self::submit_async); see also [`try_submit`](Self::try_submit)).
    pub fn submit<F, Fut, T>(&self, factory: F) -> Remote<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (remote, job) = job(factory);
        self.send_job(job, remote.state());
        remote
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
                let (remote, job) = job(factory);
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
        let (remote, job) = job(factory);
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
            if let Err(msg) = self.shared.send(Msg::Call(SendCall::new(job))) {
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
        if let Err(msg) = self.shared.send(Msg::Submit(SendCall::new(job))) {
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
