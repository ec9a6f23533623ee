//! The loop's registered sources and the readiness state of each, fed by its
//! [`Poller`] (epoll, or io_uring for a proactor loop).
//!
//! Both pollers are edge-triggered: an event says "this became ready". We remember it in the
//! source's [`IoState`] until an operation hits `WouldBlock`, which clears it; a task
//! waiting on the source is woken when the edge arrives. So no edge is lost and no
//! task spins.
//!
//! Sinks are the other kind of registration: raw-fd watchers (`add_reader` /
//! `add_writer`, see [`super::fd`]) and the transports of `crate::protocol`. Their
//! event does not wake a task but queues the sink itself into the loop's ready
//! queue, where it runs user code (callbacks, protocol methods) like any other
//! callback (never inside this dispatch, where borrows are held).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use mio::{Interest, Token};
use slab::Slab;

use super::fd::FdWatchers;
pub(crate) use super::poller::Readiness;
use super::poller::Poller;
use super::uring::UringPoller;
use crate::event_loop::ready::Ready;
use crate::Error;

/// Which direction an operation waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// The wakers waiting on one direction of a source.
///
/// Nearly always one task waits, and it keeps its slot in `first` without a clone
/// per poll. When a second task waits too (two tasks accepting on one listener, two
/// sending on one UDP socket), it goes to `more` rather than evicting the first:
/// every waiter is woken by the next edge, so none is lost.
#[derive(Default)]
struct Waiters {
    first: Cell<Option<Waker>>,
    more: RefCell<Vec<Waker>>,
}

impl Waiters {
    fn register(&self, waker: &Waker) {
        match self.first.take() {
            None => self.first.set(Some(waker.clone())),
            Some(current) => {
                let same = current.will_wake(waker);
                self.first.set(Some(current));
                if !same {
                    let mut more = self.more.borrow_mut();
                    if !more.iter().any(|w| w.will_wake(waker)) {
                        more.push(waker.clone());
                    }
                }
            }
        }
    }

    fn wake(&self) {
        if let Some(w) = self.first.take() {
            w.wake();
        }
        // Taken out before waking: a waker is foreign code and may register again.
        let more = std::mem::take(&mut *self.more.borrow_mut());
        for w in more {
            w.wake();
        }
    }
}

/// Readiness and waiters of one registered source.
#[derive(Default)]
pub(crate) struct IoState {
    readable: Cell<bool>,
    writable: Cell<bool>,
    read_waiters: Waiters,
    write_waiters: Waiters,
    /// The peer shut its side down (sticky: no read will block again, so no edge
    /// will come to announce data; see [`IoState::drained`]).
    read_closed: Cell<bool>,
    /// The loop was closed (or dropped): no edge will ever come again.
    closed: Cell<bool>,
}

impl IoState {
    fn flags(&self, dir: Direction) -> (&Cell<bool>, &Waiters) {
        match dir {
            Direction::Read => (&self.readable, &self.read_waiters),
            Direction::Write => (&self.writable, &self.write_waiters),
        }
    }

    /// Ready if the last edge has not been used up; else registers `cx`'s waker.
    pub(crate) fn poll_ready(&self, dir: Direction, cx: &mut Context<'_>) -> Poll<()> {
        let (ready, waiters) = self.flags(dir);
        if ready.get() {
            Poll::Ready(())
        } else {
            waiters.register(cx.waker());
            Poll::Pending
        }
    }

    /// Whether the loop was closed (or dropped).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// An operation hit `WouldBlock`: wait for the next edge.
    pub(crate) fn clear(&self, dir: Direction) {
        self.flags(dir).0.set(false);
    }

    /// A stream read or wrote less than asked: its buffer is empty (or full) now, so
    /// the next call would only get `WouldBlock`. Clearing saves that syscall; data or
    /// space arriving later brings a new edge. Not after the peer shut down: then
    /// no edge would come, and the next read must see the end of the stream.
    pub(crate) fn drained(&self, dir: Direction) {
        if !(dir == Direction::Read && self.read_closed.get()) {
            self.clear(dir);
        }
    }

    fn fire(&self, dir: Direction) {
        let (ready, waiters) = self.flags(dir);
        ready.set(true);
        waiters.wake();
    }

    fn close(&self) {
        self.closed.set(true);
        self.fire(Direction::Read);
        self.fire(Direction::Write);
    }

    /// Runs `op` while the source is ready, turning `WouldBlock` into `Pending`.
    /// Once the loop is closed it fails instead of waiting forever. Each completed
    /// operation spends a unit of the task's cooperative budget.
    pub(crate) fn poll_io<R>(
        &self,
        dir: Direction,
        cx: &mut Context<'_>,
        op: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        crate::task::coop::poll_budgeted(cx, |cx| self.poll_io_unbudgeted(dir, cx, op))
    }

    /// Runs `op` once (again if interrupted), whatever the remembered readiness says:
    /// the syscall is the truth. `WouldBlock` clears the readiness.
    pub(crate) fn try_io<R>(&self, dir: Direction, mut op: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        loop {
            if self.closed.get() {
                return Err(Error::Closed.into());
            }
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.clear(dir);
                    return Err(e);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn poll_io_unbudgeted<R>(
        &self,
        dir: Direction,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            if self.closed.get() {
                return Poll::Ready(Err(Error::Closed.into()));
            }
            if self.poll_ready(dir, cx).is_pending() {
                return Poll::Pending;
            }
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear(dir),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

/// A registration served through the ready queue rather than by waking tasks: an
/// event records what it says and queues the sink (at most once) to run as a
/// ready-queue entry, where it may call user code.
pub(crate) trait Sink {
    /// Records `event`, and queues the sink into `ready` if it has work now. User code
    /// must not run here: the reactor's borrows are held.
    fn on_event(self: Rc<Self>, event: Readiness, ready: &ReadyQueue);

    /// The loop is closing (or being dropped): release the source and end what
    /// depends on it. Called once, with no reactor borrow held.
    fn on_loop_close(&self) {}
}

/// What a token stands for.
#[derive(Clone)]
enum Entry {
    /// A source driven by futures: events wake its waiters.
    Io(Rc<IoState>),
    /// An `add_reader` / `add_writer` fd or a transport: events queue it.
    Sink(Rc<dyn Sink>),
}

/// The ready queue that watchers are queued into.
pub(crate) type ReadyQueue = RefCell<VecDeque<Ready>>;

/// A loop's poller and its registered sources.
pub(crate) struct Reactor {
    poller: Poller,
    sources: RefCell<Slab<Entry>>,
    /// The raw fds watched with `add_reader` / `add_writer`, by fd.
    pub(crate) watchers: FdWatchers,
}

impl Reactor {
    /// A reactor on epoll, or with `ring` (its submission queue's size) on io_uring;
    /// `bell` is the loop's doorbell fd, which wakes it from other threads.
    pub(crate) fn new(ring: Option<u32>, bell: RawFd) -> io::Result<Self> {
        Ok(Reactor {
            poller: Poller::new(ring, bell)?,
            sources: RefCell::new(Slab::new()),
            watchers: FdWatchers::default(),
        })
    }

    /// Whether its poller is io_uring's.
    pub(crate) fn is_proactor(&self) -> bool {
        self.poller.is_proactor()
    }

    /// Sleeps until an event, a wakeup, or `deadline` (None: no timer pending),
    /// precise to the microsecond. See [`poll`](Self::poll).
    pub(crate) fn park(&self, deadline: Option<Instant>, ready: &ReadyQueue) -> usize {
        self.wait(true, deadline, ready)
    }

    /// Registers `fd` with `interest` under a fresh token, and records what `make`
    /// builds from that token as what the token stands for.
    /// `socket`: the fd is a socket, pipe or pidfd by its owner's type (pollable by
    /// construction), not a raw fd of any kind (`add_reader`'s).
    /// No `interest`: nothing is polled (the ring does all of the source's I/O).
    fn insert(
        &self,
        fd: RawFd,
        interest: Option<Interest>,
        socket: bool,
        make: impl FnOnce(Token) -> Entry,
    ) -> io::Result<Token> {
        let mut sources = self.sources.borrow_mut();
        let entry = sources.vacant_entry();
        let token = Token(entry.key());
        if let Some(interest) = interest {
            self.poller.add(fd, token, interest, socket)?;
        }
        entry.insert(make(token));
        Ok(token)
    }

    /// Registers the source `fd` for `interest` (none: the ring does all its I/O, and
    /// it is registered only to be told when the loop closes); returns its token and
    /// state.
    pub(crate) fn register(&self, fd: RawFd, interest: Option<Interest>) -> io::Result<(Token, Rc<IoState>)> {
        let state = Rc::new(IoState::default());
        let token = self.insert(fd, interest, true, |_| Entry::Io(state.clone()))?;
        Ok((token, state))
    }

    /// The ring, on a proactor loop.
    pub(crate) fn ring(&self) -> Option<&UringPoller> {
        self.poller.uring()
    }

    /// Registers the raw fd `fd` for `interest`, its events going to `sink` (none:
    /// the ring does all its I/O and reports it to `sink`). Undo with
    /// [`deregister_fd`](Self::deregister_fd).
    pub(crate) fn register_sink(
        &self,
        fd: RawFd,
        interest: Option<Interest>,
        sink: Rc<dyn Sink>,
    ) -> io::Result<Token> {
        self.insert(fd, interest, true, |_| Entry::Sink(sink))
    }

    /// Forgets the source `fd`; its waiters are woken so that they see it gone.
    pub(crate) fn deregister(&self, fd: RawFd, token: Token) {
        self.poller.delete(fd, token);
        let entry = self.sources.borrow_mut().try_remove(token.0);
        if let Some(Entry::Io(state)) = entry {
            state.fire(Direction::Read);
            state.fire(Direction::Write);
        }
    }

    /// Registers a raw fd for a sink built by `make` from its token.
    pub(crate) fn register_fd<T: Sink + 'static>(
        &self,
        fd: RawFd,
        interest: Interest,
        make: impl FnOnce(Token) -> Rc<T>,
    ) -> io::Result<Rc<T>> {
        let mut made = None;
        self.insert(fd, Some(interest), false, |token| {
            let sink = make(token);
            made = Some(sink.clone());
            Entry::Sink(sink)
        })?;
        Ok(made.expect("insert calls make on success"))
    }

    /// Changes a watched fd's interest and re-arms it: if the fd is ready now, the
    /// next poll reports it again (this is what makes watchers level-triggered).
    pub(crate) fn reregister_fd(
        &self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.poller.modify(fd, token, interest)
    }

    /// Stops watching a raw fd (a watcher's or a sink's). It may already be closed;
    /// that is fine.
    pub(crate) fn deregister_fd(&self, fd: RawFd, token: Token) {
        self.poller.delete(fd, token);
        let entry = self.sources.borrow_mut().try_remove(token.0);
        drop(entry);
    }

    /// Looks for events without waiting, wakes their waiters and queues the sinks
    /// that became ready into `ready`. Returns how many events arrived.
    pub(crate) fn poll_now(&self, ready: &ReadyQueue) -> usize {
        self.wait(false, None, ready)
    }

    fn wait(&self, block: bool, deadline: Option<Instant>, ready: &ReadyQueue) -> usize {
        let mut count = 0;
        let waited = self.poller.wait(block, deadline, &mut |token, readiness| {
            count += 1;
            self.dispatch(token, readiness, ready);
        });
        if let Err(e) = waited {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("polling for i/o events failed: {e}");
            }
        }
        count
    }

    fn dispatch(&self, token: Token, readiness: Readiness, ready: &ReadyQueue) {
        let entry = self.sources.borrow().get(token.0).cloned();
        match entry {
            Some(Entry::Io(state)) => {
                if readiness.read_closed {
                    state.read_closed.set(true);
                }
                if readiness.readable {
                    state.fire(Direction::Read);
                }
                if readiness.writable {
                    state.fire(Direction::Write);
                }
            }
            Some(Entry::Sink(sink)) => sink.on_event(readiness, ready),
            None => {}
        }
    }

    /// The loop is closing: every waiter is woken and from now on sees the loop
    /// closed; every raw-fd watcher is released (its callbacks dropped); every
    /// transport is closed (its protocol told).
    pub(crate) fn wake_all(&self) {
        self.close_all();
        if let Some(ring) = self.ring() {
            ring.wake_all_ops();
        }
        self.watchers.release_all(self);
    }

    fn close_all(&self) {
        let all: Vec<_> = self
            .sources
            .borrow()
            .iter()
            .map(|(_, e)| e.clone())
            .collect();
        for entry in &all {
            match entry {
                Entry::Io(state) => state.close(),
                // No borrow held: a sink deregisters itself and calls user code.
                Entry::Sink(sink) => sink.on_loop_close(),
            }
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // Sockets may outlive their loop: make their operations fail, not hang. A
        // transport still open (its loop dropped unclosed) is closed, which breaks the
        // protocol <-> transport cycle that would otherwise leak both.
        self.close_all();
    }
}
