//! Streams' reads and writes on both loop kinds, where the proactor differs in how
//! it does them: the ring receives into buffers the stream owns (or the caller's, with
//! `read_owned`) and sends from the caller's (`write_all_owned`). What must hold on
//! both: no byte lost or reordered when reads are dropped half-way, buffers freed
//! (never early: the kernel may still use them; never leaked) whatever is dropped when,
//! and sockets closed when dropped.
//!
//! Valgrind cannot follow io_uring, so this binary counts live heap bytes with its
//! own allocator: a buffer leaked, or freed twice, shows in the count. A buffer freed
//! while the kernel still wrote into it would corrupt a fresh allocation: the
//! cancellation test fills fresh buffers with a pattern and checks it afterwards.
//! The tests take one lock, so the counts of one are not disturbed by another.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::{poll_fn, Future};
use std::io::{Read, Write};
use std::pin::pin;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use shardloop::net::{TcpListener, TcpStream, UnixStream};
use shardloop::EventLoop;

/// Live heap bytes of the whole process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; the only extra
// work is an atomic add, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether valgrind runs this binary (it preloads its own libraries): valgrind
/// cannot follow io_uring, so CI runs these tests under memcheck on epoll only.
fn under_valgrind() -> bool {
    std::env::var("LD_PRELOAD").is_ok_and(|v| v.contains("vgpreload"))
}

/// Runs `test` on an epoll loop and, where the kernel allows io_uring (and not under
/// valgrind), on a proactor loop, each on its own thread (whose loop is the current
/// one there).
fn on_both_loops(test: fn(&EventLoop)) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for proactor in [false, true] {
        if proactor && under_valgrind() {
            eprintln!("proactor skipped: under valgrind");
            continue;
        }
        std::thread::spawn(move || {
            let lp = match EventLoop::builder().proactor(proactor).build() {
                Ok(lp) => lp,
                Err(e) => {
                    eprintln!("proactor skipped: io_uring is not available here: {e}");
                    return;
                }
            };
            shardloop::set_event_loop(Some(lp.clone()));
            test(&lp);
            lp.close().unwrap();
            shardloop::set_event_loop(None);
        })
        .join()
        .unwrap_or_else(|_| {
            panic!(
                "failed on the {} loop",
                if proactor { "proactor" } else { "epoll" }
            )
        });
    }
}

/// A plain-thread TCP peer: `serve` gets the one connection it accepts.
fn std_peer<T: Send + 'static>(
    serve: impl FnOnce(std::net::TcpStream) -> T + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || serve(listener.accept().unwrap().0));
    (addr, peer)
}

/// A byte stream whose every position is checkable: byte `i` is `i % 251`.
fn numbered(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| (i % 251) as u8).collect()
}

/// Polls `fut` `polls` times, with a turn of the loop between polls, then drops it.
async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let polled = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = polled {
            return Some(out);
        }
        shardloop::yield_now().await;
    }
    None
}

#[test]
fn read_owned_appends_into_spare_capacity_and_write_all_owned_sends_everything() {
    on_both_loops(|lp| {
        lp.run_until_complete(async {
            let (a, b) = UnixStream::pair().unwrap();
            // 4 MiB: far more than the socket buffer, so the send waits for the reader.
            let big = numbered(0, 4 << 20);
            let writer = shardloop::spawn(async move {
                let (sent, buf) = a.write_all_owned(big).await;
                sent.unwrap();
                buf
            });
            let mut got = Vec::with_capacity(16);
            got.extend_from_slice(b"kept");
            let mut total = Vec::new();
            loop {
                let (n, buf) = b.read_owned(got).await;
                let n = n.unwrap();
                assert!(buf.starts_with(b"kept"), "what the buffer held stays");
                total.extend_from_slice(&buf[4..]);
                got = buf;
                got.truncate(4);
                got.reserve(1 << 16);
                if total.len() == 4 << 20 {
                    break;
                }
                assert!(n > 0, "no end of stream before the writer finished");
            }
            let back = writer.await.unwrap();
            assert_eq!(back.len(), 4 << 20, "write_all_owned gives the buffer back");
            assert!(total == numbered(0, 4 << 20), "every byte once, in order");
            // A buffer with no spare capacity reads nothing, at once.
            let full = Vec::with_capacity(0);
            let (n, _) = b.read_owned(full).await;
            assert_eq!(n.unwrap(), 0);
        })
        .unwrap();
    });
}

#[test]
fn reads_dropped_at_random_points_lose_no_byte_and_free_no_buffer_early() {
    const ROUNDS: usize = 3000;
    on_both_loops(|lp| {
        lp.run_until_complete(async {
            let (a, mut b) = UnixStream::pair().unwrap();
            let mut rng = 0x9e37_79b9_u32;
            let mut next = move |n: u32| {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                (rng % n) as usize
            };
            // The writer on its own task: it never waits on the reader's turn.
            let writer = shardloop::spawn(async move {
                let mut sent = 0usize;
                for i in 0..ROUNDS {
                    let chunk = numbered(sent, 1 + (i * 7919) % 300);
                    sent += chunk.len();
                    b.write_all(&chunk).await.unwrap();
                    if i % 3 == 0 {
                        shardloop::yield_now().await;
                    }
                }
                b.close().await.unwrap();
                sent
            });
            let mut received = Vec::new();
            let mut sentinels: Vec<Vec<u8>> = Vec::new();
            for round in 0..ROUNDS {
                let buf = Vec::with_capacity(1 + next(512));
                match next(3) {
                    // An owned read, dropped after a few polls unless done by then.
                    0 => {
                        let polls = next(4);
                        if let Some((n, buf)) = poll_then_drop(a.read_owned(buf), polls).await {
                            assert_eq!(n.unwrap(), buf.len());
                            received.extend_from_slice(&buf);
                        }
                    }
                    // A plain read, dropped the same way.
                    1 => {
                        let mut plain = vec![0u8; 1 + next(512)];
                        let polls = next(4);
                        if let Some(n) = poll_then_drop((&a).read(&mut plain), polls).await {
                            received.extend_from_slice(&plain[..n.unwrap()]);
                        }
                    }
                    // Fresh allocations the size of the buffers the kernel was given:
                    // if it wrote into a freed one, a pattern here would change.
                    _ => sentinels.push(vec![round as u8; buf.capacity()]),
                }
            }
            // Then everything that is left, to the end of the stream.
            let mut rest = Vec::new();
            (&a).read_to_end(&mut rest).await.unwrap();
            received.extend_from_slice(&rest);
            let sent = writer.await.unwrap();
            assert_eq!(received.len(), sent, "every byte sent arrives once");
            assert!(received == numbered(0, sent), "in order, none changed");
            for (i, s) in sentinels.iter().enumerate() {
                assert!(
                    s.iter().all(|&x| x == s[0]),
                    "sentinel {i} was written into"
                );
            }
        })
        .unwrap();
    });
}

#[test]
fn buffers_in_flight_are_freed_when_streams_futures_and_loops_go() {
    // Warm up (thread-locals, the first loop's lazily made parts), then measure.
    let round = || {
        on_both_loops(|lp| {
            lp.run_until_complete(async {
                let (a, b) = UnixStream::pair().unwrap();
                // A read in flight whose future is dropped, then its stream dropped.
                assert!(poll_then_drop(a.read_owned(Vec::with_capacity(1 << 16)), 2)
                    .await
                    .is_none());
                drop(a);
                // A send that cannot finish (nobody reads), dropped mid-way.
                let (c, d) = UnixStream::pair().unwrap();
                let stuck = c.write_all_owned(vec![7u8; 8 << 20]);
                assert!(poll_then_drop(stuck, 3).await.is_none());
                // Sends of every size dropped at every point while the peer drains.
                let drain = shardloop::spawn(async move {
                    let mut sink = vec![0u8; 1 << 16];
                    while (&d).read(&mut sink).await.unwrap_or(0) > 0 {}
                });
                for i in 0..50usize {
                    let size = 1 + (i * 40_503) % (1 << 18);
                    let _ = poll_then_drop(c.write_all_owned(vec![i as u8; size]), i % 4).await;
                }
                drop(c);
                drain.await.unwrap();
                drop(b);
            })
            .unwrap();
        });
        // The loop closes with reads in flight: its teardown frees them.
        std::thread::spawn(|| {
            if under_valgrind() {
                return;
            }
            let Ok(lp) = EventLoop::builder().proactor(true).build() else {
                return;
            };
            shardloop::set_event_loop(Some(lp.clone()));
            let (a, b) = UnixStream::pair().unwrap();
            // The stream outlives its loop (it holds the loop weakly), so its receive
            // is still in the kernel when the ring goes.
            let a = std::rc::Rc::new(a);
            let a2 = a.clone();
            let reader = lp.create_task(async move {
                let mut buf = vec![0u8; 1 << 16];
                (&*a2).read(&mut buf).await
            });
            lp.run_until_complete(shardloop::time::sleep(Duration::from_millis(1)))
                .unwrap();
            drop(reader);
            lp.close().unwrap();
            shardloop::set_event_loop(None);
            drop(lp);
            drop(a);
            drop(b);
        })
        .join()
        .unwrap();
    };
    round();
    let before = LIVE.load(Ordering::SeqCst);
    for _ in 0..20 {
        round();
    }
    let after = LIVE.load(Ordering::SeqCst);
    // 20 rounds of 64 KiB reads, 8 MiB sends and 50 sends of up to 256 KiB: a leak
    // of any of them is far beyond this slack (thread-local caches of the test harness and the allocator).
    assert!(
        after - before < 64 * 1024,
        "heap grew by {} bytes over 20 rounds: buffers in flight were leaked",
        after - before
    );
}

#[test]
fn a_stream_dropped_with_a_read_in_flight_is_closed_at_once() {
    on_both_loops(|lp| {
        let (addr, peer) = std_peer(|mut s| {
            // A hang guard only: the end of stream is expected long before.
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = [0u8; 8];
            s.read(&mut buf).expect("the end of stream, not a timeout")
        });
        lp.run_until_complete(async {
            let s = TcpStream::connect(addr).await.unwrap();
            assert!(poll_then_drop((&s).read(&mut [0u8; 64]), 2).await.is_none());
            drop(s);
        })
        .unwrap();
        // The loop does not run again: the socket must be closed by the drop itself.
        assert_eq!(peer.join().unwrap(), 0);
    });
}

#[test]
fn two_tasks_reading_one_stream_both_get_woken() {
    on_both_loops(|lp| {
        lp.run_until_complete(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = std::rc::Rc::new(TcpStream::connect(addr).await.unwrap());
            let (mut server, _) = listener.accept().await.unwrap();
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let c = client.clone();
                    shardloop::spawn(async move {
                        let mut buf = [0u8; 1];
                        (&*c).read_exact(&mut buf).await.unwrap();
                        buf[0]
                    })
                })
                .collect();
            shardloop::yield_now().await;
            server.write_all(b"x").await.unwrap();
            shardloop::yield_now().await;
            server.write_all(b"y").await.unwrap();
            let mut got = Vec::new();
            for r in readers {
                got.push(r.await.unwrap());
            }
            got.sort();
            assert_eq!(got, b"xy");
        })
        .unwrap();
    });
}

#[test]
fn a_peer_that_resets_mid_transfer_is_a_clear_error_and_the_buffers_come_back() {
    on_both_loops(|lp| {
        let (addr, peer) = std_peer(|mut s| {
            let mut some = [0u8; 1024];
            s.read_exact(&mut some).unwrap();
            // SO_LINGER 0: the close sends a reset, not a FIN.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt reads `linger`, a live value of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
        });
        lp.run_until_complete(async {
            let s = TcpStream::connect(addr).await.unwrap();
            // 64 MiB: the peer resets long before it is all out.
            let (sent, buf) = s.write_all_owned(vec![1u8; 64 << 20]).await;
            let e = sent.expect_err("the peer reset the connection");
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "{e}"
            );
            assert_eq!(buf.len(), 64 << 20, "the buffer comes back whole");
            let (read, back) = s.read_owned(Vec::with_capacity(64)).await;
            match read {
                Ok(0) => {}
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
                Ok(n) => panic!("read {n} bytes from a reset connection"),
            }
            assert_eq!(back.capacity(), 64);
        })
        .unwrap();
        peer.join().unwrap();
    });
}

#[test]
fn a_stream_moved_to_another_loop_after_a_read_keeps_every_later_byte() {
    on_both_loops(|lp| {
        let (addr, peer) = std_peer(|mut s| {
            s.write_all(b"first").unwrap();
            // The answer to "first" says the stream has moved: what comes now must
            // reach the new loop.
            let mut ack = [0u8; 2];
            s.read_exact(&mut ack).unwrap();
            s.write_all(b"second").unwrap();
        });
        let std = lp
            .run_until_complete(async {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let mut first = [0u8; 5];
                s.read_exact(&mut first).await.unwrap();
                assert_eq!(&first, b"first");
                s.into_std()
            })
            .unwrap();
        let moved = std::thread::spawn(move || {
            shardloop::run(async move {
                let mut s = TcpStream::from_std(std).unwrap();
                s.write_all(b"ok").await.unwrap();
                let mut second = Vec::new();
                s.read_to_end(&mut second).await.unwrap();
                second
            })
            .unwrap()
        });
        assert_eq!(moved.join().unwrap(), b"second");
        peer.join().unwrap();
    });
}
