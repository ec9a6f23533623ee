//! The selector backend: epoll through `mio::Poll`, with a timerfd for precise
//! deadlines. mio is edge-triggered: an event says "this became ready".

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

use super::poller::Readiness;
use super::timerfd::TimerFd;

/// The token of the loop's doorbell (its eventfd).
const BELL_TOKEN: Token = Token(usize::MAX);
/// The token of the loop's timerfd.
const TIMER_TOKEN: Token = Token(usize::MAX - 1);

pub(crate) struct EpollPoller {
    poll: RefCell<mio::Poll>,
    events: RefCell<Events>,
    timer: TimerFd,
}

impl EpollPoller {
    pub(crate) fn new(bell: RawFd) -> io::Result<Self> {
        let poll = mio::Poll::new()?;
        let timer = TimerFd::new()?;
        let registry = poll.registry();
        registry.register(&mut SourceFd(&timer.raw_fd()), TIMER_TOKEN, Interest::READABLE)?;
        registry.register(&mut SourceFd(&bell), BELL_TOKEN, Interest::READABLE)?;
        Ok(EpollPoller {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(1024)),
            timer,
        })
    }

    pub(crate) fn add(&self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.poll
            .borrow()
            .registry()
            .register(&mut SourceFd(&fd), token, interest)
    }

    /// `epoll_ctl(MOD)`: re-arms the fd, so that it is reported again if it is ready
    /// now. An fd closed and reopened under the same number is registered afresh.
    pub(crate) fn modify(&self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let poll = self.poll.borrow();
        let registry = poll.registry();
        match registry.reregister(&mut SourceFd(&fd), token, interest) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                registry.register(&mut SourceFd(&fd), token, interest)
            }
            other => other,
        }
    }

    pub(crate) fn delete(&self, fd: RawFd) {
        let _ = self.poll.borrow().registry().deregister(&mut SourceFd(&fd));
    }

    /// Waits for events (not at all unless `block`; until `deadline` if there is
    /// one, which the timerfd makes precise to the microsecond) and hands each to
    /// `f`, but for the doorbell's and the timer's own.
    pub(crate) fn wait(
        &self,
        block: bool,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(Token, Readiness),
    ) -> io::Result<()> {
        let timeout = if !block {
            Some(Duration::ZERO)
        } else {
            deadline.map(|d| {
                let now = Instant::now();
                if d <= now {
                    return Duration::ZERO;
                }
                self.timer.arm(d, now);
                // A backstop only: the timerfd fires first.
                d - now + Duration::from_millis(1)
            })
        };
        let mut events = self.events.borrow_mut();
        self.poll.borrow_mut().poll(&mut events, timeout)?;
        for event in events.iter() {
            match event.token() {
                BELL_TOKEN => {}
                TIMER_TOKEN => self.timer.clear(),
                token => f(
                    token,
                    Readiness {
                        readable: event.is_readable() || event.is_read_closed() || event.is_error(),
                        writable: event.is_writable() || event.is_write_closed() || event.is_error(),
                        read_closed: event.is_read_closed(),
                    },
                ),
            }
        }
        Ok(())
    }
}
