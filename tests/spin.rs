//! Loops that spin before parking (`spin_before_park`): mail from other threads ends
//! the spin, a timer's deadline bounds it, and shards keep exact results.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use shardloop::{EventLoop, Runtime};

/// A window so long that a spin which ignored a deadline or mail would hang the test.
const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_timer_deadline_bounds_the_spin() {
    let lp = EventLoop::builder().spin_before_park(HOUR).build().unwrap();
    let fired_at = Rc::new(Cell::new(None));
    let deadline = lp.time() + Duration::from_millis(5);
    let (seen, stopper) = (fired_at.clone(), lp.clone());
    lp.call_at(deadline, move || {
        seen.set(Some(Instant::now()));
        stopper.stop();
    })
    .unwrap();
    // Mail sent before the loop runs goes through the inbox; after running it, the
    // idle loop spins until the timer's deadline ends the spin.
    lp.handle().call_soon_threadsafe(|| ()).unwrap();
    lp.run_forever().unwrap();
    assert!(fired_at.get().unwrap() >= deadline, "never early");
}

#[test]
fn mail_from_other_threads_ends_the_spin() {
    let lp = EventLoop::builder().spin_before_park(HOUR).build().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let handle = lp.handle();
    let c = count.clone();
    let sender = thread::spawn(move || {
        for _ in 0..1000 {
            let c = c.clone();
            handle
                .call_soon_threadsafe(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
        }
        handle.stop();
    });
    lp.run_forever().unwrap();
    sender.join().unwrap();
    // The stop came after every call, from the same thread: all of them ran.
    assert_eq!(count.load(Ordering::Relaxed), 1000);
}

#[test]
fn spinning_shards_answer_every_round_trip() {
    let rt = Runtime::builder()
        .shards(2)
        .spin_before_park(Duration::from_millis(1))
        .build()
        .unwrap();
    let to = rt.shard(1).clone();
    let sum = rt
        .submit_to(0, move || async move {
            let mut sum = 0u64;
            for i in 0..2000u64 {
                sum += to.submit(move || async move { i }).await.unwrap();
            }
            sum
        })
        .wait()
        .unwrap();
    assert_eq!(sum, 2000 * 1999 / 2);
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn a_stream_of_mail_does_not_starve_io() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicBool;

    // Mail keeps coming, so the loop hardly ever parks: whatever ends its spins (the
    // mail, or the spin's own polls), the socket must still be seen.
    let lp = EventLoop::builder().spin_before_park(HOUR).build().unwrap();
    let (readable, mut writer) = UnixStream::pair().unwrap();
    let seen = Arc::new(AtomicBool::new(false));
    let (s, stopper) = (seen.clone(), lp.clone());
    lp.add_reader(readable.as_raw_fd(), move || {
        s.store(true, Ordering::Release);
        stopper.stop();
    })
    .unwrap();
    let handle = lp.handle();
    let s = seen.clone();
    let ran = Arc::new(AtomicUsize::new(0));
    let flood = thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0;
        while !s.load(Ordering::Acquire) {
            let r = ran.clone();
            handle
                .call_soon_threadsafe(move || {
                    r.fetch_add(1, Ordering::Release);
                })
                .unwrap();
            sent += 1;
            // One at a time, after a pause: each arrives while the loop, idle, spins.
            while ran.load(Ordering::Acquire) < sent && !s.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            thread::sleep(Duration::from_micros(20));
            if sent == 1000 {
                // The loop is well into its stream of mail-ended spins by now.
                writer.write_all(b"x").unwrap();
            }
            // A hang guard, not a timing check: starved, the reader never runs.
            if started.elapsed() > Duration::from_secs(30) {
                handle.stop();
                return false;
            }
        }
        true
    });
    lp.run_forever().unwrap();
    assert!(
        flood.join().unwrap(),
        "the reader never ran while mail kept coming"
    );
    assert!(seen.load(Ordering::Acquire));
}

#[test]
fn io_readiness_ends_the_spin() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    // No mail comes; the spin's own non-blocking polls see the socket. Were the spin
    // to watch only the inbox, the reader would wait out its hour.
    let lp = EventLoop::builder().spin_before_park(HOUR).build().unwrap();
    let (readable, mut writer) = UnixStream::pair().unwrap();
    let stopper = lp.clone();
    lp.add_reader(readable.as_raw_fd(), move || stopper.stop())
        .unwrap();
    let late_writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        writer.write_all(b"x").unwrap();
        writer
    });
    lp.run_forever().unwrap();
    drop(late_writer.join().unwrap());
}

#[test]
fn spinning_loops_serve_tcp() {
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    use shardloop::net::{TcpListener, TcpStream};

    // An echo server and its client on one spinning loop: every byte comes back.
    let lp = EventLoop::builder()
        .spin_before_park(Duration::from_millis(1))
        .build()
        .unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    let echoed = lp
        .run_until_complete(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = shardloop::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    s.write_all(&buf[..n]).await.unwrap();
                }
            });
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut total = Vec::new();
            for i in 0..200u32 {
                let msg = i.to_le_bytes();
                c.write_all(&msg).await.unwrap();
                let mut back = [0u8; 4];
                c.read_exact(&mut back).await.unwrap();
                total.extend_from_slice(&back);
            }
            drop(c);
            server.await.unwrap();
            total
        })
        .unwrap();
    shardloop::set_event_loop(None);
    let expected: Vec<u8> = (0..200u32).flat_map(|i| i.to_le_bytes()).collect();
    assert_eq!(echoed, expected);
}
