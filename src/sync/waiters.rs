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
use std::task::{Context, Waker};

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
    pub(crate) fn is_empty(&self) -> bool {
        self.list.borrow().is_empty()
    }

    /// Wakes the oldest waiter, taking it off the list; whether there was one.
    pub(crate) fn wake_one(&self) -> bool {
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
