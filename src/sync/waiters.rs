//! A FIFO list of tasks waiting on a loop-local primitive, for `Event`, `Lock`,
//! `Semaphore` and `Queue`.
//!
//! A waiter is either still waiting or *woken*: the primitive chose it (gave it a
//! permit, or told it that there may be room). A future that is dropped while it
//! waits leaves the list at once; one dropped after it was woken but before it
//! looked hands the wakeup on (`Wait::drop` tells its owner), so no wakeup is lost.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One waiting task.
pub(crate) struct Waiter {
    waker: RefCell<Option<Waker>>,
    woken: Cell<bool>,
}

impl Waiter {
    /// Whether the primitive chose this waiter.
    pub(crate) fn is_woken(&self) -> bool {
        self.woken.get()
    }

    /// Refreshes the waker (the task may have moved between polls).
    pub(crate) fn register(&self, cx: &Context<'_>) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
    }
}

/// Polls a place in `line` held in `slot`: `Ready` once the waiter was woken (the
/// slot is emptied), else joins the line (first poll) or refreshes the waker.
pub(crate) fn poll_woken(slot: &mut Option<Rc<Waiter>>, line: &Waiters, cx: &Context<'_>) -> Poll<()> {
    match slot {
        Some(w) if w.is_woken() => {
            *slot = None;
            Poll::Ready(())
        }
        Some(w) => {
            w.register(cx);
            Poll::Pending
        }
        None => {
            *slot = Some(line.push(cx));
            Poll::Pending
        }
    }
}

/// A place in a line for a wakeup that any waiter can use (room in a queue, a
/// condition's notify): dropped, it leaves the line, and a wakeup it got but did not
/// see goes to the next waiter.
pub(crate) struct Place<'a> {
    line: &'a Waiters,
    waiter: Option<Rc<Waiter>>,
    /// Whether a wakeup it did not see goes on to the next waiter: not for a line
    /// that is woken all at once, where the next waiter can only be one that came
    /// after the wakeup, and waits for a later one.
    hand_on: bool,
}

impl<'a> Place<'a> {
    /// Not in the line yet.
    #[inline]
    pub(crate) fn new(line: &'a Waiters) -> Place<'a> {
        Place {
            line,
            waiter: None,
            hand_on: true,
        }
    }

    /// A place in a line that is only ever woken all at once (`wake_all`): dropped
    /// after its wakeup, it hands nothing on.
    #[inline]
    pub(crate) fn in_broadcast(line: &'a Waiters) -> Place<'a> {
        Place {
            line,
            waiter: None,
            hand_on: false,
        }
    }

    /// Whether it is in the line.
    #[inline]
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiter.is_some()
    }

    /// Joins the line now, without waiting yet.
    pub(crate) fn join(&mut self, cx: &Context<'_>) {
        if self.waiter.is_none() {
            self.waiter = Some(self.line.push(cx));
        }
    }

    /// Pending until woken (joining the line first if need be).
    pub(crate) fn poll_woken(&mut self, cx: &Context<'_>) -> Poll<()> {
        poll_woken(&mut self.waiter, self.line, cx)
    }
}

impl Drop for Place<'_> {
    #[inline]
    fn drop(&mut self) {
        // Most places never joined the line (the primitive was ready at once).
        if let Some(w) = self.waiter.take() {
            if w.is_woken() {
                if self.hand_on {
                    self.line.wake_one();
                }
            } else {
                self.line.remove(&w);
            }
        }
    }
}

/// The list, oldest first.
#[derive(Default)]
pub(crate) struct Waiters {
    list: RefCell<VecDeque<Rc<Waiter>>>,
}

impl Waiters {
    /// Adds a waiter for the task polling with `cx`.
    pub(crate) fn push(&self, cx: &Context<'_>) -> Rc<Waiter> {
        let waiter = Rc::new(Waiter {
            waker: RefCell::new(Some(cx.waker().clone())),
            woken: Cell::new(false),
        });
        self.list.borrow_mut().push_back(waiter.clone());
        waiter
    }

    /// Whether no one waits.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.list.borrow().is_empty()
    }

    /// Wakes the oldest waiter, taking it off the list; whether there was one.
    /// Inlined down to the emptiness check: on the fast paths nobody waits.
    #[inline]
    pub(crate) fn wake_one(&self) -> bool {
        !self.is_empty() && self.wake_first()
    }

    #[cold]
    fn wake_first(&self) -> bool {
        let Some(waiter) = self.list.borrow_mut().pop_front() else {
            return false;
        };
        waiter.woken.set(true);
        let waker = waiter.waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Wakes every waiter.
    pub(crate) fn wake_all(&self) {
        while self.wake_one() {}
    }

    /// Takes a waiter that gave up off the list (it was not woken).
    pub(crate) fn remove(&self, waiter: &Rc<Waiter>) {
        self.list.borrow_mut().retain(|w| !Rc::ptr_eq(w, waiter));
    }
}
