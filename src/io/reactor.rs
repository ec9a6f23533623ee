//! One `mio::Poll` per loop and the readiness state of each registered source.
//!
//! mio is edge-triggered: an event says "this became ready". We remember it in the
//! source's [`IoState`] until an operation hits `WouldBlock`, which clears it; a task
//! waiting on the source is woken when the edge arrives. So no edge is lost and no
//! task spins.
//!
//! Raw-fd watchers (`add_reader` / `add_writer`, see [`super::fd`]) are the other kind
//! of registration: their event does not wake a task but queues the watcher itself
//! into the loop's ready queue, where it runs the user's callbacks like any other
//! callback (never inside this dispatch, where borrows are held).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use slab::Slab;

use super::fd::{FdWatch, FdWatchers};
use super::timerfd::TimerFd;
use crate::event_loop::ready::Ready;
use crate::Error;

/// The token of the loop's cross-thread `mio::Waker`.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);
/// The token of the loop's timerfd.
const TIMER_TOKEN: Token = Token(usize::MAX - 1);

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

/// What a token stands for.
#[derive(Clone)]
enum Entry {
    /// A source driven by futures: events wake its waiters.
    Io(Rc<IoState>),
    /// An `add_reader` / `add_writer` fd: events queue its callbacks.
    Watch(Rc<FdWatch>),
}

/// The ready queue that watchers are queued into.
pub(crate) type ReadyQueue = RefCell<VecDeque<Ready>>;

/// A loop's poller and its registered sources.
pub(crate) struct Reactor {
    poll: RefCell<mio::Poll>,
    events: RefCell<Events>,
    sources: RefCell<Slab<Entry>>,
    /// The raw fds watched with `add_reader` / `add_writer`, by fd.
    pub(crate) watchers: FdWatchers,
    timer: TimerFd,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Self> {
        let poll = mio::Poll::new()?;
        let timer = TimerFd::new()?;
        poll.registry().register(
            &mut SourceFd(&timer.raw_fd()),
            TIMER_TOKEN,
            Interest::READABLE,
        )?;
        Ok(Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(1024)),
            sources: RefCell::new(Slab::new()),
            watchers: FdWatchers::default(),
            timer,
        })
    }

    /// Sleeps until an event, a wakeup, or `deadline` (None: no timer pending), which
    /// the timerfd makes precise to the microsecond. See [`poll`](Self::poll).
    pub(crate) fn park(&self, deadline: Option<Instant>, ready: &ReadyQueue) -> usize {
        let timeout = deadline.map(|d| {
            let now = Instant::now();
            if d <= now {
                return Duration::ZERO;
            }
            self.timer.arm(d, now);
            // A backstop only: the timerfd fires first.
            d - now + Duration::from_millis(1)
        });
        self.poll(timeout, ready)
    }

    pub(crate) fn waker(&self) -> io::Result<mio::Waker> {
        mio::Waker::new(self.poll.borrow().registry(), WAKER_TOKEN)
    }

    /// Registers `source` for both directions; returns its token and state.
    pub(crate) fn register(&self, source: &mut impl Source) -> io::Result<(Token, Rc<IoState>)> {
        let mut sources = self.sources.borrow_mut();
        let entry = sources.vacant_entry();
        let token = Token(entry.key());
        self.poll.borrow().registry().register(
            source,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let state = Rc::new(IoState::default());
        entry.insert(Entry::Io(state.clone()));
        Ok((token, state))
    }

    /// Forgets `source`; its waiters are woken so that they see it gone.
    pub(crate) fn deregister(&self, source: &mut impl Source, token: Token) {
        let _ = self.poll.borrow().registry().deregister(source);
        let entry = self.sources.borrow_mut().try_remove(token.0);
        if let Some(Entry::Io(state)) = entry {
            state.fire(Direction::Read);
            state.fire(Direction::Write);
        }
    }

    /// Registers a raw fd for a watcher built by `make` from its token.
    pub(crate) fn register_fd(
        &self,
        fd: RawFd,
        interest: Interest,
        make: impl FnOnce(Token) -> Rc<FdWatch>,
    ) -> io::Result<Rc<FdWatch>> {
        let mut sources = self.sources.borrow_mut();
        let entry = sources.vacant_entry();
        let token = Token(entry.key());
        self.poll
            .borrow()
            .registry()
            .register(&mut SourceFd(&fd), token, interest)?;
        let watch = make(token);
        entry.insert(Entry::Watch(watch.clone()));
        Ok(watch)
    }

    /// Changes a watched fd's interest and re-arms it: if the fd is ready now, the
    /// next poll reports it again (this is what makes watchers level-triggered). An fd
    /// that was closed and reopened under the same number is registered afresh.
    pub(crate) fn reregister_fd(
        &self,
        fd: RawFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        let poll = self.poll.borrow();
        let registry = poll.registry();
        match registry.reregister(&mut SourceFd(&fd), token, interest) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                registry.register(&mut SourceFd(&fd), token, interest)
            }
            other => other,
        }
    }

    /// Stops watching a raw fd. It may already be closed; that is fine.
    pub(crate) fn deregister_fd(&self, fd: RawFd, token: Token) {
        let _ = self.poll.borrow().registry().deregister(&mut SourceFd(&fd));
        let entry = self.sources.borrow_mut().try_remove(token.0);
        drop(entry);
    }

    /// Waits up to `timeout` (None: forever) for events, wakes their waiters and
    /// queues the watchers that became ready into `ready`. Returns how many events
    /// arrived.
    pub(crate) fn poll(&self, timeout: Option<Duration>, ready: &ReadyQueue) -> usize {
        let mut events = self.events.borrow_mut();
        if let Err(e) = self.poll.borrow_mut().poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("polling for i/o events failed: {e}");
            }
            return 0;
        }
        let mut count = 0;
        for event in events.iter() {
            if event.token() == WAKER_TOKEN {
                continue;
            }
            if event.token() == TIMER_TOKEN {
                self.timer.clear();
                continue;
            }
            count += 1;
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let writable = event.is_writable() || event.is_write_closed() || event.is_error();
            let entry = self.sources.borrow().get(event.token().0).cloned();
            match entry {
                Some(Entry::Io(state)) => {
                    if event.is_read_closed() {
                        state.read_closed.set(true);
                    }
                    if readable {
                        state.fire(Direction::Read);
                    }
                    if writable {
                        state.fire(Direction::Write);
                    }
                }
                Some(Entry::Watch(watch)) => FdWatch::on_event(watch, readable, writable, ready),
                None => {}
            }
        }
        count
    }

    /// The loop is closing: every waiter is woken and from now on sees the loop
    /// closed; every raw-fd watcher is released (its callbacks dropped).
    pub(crate) fn wake_all(&self) {
        let all: Vec<_> = self
            .sources
            .borrow()
            .iter()
            .map(|(_, e)| e.clone())
            .collect();
        for entry in &all {
            if let Entry::Io(state) = entry {
                state.close();
            }
        }
        drop(all);
        self.watchers.release_all(self);
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // Sockets may outlive their loop: make their operations fail, not hang.
        for (_, entry) in self.sources.get_mut().iter() {
            if let Entry::Io(state) = entry {
                state.close();
            }
        }
    }
}
