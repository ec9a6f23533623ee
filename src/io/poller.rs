//! Where a loop's readiness comes from: epoll (the selector loop, [`super::epoll`])
//! or io_uring (the proactor loop, [`super::uring`]). The reactor above sees one
//! interface: register an fd for an interest under a token, re-arm it, remove it,
//! and wait for events until a deadline.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use mio::{Interest, Token};

use super::epoll::EpollPoller;
use super::uring::UringPoller;

/// What one event said about a source.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Readiness {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer shut its side down (a read will see the end of the stream).
    pub(crate) read_closed: bool,
}

impl Readiness {
    /// Both ways ready, as after an error: whoever waits tries, and meets it.
    pub(crate) const ERROR: Readiness = Readiness {
        readable: true,
        writable: true,
        read_closed: false,
    };

    /// From a `poll(2)` event mask, read as epoll's events are.
    pub(crate) fn from_poll_mask(mask: u32) -> Readiness {
        let has = |bits: i16| mask & bits as u32 != 0;
        let error = has(libc::POLLERR);
        let hup = has(libc::POLLHUP);
        Readiness {
            readable: has(libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP) || hup || error,
            writable: has(libc::POLLOUT) || hup || error,
            read_closed: hup || has(libc::POLLRDHUP),
        }
    }
}

pub(crate) enum Poller {
    Epoll(EpollPoller),
    /// Boxed: the ring's handle is five times the epoll poller's size.
    Uring(Box<UringPoller>),
}

impl Poller {
    /// The selector poller, or with `ring` (its size) the ring; either watches `bell`.
    pub(crate) fn new(ring: Option<u32>, bell: RawFd) -> io::Result<Poller> {
        Ok(match ring {
            Some(entries) => Poller::Uring(Box::new(UringPoller::new(bell, entries)?)),
            None => Poller::Epoll(EpollPoller::new(bell)?),
        })
    }

    pub(crate) fn is_proactor(&self) -> bool {
        matches!(self, Poller::Uring(_))
    }

    /// The ring, on a proactor loop.
    pub(crate) fn uring(&self) -> Option<&UringPoller> {
        match self {
            Poller::Uring(p) => Some(p),
            Poller::Epoll(_) => None,
        }
    }

    /// Starts watching `fd`; `known_pollable` when its owner's type says it is a
    /// socket, pipe or pidfd (a `net` socket, from `bind` or `from_std`, a child's
    /// pipe): the ring checks other fds (`add_reader`'s) as `epoll_ctl` would.
    pub(crate) fn add(&self, fd: RawFd, token: Token, interest: Interest, known_pollable: bool) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.add(fd, token, interest),
            Poller::Uring(p) => p.add(fd, token, interest, known_pollable),
        }
    }

    /// Changes the interest and re-arms: an fd ready now is reported again.
    pub(crate) fn modify(&self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.modify(fd, token, interest),
            Poller::Uring(p) => p.modify(fd, token, interest),
        }
    }

    /// Stops watching `fd` (which may already be closed).
    pub(crate) fn delete(&self, fd: RawFd, token: Token) {
        match self {
            Poller::Epoll(p) => p.delete(fd),
            Poller::Uring(p) => p.delete(token),
        }
    }

    /// Waits for events (not at all unless `block`; until `deadline` if there is
    /// one) and hands each registered fd's to `f`.
    pub(crate) fn wait(
        &self,
        block: bool,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(Token, Readiness),
    ) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.wait(block, deadline, f),
            Poller::Uring(p) => p.wait(block, deadline, f),
        }
    }
}
