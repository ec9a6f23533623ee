//! A stream's reads on a proactor loop: the kernel receives into a buffer the stream
//! owns (`IORING_OP_RECV`), one receive in flight at a time, and readers take the
//! bytes from there. No readiness poll and no `recv(2)` call of ours: the loop's one
//! `io_uring_enter` per iteration submits the receive and reaps its completion.
//!
//! Once a reader has taken every byte received, the next receive is submitted at
//! once (read-ahead): in a request-reply exchange the next request's bytes are then
//! waiting when the reader comes back, with no turn of the loop lost. A reader that
//! gives up (its future dropped) leaves the receive to the stream too: the bytes it
//! brings wait for the next reader, so no byte is lost. The stream itself
//! dropped cancels the receive (see [`UringPoller::cancel_op`]), and the kernel
//! answers before the buffer is freed.
//!
//! [`read_owned`](RingReads::poll_read_owned) lends the caller's own buffer to the
//! kernel instead (no copy). Its receive belongs to its future while the future lives
//! and is the stream's after: dropping the future loses nothing either.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, types};

use super::ops::OpKey;
use super::uring::UringPoller;

/// The least a receive asks for (a reader with a small buffer still gets a whole
/// message in one completion), and the most.
const MIN_RECV: usize = 4096;
const MAX_RECV: usize = 256 * 1024;

#[derive(Default)]
struct ReadState {
    /// The receive in the kernel, if any.
    in_flight: Option<OpKey>,
    /// Its buffer is a `read_owned` future's, which collects it.
    owned: bool,
    /// Readers that wait while a `read_owned` future owns the receive.
    waiters: Vec<Waker>,
    /// Bytes received and not handed out yet: `ahead[pos..]`.
    ahead: Vec<u8>,
    pos: usize,
    /// The last receive filled its buffer: more bytes are likely waiting in the
    /// socket, and the next read takes them with `recv(2)` at once rather than a turn
    /// of the loop later (a bulk transfer would get one buffer per turn otherwise).
    full: bool,
}

/// What a receive ended with, once its bytes are in `ahead`.
enum Landed {
    /// Bytes to hand out.
    Data,
    /// End of stream (`Ok(0)`) or an error.
    End(io::Result<usize>),
}

impl ReadState {
    /// Takes a completed receive's buffer (bytes land after what it held already,
    /// which readers do not see).
    fn land(&mut self, result: i32, mut buf: Vec<u8>) -> Landed {
        let start = buf.len();
        let landed = match result {
            r if r < 0 => Landed::End(Err(io::Error::from_raw_os_error(-r))),
            0 => Landed::End(Ok(0)),
            r => {
                // SAFETY: the kernel wrote `r` bytes into the spare capacity after
                // `start` (the receive was given exactly that region), so they are
                // initialized, and `start + r <= capacity`.
                unsafe { buf.set_len(start + r as usize) };
                Landed::Data
            }
        };
        self.full = matches!(landed, Landed::Data) && buf.len() == buf.capacity();
        self.ahead = buf;
        self.pos = start;
        landed
    }

    /// All received bytes are handed out: receive the next ones now, so that the
    /// reader's next call finds them here instead of waiting a turn of the loop for a
    /// receive it would only submit then (the request after a reply usually arrives
    /// while the reply is being written). A failure to submit is left for that next
    /// call to meet.
    ///
    /// The buffer lent for it is small ([`waiting_buffer`]): the kernel holds it for
    /// as long as the peer is quiet, which on a server is most connections most of
    /// the time. A message bigger than it fills it (`full`), and the reader's next
    /// call takes the rest at once with `recv(2)`, into a buffer as big as that reader
    /// asks for.
    fn read_ahead(&mut self, ring: &UringPoller, fd: RawFd) {
        let buf = waiting_buffer(std::mem::take(&mut self.ahead));
        self.pos = 0;
        match submit_recv(ring, fd, buf) {
            Ok(key) => self.in_flight = Some(key),
            Err((_, buf)) => self.ahead = buf,
        }
    }

    /// The readers that waited on a `read_owned`'s receive, to wake once the state
    /// is no longer borrowed.
    fn take_waiters(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.waiters)
    }
}

/// `buf`, emptied, for a receive that waits for the next message: [`MIN_RECV`]
/// bytes, whatever a bulk transfer before made it (the kernel holds it for as long
/// as the peer is quiet).
fn waiting_buffer(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() > 2 * MIN_RECV {
        return Vec::with_capacity(MIN_RECV);
    }
    buf.clear();
    buf.reserve(MIN_RECV);
    buf
}

/// `recv(2)` into `buf`'s spare capacity, without waiting; appends what came.
fn recv_now(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is valid for writes of `spare.len()` bytes for the call, and
    // `recv(2)` writes at most that many, reading none.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `recv(2)` initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

/// Queues a receive into `buf`'s spare capacity.
fn submit_recv(ring: &UringPoller, fd: RawFd, mut buf: Vec<u8>) -> Result<OpKey, (io::Error, Vec<u8>)> {
    let spare = buf.capacity() - buf.len();
    let len = u32::try_from(spare).unwrap_or(u32::MAX);
    // SAFETY: in bounds: `len() <= capacity()`, so the pointer is within (or one past
    // the end of) the allocation.
    let at = unsafe { buf.as_mut_ptr().add(buf.len()) };
    let entry = opcode::Recv::new(types::Fd(fd), at, len).build();
    // SAFETY: the entry's only pointer is `at`, the start of `buf`'s spare capacity,
    // with `len` bytes of it: inside the heap block that the ops table keeps, unmoved,
    // until the completion.
    unsafe { ring.start_op(entry, buf) }
}

/// Queues a send of `buf[from..]`, done when every byte is sent or it fails.
pub(crate) fn submit_send(
    ring: &UringPoller,
    fd: RawFd,
    buf: Vec<u8>,
    from: usize,
) -> Result<OpKey, (io::Error, Vec<u8>)> {
    let rest = &buf[from..];
    let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
    // MSG_WAITALL: the kernel itself retries a short send until all of it is out;
    // MSG_NOSIGNAL: a closed peer is an EPIPE, not a SIGPIPE.
    let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), len)
        .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
        .build();
    // SAFETY: the entry's only pointer is into `buf`'s initialized bytes (`len` of
    // them from `from`), inside the heap block that the ops table keeps, unmoved,
    // until the completion.
    unsafe { ring.start_op(entry, buf) }
}

/// The ring side of a stream's reads (see the module's comment).
#[derive(Default)]
pub(crate) struct RingReads {
    state: RefCell<ReadState>,
}

impl RingReads {
    /// Hands the bytes received to `take` (which returns how many it took, at most
    /// `want`, never 0 for data): those already here, or the receive in flight's,
    /// or, with `submit`, a new receive's. `Ok(0)` is the end of the stream (or
    /// `want == 0`); `Ready(None)` when there is nothing to take and not `submit`.
    pub(crate) fn poll_ahead(
        &self,
        ring: &UringPoller,
        fd: RawFd,
        cx: &mut Context<'_>,
        want: usize,
        take: impl FnOnce(&[u8]) -> usize,
        submit: bool,
    ) -> Poll<Option<io::Result<usize>>> {
        let mut take = Some(take);
        let mut st = self.state.borrow_mut();
        loop {
            if st.pos < st.ahead.len() {
                let take = take.take().expect("data is handed out once");
                let n = take(&st.ahead[st.pos..]);
                st.pos += n;
                if submit && st.pos == st.ahead.len() && st.in_flight.is_none() && !st.full {
                    st.read_ahead(ring, fd);
                }
                return Poll::Ready(Some(Ok(n)));
            }
            if want == 0 {
                return Poll::Ready(Some(Ok(0)));
            }
            if let Some(key) = st.in_flight {
                if st.owned {
                    if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        st.waiters.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                let Poll::Ready((result, buf)) = ring.poll_op(key, cx) else {
                    return Poll::Pending;
                };
                st.in_flight = None;
                match st.land(result, buf) {
                    Landed::Data => continue,
                    // Interrupted: receive again, as `poll_io` retries a `recv(2)`.
                    Landed::End(Err(e)) if e.kind() == io::ErrorKind::Interrupted && submit => {
                        continue
                    }
                    Landed::End(r) => return Poll::Ready(Some(r)),
                }
            }
            if !submit {
                return Poll::Ready(None);
            }
            let mut buf = std::mem::take(&mut st.ahead);
            buf.clear();
            st.pos = 0;
            if st.full {
                buf.reserve(want.clamp(MIN_RECV, MAX_RECV));
                match recv_now(fd, &mut buf) {
                    Ok(n) => {
                        st.full = n > 0 && buf.len() == buf.capacity();
                        st.ahead = buf;
                        if n == 0 {
                            return Poll::Ready(Some(Ok(0)));
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => st.full = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        st.ahead = buf;
                        continue;
                    }
                    Err(e) => {
                        st.full = false;
                        st.ahead = buf;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            // Nothing is waiting in the socket: the receive waits for the next message.
            match submit_recv(ring, fd, waiting_buffer(buf)) {
                Ok(key) => st.in_flight = Some(key),
                Err((e, buf)) => {
                    st.ahead = buf;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    /// One poll of a `read_owned` whose buffer is `slot` (`None` while it is in the
    /// kernel under `key`): appends to the buffer what is received, up to its spare
    /// capacity.
    pub(crate) fn poll_read_owned(
        &self,
        ring: &UringPoller,
        fd: RawFd,
        cx: &mut Context<'_>,
        slot: &mut Option<Vec<u8>>,
        key: &mut Option<OpKey>,
    ) -> Poll<io::Result<usize>> {
        if let Some(k) = *key {
            let Poll::Ready((result, mut buf)) = ring.poll_op(k, cx) else {
                return Poll::Pending;
            };
            *key = None;
            let waiters = {
                let mut st = self.state.borrow_mut();
                st.in_flight = None;
                st.owned = false;
                st.take_waiters()
            };
            waiters.into_iter().for_each(Waker::wake);
            let r = match result {
                r if r < 0 => Err(io::Error::from_raw_os_error(-r)),
                r => {
                    // SAFETY: as in `ReadState::land`: the kernel initialized `r`
                    // bytes of the spare capacity it was given.
                    unsafe { buf.set_len(buf.len() + r as usize) };
                    Ok(r as usize)
                }
            };
            *slot = Some(buf);
            return Poll::Ready(r);
        }
        let buf = slot.as_mut().expect("the buffer is here when not in the kernel");
        let spare = buf.capacity() - buf.len();
        let ahead = self.poll_ahead(
            ring,
            fd,
            cx,
            spare,
            |bytes| {
                let n = bytes.len().min(spare);
                buf.extend_from_slice(&bytes[..n]);
                n
            },
            false,
        );
        match ahead {
            Poll::Ready(Some(r)) => return Poll::Ready(r),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        // Nothing ahead and no receive in flight: the kernel receives into this buffer.
        let mut st = self.state.borrow_mut();
        match submit_recv(ring, fd, slot.take().expect("checked above")) {
            Ok(k) => {
                st.in_flight = Some(k);
                st.owned = true;
                *key = Some(k);
                drop(st);
                self.poll_read_owned(ring, fd, cx, slot, key)
            }
            Err((e, buf)) => {
                *slot = Some(buf);
                Poll::Ready(Err(e))
            }
        }
    }

    /// A `read_owned` future dropped with its receive in flight: the receive is the
    /// stream's now (its bytes wait for the next reader), and the readers that waited
    /// on the future try again.
    pub(crate) fn disown(&self) {
        let waiters = {
            let mut st = self.state.borrow_mut();
            st.owned = false;
            st.take_waiters()
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The stream goes away: cancel the receive in flight, if any.
    pub(crate) fn cancel(&self, ring: &UringPoller) {
        let key = self.state.borrow_mut().in_flight.take();
        if let Some(key) = key {
            ring.cancel_op(key);
        }
    }

    /// The stream leaves its loop: the receive in flight is cancelled and what it
    /// brought is kept with the rest not read yet. Returns how many bytes that is
    /// (bytes the new owner of the socket will not see).
    pub(crate) fn detach(&self, ring: &UringPoller) -> usize {
        let key = self.state.borrow_mut().in_flight.take();
        if let Some(key) = key {
            if let Some((result, buf)) = ring.cancel_and_collect(key) {
                // An error or the end of the stream is nothing left unread.
                let _ = self.state.borrow_mut().land(result, buf);
            }
        }
        let st = self.state.borrow();
        st.ahead.len() - st.pos
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use futures_util::{AsyncReadExt, AsyncWriteExt};

    use super::MIN_RECV;
    use crate::net::{TcpListener, TcpStream};

    /// After a big read, a stream that waits for its peer lends the kernel a small
    /// buffer, not one as big as that read: an idle connection costs [`MIN_RECV`].
    #[test]
    fn an_idle_stream_lends_the_kernel_a_small_buffer() {
        crate::io::on_test_proactor(|lp| async move {
            let lent = || lp.inner.reactor.ring().expect("a proactor").lent();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            // A big read that has to wait lends the kernel little.
            let mut buf = vec![0u8; 256 * 1024];
            {
                let mut first = std::pin::pin!(server.read(&mut buf));
                std::future::poll_fn(|cx| {
                    assert!(first.as_mut().poll(cx).is_pending(), "nothing was sent yet");
                    std::task::Poll::Ready(())
                })
                .await;
                assert!(lent() > 0 && lent() <= 2 * MIN_RECV, "{} bytes lent", lent());
            }
            let big = vec![7u8; 1 << 20];
            let writer = crate::spawn(async move {
                client.write_all(&big).await.unwrap();
                client
            });
            let mut got = vec![0u8; 1 << 20];
            let mut n = 0;
            while n < got.len() {
                let k = server.read(&mut buf).await.unwrap();
                got[n..n + k].copy_from_slice(&buf[..k]);
                n += k;
            }
            assert!(got.iter().all(|&b| b == 7));
            let mut client = writer.await.unwrap();
            client.write_all(b"ping").await.unwrap();
            let mut small = [0u8; 4];
            server.read_exact(&mut small).await.unwrap();
            assert_eq!(&small, b"ping");
            // The read-ahead for the next message is in the kernel now.
            assert!(lent() > 0, "a receive waits for the next message");
            assert!(lent() <= 2 * MIN_RECV, "{} bytes lent while idle", lent());
        });
    }
}
