//! The proactor loop (API.md section 8): `EventLoop::builder().proactor(true)`, the
//! loop waiting on an io_uring. What is the same on both loops is tested by running
//! the whole suite again with `SHARDLOOP_PROACTOR=1` (CI does); these tests check
//! what only the proactor has: that it is one, that it parks and wakes on the ring
//! (timers, the doorbell, sockets), that `add_reader` stays level-triggered and that
//! a socket dropped on it is closed at once, and that listeners accepting through
//! the ring hold a bounded number of connections ahead and close them when dropped.
//!
//! Each test first probes for io_uring and says so where the kernel refuses it.

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use shardloop::net::{TcpListener, TcpStream};
use shardloop::EventLoop;

/// A proactor loop, or `None` (with the reason printed) where io_uring is refused.
fn proactor() -> Option<EventLoop> {
    match EventLoop::builder().proactor(true).build() {
        Ok(lp) => Some(lp),
        Err(e) => {
            eprintln!("skipped: io_uring is not available here: {e}");
            None
        }
    }
}

#[test]
fn a_proactor_loop_says_so_and_a_selector_loop_does_not() {
    let Some(lp) = proactor() else { return };
    assert!(lp.is_proactor());
    let selector = EventLoop::builder().proactor(false).build().unwrap();
    assert!(!selector.is_proactor());
    assert_eq!(lp.run_until_complete(async { 6 * 7 }).unwrap(), 42);
}

#[test]
fn timers_fire_on_time_through_the_ring_wait() {
    let Some(lp) = proactor() else { return };
    lp.run_until_complete(async {
        for ms in [1u64, 3, 7] {
            let start = Instant::now();
            shardloop::time::sleep(Duration::from_millis(ms)).await;
            assert!(start.elapsed() >= Duration::from_millis(ms), "never early");
        }
    })
    .unwrap();
    // A call_later with nothing else to do: the loop parks in the ring until then.
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let stopper = lp.clone();
    lp.call_later(Duration::from_millis(5), move || {
        f.set(true);
        stopper.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert!(fired.get());
}

#[test]
fn another_thread_wakes_a_parked_proactor_loop() {
    let Some(lp) = proactor() else { return };
    let handle = lp.handle();
    let sender = std::thread::spawn(move || {
        let mut sum = 0;
        for i in 0..200u64 {
            // Each submit waits for its answer: the loop parks in between, and the
            // doorbell (an eventfd polled through the ring) must wake it every time.
            sum += handle.submit(move || async move { i }).wait().unwrap();
        }
        handle.stop();
        sum
    });
    lp.run_forever().unwrap();
    assert_eq!(sender.join().unwrap(), (0..200).sum::<u64>());
}

#[test]
fn tcp_echo_on_a_proactor_loop() {
    let Some(lp) = proactor() else { return };
    lp.run_until_complete(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = shardloop::spawn(async move {
            let (mut conn, _) = listener.accept().await?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    return std::io::Result::Ok(());
                }
                conn.write_all(&buf[..n]).await?;
            }
        });
        let client = TcpStream::connect(addr).await?;
        // More than a socket buffer holds: the write side waits for writability too.
        let data: Vec<u8> = (0..(4 << 20)).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = client.split();
        let writer = shardloop::spawn(async move {
            w.write_all(&data).await?;
            w.close().await?;
            std::io::Result::Ok(data)
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await?;
        let data = writer.await.unwrap()?;
        assert!(back == data, "the echo differs");
        server.await.unwrap()?;
        std::io::Result::Ok(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn add_reader_is_level_triggered_on_the_ring() {
    let Some(lp) = proactor() else { return };
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
    rx.set_nonblocking(true).unwrap();
    tx.write_all(b"x").unwrap();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let stopper = lp.clone();
    let fd = rx.as_raw_fd();
    lp.add_reader(fd, move || {
        // Never reads: the byte stays, so the fd stays ready and the callback
        // comes again on every iteration, as asyncio's selector loop does.
        c.set(c.get() + 1);
        if c.get() == 5 {
            stopper.stop();
        }
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(calls.get(), 5);
    assert!(lp.remove_reader(fd));
    drop(rx);
}

#[test]
fn a_socket_dropped_on_a_proactor_loop_is_closed_at_once() {
    let Some(lp) = proactor() else { return };
    shardloop::set_event_loop(Some(lp.clone()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let stream = TcpStream::from_std(accepted).unwrap();
    // Registered, so the ring holds the file; dropped with the loop not running.
    drop(stream);
    peer.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        peer.read(&mut buf).unwrap(),
        0,
        "the peer sees the end at once"
    );
    shardloop::set_event_loop(None);
}

#[test]
fn a_proactor_runtime_runs_its_shards_on_rings() {
    if proactor().is_none() {
        return;
    }
    let rt = shardloop::Runtime::builder()
        .shards(2)
        .proactor(true)
        .build()
        .unwrap();
    let flags: Vec<bool> = rt
        .broadcast(|_| async { shardloop::get_running_loop().unwrap().is_proactor() })
        .into_iter()
        .map(|r| r.wait().unwrap())
        .collect();
    assert_eq!(flags, [true, true]);
    rt.shutdown(Duration::from_secs(5)).unwrap();
}

/// A ring of 4 entries under 64 connections: the submission queue fills on every
/// turn and is submitted and refilled, and the completion queue (8 entries)
/// overflows into the kernel's list, from which every completion still arrives.
#[test]
fn a_tiny_ring_serves_64_connections() {
    const CONNS: usize = 64;
    const ROUNDS: usize = 20;
    let lp = match EventLoop::builder().proactor(true).ring_entries(4).build() {
        Ok(lp) => lp,
        Err(e) => {
            eprintln!("skipped: io_uring is not available here: {e}");
            return;
        }
    };
    shardloop::set_event_loop(Some(lp.clone()));
    lp.run_until_complete(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = shardloop::spawn(async move {
            let mut conns = Vec::new();
            for _ in 0..CONNS {
                let (mut conn, _) = listener.accept().await.unwrap();
                conns.push(shardloop::spawn(async move {
                    let mut buf = [0u8; 256];
                    loop {
                        match conn.read(&mut buf).await.unwrap() {
                            0 => break,
                            n => conn.write_all(&buf[..n]).await.unwrap(),
                        }
                    }
                }));
            }
            for c in conns {
                c.await.unwrap();
            }
        });
        let clients: Vec<_> = (0..CONNS)
            .map(|i| {
                shardloop::spawn(async move {
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    for r in 0..ROUNDS {
                        let msg = format!("conn {i} round {r}");
                        s.write_all(msg.as_bytes()).await.unwrap();
                        let mut back = vec![0u8; msg.len()];
                        s.read_exact(&mut back).await.unwrap();
                        assert_eq!(back, msg.as_bytes());
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        server.await.unwrap();
    })
    .unwrap();
    lp.close().unwrap();
    shardloop::set_event_loop(None);
}

#[test]
fn ring_entries_out_of_range_fail_the_build_with_a_clear_error() {
    for entries in [0, 1 << 20] {
        let err = EventLoop::builder()
            .proactor(true)
            .ring_entries(entries)
            .build()
            .expect_err("out of range");
        assert!(
            err.to_string().contains("ring_entries must be 1 to 32768"),
            "{err}"
        );
    }
    // An epoll loop has no ring: the setting does not matter there.
    let lp = EventLoop::builder()
        .proactor(false)
        .ring_entries(0)
        .build()
        .unwrap();
    assert!(!lp.is_proactor());
}

/// Reads from `client` until its server's end shows: end of stream, or a reset.
fn assert_sees_the_end(client: &mut std::net::TcpStream) {
    let mut buf = [0u8; 1];
    loop {
        match client.read(&mut buf) {
            Ok(n) => return assert_eq!(n, 0, "the client sees the end"),
            // The ring's task work can interrupt a blocking read on this thread.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
}

/// Whether this kernel accepts through the ring (multishot accepts: Linux 5.19);
/// the proactor accepts by readiness on older ones.
fn ring_accepts() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < (5, 19) {
        eprintln!(
            "skipped: this kernel ({}) has no multishot accept",
            release.trim()
        );
    }
    version >= (5, 19)
}

/// How many connections wait in the accept backlog of the TCP listener on `port`
/// (for a listening socket, the `rx_queue` column of `/proc/net/tcp`).
fn backlog(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let listening = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[1].ends_with(&format!(":{port:04X}")) && f[3] == "0A")
        .expect("the listener is in /proc/net/tcp");
    let rx_queue = listening[4].split(':').nth(1).unwrap();
    usize::from_str_radix(rx_queue, 16).unwrap()
}

/// The ring accepts ahead of the listener's `accept` calls, into a queue: that queue
/// is bounded, so a listener nobody accepts from does not turn its whole stream of
/// connections into descriptors; the rest wait in the kernel's backlog, and every
/// connection is still served once the listener accepts again.
#[test]
fn a_listener_that_is_not_accepting_holds_a_bounded_number_of_connections() {
    // More than the queue holds, fewer than it and the listen backlog (128) do.
    const CLIENTS: usize = 160;
    // The ring's queue bound (src/io/accepts.rs), and room for what the kernel
    // accepts before it sees the cancel.
    const HELD_AT_MOST: usize = 64 + 4;
    let Some(lp) = proactor().filter(|_| ring_accepts()) else {
        return;
    };
    shardloop::set_event_loop(Some(lp.clone()));
    let served = lp
        .run_until_complete(async {
            let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
            let addr = listener.local_addr().unwrap();
            let mut clients = vec![std::net::TcpStream::connect(addr).unwrap()];
            // The first accept starts the ring's accepting.
            let (first, _) = listener.accept().await.unwrap();
            // The listener is not accepting now: connect the rest one at a time,
            // the loop parking on its ring (and reaping what the kernel accepted)
            // after each.
            for _ in 1..CLIENTS {
                clients.push(std::net::TcpStream::connect(addr).unwrap());
                shardloop::time::sleep(Duration::from_millis(1)).await;
            }
            // What the kernel did not accept waits in the backlog.
            let held = CLIENTS - 1 - backlog(addr.port());
            assert!(
                held <= HELD_AT_MOST,
                "{held} connections accepted ahead with nobody accepting"
            );
            // Every connection is served in the end, in order, none lost.
            let mut accepted = vec![first];
            while accepted.len() < CLIENTS {
                accepted.push(listener.accept().await.unwrap().0);
            }
            for (client, conn) in clients.iter().zip(&accepted) {
                assert_eq!(client.local_addr().unwrap(), conn.peer_addr().unwrap());
            }
            accepted.len()
        })
        .unwrap();
    assert_eq!(served, CLIENTS);
    shardloop::set_event_loop(None);
}

/// Connections the ring accepted that the listener never took are closed with it
/// (their clients see the end: one left open would keep its client waiting), and the ring lets go of the listening socket when it
/// is dropped, so its port can be bound again at once.
#[test]
fn dropping_a_listener_closes_what_the_ring_accepted_and_frees_its_port() {
    const CLIENTS: usize = 10;
    let Some(lp) = proactor().filter(|_| ring_accepts()) else {
        return;
    };
    shardloop::set_event_loop(Some(lp.clone()));
    let (addr, mut clients) = lp
        .run_until_complete(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let clients: Vec<_> = (0..CLIENTS)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            // One accept starts the ring's accepting; the kernel takes the other
            // nine from the backlog into the queue.
            drop(listener.accept().await.unwrap());
            shardloop::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(backlog(addr.port()), 0, "the ring accepted them all");
            (addr, clients)
        })
        .unwrap();
    for client in &mut clients {
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_sees_the_end(client);
    }
    lp.run_until_complete(async move {
        let again = TcpListener::bind(addr).expect("the port is free again");
        assert_eq!(again.local_addr().unwrap(), addr);
    })
    .unwrap();
    shardloop::set_event_loop(None);
}

/// A listener that outlives its loop: the connections the ring accepted for it that
/// the loop never read (they came after its last turn) are closed when the loop
/// goes, so their clients see the end instead of waiting forever.
#[test]
fn connections_accepted_after_the_last_turn_are_closed_with_the_loop() {
    let Some(lp) = proactor().filter(|_| ring_accepts()) else {
        return;
    };
    shardloop::set_event_loop(Some(lp.clone()));
    let (listener, addr) = lp
        .run_until_complete(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let _first = std::net::TcpStream::connect(addr).unwrap();
            // Starts the ring's accepting.
            drop(listener.accept().await.unwrap());
            (listener, addr)
        })
        .unwrap();
    // The loop is not running: the kernel accepts these, and nobody reads that.
    let mut late: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    shardloop::set_event_loop(None);
    drop(lp);
    for client in &mut late {
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_sees_the_end(client);
    }
    drop(listener);
}

/// Echoes what it receives.
struct Echo(Option<shardloop::Transport>);

impl shardloop::Protocol for Echo {
    fn connection_made(&mut self, t: shardloop::Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            t.write(data);
        }
    }
}

/// A protocol server on the proactor accepts through the ring: more clients than
/// one turn accepts are all served, by TCP and by Unix socket, and closing the
/// server closes the listening socket at once (refused, and the port free again).
#[test]
fn a_protocol_server_accepts_through_the_ring_and_closes_at_once() {
    // More than a turn's accepts (100): the accept task yields and goes on.
    const CLIENTS: usize = 150;
    let Some(lp) = proactor().filter(|_| ring_accepts()) else {
        return;
    };
    shardloop::set_event_loop(Some(lp.clone()));
    let dir = std::env::temp_dir().join(format!("shardloop-ring-proto-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let l = lp.clone();
    let unix_path = dir.clone();
    lp.run_until_complete(async move {
        let server = l.create_server(|| Echo(None), "127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        // The clients run on a thread: they connect all at once, then each sends.
        let clients = std::thread::spawn(move || {
            let mut socks: Vec<_> = (0..CLIENTS)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            for (i, s) in socks.iter_mut().enumerate() {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let msg = format!("hello {i}");
                s.write_all(msg.as_bytes()).unwrap();
                let mut got = vec![0u8; msg.len()];
                s.read_exact(&mut got).unwrap();
                assert_eq!(got, msg.as_bytes());
            }
        });
        while !clients.is_finished() {
            shardloop::time::sleep(Duration::from_millis(2)).await;
        }
        clients.join().unwrap();
        server.close();
        assert!(!server.is_serving());
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "refused once closed"
        );
        drop(TcpListener::bind(addr).expect("the port is free at once"));

        let unix = l
            .create_unix_server(|| Echo(None), &unix_path)
            .await
            .unwrap();
        let mut c = std::os::unix::net::UnixStream::connect(&unix_path).unwrap();
        let echo = std::thread::spawn(move || {
            c.write_all(b"over unix").unwrap();
            let mut got = [0u8; 9];
            c.read_exact(&mut got).unwrap();
            got
        });
        while !echo.is_finished() {
            shardloop::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(&echo.join().unwrap(), b"over unix");
        unix.close();
        assert!(std::os::unix::net::UnixStream::connect(&unix_path).is_err());
    })
    .unwrap();
    let _ = std::fs::remove_file(&dir);
    shardloop::set_event_loop(None);
}

/// A ring-accepting protocol server whose loop closes is closed with it (as a
/// readiness one is): it says it no longer serves, its port is free, and a
/// connection the kernel accepted after the loop's last turn (nobody took it from
/// the ring) is closed, so its client sees the end.
#[test]
fn a_ring_accepting_protocol_server_closes_with_its_loop() {
    let Some(lp) = proactor().filter(|_| ring_accepts()) else {
        return;
    };
    shardloop::set_event_loop(Some(lp.clone()));
    let l = lp.clone();
    let server = lp
        .run_until_complete(async move {
            let server = l.create_server(|| Echo(None), "127.0.0.1:0").await?;
            // One echo: the accept task runs, and the ring's accept is live.
            let mut c = TcpStream::connect(server.local_addr()?).await?;
            c.write_all(b"ping").await?;
            let mut got = [0u8; 4];
            c.read_exact(&mut got).await?;
            assert_eq!(&got, b"ping");
            Ok::<_, std::io::Error>(server)
        })
        .unwrap()
        .unwrap();
    let addr = server.local_addr().unwrap();
    assert!(server.is_serving());
    // The loop is not running: the kernel accepts this one into the ring.
    let mut late = std::net::TcpStream::connect(addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    shardloop::set_event_loop(None);
    lp.close().unwrap();
    assert!(!server.is_serving(), "closed with its loop");
    assert_sees_the_end(&mut late);
    drop(std::net::TcpListener::bind(addr).expect("the port is free"));
}
