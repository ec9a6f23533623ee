//! Sockets on the loop (API.md section 4): TCP echo with many connections and with
//! large and small writes, half-close, split halves, SO_REUSEPORT, UDP round trips,
//! Unix sockets, errors (refused, reset mid-write, no loop, closed loop), several
//! tasks waiting on one socket, and accept running out of file descriptors.
//!
//! Every test body runs under `block_on`, which stops the loop and fails the test
//! (instead of hanging the suite) if the body has not finished after HANG_LIMIT. No
//! test asserts how long anything takes.

use std::cell::Cell;
use std::io::{self, Read};
use std::net::Shutdown;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use shardloop::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use shardloop::spawn;

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/emfile.rs"]
mod emfile;
use bounded::{block_on, run_bounded, HANG_LIMIT};

/// Bytes that differ per connection and per position, so that data from the wrong
/// connection or out of order is caught.
fn pattern(seed: usize, len: usize) -> Vec<u8> {
    let mut x = (seed as u32).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Accepts `n` connections and echoes each until its client half-closes.
async fn echo_server(listener: TcpListener, n: usize) -> io::Result<()> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let (conn, _) = listener.accept().await?;
        conns.push(spawn(async move {
            let (mut rd, mut wr) = conn.split();
            futures_util::io::copy(&mut rd, &mut wr).await
        }));
    }
    for c in conns {
        c.await.expect("echo task")?;
    }
    Ok(())
}

#[test]
fn tcp_echo_many_connections_small_and_large_writes() {
    const CONNS: usize = 32;
    const LARGE: usize = 1 << 20;
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = spawn(echo_server(listener, CONNS));
        let mut clients = Vec::new();
        for i in 0..CONNS {
            clients.push(spawn(async move {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                assert!(stream.nodelay()?);
                let (mut rd, mut wr) = stream.split();
                // Small writes of every size from 1 to 64 bytes, then one of 1 MiB.
                let small: Vec<Vec<u8>> = (1..=64).map(|n| pattern(i * 1000 + n, n)).collect();
                let large = pattern(i, LARGE);
                let mut expected: Vec<u8> = small.concat();
                expected.extend_from_slice(&large);
                // Writing and reading at once: the echo of 1 MiB does not fit in the
                // socket buffers, so a client that wrote everything first would stall.
                let writer = spawn(async move {
                    for chunk in &small {
                        wr.write_all(chunk).await?;
                    }
                    wr.write_all(&large).await?;
                    wr.close().await
                });
                let mut got = Vec::with_capacity(expected.len());
                rd.read_to_end(&mut got).await?;
                writer.await.expect("writer task")?;
                assert_eq!(got.len(), expected.len(), "connection {i}: length");
                assert!(got == expected, "connection {i}: echoed bytes differ");
                io::Result::Ok(())
            }));
        }
        for c in clients {
            c.await.expect("client task")?;
        }
        server.await.expect("server task")
    })
    .unwrap();
}

#[test]
fn tcp_half_close_server_reads_eof_and_still_writes_back() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = spawn(async move {
            let (mut conn, _) = listener.accept().await?;
            let mut request = Vec::new();
            conn.read_to_end(&mut request).await?; // ends only at the client's FIN
            let reply = format!("got {} bytes", request.len());
            conn.write_all(reply.as_bytes()).await?;
            conn.shutdown(Shutdown::Write)?;
            io::Result::Ok(request)
        });
        let mut client = TcpStream::connect(addr).await?;
        client.write_all(&pattern(7, 10_000)).await?;
        client.shutdown(Shutdown::Write)?;
        let mut reply = String::new();
        client.read_to_string(&mut reply).await?;
        assert_eq!(reply, "got 10000 bytes");
        assert_eq!(server.await.expect("server task")?, pattern(7, 10_000));
        // Writing after our own half-close is refused, not lost silently.
        let err = client.write_all(b"late").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn split_halves_reunite_and_report_addresses() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let a = TcpStream::connect(addr).await?;
        let (_conn_a, peer) = listener.accept().await?;
        assert_eq!(peer, a.local_addr()?);
        let b = TcpStream::connect(addr).await?;
        let (_conn_b, _) = listener.accept().await?;
        let local = a.local_addr()?;
        let (ra, wa) = a.split();
        let (rb, wb) = b.split();
        assert_eq!(ra.local_addr()?, local);
        assert_eq!(wa.peer_addr()?, addr);
        let err = ra.reunite(wb).unwrap_err();
        let (ra, wb) = (err.0, err.1);
        let a = ra.reunite(wa).expect("halves of one stream");
        let b = rb.reunite(wb).expect("halves of one stream");
        assert_eq!(a.local_addr()?, local);
        assert_ne!(b.local_addr()?, local);
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn two_tasks_can_accept_on_one_listener() {
    block_on(async {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0")?);
        let addr = listener.local_addr()?;
        // Both tasks wait before any client connects: neither wakeup may be lost.
        let acceptors: Vec<_> = (0..2)
            .map(|_| {
                let l = listener.clone();
                spawn(async move { l.accept().await.map(|(s, _)| s) })
            })
            .collect();
        shardloop::time::sleep(Duration::from_millis(1)).await;
        let _c1 = TcpStream::connect(addr).await?;
        let _c2 = TcpStream::connect(addr).await?;
        for a in acceptors {
            a.await.expect("acceptor")?;
        }
        io::Result::Ok(())
    })
    .unwrap();
}

/// Echoes one byte per connection, forever (the test cancels it).
async fn serve_bytes(listener: TcpListener, served: Rc<Cell<usize>>) -> io::Result<()> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).await?;
        conn.write_all(&b).await?;
        served.set(served.get() + 1);
    }
}

#[test]
fn reuseport_listeners_share_one_port_and_both_serve() {
    const CLIENTS: usize = 16;
    block_on(async {
        let first = TcpListener::bind_reuseport("127.0.0.1:0")?;
        let addr = first.local_addr()?;
        let second = TcpListener::bind_reuseport(addr)?;
        assert_eq!(second.local_addr()?, addr);
        // A plain bind of the same port is refused: the port really is taken.
        assert!(TcpListener::bind(addr).is_err());
        let served = Rc::new(Cell::new(0usize));
        let mut servers = Vec::new();
        for l in [first, second] {
            servers.push(spawn(serve_bytes(l, served.clone())));
        }
        for i in 0..CLIENTS {
            let mut c = TcpStream::connect(addr).await?;
            c.write_all(&[i as u8]).await?;
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await?;
            assert_eq!(b[0], i as u8);
        }
        assert_eq!(served.get(), CLIENTS);
        for s in servers {
            s.cancel();
        }
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    block_on(async {
        // A socket bound but not listening holds the port, so that no other test can
        // take it in the meantime, and refuses connections.
        let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        holder.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )?;
        let addr = holder.local_addr()?.as_socket().unwrap();
        let err = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn peer_dropping_the_connection_mid_write_gives_an_error() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = spawn(async move {
            let (mut conn, _) = listener.accept().await?;
            let mut some = [0u8; 1000];
            conn.read_exact(&mut some).await?;
            // Dropped with unread data: the kernel answers the client with a reset.
            drop(conn);
            io::Result::Ok(())
        });
        let client = TcpStream::connect(addr).await?;
        let chunk = vec![0xAB; 64 * 1024];
        let mut written = 0usize;
        let err = loop {
            match (&client).write(&chunk).await {
                Ok(n) => written += n,
                Err(e) => break e,
            }
            // Far more than any socket buffer: the reset must have come by then.
            assert!(
                written < 1 << 30,
                "writes kept succeeding after the peer left"
            );
        };
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "unexpected error: {err:?}"
        );
        server.await.expect("server task")?;
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn udp_send_to_and_recv_from_round_trips() {
    block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0")?;
        let b = UdpSocket::bind("127.0.0.1:0")?;
        let (a_addr, b_addr) = (a.local_addr()?, b.local_addr()?);
        let echo = spawn(async move {
            let mut buf = [0u8; 2048];
            for _ in 0..100 {
                let (n, from) = b.recv_from(&mut buf).await?;
                b.send_to(&buf[..n], from).await?;
            }
            io::Result::Ok(())
        });
        let mut buf = [0u8; 2048];
        for i in 0..100usize {
            let msg = pattern(i, 1 + i * 13);
            assert_eq!(a.send_to(&msg, b_addr).await?, msg.len());
            let (n, from) = a.recv_from(&mut buf).await?;
            assert_eq!(from, b_addr);
            assert_eq!(&buf[..n], &msg[..]);
        }
        echo.await.expect("echo task")?;
        assert_eq!(a.local_addr()?, a_addr);
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn udp_connect_send_recv_and_filtering() {
    block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0")?;
        let b = UdpSocket::bind("127.0.0.1:0")?;
        let stranger = UdpSocket::bind("127.0.0.1:0")?;
        a.connect(b.local_addr()?).await?;
        b.connect(a.local_addr()?).await?;
        assert_eq!(a.peer_addr()?, b.local_addr()?);
        // A connected socket takes datagrams from its peer only.
        stranger.send_to(b"noise", b.local_addr()?).await?;
        a.send(b"hello").await?;
        let mut buf = [0u8; 64];
        let n = b.recv(&mut buf).await?;
        assert_eq!(&buf[..n], b"hello");
        b.send(b"world").await?;
        let n = a.recv(&mut buf).await?;
        assert_eq!(&buf[..n], b"world");
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn several_tasks_receiving_on_one_udp_socket_all_get_a_datagram() {
    const WAITERS: usize = 4;
    block_on(async {
        let rx = Rc::new(UdpSocket::bind("127.0.0.1:0")?);
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let rx = rx.clone();
                spawn(async move {
                    let mut buf = [0u8; 8];
                    let (n, _) = rx.recv_from(&mut buf).await?;
                    io::Result::Ok(buf[0..n].to_vec())
                })
            })
            .collect();
        // Every waiter is parked on the socket before the first datagram arrives.
        shardloop::time::sleep(Duration::from_millis(1)).await;
        for i in 0..WAITERS {
            tx.send_to(&[i as u8], rx.local_addr()?).await?;
        }
        let mut got = Vec::new();
        for w in waiters {
            got.extend(w.await.expect("waiter")?);
        }
        got.sort();
        assert_eq!(got, (0..WAITERS as u8).collect::<Vec<_>>());
        io::Result::Ok(())
    })
    .unwrap();
}

/// A receive given up before its datagram came loses nothing: the datagram goes to
/// the next receive (on a proactor loop the kernel's receive outlives the future).
/// A datagram longer than the buffer is cut to it, and the next one comes whole.
#[test]
fn udp_datagrams_survive_a_dropped_receive_and_long_ones_are_cut() {
    block_on(async {
        let rx = UdpSocket::bind("127.0.0.1:0")?;
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        let mut buf = [0u8; 16];
        let gave_up =
            shardloop::time::timeout(Duration::from_millis(5), rx.recv_from(&mut buf)).await;
        assert!(gave_up.is_err(), "nothing was sent yet");
        tx.send_to(b"first", rx.local_addr()?).await?;
        let (n, from) = rx.recv_from(&mut buf).await?;
        assert_eq!((&buf[..n], from), (&b"first"[..], tx.local_addr()?));

        // A long datagram for a receive already waiting (on the proactor, the ring's
        // receive takes it), then one queued behind another (taken at once).
        let long = pattern(7, 60_000);
        let rx = Rc::new(rx);
        let waiting = {
            let rx = rx.clone();
            spawn(async move {
                let mut buf = [0u8; 16];
                let (n, _) = rx.recv_from(&mut buf).await?;
                io::Result::Ok(buf[..n].to_vec())
            })
        };
        shardloop::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(tx.send_to(&long, rx.local_addr()?).await?, long.len());
        tx.send_to(b"after", rx.local_addr()?).await?;
        assert_eq!(
            waiting.await.expect("receiver")?,
            &long[..16],
            "cut to the buffer"
        );
        let (n, _) = rx.recv_from(&mut buf).await?;
        assert_eq!(&buf[..n], b"after", "the next datagram comes whole");
        tx.send_to(&long, rx.local_addr()?).await?;
        tx.send_to(b"after", rx.local_addr()?).await?;
        let (n, _) = rx.recv_from(&mut buf).await?;
        assert_eq!(&buf[..n], &long[..16], "cut to the buffer");
        let (n, _) = rx.recv_from(&mut buf).await?;
        assert_eq!(&buf[..n], b"after", "the next datagram comes whole");

        let mut big = vec![0u8; 65_536];
        tx.send_to(&long, rx.local_addr()?).await?;
        let (n, _) = rx.recv_from(&mut big).await?;
        assert_eq!(&big[..n], &long[..]);
        io::Result::Ok(())
    })
    .unwrap();
}

/// A connected socket whose peer has no socket hears so (the ICMP reply) as
/// `ConnectionRefused` from its receive; and a socket dropped while receiving lets go
/// of its port at once.
#[test]
fn udp_refused_peers_are_reported_and_a_dropped_socket_frees_its_port() {
    block_on(async {
        let gone = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let a = UdpSocket::bind("127.0.0.1:0")?;
        a.connect(gone).await?;
        a.send(b"anyone?").await?;
        let mut buf = [0u8; 16];
        let refused = a.recv(&mut buf).await.expect_err("nobody is there");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        let addr = a.local_addr()?;
        let receiving = spawn(async move {
            let mut buf = [0u8; 16];
            let _ = a.recv(&mut buf).await;
        });
        shardloop::time::sleep(Duration::from_millis(1)).await;
        receiving.cancel();
        let _ = receiving.await;
        let again = UdpSocket::bind(addr).expect("the port is free again");
        assert_eq!(again.local_addr()?, addr);
        io::Result::Ok(())
    })
    .unwrap();
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shardloop-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unix_socket_echo_in_a_temp_dir() {
    let dir = TempDir::new("unix");
    let path = dir.0.join("echo.sock");
    block_on(async {
        let listener = UnixListener::bind(&path)?;
        assert_eq!(listener.local_addr()?.as_pathname(), Some(path.as_path()));
        let server = spawn(async move {
            for _ in 0..3 {
                let (conn, _) = listener.accept().await?;
                // Reading and writing through `&UnixStream` at once.
                futures_util::io::copy(&conn, &mut &conn).await?;
                conn.shutdown(Shutdown::Write)?;
            }
            io::Result::Ok(())
        });
        for i in 0..3 {
            let mut c = UnixStream::connect(&path).await?;
            let msg = pattern(i, 300_000);
            let (mut rd, mut wr) = (&c, &c);
            let write = async {
                wr.write_all(&msg).await?;
                wr.close().await
            };
            let mut back = Vec::new();
            let read = rd.read_to_end(&mut back);
            let (w, r) = futures_util::future::join(write, read).await;
            w?;
            r?;
            assert!(back == msg, "unix echo {i} differs");
            c.close().await?;
        }
        server.await.expect("server task")
    })
    .unwrap();
}

#[test]
fn unix_pair_and_connect_errors() {
    let dir = TempDir::new("unix-err");
    block_on(async {
        let (mut a, mut b) = UnixStream::pair()?;
        a.write_all(b"over the pair").await?;
        drop(a);
        let mut got = String::new();
        b.read_to_string(&mut got).await?;
        assert_eq!(got, "over the pair");
        let err = UnixStream::connect(dir.0.join("nobody-here"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn end_of_stream_right_behind_the_data_is_seen_after_a_short_read() {
    block_on(async {
        // Data and the peer's shutdown reach `b` together, before its first read.
        let (a, mut b) = UnixStream::pair()?;
        (&a).write_all(b"0123456789").await?;
        a.shutdown(Shutdown::Write)?;
        let mut buf = [0u8; 100];
        assert_eq!(b.read(&mut buf).await?, 10, "a short read");
        // The short read must not make the stream wait for an edge that already came.
        assert_eq!(b.read(&mut buf).await?, 0);
        io::Result::Ok(())
    })
    .unwrap();
}

#[test]
fn sockets_without_a_loop_are_an_error_naming_it() {
    // A plain thread has no current loop (only the main thread gets a default one).
    std::thread::spawn(|| {
        let errors = [
            TcpListener::bind("127.0.0.1:0").map(drop).unwrap_err(),
            UdpSocket::bind("127.0.0.1:0").map(drop).unwrap_err(),
            UnixStream::pair().map(drop).unwrap_err(),
        ];
        for e in errors {
            assert_eq!(e.kind(), io::ErrorKind::Other);
            let msg = e.to_string();
            assert!(msg.contains("no current event loop"), "{msg}");
        }
    })
    .join()
    .unwrap();
}

#[test]
fn operations_on_a_closed_loop_fail_instead_of_hanging() {
    let lp = shardloop::new_event_loop().unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    lp.close().unwrap();
    // New sockets are refused...
    let err = UdpSocket::bind("127.0.0.1:0").unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
    shardloop::set_event_loop(None);
    // ...and waiting on old ones fails at once, even when driven by another loop.
    let other = shardloop::new_event_loop().unwrap();
    let (accepted, read) = run_bounded(&other, async {
        let accepted = listener.accept().await.map(drop);
        let mut buf = [0u8; 1];
        let read = (&a).read(&mut buf).await;
        (accepted, read)
    });
    assert!(accepted.unwrap_err().to_string().contains("closed"));
    assert!(read.unwrap_err().to_string().contains("closed"));
}

// ---------------------------------------------------------------------------------------
// Running out of file descriptors
// ---------------------------------------------------------------------------------------

/// Lowering RLIMIT_NOFILE would starve the whole test process, so the test runs
/// itself again in a child process (`support/emfile.rs`) and checks that the child
/// served every client.
#[test]
fn accept_backs_off_when_out_of_fds_and_keeps_serving() {
    if emfile::in_child() {
        return emfile_child();
    }
    emfile::run_in_child("accept_backs_off_when_out_of_fds_and_keeps_serving");
}

fn emfile_child() {
    const CLIENTS: usize = 12;
    const FREED: usize = 2;
    emfile::count_accept_warnings();

    let lp = shardloop::new_event_loop().unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    // Clients connect and send their byte before the descriptors run out.
    let clients = emfile::clients_that_sent_a_byte(addr, CLIENTS, HANG_LIMIT);
    let mut hogs = emfile::take_every_descriptor(FREED);

    // The clients wait for their echo on a thread (no descriptor needed for that).
    let client_thread = std::thread::spawn(move || {
        for (i, mut c) in clients.into_iter().enumerate() {
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i as u8);
        }
    });

    let served = run_bounded(&lp, async move {
        // Frees a few descriptors once accept has reported running out.
        let freer = spawn(async move {
            while emfile::accept_warnings() == 0 {
                shardloop::time::sleep(Duration::from_millis(10)).await;
            }
            hogs.truncate(hogs.len() - FREED);
            hogs
        });
        // More clients than free descriptors: served one at a time, each closed
        // before the next accept.
        let mut served = 0;
        while served < CLIENTS {
            let (mut conn, _) = listener.accept().await.expect("accept never fails here");
            let mut b = [0u8; 1];
            conn.read_exact(&mut b).await.unwrap();
            conn.write_all(&b).await.unwrap();
            served += 1;
        }
        drop(freer.await.unwrap());
        served
    });
    client_thread.join().unwrap();
    assert_eq!(served, CLIENTS);
    assert_eq!(emfile::accept_warnings(), 1, "logged once per episode");
    emfile::child_done();
}
