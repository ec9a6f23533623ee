//! [`LoopFuture`]: asyncio's `Future`, a result set once and awaited by any number
//! of tasks.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

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
    wakers: RefCell<Vec<Waker>>,
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
}

impl<T> Clone for LoopFuture<T> {
    fn clone(&self) -> Self {
        LoopFuture {
            inner: self.inner.clone(),
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
                wakers: RefCell::new(Vec::new()),
                callbacks: RefCell::new(Vec::new()),
            }),
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
        for waker in self.inner.wakers.take() {
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
        let mut wakers = self.inner.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
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
