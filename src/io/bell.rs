//! The loop's doorbell fd: an eventfd that other threads write to wake a parked
//! loop. Both pollers watch it: epoll edge-triggered, io_uring with a multishot
//! poll; each write is a new event for either, so the counter is never read except
//! when it saturates.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) struct Bell {
    fd: OwnedFd,
}

impl Bell {
    pub(crate) fn new() -> io::Result<Bell> {
        // SAFETY: a plain syscall with constant flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Bell {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wakes the loop (any thread).
    pub(crate) fn ring(&self) {
        if self.add(1).is_err() {
            // Saturated (EAGAIN): reset the counter and write again; a wakeup is
            // pending anyway, so a second failure loses nothing.
            self.reset();
            let _ = self.add(1);
        }
    }

    /// Reads the counter back to 0 (loop thread).
    pub(crate) fn reset(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads 8 bytes into a live 8-byte buffer from an fd we own.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }

    fn add(&self, n: u64) -> io::Result<()> {
        let buf = n.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live 8-byte buffer to an fd we own.
        let r = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), 8) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl AsRawFd for Bell {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
