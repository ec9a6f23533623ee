//! One `mio::Poll` per loop and the readiness state of each registered source.
//!
//! mio is edge-triggered: an event says "this became ready". We remember it in the
//! source's [`IoState`] until an operation hits `WouldBlock`, which clears it; a task
//! waiting on the source is woken when the edge arrives. So no edge is lost and no
//! task spins.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::event::Source;
use mio::{Events, Interest, Token};
use slab::Slab;

/// The token of the loop's cross-thread `mio::Waker`.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// Which direction an operation waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// Readiness and waiters of one registered source.
#[derive(Default)]
pub(crate) struct IoState {
    readable: Cell<bool>,
    writable: Cell<bool>,
    read_waker: Cell<Option<Waker>>,
    write_waker: Cell<Option<Waker>>,
}

// The async sockets (issue 3) are the users of the readiness API.
#[allow(dead_code)]
impl IoState {
    fn flags(&self, dir: Direction) -> (&Cell<bool>, &Cell<Option<Waker>>) {
        match dir {
            Direction::Read => (&self.readable, &self.read_waker),
            Direction::Write => (&self.writable, &self.write_waker),
        }
    }

    /// Ready if the last edge has not been used up; else registers `cx`'s waker.
    pub(crate) fn poll_ready(&self, dir: Direction, cx: &mut Context<'_>) -> Poll<()> {
        let (ready, waker) = self.flags(dir);
        if ready.get() {
            Poll::Ready(())
        } else {
            waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    /// An operation hit `WouldBlock`: wait for the next edge.
    pub(crate) fn clear(&self, dir: Direction) {
        self.flags(dir).0.set(false);
    }

    fn fire(&self, dir: Direction) {
        let (ready, waker) = self.flags(dir);
        ready.set(true);
        if let Some(w) = waker.take() {
            w.wake();
        }
    }

    /// Runs `op` while the source is ready, turning `WouldBlock` into `Pending`.
    pub(crate) fn poll_io<R>(
        &self,
        dir: Direction,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
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

/// A loop's poller and its registered sources.
pub(crate) struct Reactor {
    poll: RefCell<mio::Poll>,
    events: RefCell<Events>,
    sources: RefCell<Slab<Rc<IoState>>>,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Reactor {
            poll: RefCell::new(mio::Poll::new()?),
            events: RefCell::new(Events::with_capacity(1024)),
            sources: RefCell::new(Slab::new()),
        })
    }

    pub(crate) fn waker(&self) -> io::Result<mio::Waker> {
        mio::Waker::new(self.poll.borrow().registry(), WAKER_TOKEN)
    }

    #[allow(dead_code)]
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
        entry.insert(state.clone());
        Ok((token, state))
    }

    #[allow(dead_code)]
    /// Forgets `source`; its waiters are woken so that they see it gone.
    pub(crate) fn deregister(&self, source: &mut impl Source, token: Token) {
        let _ = self.poll.borrow().registry().deregister(source);
        let state = self.sources.borrow_mut().try_remove(token.0);
        if let Some(state) = state {
            state.fire(Direction::Read);
            state.fire(Direction::Write);
        }
    }

    /// Waits up to `timeout` (None: forever) for events and wakes their waiters.
    /// Returns how many events arrived.
    pub(crate) fn poll(&self, timeout: Option<Duration>) -> usize {
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
            count += 1;
            let state = self.sources.borrow().get(event.token().0).cloned();
            let Some(state) = state else { continue };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                state.fire(Direction::Read);
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                state.fire(Direction::Write);
            }
        }
        count
    }

    /// Wakes every waiter (the loop is closing: their operations will see it).
    pub(crate) fn wake_all(&self) {
        let all: Vec<_> = self
            .sources
            .borrow()
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        for s in all {
            s.fire(Direction::Read);
            s.fire(Direction::Write);
        }
    }
}
