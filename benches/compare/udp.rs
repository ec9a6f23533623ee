//! UDP echo on one loop: shardloop's proactor (the ring receives and sends) against
//! its epoll loop and tokio's current-thread runtime.
//!
//! The server is the contender: one socket on one thread, one task receiving each
//! datagram and sending it back. The client is the same for all, on another thread: a
//! blocking std socket that, each round, sends BATCH datagrams of MSG bytes and then
//! reads every echo back (so BATCH datagrams are in flight at once). The time
//! measured is the client's, from the first send to the last echo.

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Datagrams in flight at once (few enough for loopback's socket buffers).
const BATCH: u64 = 32;
/// Bytes per datagram.
const MSG: usize = 64;

/// The echoes the server owes for `n`: whole rounds.
fn echoes(n: u64) -> u64 {
    n.div_ceil(BATCH) * BATCH
}

fn client(addr: mpsc::Receiver<SocketAddr>, n: u64) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let server = addr.recv().expect("the server sends its address");
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(server).unwrap();
        // A lost datagram fails the run instead of hanging it.
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let msg = [0x5Au8; MSG];
        let mut back = [0u8; 2 * MSG];
        let start = Instant::now();
        for _ in 0..echoes(n) / BATCH {
            for _ in 0..BATCH {
                socket.send(&msg).unwrap();
            }
            for _ in 0..BATCH {
                let got = socket.recv(&mut back).expect("every echo comes back");
                assert_eq!(&back[..got], &msg[..]);
            }
        }
        start.elapsed()
    })
}

fn sl_udp_echo(n: u64, proactor: bool) -> Duration {
    use shardloop::net::UdpSocket;
    let (tx, rx) = mpsc::channel();
    let client = client(rx, n);
    let lp = shardloop::EventLoop::builder()
        .proactor(proactor)
        .build()
        .unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    lp.run_until_complete(async move {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send(socket.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..echoes(n) {
            let (got, from) = socket.recv_from(&mut buf).await.unwrap();
            socket.send_to(&buf[..got], from).await.unwrap();
        }
    })
    .unwrap();
    shardloop::set_event_loop(None);
    lp.close().unwrap();
    client.join().unwrap()
}

/// shardloop's proactor loop: receives and sends through the ring.
pub fn sl_proactor_udp_echo(n: u64) -> Duration {
    sl_udp_echo(n, true)
}

/// shardloop's epoll loop: `recvfrom`/`sendto` on readiness.
pub fn sl_epoll_udp_echo(n: u64) -> Duration {
    sl_udp_echo(n, false)
}

/// tokio: a current-thread runtime, the same receive-and-send-back loop.
pub fn tokio_udp_echo(n: u64) -> Duration {
    let (tx, rx) = mpsc::channel();
    let client = client(rx, n);
    crate::tokio_rt().block_on(async move {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx.send(socket.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..echoes(n) {
            let (got, from) = socket.recv_from(&mut buf).await.unwrap();
            socket.send_to(&buf[..got], from).await.unwrap();
        }
    });
    client.join().unwrap()
}
