//! TCP echo on one loop: shardloop against tokio's current-thread runtime.
//!
//! The workload (issue 3): CONNS connections over loopback, MSG-byte messages, a fixed
//! number of round trips. The server is the contender, on one thread; the client is
//! the same for both, on another thread: plain blocking std sockets that, each round,
//! write one message on every connection and then read every echo back (so CONNS
//! messages are in flight at once, and the server sees batches of readiness events).
//! The time measured is the client's, from the first write to the last echo read.
//!
//! Wiring into `benches/compare.rs` (a crate root, so the file needs a path):
//! ```text
//! #[path = "compare/io.rs"]
//! mod io;
//!
//! Workload {
//!     key: "tcp_echo",
//!     title: "TCP echo, 64 conns x 64 B",
//!     base_n: 200_000.0,               // round trips in all
//!     ours: io::sl_tcp_echo,
//!     peers: &[("tokio current_thread", io::tokio_tcp_echo)],
//! },
//! ```

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Connections open at once.
pub const CONNS: usize = 64;
/// Bytes per message.
pub const MSG: usize = 64;

/// The shared client: connects CONNS times to the address it is sent, runs
/// `ceil(n / CONNS)` rounds and returns how long they took. It closes its
/// connections when done, which ends the server's echo loops.
fn client(addr: mpsc::Receiver<SocketAddr>, n: u64) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let addr = addr.recv().expect("the server sends its address");
        let mut conns: Vec<std::net::TcpStream> = (0..CONNS)
            .map(|_| {
                let c = std::net::TcpStream::connect(addr).expect("connect");
                c.set_nodelay(true).unwrap();
                c
            })
            .collect();
        let rounds = n.div_ceil(CONNS as u64);
        let msg = [0x5Au8; MSG];
        let mut back = [0u8; MSG];
        let start = Instant::now();
        for _ in 0..rounds {
            for c in &mut conns {
                c.write_all(&msg).unwrap();
            }
            for c in &mut conns {
                c.read_exact(&mut back).unwrap();
            }
        }
        let took = start.elapsed();
        assert_eq!(back, msg);
        took
    })
}

/// shardloop: one loop, one task per connection echoing until EOF.
pub fn sl_tcp_echo(n: u64) -> Duration {
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    use shardloop::net::{TcpListener, TcpStream};

    async fn echo(mut s: TcpStream) {
        let mut buf = [0u8; 4096];
        loop {
            let got = s.read(&mut buf).await.expect("read");
            if got == 0 {
                return;
            }
            s.write_all(&buf[..got]).await.expect("write");
        }
    }

    let (tx, rx) = mpsc::channel();
    let client = client(rx, n);
    let lp = shardloop::new_event_loop().unwrap();
    lp.run_until_complete(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(listener.local_addr().unwrap()).unwrap();
        let mut tasks = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tasks.push(shardloop::spawn(echo(s)));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .unwrap();
    lp.close().unwrap();
    client.join().unwrap()
}

/// tokio: a current-thread runtime, one spawned task per connection, same echo loop.
pub fn tokio_tcp_echo(n: u64) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn echo(mut s: TcpStream) {
        let mut buf = [0u8; 4096];
        loop {
            let got = s.read(&mut buf).await.expect("read");
            if got == 0 {
                return;
            }
            s.write_all(&buf[..got]).await.expect("write");
        }
    }

    let (tx, rx) = mpsc::channel();
    let client = client(rx, n);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tx.send(listener.local_addr().unwrap()).unwrap();
        let mut tasks = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tasks.push(tokio::spawn(echo(s)));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    client.join().unwrap()
}
