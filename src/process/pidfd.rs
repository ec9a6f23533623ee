//! A process file descriptor (`pidfd_open(2)`, Linux 5.3+): readable once the process
//! has exited, so a loop learns of a child's exit from epoll like any other event,
//! on any thread, with no `SIGCHLD` handler and no watcher thread; and it refers to
//! one process only, so no loop can ever see another loop's child.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// An open pidfd, to register with a loop for readability.
pub(super) struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for the child `pid`. The child must not have been reaped yet
    /// (an exited, unreaped child still has its pid, and its pidfd is readable at
    /// once). The descriptor is close-on-exec, as the kernel always makes it.
    pub(super) fn open(pid: u32) -> io::Result<PidFd> {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1;
        // no memory is shared with the kernel.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSYS) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "cannot watch a child process: pidfd_open is not available \
                     (shardloop's subprocesses need Linux 5.3 or later)",
                ));
            }
            return Err(e);
        }
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: `fd` was just returned by pidfd_open: open, and owned by nobody else.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl Source for PidFd {
    fn register(&mut self, registry: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}
