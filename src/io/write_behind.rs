//! A stream's `AsyncWrite` on a proactor loop: writes that go out through the ring,
//! with no system call of their own.
//!
//! A write copies the caller's bytes into a buffer the stream owns, starts an
//! `IORING_OP_SEND` of it and says `Ready(n)`: the loop submits the send with its
//! next batch, in the one `io_uring_enter` it makes anyway. One send is in the
//! kernel at a time, and a write while one is there waits (`Pending`) for its
//! completion. So every byte a write accepted is in a send already started, which
//! the kernel finishes with nobody polling again: a caller that writes and then
//! only reads, never flushing (as it may with a plain socket), still gets its bytes
//! out. `poll_flush` waits for the send, and a send that failed is reported by the
//! next write or flush.
//!
//! Dropping the stream leaves its send to finish, not cancelled: the bytes were
//! accepted, as a socket's buffer keeps what `send(2)` took after `close(2)`. The send
//! is submitted before the fd is closed (its number could be reused by the next
//! accept otherwise), and the ring's hold on the file keeps the socket open until
//! the send is done; a task gives it [`OUTLIVE_LIMIT`] to be, and cancels it past
//! that. Everything else that writes to the socket lets this send
//! finish first, so the bytes keep their order: `poll_close` and `write_all_owned`
//! wait for it; a `shutdown` that finds it still in the kernel leaves a task to
//! shut the write side down once it is done (the loop does not wait); a stream
//! writer that takes the socket sends after it, and a write outside a task finds
//! the socket full (`WouldBlock`) until it is done; the stream moving to another
//! loop, which cannot wait, waits a bounded while.

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use super::completion::submit_send;
use super::ops::OpKey;
use super::uring::UringPoller;
use crate::event_loop::LoopInner;
use crate::EventLoop;

/// The most a write takes into one send: a larger write is accepted in parts (each
/// `poll_write` says how much it took), so a stream holds at most this much.
const MAX_SEND: usize = 256 * 1024;

/// How long a send may outlive its stream (dropped, or shut down with the send in
/// the kernel) before it is cancelled: a peer that reads nothing does not keep a
/// socket and its buffer for good.
/// (A second in the unit tests, which wait for it.)
const OUTLIVE_LIMIT: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 30 });

/// How long a stream moving to another loop (a call that cannot wait) waits, at
/// most, for a send still in the kernel (a peer that does not read) before it goes
/// ahead.
const SETTLE_WAIT: Duration = Duration::from_millis(100);

/// A stream's write-behind state (see the module's comment).
#[derive(Default)]
pub(crate) struct WriteBehind {
    /// The send in the kernel, if any.
    sending: Cell<Option<Sending>>,
    /// The last send's buffer, for the next (a connection's writes reuse one).
    spare: Cell<Vec<u8>>,
    /// The write side was shut down here: a write is refused at once, as
    /// `send(2)` refuses it, rather than failing later in the kernel.
    shut: Cell<bool>,
}

/// A send in the kernel: of its buffer's bytes from `from`.
#[derive(Clone, Copy)]
struct Sending {
    key: OpKey,
    from: usize,
}

impl WriteBehind {
    /// Whether a send is in the kernel (or done and not collected).
    pub(crate) fn busy(&self) -> bool {
        self.sending.get().is_some()
    }

    /// Takes what fits of `bufs` (up to [`MAX_SEND`]) into a send, once the one
    /// before it is done; how many bytes it took.
    pub(crate) fn poll_write(
        &self,
        ring: &UringPoller,
        fd: RawFd,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(send) = self.sending.get() {
            if !ring.op_done(send.key) && ring.sends_queued() {
                // A second write in the turn that queued the send (a copy loop):
                // the send is not even submitted. Submit it now and collect what is
                // done, rather than wait a turn of the loop for each buffer; a
                // system call where `send(2)` would have made one too. (A send
                // submitted in an earlier turn and not done is stuck behind a full
                // socket: entering the kernel again would not help.)
                ring.reap_completions();
            }
        }
        ready!(self.poll_idle(ring, Some(fd), cx))?;
        let mut buf = self.spare.take();
        buf.clear();
        for b in bufs {
            let room = MAX_SEND - buf.len();
            if room == 0 {
                break;
            }
            buf.extend_from_slice(&b[..b.len().min(room)]);
        }
        let n = buf.len();
        if n == 0 {
            self.spare.set(buf);
            return Poll::Ready(Ok(0));
        }
        self.start(ring, fd, buf, 0)?;
        Poll::Ready(Ok(n))
    }

    /// Waits until no send is in the kernel; the error of one that failed.
    /// `fd` restarts the rest of a short send; with none (a stream gone) a short
    /// send is an error.
    pub(crate) fn poll_idle(&self, ring: &UringPoller, fd: Option<RawFd>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(send) = self.sending.get() {
            let (result, buf) = ready!(ring.poll_op(send.key, cx));
            self.sent(ring, fd, send, result, buf)?;
        }
        Poll::Ready(Ok(()))
    }

    /// For a caller that cannot wait (see [`SETTLE_WAIT`]): the
    /// send in the kernel, if any, submitted and waited for, a bounded while. `Err`
    /// with the bytes still unsent if it did not finish in that time (it is left
    /// to finish on its own then); a failed send's error is dropped, as the caller
    /// cannot report it as a write's.
    pub(crate) fn settle(&self, ring: &UringPoller, fd: RawFd) -> Result<(), usize> {
        while let Some(send) = self.sending.get() {
            let Some((result, buf)) = ring.wait_op(send.key, SETTLE_WAIT) else {
                return Err(ring.op_len(send.key) - send.from);
            };
            if let Err(e) = self.sent(ring, Some(fd), send, result, buf) {
                log::debug!("a stream's send failed: {e}");
            }
        }
        Ok(())
    }

    /// Collects the send if it completed, without waiting (the caller reaped the
    /// ring's completions); whether none is in the kernel now. A failed send's
    /// error is dropped, as the caller cannot report it as a write's.
    pub(crate) fn collect(&self, ring: &UringPoller, fd: Option<RawFd>) -> bool {
        while let Some(send) = self.sending.get() {
            let Some((result, buf)) = ring.take_done_op(send.key) else {
                return false;
            };
            if let Err(e) = self.sent(ring, fd, send, result, buf) {
                log::debug!("a stream's send failed: {e}");
            }
        }
        true
    }

    /// Hands the send in the kernel over, to finish in a task of `lp`'s: this
    /// stream has none after.
    pub(crate) fn hand_over(&self, lp: Weak<LoopInner>) -> HandedOver {
        let writes = WriteBehind {
            sending: Cell::new(self.sending.take()),
            ..WriteBehind::default()
        };
        HandedOver { writes, lp }
    }

    /// The write side is shut down (see [`shut`](Self::shut)).
    pub(crate) fn shut_down(&self) {
        self.shut.set(true);
    }

    /// The error for a write after the write side was shut down here, if it was.
    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.shut.get() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "cannot write to a stream whose write side was shut down",
            ));
        }
        Ok(())
    }

    /// The stream goes away (its fd is closed next): a send still in the kernel is
    /// left to finish, for at most [`OUTLIVE_LIMIT`], by a task of the loop's. It
    /// is submitted now, while the fd still names the socket; the ring's hold on
    /// the file then keeps the socket open until the send is done.
    pub(crate) fn release(&self, lp: &Rc<LoopInner>) {
        let (Some(_), Some(ring)) = (self.sending.get(), lp.reactor.ring()) else {
            return;
        };
        // Submits what is queued, and files the completions there are: most
        // sends are done by now.
        ring.reap_completions();
        if self.collect(ring, None) {
            return;
        }
        let left = self.hand_over(Rc::downgrade(lp));
        let task = EventLoop { inner: lp.clone() }.create_task(async move {
            if let Err(e) = left.finish(None).await {
                log::debug!("the last send of a dropped stream: {e}");
            }
        });
        // A loop that is closing takes no task: the dropped one cancelled the send.
        if let Ok(task) = task {
            task.detach();
        }
    }

    /// Send `send` completed with `result`: the rest of a short one (a signal, or
    /// more than a send's `u32` of bytes) goes again; a whole one's buffer is kept
    /// for the next.
    fn sent(&self, ring: &UringPoller, fd: Option<RawFd>, send: Sending, result: i32, buf: Vec<u8>) -> io::Result<()> {
        self.sending.set(None);
        let done = match result {
            r if r < 0 => {
                self.spare.set(buf);
                return Err(io::Error::from_raw_os_error(-r));
            }
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => send.from + n as usize,
        };
        if done < buf.len() {
            let Some(fd) = fd else {
                return Err(io::Error::other("a send cut short after its stream was gone"));
            };
            return self.start(ring, fd, buf, done);
        }
        self.spare.set(buf);
        Ok(())
    }

    /// Starts the send of `buf[from..]`.
    fn start(&self, ring: &UringPoller, fd: RawFd, buf: Vec<u8>, from: usize) -> io::Result<()> {
        match submit_send(ring, fd, buf, from, None) {
            Ok(key) => {
                self.sending.set(Some(Sending { key, from }));
                Ok(())
            }
            Err((e, buf)) => {
                self.spare.set(buf);
                Err(e)
            }
        }
    }
}

/// A stream's send handed over to a task of its loop's, to finish after the
/// stream let go of it (see [`WriteBehind::release`] and the shutdown's
/// [`shut_down_when_sent`](Self::shut_down_when_sent)). Dropped with the send still
/// in the kernel (past [`OUTLIVE_LIMIT`], or with its task: cancelled, even before
/// its first poll, or its loop closing), it cancels the send: none is left in the
/// kernel without a limit.
pub(crate) struct HandedOver {
    writes: WriteBehind,
    lp: Weak<LoopInner>,
}

impl HandedOver {
    /// The task a shutdown leaves behind when its stream's send is still in the
    /// kernel (a peer that does not read): once the send is done, the write side of `fd`'s socket is shut down. `fd` is a duplicate of the
    /// stream's, so the socket it names stays the same if the stream is dropped
    /// meanwhile. A send not done within [`OUTLIVE_LIMIT`] is cancelled, and the
    /// write side shut down all the same, so the peer still sees the end.
    pub(crate) async fn shut_down_when_sent(self, fd: OwnedFd) {
        if let Err(e) = self.finish(Some(fd.as_raw_fd())).await {
            log::debug!("a stream's last send before its shutdown: {e}");
        }
        // A failed send leaves a broken connection, where this fails harmlessly.
        if let Err(e) = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write) {
            log::debug!("a stream's deferred shutdown failed: {e}");
        }
    }

    /// Waits until the send is done, for at most [`OUTLIVE_LIMIT`]; past that
    /// it is cancelled (when `self` is dropped).
    async fn finish(&self, fd: Option<RawFd>) -> io::Result<()> {
        let done = std::future::poll_fn(|cx| match self.lp.upgrade() {
            Some(lp) => match lp.reactor.ring() {
                Some(ring) => self.writes.poll_idle(ring, fd, cx),
                None => Poll::Ready(Ok(())),
            },
            None => Poll::Ready(Err(crate::Error::Closed.into())),
        });
        crate::time::timeout(OUTLIVE_LIMIT, done).await.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {OUTLIVE_LIMIT:?}: the send was cancelled"),
            ))
        })
    }
}

impl Drop for HandedOver {
    fn drop(&mut self) {
        if let (Some(send), Some(lp)) = (self.writes.sending.take(), self.lp.upgrade()) {
            if let Some(ring) = lp.reactor.ring() {
                ring.cancel_op(send.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io::{IoSlice, Read, Write};
    use std::net::Shutdown;
    use std::time::Duration;

    use futures_util::{AsyncReadExt, AsyncWriteExt};

    use crate::io::{lent, on_test_proactor, pattern, rounds, slow_peer, until, SlowPeer};
    use crate::net::TcpStream;

    async fn stream_to_slow_peer() -> (TcpStream, SlowPeer) {
        let (addr, peer) = slow_peer();
        (TcpStream::connect(addr).await.unwrap(), peer)
    }

    fn busy(s: &TcpStream) -> bool {
        s.io.write_behind().is_some_and(|w| w.busy())
    }

    /// On a proactor, a write from the loop is a ring send: it is accepted whole
    /// (up to the cap), the send is in the kernel when it returns, the next write
    /// waits for it, and the peer gets every byte of plain and vectored writes in
    /// order; the buffers come back once the sends are done.
    #[test]
    fn proactor_writes_go_out_through_the_ring_in_order() {
        on_test_proactor(|lp| async move {
            let (mut s, (go, peer)) = stream_to_slow_peer().await;
            go.send(()).unwrap();
            let sent = pattern(3 << 20);
            let mut at = 0;
            for (i, size) in rounds(7, 400).map(|r| 1 + r as usize % 40_000).enumerate() {
                let end = (at + size).min(sent.len());
                let n = if i % 3 == 0 {
                    let mid = (at + end) / 2;
                    let parts = [IoSlice::new(&sent[at..mid]), IoSlice::new(&sent[mid..end])];
                    s.write_vectored(&parts).await.unwrap()
                } else {
                    s.write(&sent[at..end]).await.unwrap()
                };
                assert_eq!(n, end - at, "a write under the cap was not taken whole");
                assert!(busy(&s), "a proactor write did not go to the ring");
                at = end;
                if at == sent.len() {
                    break;
                }
            }
            s.write_all(&sent[at..]).await.unwrap();
            s.flush().await.unwrap();
            assert!(!busy(&s), "flush returned with a send in the kernel");
            assert_eq!(lent(&lp), 0, "a completed send still holds its buffer");
            s.close().await.unwrap();
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap() == sent, "the peer got the bytes out of order or changed");
        });
    }

    /// A write larger than the cap is taken in parts, and `write_all` sends it all.
    #[test]
    fn a_proactor_write_over_the_cap_is_taken_in_parts() {
        on_test_proactor(|_| async move {
            let (mut s, (go, peer)) = stream_to_slow_peer().await;
            let sent = pattern(super::MAX_SEND * 2 + 10);
            assert_eq!(s.write(&sent).await.unwrap(), super::MAX_SEND);
            go.send(()).unwrap();
            s.write_all(&sent[super::MAX_SEND..]).await.unwrap();
            s.close().await.unwrap();
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap() == sent);
        });
    }

    /// A request written with no flush, then a read of the reply: the send goes
    /// out with nobody polling it (the loop submits it), so the exchange finishes.
    #[test]
    fn a_proactor_write_with_no_flush_still_reaches_the_peer() {
        on_test_proactor(|_| async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let echo = std::thread::spawn(move || {
                let (mut peer, _) = listener.accept().unwrap();
                let mut buf = [0; 5];
                for _ in 0..100 {
                    peer.read_exact(&mut buf).unwrap();
                    peer.write_all(&buf).unwrap();
                }
            });
            let mut s = TcpStream::connect(addr).await.unwrap();
            for i in 0..100u8 {
                s.write_all(&[i; 5]).await.unwrap();
                let mut back = [0; 5];
                s.read_exact(&mut back).await.unwrap();
                assert_eq!(back, [i; 5]);
            }
            until(|| echo.is_finished()).await;
            echo.join().unwrap();
        });
    }

    /// Writes to a peer that does not read until a write waits: the send before
    /// it stays in the kernel, the socket buffers being full. How much was taken.
    async fn fill(s: &mut TcpStream, sent: &[u8]) -> usize {
        let mut at = 0;
        while at < sent.len() {
            match crate::time::timeout(Duration::from_millis(20), s.write(&sent[at..])).await {
                Ok(n) => at += n.unwrap(),
                Err(_) => return at,
            }
        }
        panic!("{} bytes fit in the socket buffers", sent.len());
    }

    /// Lets the slow peer read: it gets exactly `accepted`, then end-of-stream, and
    /// the ring lends no buffer after.
    async fn peer_gets(lp: &crate::EventLoop, (go, peer): SlowPeer, accepted: &[u8]) {
        go.send(()).unwrap();
        until(|| peer.is_finished()).await;
        let got = peer.join().unwrap();
        assert_eq!(got.len(), accepted.len(), "the peer did not get what the stream accepted");
        assert!(got == accepted);
        until(|| lent(lp) == 0).await;
    }

    /// A stream dropped while its last send is stuck in the kernel behind a peer
    /// that does not read: the send finishes once the peer reads, so it gets every
    /// byte accepted, and the buffer is freed then.
    #[test]
    fn a_proactor_stream_dropped_mid_send_still_delivers_what_it_accepted() {
        on_test_proactor(|lp| async move {
            let (mut s, (go, peer)) = stream_to_slow_peer().await;
            let sent = pattern(16 << 20);
            let at = fill(&mut s, &sent).await;
            assert!(lent(&lp) > 0);
            drop(s);
            peer_gets(&lp, (go, peer), &sent[..at]).await;
        });
    }

    /// A stream dropped right after a write, its send still queued, and a new
    /// connection made at once (which may get the same fd number): the send goes to
    /// the first peer, submitted before its fd closed, and nothing to the second.
    #[test]
    fn a_send_queued_as_its_stream_drops_goes_to_that_stream_only() {
        on_test_proactor(|lp| async move {
            for _ in 0..50 {
                let (mut first, (go_first, first_peer)) = stream_to_slow_peer().await;
                let (addr, (go_second, second_peer)) = slow_peer();
                first.write_all(b"first").await.unwrap();
                drop(first);
                // Most often the same fd number as `first`'s (not always: other
                // tests open files meanwhile).
                let mut second = TcpStream::connect(addr).await.unwrap();
                second.write_all(b"second").await.unwrap();
                second.close().await.unwrap();
                drop(second);
                peer_gets(&lp, (go_first, first_peer), b"first").await;
                peer_gets(&lp, (go_second, second_peer), b"second").await;
            }
        });
    }

    /// Streams ended at varied points of their writes (dropped, closed, shut down,
    /// with writes given up on by a timeout between), to peers that start reading
    /// at varied times: each peer gets exactly the bytes the writes accepted, in
    /// order, and every buffer comes back.
    #[test]
    fn proactor_streams_ended_at_any_point_deliver_exactly_what_they_accepted() {
        on_test_proactor(|lp| async move {
            let sent = pattern(4 << 20);
            let mut r = rounds(11, 10_000);
            let mut next = move |n: u32| r.next().unwrap() % n;
            for _ in 0..150 {
                let delay = Duration::from_micros(u64::from(next(3000)));
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let peer = std::thread::spawn(move || {
                    let (mut peer, _) = listener.accept().unwrap();
                    std::thread::sleep(delay);
                    let mut got = Vec::new();
                    peer.read_to_end(&mut got).unwrap();
                    got
                });
                let mut s = TcpStream::connect(addr).await.unwrap();
                let mut accepted = 0;
                for _ in 0..1 + next(6) {
                    let size = 1 + next(512 << 10) as usize;
                    let end = (accepted + size).min(sent.len());
                    let limit = Duration::from_micros(u64::from(next(2000)));
                    if let Ok(n) = crate::time::timeout(limit, s.write(&sent[accepted..end])).await {
                        accepted += n.unwrap();
                    }
                }
                match next(3) {
                    0 => drop(s),
                    1 => s.close().await.unwrap(),
                    _ => s.shutdown(Shutdown::Write).unwrap(),
                }
                until(|| peer.is_finished()).await;
                let got = peer.join().unwrap();
                assert_eq!(got.len(), accepted, "the peer did not get what the writes accepted");
                assert!(got == sent[..accepted], "the bytes came changed or out of order");
            }
            until(|| lent(&lp) == 0).await;
        });
    }

    /// A Unix stream's writes go through the ring the same way.
    #[test]
    fn proactor_unix_stream_writes_go_through_the_ring() {
        on_test_proactor(|_| async move {
            let (mut a, mut b) = crate::net::UnixStream::pair().unwrap();
            let sent = pattern(1 << 20);
            let reader = crate::spawn(async move {
                let mut got = Vec::new();
                b.read_to_end(&mut got).await.unwrap();
                got
            });
            assert_eq!(a.write(&sent[..1000]).await.unwrap(), 1000);
            assert!(a.io.write_behind().is_some_and(|w| w.busy()));
            a.write_all(&sent[1000..]).await.unwrap();
            a.close().await.unwrap();
            assert!(reader.await.unwrap() == sent);
        });
    }

    /// A stream dropped while its last send is stuck behind a peer that reads
    /// nothing: past the limit the send is cancelled and its buffer freed, and the
    /// socket closes; the peer, reading at last, gets a prefix of what was accepted
    /// and then end-of-stream.
    #[test]
    fn a_dropped_streams_send_that_never_goes_is_cancelled_after_the_limit() {
        on_test_proactor(|lp| async move {
            let (mut s, (go, peer)) = stream_to_slow_peer().await;
            let sent = pattern(16 << 20);
            let at = fill(&mut s, &sent).await;
            drop(s);
            assert!(lent(&lp) > 0);
            until(|| lent(&lp) == 0).await;
            go.send(()).unwrap();
            until(|| peer.is_finished()).await;
            let got = peer.join().unwrap();
            assert!(got.len() < at, "the send went on past the limit");
            assert!(got == sent[..got.len()]);
        });
    }

    /// The task that finishes a dropped stream's stuck send, cancelled (as
    /// shutdown code that cancels every task does): the send is cancelled with it
    /// and its buffer freed, not left in the kernel with no limit.
    #[test]
    fn cancelling_the_task_of_a_dropped_streams_send_cancels_the_send() {
        on_test_proactor(|lp| async move {
            let (mut s, (go, peer)) = stream_to_slow_peer().await;
            let sent = pattern(16 << 20);
            fill(&mut s, &sent).await;
            drop(s);
            assert!(lent(&lp) > 0);
            // (The test's body is not a task.)
            let tasks = crate::all_tasks();
            assert_eq!(tasks.len(), 1, "one task finishes the dropped stream's send");
            tasks[0].cancel();
            until(|| tasks[0].is_finished()).await;
            // The task, and the limit's timer with it, is gone: only the cancel
            // can free the buffer now.
            until(|| lent(&lp) == 0).await;
            go.send(()).unwrap();
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap().len() < sent.len());
        });
    }

    /// A shutdown, and a write half dropped, while the last send is stuck in the
    /// kernel: neither waits for it (the loop goes on), later writes are refused,
    /// and the peer reads every byte accepted, then end-of-stream.
    #[test]
    fn a_proactor_shutdown_behind_a_stuck_send_shuts_down_after_it() {
        on_test_proactor(|lp| async move {
            let sent = pattern(16 << 20);
            for split in [false, true] {
                let (mut s, (go, peer)) = stream_to_slow_peer().await;
                let at = fill(&mut s, &sent).await;
                let kept = if split {
                    let (read_half, write_half) = s.split();
                    drop(write_half); // a shutdown
                    read_half
                } else {
                    s.shutdown(Shutdown::Write).unwrap();
                    let e = s.write(b"late").await.unwrap_err();
                    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
                    let (r, _) = s.write_all_owned(b"late".to_vec()).await;
                    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
                    // Shut down already: a close, and the split's write half
                    // dropped, do not shut down again under the send.
                    s.close().await.unwrap();
                    s.split().0
                };
                assert!(lent(&lp) > 0, "the send did not stay in the kernel");
                // The shutdown's task outlives the stream.
                drop(kept);
                peer_gets(&lp, (go, peer), &sent[..at]).await;
            }
        });
    }

    /// `close` waits for the send in the kernel, then shuts the write side down:
    /// the peer reads it all, then end-of-stream; a sync `shutdown` after a small
    /// write sends the write first too.
    #[test]
    fn a_proactor_close_or_shutdown_sends_what_was_written_first() {
        on_test_proactor(|_| async move {
            let (mut s, (go, peer)) = stream_to_slow_peer().await;
            let sent = pattern(8 << 20);
            let writer = crate::spawn(async move {
                s.write_all(&sent).await.unwrap();
                s.close().await.unwrap();
                (s, sent)
            });
            go.send(()).unwrap();
            let (_s, sent) = writer.await.unwrap();
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap() == sent);

            let (mut s, (go, peer)) = stream_to_slow_peer().await;
            s.write_all(b"hello").await.unwrap();
            assert!(busy(&s));
            s.shutdown(Shutdown::Write).unwrap();
            assert!(!busy(&s), "shutdown left the send behind");
            go.send(()).unwrap();
            until(|| peer.is_finished()).await;
            assert_eq!(peer.join().unwrap(), b"hello");
        });
    }

    /// A peer that resets the connection: a write the ring took fails in the
    /// kernel, and a later write or flush reports it; nothing panics or leaks.
    #[test]
    fn a_failed_proactor_send_is_reported_by_a_later_write_or_flush() {
        on_test_proactor(|lp| async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut s = TcpStream::connect(addr).await.unwrap();
            let (peer, _) = listener.accept().unwrap();
            socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)).unwrap();
            drop(peer); // a reset
            let mut failed = None;
            for _ in 0..1000 {
                let r = match s.write(&[1; 1000]).await {
                    Ok(_) => s.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    failed = Some(e);
                    break;
                }
                crate::time::sleep(Duration::from_millis(1)).await;
            }
            let e = failed.expect("writes to a reset peer kept succeeding");
            assert!(
                matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
                "{e:?}"
            );
            assert!(!busy(&s));
            assert_eq!(lent(&lp), 0);
        });
    }

    /// A stream handed to the streams while its write-behind send is stuck behind a
    /// peer that reads nothing (for longer than any bounded wait): the writer's
    /// bytes wait for that send and go after it, written from a task and from
    /// outside one (the socket refuses them then, and the writer's flusher sends
    /// them). The peer gets each byte once, in order.
    #[test]
    fn a_stream_writer_taking_a_stream_mid_send_writes_after_that_send() {
        for outside_a_task in [false, true] {
            let Some(lp) = crate::io::test_proactor() else {
                return;
            };
            crate::set_event_loop(Some(lp.clone()));
            let sent = pattern(16 << 20);
            let (s, at, peer) = lp
                .run_until_complete(async {
                    let (mut s, peer) = stream_to_slow_peer().await;
                    let at = fill(&mut s, &sent).await;
                    assert!(busy(&s));
                    (s, at, peer)
                })
                .unwrap();
            let (_reader, mut writer) = crate::streams::from_socket(s);
            let tail = pattern(100_000).into_iter().rev().collect::<Vec<u8>>();
            if outside_a_task {
                writer.write(&tail);
            }
            lp.run_until_complete(async {
                if !outside_a_task {
                    writer.write(&tail);
                }
                crate::time::sleep(super::SETTLE_WAIT * 3).await;
                let (go, peer) = peer;
                go.send(()).unwrap();
                writer.drain().await.unwrap();
                writer.close();
                writer.wait_closed().await.unwrap();
                until(|| peer.is_finished()).await;
                let got = peer.join().unwrap();
                let mut want = sent[..at].to_vec();
                want.extend_from_slice(&tail);
                assert_eq!(got.len(), want.len(), "the peer got a different number of bytes");
                assert!(got == want, "the writer's bytes did not go after the stream's send");
                until(|| lent(&lp) == 0).await;
            })
            .unwrap();
            crate::set_event_loop(None);
        }
    }

    /// Outside its running loop, a stream whose last ring send the loop submitted
    /// as it stopped writes with `send(2)` after it: the peer gets both in order.
    #[test]
    fn a_proactor_write_outside_the_loop_goes_after_the_ring_send() {
        let Some(lp) = crate::io::test_proactor() else {
            return;
        };
        crate::set_event_loop(Some(lp.clone()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = lp
            .run_until_complete(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"first,").await.unwrap();
                assert!(busy(&s));
                s
            })
            .unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        // Polled by hand, as another executor would: no loop runs.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut write = std::pin::pin!(async {
            s.write_all(b"second").await.unwrap();
            s.flush().await.unwrap();
        });
        let mut polls = 0;
        while write.as_mut().poll(&mut cx).is_pending() {
            polls += 1;
            assert!(polls < 10_000, "the write outside the loop never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(s);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"first,second");
        crate::set_event_loop(None);
    }
}
