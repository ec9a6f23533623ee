//! Name resolution off the loop thread (API.md section 7, `shardloop::net::lookup_host`)
//! and the socket calls that use it, mirroring asyncio's `loop.getaddrinfo` tests in
//! `test_base_events.py`: numeric addresses need no lookup (`test_ipaddr_info`),
//! names are looked up on the executor while the loop runs on, and failures are
//! errors (`test_create_connection_no_getaddrinfo`).
//!
//! Every test body runs under `block_on`, which fails the test instead of hanging
//! the suite if the body has not finished after HANG_LIMIT. No test asserts how long
//! anything takes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use shardloop::net::{lookup_host, TcpListener, TcpStream, UdpSocket};
use shardloop::EventLoop;

#[path = "support/bounded.rs"]
mod bounded;
use bounded::block_on;

/// The loop running the test body.
fn this_loop() -> EventLoop {
    shardloop::get_running_loop().unwrap()
}

#[test]
fn localhost_resolves_to_loopback_addresses() {
    block_on(async {
        let addrs = lookup_host("localhost:80").await?;
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
            "{addrs:?}"
        );
        let same = lookup_host(("localhost", 80)).await?;
        assert_eq!(same, addrs);
        let owned = lookup_host(String::from("localhost:80")).await?;
        assert_eq!(owned, addrs);
        io::Result::Ok(())
    })
    .unwrap();
}

// test_ipaddr_info: a numeric address is used as it is, with no getaddrinfo. The
// executor is shut down first, so anything that needed a thread would fail.
#[test]
fn numeric_addresses_resolve_without_the_executor() {
    block_on(async {
        let lp = this_loop();
        lp.shutdown_default_executor(Duration::from_secs(10))
            .unwrap();
        let v4: SocketAddr = "1.2.3.4:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(lookup_host("1.2.3.4:1").await?, [v4]);
        assert_eq!(lookup_host(("1.2.3.4", 1)).await?, [v4]);
        assert_eq!(lookup_host(v4).await?, [v4]);
        assert_eq!(lookup_host(&v4).await?, [v4]);
        assert_eq!(lookup_host((Ipv4Addr::new(1, 2, 3, 4), 1)).await?, [v4]);
        assert_eq!(
            lookup_host((IpAddr::from(Ipv6Addr::LOCALHOST), 5)).await?,
            [v6]
        );
        assert_eq!(lookup_host("[::1]:5").await?, [v6]);
        assert_eq!(lookup_host(("::1", 5)).await?, [v6]);
        assert_eq!(lookup_host(&[v4, v6][..]).await?, [v4, v6]);
        io::Result::Ok(())
    })
    .unwrap();
}

// A host name never reaches getaddrinfo on the loop thread: with the executor shut
// down, its lookup (and a connect or send_to by name) fails, while the same calls
// with numbers work.
#[test]
fn host_names_are_looked_up_on_the_executor() {
    block_on(async {
        let lp = this_loop();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        lp.shutdown_default_executor(Duration::from_secs(10))
            .unwrap();

        let err = lookup_host("localhost:80").await.unwrap_err();
        assert!(err.to_string().contains("executor"), "{err}");
        assert!(err.to_string().contains("localhost:80"), "{err}");
        let err = TcpStream::connect(("localhost", port)).await.unwrap_err();
        assert!(err.to_string().contains("executor"), "{err}");
        TcpStream::connect(("127.0.0.1", port)).await?;

        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let err = udp.send_to(b"x", ("localhost", port)).await.unwrap_err();
        assert!(err.to_string().contains("executor"), "{err}");
        let err = udp.connect(("localhost", port)).await.unwrap_err();
        assert!(err.to_string().contains("executor"), "{err}");
        io::Result::Ok(())
    })
    .unwrap();
}

/// A protocol that ignores what it is told.
struct Quiet;
impl shardloop::Protocol for Quiet {
    fn connection_made(&mut self, _: shardloop::Transport) {}
    fn data_received(&mut self, _: &[u8]) {}
}

// asyncio's create_server and start_server resolve a host name with getaddrinfo on
// the executor too: they serve `localhost`, and with the executor shut down they
// fail saying so (a lookup on the loop thread would have succeeded).
#[test]
fn servers_resolve_host_names_on_the_executor() {
    block_on(async {
        let lp = this_loop();
        let server = lp.create_server(|| Quiet, ("localhost", 0)).await?;
        assert!(server.local_addr()?.ip().is_loopback());
        TcpStream::connect(server.local_addr()?).await?;
        server.close();
        let streams = shardloop::streams::start_server("localhost:0", |_r, _w| async {})
            .await
            .map_err(io::Error::from)?;
        assert!(streams.local_addr().ip().is_loopback());
        TcpStream::connect(streams.local_addr()).await?;
        streams.close();

        lp.shutdown_default_executor(Duration::from_secs(10))
            .unwrap();
        let err = lp.create_server(|| Quiet, "localhost:0").await.unwrap_err();
        assert!(err.to_string().contains("executor"), "{err}");
        let err = shardloop::streams::start_server("localhost:0", |_r, _w| async {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("executor"), "{err}");
        // A numeric address needs no executor.
        lp.create_server(|| Quiet, "127.0.0.1:0").await?.close();
        io::Result::Ok(())
    })
    .unwrap();
}

/// Holds executor threads until it is opened (or dropped, so that a failing test
/// does not leave them blocked).
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (open, cv) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

struct OpenOnDrop(Gate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

// The loop keeps running (its timers fire, its tasks run) while a lookup is in
// flight. Made deterministic by first filling every thread of the loop's executor
// (API.md: min(32, cpus + 4) of them) with a job that waits at a gate: only once all
// of them are inside one is the lookup started, so it cannot finish before the gate
// opens, and the timers must tick meanwhile. (Merely queueing more jobs than threads
// is not enough: the pool steals work, so a late thread may take the newest job.)
// A resolver running on the loop thread would have finished before the first tick.
#[test]
fn a_pending_lookup_does_not_block_the_loop() {
    block_on(async {
        let lp = this_loop();
        let pool_threads = (num_cpus::get() + 4).min(32);
        let gate = Gate::default();
        let _opener = OpenOnDrop(gate.clone());
        let inside = Arc::new(AtomicUsize::new(0));
        let blockers: Vec<_> = (0..pool_threads)
            .map(|_| {
                let (gate, inside) = (gate.clone(), inside.clone());
                lp.run_in_executor(move || {
                    inside.fetch_add(1, Ordering::SeqCst);
                    gate.wait();
                })
            })
            .collect();
        for _ in 0..10_000 {
            if inside.load(Ordering::SeqCst) == pool_threads {
                break;
            }
            shardloop::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            inside.load(Ordering::SeqCst),
            pool_threads,
            "the pool did not fill"
        );

        let lookup = lp.create_task(lookup_host("localhost:80")).unwrap();
        for _ in 0..5 {
            shardloop::time::sleep(Duration::from_millis(1)).await;
            assert!(
                !lookup.is_finished(),
                "the lookup finished with no executor thread free"
            );
        }
        gate.open();
        for b in blockers {
            b.await.unwrap();
        }
        let addrs = lookup.await.unwrap()?;
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        io::Result::Ok(())
    })
    .unwrap();
}

// test_create_connection_no_getaddrinfo's neighbours: a name that does not resolve,
// and a string with no port, are errors that name what failed.
#[test]
fn unresolvable_names_are_errors() {
    block_on(async {
        let err = lookup_host("no-such-host.invalid:80").await.unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
        let err = TcpStream::connect("no-such-host.invalid:80")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
        let err = lookup_host("localhost").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
}

// connect and send_to with a host name: the name is looked up, then used.
#[test]
fn sockets_connect_and_send_to_host_names() {
    block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let accept = shardloop::spawn(async move { listener.accept().await });
        // localhost may come back as ::1 first: connect tries each address.
        let client = TcpStream::connect(format!("localhost:{port}")).await?;
        let (server, _) = accept.await.unwrap()?;
        assert_eq!(server.peer_addr()?, client.local_addr()?);

        // send_to takes the first address, as std's does: bind on its family.
        let first = lookup_host(("localhost", 0)).await?[0].ip();
        let rx = UdpSocket::bind(SocketAddr::new(first, 0))?;
        let tx = UdpSocket::bind(SocketAddr::new(first, 0))?;
        let rx_port = rx.local_addr()?.port();
        tx.send_to(b"by name", ("localhost", rx_port)).await?;
        let mut buf = [0u8; 16];
        let (n, from) = rx.recv_from(&mut buf).await?;
        assert_eq!((&buf[..n], from), (&b"by name"[..], tx.local_addr()?));
        tx.connect(("localhost", rx_port)).await?;
        assert_eq!(tx.peer_addr()?, rx.local_addr()?);
        tx.send(b"again").await?;
        let n = rx.recv(&mut buf).await?;
        assert_eq!(&buf[..n], b"again");
        io::Result::Ok(())
    })
    .unwrap();
}
