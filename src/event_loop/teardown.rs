//! Closing a loop: everything pending is dropped (tasks cancelled, callbacks and
//! timers destroyed, the inbox closed under its lock), each destructor's panic caught.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use super::inbox::Msg;
use super::ready::Ready;
use super::state::Dropped;
use super::{EventLoop, LoopInner};
use crate::error::panic_message;
use crate::task::raw;
use crate::task::TaskRef;
use crate::Error;

impl EventLoop {
    /// Closes the loop: pending callbacks, timers and tasks are dropped (tasks resolve
    /// to `Err(Error::Cancelled)`), and every later scheduling or run call fails with
    /// `Err(Error::Closed)`. Closing twice is a no-op; closing a running loop is
    /// `Err(Error::CloseWhileRunning)`.
    pub fn close(&self) -> Result<(), Error> {
        self.close_counting().map(drop)
    }

    /// [`close`](Self::close), saying what it dropped (nothing if already closed).
    pub(crate) fn close_counting(&self) -> Result<Dropped, Error> {
        if self.inner.running.get() {
            return Err(Error::CloseWhileRunning);
        }
        if self.inner.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(Dropped::default());
        }
        self.inner.permit_return.borrow_mut().take();
        let dropped = self.inner.drop_pending();
        self.inner.signals.close(&self.inner.reactor);
        self.inner.executor.close();
        self.inner.reactor.wake_all();
        Ok(dropped)
    }
}

impl LoopInner {
    /// Drops everything pending (the loop is closing), with no borrow held while
    /// destructors run, and every panicking destructor caught and reported. The
    /// inbox is closed first, under its lock: what got in is dropped here, and
    /// anything sent later (by these very destructors, say) is refused.
    pub(super) fn drop_pending(&self) -> Dropped {
        let mail = self.shared.close_inbox();
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        let (timers, sleeps) = self.timers.borrow_mut().take_all();
        let tasks: Vec<TaskRef> = self.tasks.borrow_mut().drain().collect();
        let mut dropped = Dropped::default();
        for task in &tasks {
            // Drops the future in place; a panic there is caught and reported inside
            // (this catch is only a backstop, so that one task cannot stop the rest
            // from being cancelled).
            match catch_unwind(AssertUnwindSafe(|| task.cancel_now(self))) {
                Ok(cancelled) => dropped.tasks += usize::from(cancelled),
                Err(payload) => {
                    self.report_panic("task cancel", task.type_name(), panic_message(&*payload));
                    raw::drop_payload(payload);
                }
            }
        }
        drop(tasks);
        for entry in &timers {
            dropped.callbacks += usize::from(self.cancel_reporting(entry));
        }
        drop(timers);
        drop(sleeps);
        for entry in ready {
            match entry {
                Ready::Entry(e) => dropped.callbacks += usize::from(self.cancel_reporting(&e)),
                // Only a reference: the task itself was cancelled above.
                Ready::Task(task) => drop(task),
                Ready::Mail => {
                    let f = self.mail.borrow_mut().pop_front();
                    let f = f.expect("a mail marker without its callback");
                    dropped.callbacks += 1;
                    self.drop_reporting("callback destructor", f.name(), f);
                }
            }
        }
        for msg in mail {
            match msg {
                Msg::Call(f) | Msg::Submit(f) => {
                    dropped.callbacks += 1;
                    self.drop_reporting("callback destructor", f.name(), f);
                }
                other => drop(other),
            }
        }
        dropped
    }
}

impl Drop for LoopInner {
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.drop_pending();
        }
    }
}
