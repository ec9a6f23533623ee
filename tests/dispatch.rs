//! The least-loaded connection dispatcher: one acceptor, connections served on the
//! shard with the fewest open connections.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use shardloop::net::{Dispatcher, Placement, TcpListener, TcpStream};
use shardloop::Runtime;

/// Serves one connection: answers each byte with the index of the shard it runs on.
async fn answer_with_shard(mut stream: TcpStream) {
    let mut byte = [0u8; 1];
    while let Ok(1) = stream.read(&mut byte).await {
        let shard = shardloop::current_shard().map_or(255, |s| s as u8);
        if stream.write_all(&[shard]).await.is_err() {
            return;
        }
    }
}

/// Starts an acceptor on shard 0 dispatching over every shard; returns its address
/// and the dispatcher's open-connection counts (read through the acceptor's shard).
fn start(
    rt: &Runtime,
    placement: Placement,
) -> (SocketAddr, Arc<dyn Fn() -> Vec<usize> + Send + Sync>) {
    let targets = rt.shards().to_vec();
    let acceptor = rt.shard(0).clone();
    let addr = acceptor
        .submit(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let dispatcher = std::rc::Rc::new(Dispatcher::new(targets, placement));
            DISPATCHER.with(|d| *d.borrow_mut() = Some(dispatcher.clone()));
            drop(shardloop::spawn(async move {
                let _ = dispatcher.run(&listener, answer_with_shard).await;
            }));
            addr
        })
        .wait()
        .unwrap();
    let counts = move || {
        acceptor
            .submit(|| async {
                DISPATCHER.with(|d| d.borrow().as_ref().unwrap().open_connections())
            })
            .wait()
            .unwrap()
    };
    (addr, Arc::new(counts))
}

thread_local! {
    static DISPATCHER: std::cell::RefCell<Option<std::rc::Rc<Dispatcher>>> = const { std::cell::RefCell::new(None) };
}

fn ask_shard(conn: &mut std::net::TcpStream) -> u8 {
    conn.write_all(b"?").unwrap();
    let mut b = [0u8; 1];
    conn.read_exact(&mut b).unwrap();
    b[0]
}

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < until, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn least_loaded_spreads_long_lived_connections_evenly() {
    let rt = Runtime::builder().shards(2).build().unwrap();
    let (addr, counts) = start(&rt, Placement::LeastLoaded);
    let mut conns = Vec::new();
    let mut per_shard = [0usize; 2];
    for _ in 0..8 {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        // Wait until this connection is served, so the next pick sees it counted.
        per_shard[ask_shard(&mut c) as usize] += 1;
        conns.push(c);
    }
    assert_eq!(per_shard, [4, 4]);
    assert_eq!(counts(), vec![4, 4]);
    // Close the three on shard 1 that came last: the next connections go there.
    let mut closed = 0;
    while closed < 3 {
        let mut c = conns.pop().unwrap();
        if ask_shard(&mut c) == 1 {
            closed += 1;
        } else {
            conns.insert(0, c);
        }
    }
    eventually("closed connections are uncounted", || {
        counts() == vec![4, 1]
    });
    for _ in 0..3 {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(ask_shard(&mut c), 1, "the least-loaded shard gets it");
        conns.push(c);
    }
    drop(conns);
    eventually("all uncounted", || counts() == vec![0, 0]);
    rt.shutdown(Duration::from_millis(200)).unwrap();
}

#[test]
fn round_robin_alternates_shards() {
    let rt = Runtime::builder().shards(2).build().unwrap();
    let (addr, _) = start(&rt, Placement::RoundRobin);
    let shards: Vec<u8> = (0..6)
        .map(|_| ask_shard(&mut std::net::TcpStream::connect(addr).unwrap()))
        .collect();
    assert_eq!(shards, vec![0, 1, 0, 1, 0, 1]);
    rt.shutdown(Duration::from_millis(200)).unwrap();
}

#[test]
fn a_moved_stream_keeps_its_buffered_bytes() {
    // Bytes the client sent before the connection moved shards are not lost.
    let rt = Runtime::builder().shards(2).build().unwrap();
    let (addr, _) = start(&rt, Placement::RoundRobin);
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"???").unwrap();
    let mut got = [0u8; 3];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got[0], got[1]);
    assert_eq!(got[1], got[2]);
    rt.shutdown(Duration::from_millis(200)).unwrap();
}
