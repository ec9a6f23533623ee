//! Raw file descriptors watched with callbacks: asyncio's `add_reader` / `add_writer`.
//!
//! Semantics are asyncio's: a callback is called on each iteration while its fd is
//! ready (level-triggered), adding again replaces the callback, removing says whether
//! there was one. A reader and a writer on the same fd share one registration whose
//! interest is the union of the two.
//!
//! mio is edge-triggered, so level-triggered behaviour is rebuilt here: an event
//! queues the fd's [`FdWatch`] into the ready queue (once, however many events come
//! before it runs); when it runs it first re-arms the fd, which makes the next poll
//! report it again if it is still ready, then calls the callbacks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use mio::{Interest, Token};

use super::reactor::{Direction, Reactor, Readiness, ReadyQueue, Sink};
use crate::error::panic_message;
use crate::event_loop::ready::{Ready, Runnable};
use crate::event_loop::LoopInner;
use crate::{Error, EventLoop};

/// A user callback, shared so that it can be called with no borrow of its slot held
/// (it may replace or remove itself).
type Callback = Rc<RefCell<dyn FnMut()>>;

/// One watched fd: its callbacks and what the last events said.
pub(crate) struct FdWatch {
    fd: RawFd,
    token: Token,
    reader: RefCell<Option<Callback>>,
    writer: RefCell<Option<Callback>>,
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// Sitting in the ready queue: more events before it runs queue nothing more.
    queued: Cell<bool>,
}

impl FdWatch {
    fn new(fd: RawFd, token: Token) -> Rc<Self> {
        Rc::new(FdWatch {
            fd,
            token,
            reader: RefCell::new(None),
            writer: RefCell::new(None),
            readable: Cell::new(false),
            writable: Cell::new(false),
            queued: Cell::new(false),
        })
    }

    fn slot(&self, dir: Direction) -> &RefCell<Option<Callback>> {
        match dir {
            Direction::Read => &self.reader,
            Direction::Write => &self.writer,
        }
    }

    /// The interest its callbacks need; None when it has none left.
    fn interest(&self) -> Option<Interest> {
        match (
            self.reader.borrow().is_some(),
            self.writer.borrow().is_some(),
        ) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    /// Drops both callbacks (outside the borrows: their destructors are user code).
    fn release(&self) {
        let reader = self.reader.borrow_mut().take();
        let writer = self.writer.borrow_mut().take();
        drop((reader, writer));
    }

    fn call(&self, lp: &LoopInner, dir: Direction) {
        let Some(cb) = self.slot(dir).borrow().clone() else {
            return;
        };
        // A callback is never running already (only this dispatch calls it), but a
        // failed borrow must not take the loop down either.
        let Ok(mut f) = cb.try_borrow_mut() else {
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (*f)())) {
            drop(f);
            let kind = match dir {
                Direction::Read => "reader callback",
                Direction::Write => "writer callback",
            };
            lp.report_panic(kind, self.name(), panic_message(&*payload));
        }
    }
}

impl Sink for FdWatch {
    /// Records an event and queues the watch to run, unless it is queued already.
    fn on_event(self: Rc<Self>, event: Readiness, ready: &ReadyQueue) {
        if event.readable {
            self.readable.set(true);
        }
        if event.writable {
            self.writable.set(true);
        }
        if !self.queued.replace(true) {
            ready.borrow_mut().push_back(Ready::Entry(self));
        }
    }
    // Watchers are released on close by `FdWatchers::release_all`.
}

impl Runnable for FdWatch {
    fn run(&self, lp: &LoopInner) {
        self.queued.set(false);
        let readable = self.readable.replace(false);
        let writable = self.writable.replace(false);
        // Re-arm before calling: the next poll reports the fd again if it is still
        // ready when that poll happens, whatever the callbacks do (panic included).
        if let Some(interest) = self.interest() {
            if let Err(e) = lp.reactor.reregister_fd(self.fd, self.token, interest) {
                log::debug!("re-arming watched fd {} failed: {e}", self.fd);
            }
        }
        if readable {
            self.call(lp, Direction::Read);
        }
        if writable {
            self.call(lp, Direction::Write);
        }
    }

    fn cancel(&self) -> bool {
        // Only the queue entry goes away; the callbacks stay registered until
        // removed or the loop closes.
        self.queued.set(false);
        false
    }

    fn is_cancelled(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "fd watcher (add_reader/add_writer)"
    }
}

/// A loop's watched fds.
#[derive(Default)]
pub(crate) struct FdWatchers {
    by_fd: RefCell<HashMap<RawFd, Rc<FdWatch>>>,
}

impl FdWatchers {
    fn get(&self, fd: RawFd) -> Option<Rc<FdWatch>> {
        self.by_fd.borrow().get(&fd).cloned()
    }

    /// The loop is closing: deregister every fd and drop every callback.
    pub(crate) fn release_all(&self, reactor: &Reactor) {
        let all: Vec<_> = self.by_fd.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in &all {
            reactor.deregister_fd(w.fd, w.token);
            w.release();
        }
    }
}

impl EventLoop {
    /// Calls `callback` on each iteration while `fd` is readable (asyncio's
    /// `add_reader`, level-triggered). Adding again replaces the callback. The fd stays
    /// the caller's: remove the reader before closing it.
    ///
    /// "Each iteration" means each time the loop polls for I/O: every iteration when
    /// it would otherwise wait, and every `event_interval` iterations
    /// ([`LoopBuilder::event_interval`](crate::LoopBuilder::event_interval)) while
    /// other callbacks keep it busy. The callback runs from the ready queue, after the
    /// callbacks that were ready before the poll.
    ///
    /// `Err(Error::Closed)` on a closed loop; `Err(Error::Io)` if the fd cannot be
    /// watched (not open, or a regular file).
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use std::rc::Rc;
    /// let lp = shardloop::new_event_loop()?;
    /// let (mut tx, rx) = std::os::unix::net::UnixStream::pair()?;
    /// tx.write_all(b"ping")?;
    /// let fd = rx.as_raw_fd();
    /// let stopper = lp.clone();
    /// lp.add_reader(fd, move || {
    ///     stopper.remove_reader(fd);
    ///     stopper.stop();
    /// })?;
    /// lp.run_forever()?;
    /// assert!(!lp.remove_reader(fd)); // already removed by the callback
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_reader<F: FnMut() + 'static>(&self, fd: RawFd, callback: F) -> Result<(), Error> {
        self.add_watch(fd, Direction::Read, Rc::new(RefCell::new(callback)))
    }

    /// Calls `callback` on each iteration while `fd` is writable (asyncio's
    /// `add_writer`, level-triggered). Adding again replaces the callback.
    ///
    /// `Err(Error::Closed)` on a closed loop; `Err(Error::Io)` if the fd cannot be
    /// watched.
    pub fn add_writer<F: FnMut() + 'static>(&self, fd: RawFd, callback: F) -> Result<(), Error> {
        self.add_watch(fd, Direction::Write, Rc::new(RefCell::new(callback)))
    }

    /// Stops calling the reader of `fd`; returns whether there was one (false on a
    /// closed loop, which has released every watcher).
    pub fn remove_reader(&self, fd: RawFd) -> bool {
        self.remove_watch(fd, Direction::Read)
    }

    /// Stops calling the writer of `fd`; returns whether there was one (false on a
    /// closed loop, which has released every watcher).
    pub fn remove_writer(&self, fd: RawFd) -> bool {
        self.remove_watch(fd, Direction::Write)
    }

    fn add_watch(&self, fd: RawFd, dir: Direction, callback: Callback) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let reactor = &self.inner.reactor;
        let watch = match reactor.watchers.get(fd) {
            Some(watch) => {
                let interest = match dir {
                    Direction::Read => Interest::READABLE,
                    Direction::Write => Interest::WRITABLE,
                };
                let interest = watch.interest().map_or(interest, |i| i | interest);
                reactor.reregister_fd(fd, watch.token, interest)?;
                watch
            }
            None => {
                let interest = match dir {
                    Direction::Read => Interest::READABLE,
                    Direction::Write => Interest::WRITABLE,
                };
                let watch = reactor.register_fd(fd, interest, |token| FdWatch::new(fd, token))?;
                reactor
                    .watchers
                    .by_fd
                    .borrow_mut()
                    .insert(fd, watch.clone());
                watch
            }
        };
        let old = watch.slot(dir).replace(Some(callback));
        // The replaced callback's destructor is user code: no borrow is held here.
        drop(old);
        Ok(())
    }

    fn remove_watch(&self, fd: RawFd, dir: Direction) -> bool {
        if self.is_closed() {
            return false;
        }
        let reactor = &self.inner.reactor;
        let Some(watch) = reactor.watchers.get(fd) else {
            return false;
        };
        let old = watch.slot(dir).borrow_mut().take();
        if old.is_none() {
            return false;
        }
        match watch.interest() {
            Some(interest) => {
                if let Err(e) = reactor.reregister_fd(fd, watch.token, interest) {
                    log::debug!("narrowing the interest of watched fd {fd} failed: {e}");
                }
            }
            None => {
                reactor.watchers.by_fd.borrow_mut().remove(&fd);
                reactor.deregister_fd(fd, watch.token);
            }
        }
        drop(old);
        true
    }
}
