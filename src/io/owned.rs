//! Reads and writes with buffers the caller hands over and gets back
//! (`read_owned`, `write_all_owned`): on a proactor loop the kernel works on the
//! caller's buffer itself, with no copy (but a read on a stream also read through
//! `AsyncRead` takes from the receive those keep in flight, copied); on an epoll
//! loop they are plain reads and writes. Either way the buffer comes back with the result, but for one case: the
//! loop closed while the buffer was in the kernel, where it stays until the kernel
//! lets it go (the result is then `Err(Closed)`, with an empty buffer).

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use mio::event::Source;

use super::completion::submit_send;
use super::ops::OpKey;
use super::reactor::Direction;
use super::registration::Registered;

/// `recv(2)` into `buf`'s spare capacity (appending), for an epoll loop.
fn recv_spare(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is valid for writes of `spare.len()` bytes for the call, and
    // `recv(2)` writes at most that many, reading none.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `recv(2)` initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

/// `send(2)` of `bytes`, for an epoll loop.
fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of its length for the call.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The future of a stream's `read_owned`.
pub(crate) struct ReadOwned<'a, S: Source + AsRawFd> {
    io: &'a Registered<S>,
    /// The buffer, while it is not in the kernel.
    buf: Option<Vec<u8>>,
    /// The receive into it, while it is in the kernel.
    key: Option<OpKey>,
}

impl<'a, S: Source + AsRawFd> ReadOwned<'a, S> {
    pub(crate) fn new(io: &'a Registered<S>, buf: Vec<u8>) -> Self {
        ReadOwned {
            io,
            buf: Some(buf),
            key: None,
        }
    }
}

impl<S: Source + AsRawFd> Future for ReadOwned<'_, S> {
    type Output = (io::Result<usize>, Vec<u8>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let io = this.io;
        let polled = match io.ring_reads() {
            Some(reads) => io.with_ring(cx, |ring, cx| {
                crate::task::coop::poll_budgeted(cx, |cx| {
                    reads.poll_read_owned(ring, io.fd(), cx, &mut this.buf, &mut this.key)
                })
            }),
            None => {
                let buf = this.buf.as_mut().expect("polled after completion");
                if buf.capacity() == buf.len() {
                    Poll::Ready(Ok(0))
                } else {
                    let (fd, spare) = (io.fd(), buf.capacity() - buf.len());
                    let r = io.poll_io(Direction::Read, cx, |_| recv_spare(fd, buf));
                    // A short read emptied the socket: wait for the next edge rather
                    // than meet `WouldBlock` with one more recv (as the AsyncRead does).
                    if matches!(r, Poll::Ready(Ok(n)) if n > 0 && n < spare) {
                        io.drained(Direction::Read);
                    }
                    r
                }
            }
        };
        match polled {
            Poll::Pending => Poll::Pending,
            // An error before the buffer went to the kernel (or after it came back):
            // the buffer is here either way.
            Poll::Ready(r) => Poll::Ready((r, this.buf.take().unwrap_or_default())),
        }
    }
}

impl<S: Source + AsRawFd> Drop for ReadOwned<'_, S> {
    /// A receive still in the kernel becomes the stream's: its bytes wait for the
    /// next read, and its buffer (this one) is freed only after the kernel is done.
    fn drop(&mut self) {
        if self.key.is_some() {
            if let Some(reads) = self.io.ring_reads() {
                reads.disown();
            }
        }
    }
}

/// The future of a stream's `write_all_owned`.
pub(crate) struct WriteAllOwned<'a, S: Source + AsRawFd> {
    io: &'a Registered<S>,
    buf: Option<Vec<u8>>,
    key: Option<OpKey>,
    /// Bytes of `buf` already written.
    sent: usize,
}

impl<'a, S: Source + AsRawFd> WriteAllOwned<'a, S> {
    pub(crate) fn new(io: &'a Registered<S>, buf: Vec<u8>) -> Self {
        WriteAllOwned {
            io,
            buf: Some(buf),
            key: None,
            sent: 0,
        }
    }

    fn poll_ring(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = self.io;
        if self.key.is_none() {
            // An `AsyncWrite` write the ring still sends goes first; after a
            // shutdown nothing does.
            io.check_write_open()?;
            std::task::ready!(io.poll_flush_ring(cx))?;
        }
        let (buf, key, sent) = (&mut self.buf, &mut self.key, &mut self.sent);
        io.with_ring(cx, |ring, cx| loop {
            if let Some(k) = *key {
                let Poll::Ready((result, back)) = ring.poll_op(k, cx) else {
                    return Poll::Pending;
                };
                *key = None;
                *buf = Some(back);
                match result {
                    r if r < 0 => return Poll::Ready(Err(io::Error::from_raw_os_error(-r))),
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    r => *sent += r as usize,
                }
            }
            let whole = buf.as_ref().expect("here when not in the kernel");
            if *sent == whole.len() {
                return Poll::Ready(Ok(()));
            }
            match submit_send(ring, io.fd(), buf.take().expect("checked"), *sent, None) {
                Ok(k) => *key = Some(k),
                Err((e, back)) => {
                    *buf = Some(back);
                    return Poll::Ready(Err(e));
                }
            }
        })
    }

    fn poll_epoll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.io.fd();
        let buf = self.buf.as_ref().expect("polled after completion");
        while self.sent < buf.len() {
            let rest = &buf[self.sent..];
            match self.io.poll_io(Direction::Write, cx, |_| send(fd, rest)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    if n < rest.len() {
                        self.io.drained(Direction::Write);
                    }
                    self.sent += n;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Source + AsRawFd> Future for WriteAllOwned<'_, S> {
    type Output = (io::Result<()>, Vec<u8>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // The same path the stream's reads take: the ring's where it does them.
        let polled = if this.io.reads_by_ring() {
            this.poll_ring(cx)
        } else {
            this.poll_epoll(cx)
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => Poll::Ready((r, this.buf.take().unwrap_or_default())),
        }
    }
}

impl<S: Source + AsRawFd> Drop for WriteAllOwned<'_, S> {
    /// A send still in the kernel is cancelled (how much of it went out is unknown,
    /// as with any write dropped half-way); its buffer is freed once the kernel is
    /// done with it.
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.io.cancel_ring_send(key);
        }
    }
}
