//! A stream's reads on a proactor loop. No readiness poll: the loop's one
//! `io_uring_enter` per iteration submits receives and reaps their completions (a
//! `recv(2)` of ours comes only after a receive that filled its buffer, below).
//!
//! Where the kernel takes provided-buffer rings (see [`UringPoller::new_recv`]), a
//! stream's receives wait in the kernel with no buffer of the stream's, and the
//! bytes land in one the ring provides, copied into the stream's queue at once (see
//! [`super::recvs`]): a stream waiting for its peer lends the kernel no memory. A
//! `read_owned` (below) lends its own buffer whenever nothing is queued there and no
//! such receive is in the kernel; otherwise (after an `AsyncRead` read, whose
//! read-ahead keeps one in the kernel) it takes from that receive, copied.
//!
//! Elsewhere the kernel receives into a buffer the stream owns (`IORING_OP_RECV`),
//! one receive in flight at a time, and readers take the bytes from there. Once a
//! reader has taken every byte received, the next receive is submitted at
//! once (read-ahead): in a request-reply exchange the next request's bytes are then
//! waiting when the reader comes back, with no turn of the loop lost. A reader that
//! gives up (its future dropped) leaves the receive to the stream too: the bytes it
//! brings wait for the next reader, so no byte is lost. The stream itself
//! dropped cancels the receive (see [`UringPoller::cancel_op`]), and the kernel
//! answers before the buffer is freed.
//!
//! [`read_owned`](RingReads::poll_read_owned) lends the caller's own buffer to the
//! kernel instead (no copy), when no receive of the stream's is in flight and
//! nothing is ahead. Its receive belongs to its future while the future lives
//! and is the stream's after: dropping the future loses nothing either.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::task::{Context, Poll};

use io_uring::{opcode, types};
use mio::Token;

use super::ops::OpKey;
use super::recvs::RecvKey;
use super::uring::UringPoller;
use super::wakers::{WaitList, Wakers};

/// The least a receive asks for (a reader with a small buffer still gets a whole
/// message in one completion), and the most.
pub(super) const MIN_RECV: usize = 4096;
pub(super) const MAX_RECV: usize = 256 * 1024;

#[derive(Default)]
struct ReadState {
    /// The receive in the kernel, if any.
    in_flight: Option<OpKey>,
    /// Its buffer is a `read_owned` future's, which collects it.
    owned: bool,
    /// Readers that wait while a `read_owned` future owns the receive.
    waiters: WaitList,
    /// The stream's slot for receives into the ring's buffers, once it has one: every
    /// read goes through it from then on (no other receive of the stream is ever
    /// submitted, so bytes never come out of order).
    ring_recv: Option<RecvKey>,
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
    fn take_waiters(&mut self) -> Wakers {
        self.waiters.take()
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
pub(super) fn recv_now(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
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
    // SAFETY: `start_op`'s contract holds: the entry's only pointer is `at`, the start
    // of `buf`'s spare capacity, with `len` bytes of it, all inside `buf`'s heap block,
    // which the ops table keeps, unmoved, until the completion.
    unsafe { ring.start_op(entry, buf, None) }
}

/// Queues a send of `buf[from..]`, done when every byte is sent or it fails; its
/// completion is reported to transport `sink` if there is one.
pub(crate) fn submit_send(
    ring: &UringPoller,
    fd: RawFd,
    buf: Vec<u8>,
    from: usize,
    sink: Option<Token>,
) -> Result<OpKey, (io::Error, Vec<u8>)> {
    let rest = &buf[from..];
    let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
    // MSG_WAITALL: the kernel itself retries a short send until all of it is out;
    // MSG_NOSIGNAL: a closed peer is an EPIPE, not a SIGPIPE.
    let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), len)
        .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
        .build();
    // SAFETY: `start_op`'s contract holds: the entry's only pointer is into `buf`'s
    // initialized bytes (`len` of them from `from`), all inside `buf`'s heap block,
    // which the ops table keeps, unmoved, until the completion.
    let key = unsafe { ring.start_op(entry, buf, sink) }?;
    ring.note_send_queued();
    Ok(key)
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
    /// `want == 0`); `Ready(None)` when there is nothing to take, no receive is in
    /// flight and not `submit` (the caller, `read_owned`, lends its own buffer).
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
                if submit && st.pos == st.ahead.len() && st.in_flight.is_none() && !st.full && !ring.receives_into_ring_buffers() {
                    st.read_ahead(ring, fd);
                }
                return Poll::Ready(Some(Ok(n)));
            }
            if want == 0 {
                return Poll::Ready(Some(Ok(0)));
            }
            if let Some(key) = st.in_flight {
                if st.owned {
                    st.waiters.add(cx.waker());
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
            if st.ring_recv.is_none() && submit {
                st.ring_recv = ring.new_recv();
            }
            if let Some(key) = st.ring_recv.filter(|&key| submit || !ring.recv_is_idle(key)) {
                let mut take = |bytes: &[u8]| take.take().expect("data is handed out once")(bytes);
                return ring.poll_recv(key, fd, cx, want, &mut take).map(Some);
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
            waiters.wake();
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
        waiters.wake();
    }

    /// The stream goes away: cancel the receive in flight, if any.
    pub(crate) fn cancel(&self, ring: &UringPoller) {
        let (key, ring_recv) = {
            let mut st = self.state.borrow_mut();
            (st.in_flight.take(), st.ring_recv.take())
        };
        if let Some(key) = key {
            ring.cancel_op(key);
        }
        if let Some(key) = ring_recv {
            ring.stop_recv(key);
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
        let ring_recv = self.state.borrow_mut().ring_recv.take();
        let unread = ring_recv.map_or(0, |key| ring.detach_recv(key));
        let st = self.state.borrow();
        st.ahead.len() - st.pos + unread
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use futures_util::{AsyncReadExt, AsyncWriteExt};

    use super::MIN_RECV;
    use crate::io::buf_ring::{BUFFERS, BUFFER_SIZE};
    use crate::io::uring::UringPoller;
    use crate::net::{TcpListener, TcpStream};
    use crate::EventLoop;

    /// Runs `body` on a proactor whose streams receive into the ring's buffers (where
    /// this kernel takes them), then on one whose streams lend the kernel their own;
    /// `body` is told which.
    fn on_both_ways<F: Future<Output = ()>>(body: impl Fn(EventLoop, bool) -> F) {
        for ring_buffers in [true, false] {
            crate::io::on_test_proactor(|lp| {
                let ring = lp.inner.reactor.ring().expect("a proactor");
                if !ring_buffers {
                    ring.disable_ring_buffers();
                }
                let ring_buffers = ring.receives_into_ring_buffers();
                body(lp, ring_buffers)
            });
        }
    }

    fn ring(lp: &EventLoop) -> &UringPoller {
        lp.inner.reactor.ring().expect("a proactor")
    }

    /// A connected pair: (client, server side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// Byte `i` of the test pattern of stream `n`.
    fn pattern(n: usize, i: usize) -> u8 {
        (i.wrapping_mul(31) ^ n.wrapping_mul(7) ^ (i >> 12)) as u8
    }

    /// After a big read, a stream that waits for its peer lends the kernel little:
    /// nothing at all with the ring's buffers (shared by every stream), else
    /// [`MIN_RECV`], not a buffer as big as that read.
    #[test]
    fn an_idle_stream_lends_the_kernel_little() {
        on_both_ways(|lp, ring_buffers| async move {
            let lent = || ring(&lp).lent();
            let (mut client, mut server) = pair().await;
            let idle = || {
                if ring_buffers {
                    assert_eq!(lent(), 0, "a receive into the ring's buffers lends nothing of the stream's");
                    assert_eq!(ring(&lp).queued_by_recvs(), 0);
                } else {
                    assert!(lent() > 0 && lent() <= 2 * MIN_RECV, "{} bytes lent", lent());
                }
            };
            // A big read that has to wait lends the kernel little.
            let mut buf = vec![0u8; 256 * 1024];
            {
                let mut first = std::pin::pin!(server.read(&mut buf));
                std::future::poll_fn(|cx| {
                    assert!(first.as_mut().poll(cx).is_pending(), "nothing was sent yet");
                    std::task::Poll::Ready(())
                })
                .await;
                idle();
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
            // The receive for the next message is in the kernel now.
            if ring_buffers {
                assert_eq!(ring(&lp).receives(), 1);
            } else {
                assert!(lent() > 0, "a receive waits for the next message");
            }
            idle();
        });
    }

    /// A peer that sends far more than the stream reads: what the ring holds for the
    /// stream stays one receive's worth (the rest waits in the socket), and every
    /// byte still comes, in order, once it reads: through full buffers taken on with
    /// `recv(2)`, and receives submitted again.
    #[test]
    fn a_stream_that_does_not_read_holds_one_receive_and_loses_nothing() {
        on_both_ways(|lp, ring_buffers| async move {
            const TOTAL: usize = 8 << 20;
            // The writer is a thread's plain socket: what the ring lends is the
            // reader's alone.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let writer = std::thread::spawn(move || {
                let data: Vec<u8> = (0..TOTAL).map(|i| pattern(1, i)).collect();
                std::io::Write::write_all(&mut std::net::TcpStream::connect(addr).unwrap(), &data).unwrap();
            });
            let (mut server, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1000];
            let mut got = Vec::with_capacity(TOTAL);
            let n = server.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            // The writer fills the socket while nobody reads.
            for _ in 0..50 {
                crate::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            // What the last read left of a `recv(2)` of `MIN_RECV`, or one receive.
            let held = ring(&lp).queued_by_recvs();
            assert!(held <= MIN_RECV.max(BUFFER_SIZE), "{held} bytes queued");
            if ring_buffers {
                assert_eq!(ring(&lp).lent(), 0);
            } else {
                assert!(ring(&lp).lent() <= MIN_RECV);
            }
            loop {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            writer.join().unwrap();
            assert_eq!(got.len(), TOTAL);
            assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(1, i)), "bytes out of order");
        });
    }

    /// More streams receive at once than the ring has buffers: the receives that find
    /// it empty fail (`ENOBUFS`) and are submitted again, and every stream gets its
    /// own bytes, whole.
    #[test]
    fn more_streams_than_buffers_each_get_their_own_bytes() {
        on_both_ways(|lp, _| async move {
            // Each stream has one receive in the kernel: more of them than buffers.
            const STREAMS: usize = BUFFERS as usize + 44;
            const EACH: usize = 2 * BUFFER_SIZE;
            let mut clients = Vec::new();
            let mut readers = Vec::new();
            for _ in 0..STREAMS {
                let (client, mut server) = pair().await;
                clients.push(client);
                readers.push(crate::spawn(async move {
                    let mut got = vec![0u8; EACH];
                    server.read_exact(&mut got).await.unwrap();
                    got
                }));
            }
            // Every reader waits in its receive before any byte is sent.
            crate::time::sleep(std::time::Duration::from_millis(10)).await;
            for (n, client) in clients.iter_mut().enumerate() {
                let data: Vec<u8> = (0..EACH).map(|i| pattern(n, i)).collect();
                client.write_all(&data).await.unwrap();
            }
            for (n, reader) in readers.into_iter().enumerate() {
                let got = reader.await.unwrap();
                assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(n, i)), "stream {n}");
            }
            drop(clients);
            assert_eq!(ring(&lp).queued_by_recvs(), 0);
        });
    }

    /// A stream dropped while its receive is in the kernel, with bytes queued: the
    /// receive is cancelled and answered at once (no slot is left), and the peer sees
    /// the connection closed.
    #[test]
    fn a_dropped_stream_leaves_no_receive_behind() {
        on_both_ways(|lp, _| async move {
            let (mut client, mut server) = pair().await;
            client.write_all(b"first").await.unwrap();
            let mut buf = [0u8; 1];
            server.read_exact(&mut buf).await.unwrap();
            // "irst" is queued, and the receive waits for more.
            drop(server);
            assert_eq!(ring(&lp).receives(), 0, "the cancel was answered");
            assert_eq!(ring(&lp).queued_by_recvs(), 0);
            assert_eq!(ring(&lp).lent(), 0);
            let mut rest = Vec::new();
            // The peer sees the end (a reset: bytes were left unread).
            let _ = client.read_to_end(&mut rest).await;
        });
    }
}
