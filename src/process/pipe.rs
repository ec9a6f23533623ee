//! The parent's ends of a child's pipes: [`ChildStdin`], [`ChildStdout`] and
//! [`ChildStderr`], non-blocking and registered with the loop, as futures-io
//! streams (and tokio-io ones with the `tokio-io` feature).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::Poll;

use mio::unix::pipe::{Receiver, Sender};

use crate::io::registration::Registered;
use crate::net::{impl_async_read, impl_async_write};
use crate::EventLoop;

/// The write end of a child's stdin, from [`Child::stdin`](super::Child::stdin).
///
/// It implements `futures_io::AsyncWrite`. Closing it (`AsyncWriteExt::close`, or
/// dropping it) closes the pipe, so the child reads end-of-file; writes after a
/// close fail with `BrokenPipe`, and so do writes once the child has closed its end.
pub struct ChildStdin {
    /// `None` once closed.
    io: Option<Registered<Sender>>,
}

impl ChildStdin {
    pub(super) fn new(lp: &EventLoop, pipe: std::process::ChildStdin) -> io::Result<Self> {
        let pipe = Sender::from(pipe);
        pipe.set_nonblocking(true)?;
        Ok(ChildStdin {
            io: Some(Registered::with_loop(lp, pipe)?),
        })
    }

    fn pipe(&self) -> io::Result<&Registered<Sender>> {
        self.io.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the child's stdin was closed")
        })
    }
}

impl_async_write!(ChildStdin, |s| s.pipe()?, close: |this| {
    this.get_mut().io = None;
    Poll::Ready(Ok(()))
});

impl fmt::Debug for ChildStdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildStdin")
            .field("fd", &self.io.as_ref().map(|p| p.get_ref().as_raw_fd()))
            .finish()
    }
}

/// Defines a read end of a child's output pipe.
macro_rules! output_pipe {
    ($name:ident, $std:ty, $doc:literal) => {
        #[doc = $doc]
        ///
        /// It implements `futures_io::AsyncRead`; a read returns 0 (end of file) once
        /// the child (and every process it handed the pipe to) has closed its end.
        pub struct $name {
            io: Registered<Receiver>,
        }

        impl $name {
            pub(super) fn new(lp: &EventLoop, pipe: $std) -> io::Result<Self> {
                let pipe = Receiver::from(pipe);
                pipe.set_nonblocking(true)?;
                Ok($name {
                    io: Registered::with_loop(lp, pipe)?,
                })
            }
        }

        impl_async_read!($name, |s| &s.io);

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.io.get_ref().as_raw_fd()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.io.get_ref().as_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("fd", &self.as_raw_fd())
                    .finish()
            }
        }
    };
}

output_pipe!(
    ChildStdout,
    std::process::ChildStdout,
    "The read end of a child's stdout, from [`Child::stdout`](super::Child::stdout)."
);
output_pipe!(
    ChildStderr,
    std::process::ChildStderr,
    "The read end of a child's stderr, from [`Child::stderr`](super::Child::stderr)."
);
