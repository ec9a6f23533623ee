//! A timerfd that wakes the poller at a timer's exact deadline.
//!
//! epoll's timeout counts whole milliseconds (mio rounds up), so a loop that slept
//! with it alone would fire timers up to a millisecond late, or would have to spin
//! through the last millisecond. Arming a timerfd (nanosecond resolution) for the
//! nearest deadline lets the loop sleep in `epoll_wait` and wake on time.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub(crate) struct TimerFd {
    fd: OwnedFd,
    /// The deadline it is armed for, to skip re-arming for the same one.
    armed: Cell<Option<Instant>>,
}

impl TimerFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant flags; the result is checked below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TimerFd {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            armed: Cell::new(None),
        })
    }

    /// Makes the fd readable at `deadline` (relative to `now`, so it can only fire
    /// late, never early). `deadline` must be after `now`.
    pub(crate) fn arm(&self, deadline: Instant, now: Instant) {
        if self.armed.get() == Some(deadline) {
            return;
        }
        let left = deadline
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec and the old value is not asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc == 0 {
            self.armed.set(Some(deadline));
        } else {
            // The epoll timeout still wakes the loop, at worst a millisecond late.
            log::warn!(
                "arming the loop's timerfd failed: {}",
                io::Error::last_os_error()
            );
        }
    }

    /// It fired: consume the expiration so that the next arm makes a fresh edge.
    pub(crate) fn clear(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into an 8-byte buffer; a nonblocking fd
        // that has not fired just returns EAGAIN, which is fine to ignore.
        unsafe {
            libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8);
        }
        self.armed.set(None);
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
