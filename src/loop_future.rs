//! [`LoopFuture`]: asyncio's `Future`, a result set once and awaited by any number
//! of tasks.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::{EventLoop, Error};

enum State<T> {
    Pending,
    Done(T),
    Cancelled,
}

type DoneCallback<T> = Box<dyn FnOnce(&LoopFuture<T>)>;

struct Inner<T> {
    lp: EventLoop,
    state: RefCell<State<T>>,
    /// The awaiters' wakers, one entry per awaiting handle: a handle dropped while
    /// it waits takes its entry out, so awaiters that come and go (a timeout
    /// around each) do not pile up until the result comes.
    wakers: RefCell<Slab<Waker>>,
    callbacks: RefCell<Vec<DoneCallback<T>>>,
}

/// asyncio's `Future` on a loop ([`EventLoop::create_future`]): set once, with
/// [`set_result`](LoopFuture::set_result) or [`cancel`](LoopFuture::cancel), and
/// awaited by any number of tasks (each gets a clone of the result, so `T: Clone`
/// to await). Done callbacks are scheduled with `call_soon` when it completes, as in
/// asyncio, never run inside `set_result`. Loop-local (`!Send`); clones share it.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let f = lp.create_future::<u32>();
/// let seen = std::rc::Rc::new(std::cell::Cell::new(0));
/// f.add_done_callback({
///     let seen = seen.clone();
///     move |f| seen.set(f.result().unwrap().unwrap())
/// });
/// let waiter = lp.create_task(f.clone())?;
/// f.set_result(7)?;
/// assert!(matches!(f.set_result(8), Err(shardloop::Error::InvalidState)));
/// assert_eq!(lp.run_until_complete(waiter)???, 7);
/// assert_eq!(seen.get(), 7);
/// # Ok::<(), shardloop::Error>(())
/// ```
pub struct LoopFuture<T> {
    inner: Rc<Inner<T>>,
    /// This handle's entry in `wakers`, once it was polled while pending.
    waiting: Option<usize>,
}

impl<T> Clone for LoopFuture<T> {
    fn clone(&self) -> Self {
        LoopFuture {
            inner: self.inner.clone(),
            waiting: None,
        }
    }
}

impl<T> Drop for LoopFuture<T> {
    fn drop(&mut self) {
        // Once it completed the table was emptied and is never filled again, so a
        // key from before finds nothing.
        if let Some(key) = self.waiting {
            // Dropped after the borrow ends: a waker's drop may reach this future.
            let removed = self.inner.wakers.borrow_mut().try_remove(key);
            drop(removed);
        }
    }
}

impl EventLoop {
    /// A new pending [`LoopFuture`] of this loop (asyncio's `loop.create_future()`).
    pub fn create_future<T: 'static>(&self) -> LoopFuture<T> {
        LoopFuture {
            inner: Rc::new(Inner {
                lp: self.clone(),
                state: RefCell::new(State::Pending),
                wakers: RefCell::new(Slab::new()),
                callbacks: RefCell::new(Vec::new()),
            }),
            waiting: None,
        }
    }
}

impl<T: 'static> LoopFuture<T> {
    /// Sets the result, waking every awaiter and scheduling the done callbacks.
    /// `Err(Error::InvalidState)` if it is already done or cancelled.
    pub fn set_result(&self, value: T) -> Result<(), Error> {
        self.complete(State::Done(value))
    }

    /// Cancels it: awaiters get `Err(Error::Cancelled)`. Returns false if it was
    /// already done or cancelled.
    pub fn cancel(&self) -> bool {
        self.complete(State::Cancelled).is_ok()
    }

    fn complete(&self, state: State<T>) -> Result<(), Error> {
        {
            let mut slot = self.inner.state.borrow_mut();
            if !matches!(*slot, State::Pending) {
                return Err(Error::InvalidState);
            }
            *slot = state;
        }
        for (_, waker) in self.inner.wakers.take() {
            waker.wake();
        }
        for callback in self.inner.callbacks.take() {
            self.schedule(callback);
        }
        Ok(())
    }

    /// Schedules `callback(self)` with `call_soon` (dropped if the loop is closed).
    fn schedule(&self, callback: DoneCallback<T>) {
        let me = self.clone();
        let _ = self.inner.lp.call_soon(move || callback(&me));
    }

    /// Adds a callback run (through `call_soon`) once it is done or cancelled; at once
    /// scheduled if it already is.
    pub fn add_done_callback(&self, callback: impl FnOnce(&LoopFuture<T>) + 'static) {
        if self.done() {
            self.schedule(Box::new(callback));
        } else {
            self.inner.callbacks.borrow_mut().push(Box::new(callback));
        }
    }

    /// Whether it has a result or was cancelled.
    pub fn done(&self) -> bool {
        !matches!(*self.inner.state.borrow(), State::Pending)
    }

    /// Whether it was cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(*self.inner.state.borrow(), State::Cancelled)
    }
}

impl<T: Clone + 'static> LoopFuture<T> {
    /// The result once done: `Some(Ok(value))`, `Some(Err(Error::Cancelled))`, or
    /// `None` while pending.
    pub fn result(&self) -> Option<Result<T, Error>> {
        match &*self.inner.state.borrow() {
            State::Pending => None,
            State::Done(v) => Some(Ok(v.clone())),
            State::Cancelled => Some(Err(Error::Cancelled)),
        }
    }
}

impl<T: Clone + 'static> Future for LoopFuture<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.result() {
            return Poll::Ready(result);
        }
        let this = self.get_mut();
        let mut wakers = this.inner.wakers.borrow_mut();
        let replaced = match this.waiting.and_then(|key| wakers.get_mut(key)) {
            Some(waker) if waker.will_wake(cx.waker()) => None,
            Some(waker) => Some(std::mem::replace(waker, cx.waker().clone())),
            None => {
                this.waiting = Some(wakers.insert(cx.waker().clone()));
                None
            }
        };
        // The old waker is dropped after the borrow ends, as in `drop`.
        drop(wakers);
        drop(replaced);
        Poll::Pending
    }
}

impl<T> fmt::Debug for LoopFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner.state.borrow() {
            State::Pending => "pending",
            State::Done(_) => "done",
            State::Cancelled => "cancelled",
        };
        f.debug_struct("LoopFuture").field("state", &state).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use futures_util::FutureExt;

    use crate::{yield_now, EventLoop};

    // A server that awaits one shutdown future from each connection, each time
    // under a timeout, must not keep a waker per awaiter that came and went.
    #[test]
    fn awaiters_that_go_away_leave_no_waker_behind() {
        let lp = EventLoop::new().unwrap();
        let f = lp.create_future::<u32>();
        for _ in 0..1000 {
            assert!(f.clone().now_or_never().is_none());
        }
        assert_eq!(f.inner.wakers.borrow().len(), 0);

        let waiters: Vec<_> = (0..3).map(|_| lp.create_task(f.clone()).unwrap()).collect();
        lp.run_until_complete(yield_now()).unwrap();
        assert_eq!(f.inner.wakers.borrow().len(), 3);
        waiters[1].cancel();
        lp.run_until_complete(yield_now()).unwrap();
        assert_eq!(f.inner.wakers.borrow().len(), 2, "the cancelled awaiter's is gone");

        // Polled again by the same task, a handle keeps its one entry.
        let mut again = f.clone();
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(std::pin::Pin::new(&mut again).poll(&mut cx).is_pending());
        }
        assert_eq!(f.inner.wakers.borrow().len(), 3);
        drop(again);

        f.set_result(9).unwrap();
        let [a, b, c] = <[_; 3]>::try_from(waiters).ok().unwrap();
        assert_eq!(lp.run_until_complete(a).unwrap().unwrap().unwrap(), 9);
        assert!(lp.run_until_complete(b).unwrap().is_err());
        assert_eq!(lp.run_until_complete(c).unwrap().unwrap().unwrap(), 9);
        lp.close().unwrap();
    }
}
