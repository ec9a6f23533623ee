//! Every call from the loop into user code (callbacks, wakers, destructors, the
//! exception handler) goes through here: a panic is caught and reported to the
//! exception handler, never unwound into the loop's bookkeeping.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use super::exception::{default_exception_handler, ExceptionContext};
use super::ready::{Ready, Runnable};
use super::send_call::SendCall;
use super::LoopInner;
use crate::error::panic_message;
use crate::task::raw;

impl LoopInner {
    /// Wakes `waker` (which may be user code), reporting a panic instead of
    /// unwinding into the loop's bookkeeping.
    pub(crate) fn wake_reporting(&self, waker: Waker, whose: fn() -> &'static str) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || waker.wake())) {
            self.report_panic("waker", whose(), panic_message(&*payload));
            raw::drop_payload(payload);
        }
    }

    pub(crate) fn report_panic(&self, kind: &str, name: &'static str, msg: String) {
        self.call_exception_handler(&ExceptionContext::panic(kind, name, msg, &self.shared.name));
    }

    pub(crate) fn call_exception_handler(&self, ctx: &ExceptionContext) {
        let handler = self.exception_handler.borrow().clone();
        let result = catch_unwind(AssertUnwindSafe(|| match handler {
            Some(h) => h(ctx),
            None => default_exception_handler(ctx),
        }));
        if let Err(payload) = result {
            log::error!(
                "[{}] the exception handler panicked ({}) while handling: {ctx}",
                self.shared.name,
                panic_message(&*payload)
            );
        }
    }

    /// Runs one ready-queue entry; a panic is caught and reported.
    #[inline]
    pub(super) fn run_entry(&self, entry: Ready) {
        let panicked = match entry {
            Ready::Entry(entry) => catch_unwind(AssertUnwindSafe(|| entry.run(self)))
                .map_err(|payload| (entry.name(), payload)),
            // A task catches its own panics (they resolve it).
            Ready::Task(task) => {
                task.run(self);
                Ok(())
            }
            Ready::Mail => {
                let f = self.mail.borrow_mut().pop_front();
                let f = f.expect("a mail marker without its callback");
                let name = f.name();
                catch_unwind(AssertUnwindSafe(|| f.call())).map_err(|payload| (name, payload))
            }
        };
        if let Err((name, payload)) = panicked {
            self.report_panic("callback", name, panic_message(&*payload));
            raw::drop_payload(payload);
        }
    }

    /// Cancels a callback entry (dropping the callback), reporting a panicking
    /// destructor instead of unwinding. Whether it was still pending.
    pub(super) fn cancel_reporting(&self, entry: &Rc<dyn Runnable>) -> bool {
        match catch_unwind(AssertUnwindSafe(|| entry.cancel())) {
            Ok(was_pending) => was_pending,
            Err(payload) => {
                self.report_panic(
                    "callback destructor",
                    entry.name(),
                    panic_message(&*payload),
                );
                raw::drop_payload(payload);
                true
            }
        }
    }

    /// Drops `value` (user code: a callback, its captures), reporting a panicking
    /// destructor instead of unwinding.
    pub(super) fn drop_reporting<T>(&self, what: &str, name: &'static str, value: T) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
            self.report_panic(what, name, panic_message(&*payload));
            raw::drop_payload(payload);
        }
    }

    /// Debug mode's `run_entry`: also times the entry and logs it if slow.
    pub(super) fn run_entry_timed(&self, entry: Ready) {
        let name = match entry {
            // The marker's callback, which it runs: the next of the mail queue.
            Ready::Mail => self.mail.borrow().front().map_or("call_soon_threadsafe callback", SendCall::name),
            _ => entry.name(),
        };
        let started = Instant::now();
        self.run_entry(entry);
        let took = started.elapsed();
        self.stats.record_duration(took);
        if took >= self.slow_callback_duration {
            log::warn!(
                "[{}] executing {} took {:.3} seconds",
                self.shared.name,
                name,
                took.as_secs_f64()
            );
        }
    }
}
