//! Transports and protocols: the callback networking of asyncio, mirroring
//! CPython's test_asyncio/test_selector_events.py (the `_SelectorSocketTransport`
//! and `_SelectorDatagramTransport` tests), test_protocols.py, and the
//! create_server / create_connection tests of test_events.py.
//!
//! Peers are std sockets on 127.0.0.1 (non-blocking, polled from the loop's stop
//! conditions) or other transports on the same loop. Nothing waits on time: each
//! test runs the loop until a condition holds, with a generous watchdog timer that
//! fails the test rather than hanging it.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, UdpSocket as StdUdpSocket};
use std::rc::Rc;
use std::time::Duration;

use shardloop::{DatagramProtocol, DatagramTransport, EventLoop, Protocol, Transport};

#[path = "support/emfile.rs"]
mod emfile;
#[path = "support/listening.rs"]
mod listening;

/// What a protocol was told, in order.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Made,
    Data(Vec<u8>),
    Eof,
    Lost(Option<io::ErrorKind>),
    PauseWriting,
    ResumeWriting,
}

type Log = Rc<RefCell<Vec<Ev>>>;
/// Where a protocol keeps its transport, shared with the test.
type Slot = Rc<RefCell<Option<Transport>>>;
/// The server side of each connection so far: its log and its transport.
type Conns = Rc<RefCell<Vec<(Log, Slot)>>>;
type OnData = Box<dyn FnMut(&Transport, &[u8])>;

/// A protocol that records its calls and can be told what to do on data.
struct Rec {
    log: Log,
    transport: Slot,
    keep_open_on_eof: bool,
    on_data: Option<OnData>,
    lost_error: Rc<RefCell<Option<String>>>,
    /// Only dropped, with the protocol.
    #[allow(dead_code)]
    dropped: DropFlag,
}

/// Set when the protocol holding it is dropped.
#[derive(Default)]
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

impl Rec {
    fn new(log: &Log) -> Rec {
        Rec {
            log: log.clone(),
            transport: Rc::default(),
            keep_open_on_eof: false,
            on_data: None,
            lost_error: Rc::default(),
            dropped: DropFlag::default(),
        }
    }

    fn echo(log: &Log) -> Rec {
        Rec {
            on_data: Some(Box::new(|t, d| t.write(d))),
            ..Rec::new(log)
        }
    }
}

impl Protocol for Rec {
    fn connection_made(&mut self, t: Transport) {
        self.log.borrow_mut().push(Ev::Made);
        *self.transport.borrow_mut() = Some(t);
    }

    fn data_received(&mut self, data: &[u8]) {
        let mut log = self.log.borrow_mut();
        match log.last_mut() {
            // Chunks are coalesced: how TCP splits the bytes is not the point.
            Some(Ev::Data(acc)) => acc.extend_from_slice(data),
            _ => log.push(Ev::Data(data.to_vec())),
        }
        drop(log);
        if let Some(f) = self.on_data.as_mut() {
            let t = self.transport.borrow().clone().unwrap();
            f(&t, data);
        }
    }

    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().push(Ev::Eof);
        self.keep_open_on_eof
    }

    fn connection_lost(&mut self, err: Option<io::Error>) {
        *self.lost_error.borrow_mut() = err.as_ref().map(|e| e.to_string());
        self.log.borrow_mut().push(Ev::Lost(err.map(|e| e.kind())));
    }

    fn pause_writing(&mut self) {
        self.log.borrow_mut().push(Ev::PauseWriting);
    }

    fn resume_writing(&mut self) {
        self.log.borrow_mut().push(Ev::ResumeWriting);
    }
}

fn new_loop() -> EventLoop {
    let lp = shardloop::new_event_loop().unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    lp
}

/// Runs the loop one iteration at a time until `done`; a watchdog makes a parked
/// loop wake up and the test fail instead of hanging when `done` never comes.
fn run_until(lp: &EventLoop, mut done: impl FnMut() -> bool) {
    let fired = Rc::new(Cell::new(false));
    let flag = fired.clone();
    let watchdog = lp
        .call_later(Duration::from_secs(30), move || flag.set(true))
        .unwrap();
    while !done() {
        assert!(!fired.get(), "the condition was not reached");
        lp.stop();
        lp.run_forever().unwrap();
    }
    watchdog.cancel();
}

/// Runs `n` iterations, each with a callback queued so that none parks.
fn spin(lp: &EventLoop, n: usize) {
    for _ in 0..n {
        lp.call_soon(|| ()).unwrap();
        lp.stop();
        lp.run_forever().unwrap();
    }
}

fn data_of(log: &Log) -> Vec<u8> {
    log.borrow()
        .iter()
        .filter_map(|e| match e {
            Ev::Data(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// How many bytes `data_received` got (cheaper than `data_of` in a stop condition).
fn data_len(log: &Log) -> usize {
    log.borrow()
        .iter()
        .map(|e| match e {
            Ev::Data(d) => d.len(),
            _ => 0,
        })
        .sum()
}

fn lost_count(log: &Log) -> usize {
    log.borrow()
        .iter()
        .filter(|e| matches!(e, Ev::Lost(_)))
        .count()
}

/// A std client, non-blocking, so that a stop condition can read it.
fn std_client(addr: SocketAddr) -> StdTcpStream {
    let s = StdTcpStream::connect(addr).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Reads what is there; Some(true) at end of stream.
fn read_some(s: &mut StdTcpStream, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("client read failed: {e}"),
        }
    }
}

/// Waits for the server's first connection; its log and transport.
fn first_peer(lp: &EventLoop, conns: &Conns) -> (Log, Transport) {
    run_until(lp, || !conns.borrow().is_empty());
    let (log, slot) = conns.borrow()[0].clone();
    let transport = slot.borrow().clone().unwrap();
    (log, transport)
}

/// A client transport whose protocol records into the log returned.
fn connect(lp: &EventLoop, addr: SocketAddr) -> (Transport, Log, Rc<RefCell<Rec>>) {
    let log = Log::default();
    let made = log.clone();
    let (transport, protocol) = lp
        .run_until_complete(lp.create_connection(move || Rec::new(&made), addr))
        .unwrap()
        .unwrap();
    (transport, log, protocol)
}

/// A server whose protocols record into one log each; returns the server and
/// the logs of the connections made so far.
fn recording_server(
    lp: &EventLoop,
    make: impl Fn(&Log) -> Rec + 'static,
) -> (shardloop::Server, Conns) {
    let conns: Conns = Rc::default();
    let seen = conns.clone();
    let server = lp
        .run_until_complete(lp.create_server(
            move || {
                let log = Log::default();
                let rec = make(&log);
                seen.borrow_mut().push((log, rec.transport.clone()));
                rec
            },
            "127.0.0.1:0",
        ))
        .unwrap()
        .unwrap();
    (server, conns)
}

// test_events.py: test_create_connection, test_create_server (echo round trip);
// test_protocols.py's state machine: made -> data* -> eof -> lost, lost once, last.
#[test]
fn echo_round_trip_in_callback_order() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::echo);
    let (transport, client_log, client) = connect(&lp, server.local_addr().unwrap());
    assert_eq!(client_log.borrow()[..], [Ev::Made]);
    transport.write(b"hello ");
    transport.writelines(&[b"wor", b"ld"]);
    run_until(&lp, || data_of(&client_log) == b"hello world");
    transport.close();
    assert!(transport.is_closing());
    let server_log = conns.borrow()[0].0.clone();
    run_until(&lp, || {
        lost_count(&client_log) == 1 && lost_count(&server_log) == 1
    });
    assert_eq!(
        client_log.borrow()[..],
        [Ev::Made, Ev::Data(b"hello world".to_vec()), Ev::Lost(None)]
    );
    assert_eq!(
        server_log.borrow()[..],
        [
            Ev::Made,
            Ev::Data(b"hello world".to_vec()),
            Ev::Eof,
            Ev::Lost(None)
        ]
    );
    // The transport let go of its protocol after connection_lost.
    assert_eq!(Rc::strong_count(&client), 1);
    spin(&lp, 3);
    assert_eq!(lost_count(&client_log), 1);
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_write_partial, test_write_ready (a write the
// socket cannot take at once is buffered, then sent in full).
#[test]
fn large_write_is_buffered_then_fully_delivered() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let mut peer_conn = None;
    let (transport, _, _) = connect(&lp, server.local_addr().unwrap());
    run_until(&lp, || !conns.borrow().is_empty());
    let payload: Vec<u8> = (0..16 << 20).map(|i| (i % 251) as u8).collect();
    transport.write(&payload);
    assert!(
        transport.get_write_buffer_size() > 0,
        "16 MiB do not fit a socket buffer"
    );
    run_until(&lp, || {
        let log = conns.borrow()[0].0.clone();
        peer_conn = Some(log.clone());
        data_len(&log) == payload.len()
    });
    assert_eq!(data_of(peer_conn.as_ref().unwrap()), payload);
    // On the proactor the send's completion may still be on its way.
    run_until(&lp, || transport.get_write_buffer_size() == 0);
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_close_write_buffer, test_transport_close_remove_writer:
// close() waits for the buffer to drain; connection_lost comes after.
#[test]
fn close_flushes_the_buffer_before_connection_lost() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let buffered_at_lost = Rc::new(Cell::new(usize::MAX));
    let (transport, client_log, _) = connect(&lp, server.local_addr().unwrap());
    let payload = vec![7u8; 8 << 20];
    transport.write(&payload);
    transport.close();
    assert!(transport.is_closing());
    assert!(transport.get_write_buffer_size() > 0);
    let t = transport.clone();
    let at_lost = buffered_at_lost.clone();
    run_until(&lp, || {
        if lost_count(&client_log) == 1 && at_lost.get() == usize::MAX {
            at_lost.set(t.get_write_buffer_size());
        }
        conns
            .borrow()
            .first()
            .is_some_and(|(log, _)| lost_count(log) == 1)
    });
    assert_eq!(buffered_at_lost.get(), 0);
    let server_log = conns.borrow()[0].0.clone();
    assert_eq!(data_len(&server_log), payload.len());
    assert_eq!(client_log.borrow().last(), Some(&Ev::Lost(None)));
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_abort, test_force_close (the buffer is dropped and
// connection_lost(None) comes at once, not after a flush).
#[test]
fn abort_drops_the_buffer() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let (transport, client_log, _) = connect(&lp, server.local_addr().unwrap());
    // The server does not read, so most of it stays in the transport's buffer.
    first_peer(&lp, &conns).1.pause_reading();
    let payload = vec![1u8; 64 << 20];
    transport.write(&payload);
    assert!(transport.get_write_buffer_size() > 0);
    transport.abort();
    assert_eq!(transport.get_write_buffer_size(), 0);
    assert!(transport.is_closing());
    run_until(&lp, || lost_count(&client_log) == 1);
    // 64 MiB went over the high-water mark; then the abort, and nothing waits.
    assert_eq!(
        client_log.borrow()[..],
        [Ev::Made, Ev::PauseWriting, Ev::Lost(None)]
    );
    let server_side = conns.borrow()[0].clone();
    server_side.1.borrow().as_ref().unwrap().resume_reading();
    run_until(&lp, || lost_count(&server_side.0) == 1);
    assert!(data_len(&server_side.0) < payload.len());
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_read_ready_eof (eof_received() false closes).
#[test]
fn eof_received_false_closes_the_transport() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let mut client = std_client(server.local_addr().unwrap());
    client.write_all(b"bye").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    run_until(&lp, || {
        conns
            .borrow()
            .first()
            .is_some_and(|(log, _)| lost_count(log) == 1)
    });
    let log = conns.borrow()[0].0.clone();
    assert_eq!(
        log.borrow()[..],
        [Ev::Made, Ev::Data(b"bye".to_vec()), Ev::Eof, Ev::Lost(None)]
    );
    let mut got = Vec::new();
    run_until(&lp, || read_some(&mut client, &mut got));
    assert!(got.is_empty());
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_read_ready_eof_keep_open (eof_received() true: the
// transport stays open for writing, reading stops).
#[test]
fn eof_received_true_keeps_writing_possible() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, |log| Rec {
        keep_open_on_eof: true,
        ..Rec::new(log)
    });
    let mut client = std_client(server.local_addr().unwrap());
    client.shutdown(std::net::Shutdown::Write).unwrap();
    run_until(&lp, || {
        conns
            .borrow()
            .first()
            .is_some_and(|(log, _)| log.borrow().contains(&Ev::Eof))
    });
    spin(&lp, 3);
    let (log, transport) = conns.borrow()[0].clone();
    let transport = transport.borrow().clone().unwrap();
    assert_eq!(log.borrow()[..], [Ev::Made, Ev::Eof]);
    assert!(!transport.is_closing());
    assert!(!transport.is_reading());
    transport.write(b"still here");
    transport.close();
    let mut got = Vec::new();
    run_until(&lp, || read_some(&mut client, &mut got));
    assert_eq!(got, b"still here");
    run_until(&lp, || lost_count(&log) == 1);
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_pause_resume_reading.
#[test]
fn pause_reading_holds_data_until_resume() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let mut client = std_client(server.local_addr().unwrap());
    let (log, transport) = first_peer(&lp, &conns);
    assert!(transport.is_reading());
    transport.pause_reading();
    transport.pause_reading(); // twice: no effect
    assert!(!transport.is_reading());
    client.write_all(b"held back").unwrap();
    // Many iterations, I/O polled in several of them: nothing is delivered.
    spin(&lp, 300);
    assert_eq!(log.borrow()[..], [Ev::Made]);
    transport.resume_reading();
    assert!(transport.is_reading());
    run_until(&lp, || data_of(&log) == b"held back");
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_write_buffer_full / _maybe_pause_protocol and
// _maybe_resume_protocol; test_transports.py: test_flowcontrol_mixin_set_write_limits.
#[test]
fn write_buffer_limits_drive_pause_and_resume_writing() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let (transport, client_log, _) = connect(&lp, server.local_addr().unwrap());
    let (_, peer) = first_peer(&lp, &conns);
    peer.pause_reading(); // a peer that does not read
    transport
        .set_write_buffer_limits(256 * 1024, 64 * 1024)
        .unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut writes = 0;
    while !client_log.borrow().contains(&Ev::PauseWriting) {
        assert!(writes < 4096, "pause_writing never came");
        transport.write(&chunk);
        writes += 1;
        // Let the socket buffers fill up in between.
        spin(&lp, 2);
    }
    assert!(transport.get_write_buffer_size() > 256 * 1024);
    assert!(!client_log.borrow().contains(&Ev::ResumeWriting));
    let low = Rc::new(Cell::new(usize::MAX));
    peer.resume_reading();
    let (t, at_resume) = (transport.clone(), low.clone());
    run_until(&lp, || {
        let resumed = client_log.borrow().contains(&Ev::ResumeWriting);
        if resumed && at_resume.get() == usize::MAX {
            at_resume.set(t.get_write_buffer_size());
        }
        resumed
    });
    assert!(low.get() <= 64 * 1024);
    let flow: Vec<Ev> = client_log
        .borrow()
        .iter()
        .filter(|e| matches!(e, Ev::PauseWriting | Ev::ResumeWriting))
        .cloned()
        .collect();
    assert_eq!(flow, [Ev::PauseWriting, Ev::ResumeWriting]);
    server.close();
    lp.close().unwrap();
}

// The same marks crossed by a write made inside the protocol's own data_received:
// pause_writing comes right after that method returns (it is borrowed meanwhile).
#[test]
fn pause_writing_for_a_write_inside_a_callback_comes_after_it() {
    let lp = new_loop();
    let server_log = Log::default();
    let in_callback = Rc::new(Cell::new(false));
    let order = Rc::new(RefCell::new(Vec::new()));
    struct Blaster {
        t: Option<Transport>,
        in_callback: Rc<Cell<bool>>,
        order: Rc<RefCell<Vec<&'static str>>>,
    }
    impl Protocol for Blaster {
        fn connection_made(&mut self, t: Transport) {
            t.set_write_buffer_limits(1024, 0).unwrap();
            self.t = Some(t);
        }
        fn data_received(&mut self, _data: &[u8]) {
            self.in_callback.set(true);
            self.t.as_ref().unwrap().write(&vec![0u8; 32 << 20]);
            self.order.borrow_mut().push("data_received returns");
            self.in_callback.set(false);
        }
        fn pause_writing(&mut self) {
            assert!(!self.in_callback.get());
            self.order.borrow_mut().push("pause_writing");
        }
    }
    let (ic, ord) = (in_callback.clone(), order.clone());
    let server = lp
        .run_until_complete(lp.create_server(
            move || Blaster {
                t: None,
                in_callback: ic.clone(),
                order: ord.clone(),
            },
            "127.0.0.1:0",
        ))
        .unwrap()
        .unwrap();
    let mut client = std_client(server.local_addr().unwrap());
    client.write_all(b"go").unwrap();
    run_until(&lp, || order.borrow().len() == 2);
    assert_eq!(
        order.borrow()[..],
        ["data_received returns", "pause_writing"]
    );
    drop(server_log);
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_set_write_buffer_limits / test_get_write_buffer_size.
#[test]
fn write_buffer_size_and_limits() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let (transport, _, _) = connect(&lp, server.local_addr().unwrap());
    assert_eq!(transport.get_write_buffer_limits(), (16 * 1024, 64 * 1024));
    assert!(transport.set_write_buffer_limits(10, 20).is_err());
    assert_eq!(transport.get_write_buffer_limits(), (16 * 1024, 64 * 1024));
    transport.set_write_buffer_limits(1000, 100).unwrap();
    assert_eq!(transport.get_write_buffer_limits(), (100, 1000));
    assert_eq!(transport.get_write_buffer_size(), 0);
    transport.write(b"small");
    // The selector loop sends at once; the proactor counts a send in the kernel as
    // buffered until it completes, as asyncio's proactor loop does.
    let size = transport.get_write_buffer_size();
    assert!(
        size == 0 || (lp.is_proactor() && size == 5),
        "sent at once, or in flight: {size}"
    );
    run_until(&lp, || transport.get_write_buffer_size() == 0);
    first_peer(&lp, &conns).1.pause_reading();
    let big = vec![0u8; 32 << 20];
    transport.write(&big);
    let left = transport.get_write_buffer_size();
    assert!(left > 0 && left <= big.len());
    transport.write(b"more");
    assert_eq!(transport.get_write_buffer_size(), left + 4);
    assert!(transport.peer_addr().unwrap() == server.local_addr().unwrap());
    assert!(transport.local_addr().unwrap().port() != 0);
    let tcp = transport.unix_peer_addr().unwrap_err();
    assert_eq!(
        tcp.kind(),
        std::io::ErrorKind::InvalidInput,
        "a TCP transport has no unix address"
    );
    transport.abort();
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_read_ready_err / test_fatal_error (a reset reaches
// the protocol as connection_lost(Some(err))).
#[test]
fn peer_reset_gives_connection_lost_with_the_error() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let client = StdTcpStream::connect(server.local_addr().unwrap()).unwrap();
    run_until(&lp, || !conns.borrow().is_empty());
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client); // RST
    let log = conns.borrow()[0].0.clone();
    run_until(&lp, || lost_count(&log) == 1);
    assert_eq!(
        log.borrow()[..],
        [Ev::Made, Ev::Lost(Some(io::ErrorKind::ConnectionReset))]
    );
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_read_ready_exc / test_data_received_error
// ("Fatal error: protocol.data_received() call failed."): the connection is aborted
// with the error, the exception handler hears of it, the server serves on.
#[test]
fn a_panicking_protocol_closes_only_its_connection() {
    let lp = new_loop();
    let contexts = Rc::new(RefCell::new(Vec::new()));
    let seen = contexts.clone();
    lp.set_exception_handler(move |ctx| {
        seen.borrow_mut()
            .push((ctx.message.clone(), ctx.panic.clone()))
    });
    let (server, conns) = recording_server(&lp, |log| Rec {
        on_data: Some(Box::new(|t, d| {
            if d == b"boom" {
                panic!("boom");
            }
            t.write(d)
        })),
        ..Rec::new(log)
    });
    let addr = server.local_addr().unwrap();
    let mut good = std_client(addr);
    let mut bad = std_client(addr);
    run_until(&lp, || conns.borrow().len() == 2);
    bad.write_all(b"boom").unwrap();
    let mut got = Vec::new();
    run_until(&lp, || read_some(&mut bad, &mut got));
    assert!(got.is_empty());
    let bad_side = conns.borrow()[1].clone();
    let errors = bad_side.1.borrow().clone().unwrap();
    assert!(errors.is_closing());
    run_until(&lp, || lost_count(&bad_side.0) == 1);
    assert_eq!(
        bad_side.0.borrow().last(),
        Some(&Ev::Lost(Some(io::ErrorKind::Other)))
    );
    assert_eq!(
        contexts.borrow()[..],
        [(
            "fatal error: protocol.data_received() call failed".to_string(),
            Some("boom".to_string())
        )]
    );
    // The other connection and new ones are served.
    good.write_all(b"fine").unwrap();
    let mut echoed = Vec::new();
    run_until(&lp, || {
        read_some(&mut good, &mut echoed);
        echoed == b"fine"
    });
    let mut late = std_client(addr);
    late.write_all(b"later").unwrap();
    let mut echoed = Vec::new();
    run_until(&lp, || {
        read_some(&mut late, &mut echoed);
        echoed == b"later"
    });
    server.close();
    lp.close().unwrap();
}

// test_events.py: test_server_close (after close, connections are refused; the
// connections already made go on).
#[test]
fn server_close_stops_accepting() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::echo);
    let addr = server.local_addr().unwrap();
    let mut before = std_client(addr);
    run_until(&lp, || conns.borrow().len() == 1);
    assert!(server.is_serving());
    server.close();
    server.close(); // twice: no effect
    assert!(!server.is_serving());
    let refused = StdTcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    before.write_all(b"still served").unwrap();
    let mut echoed = Vec::new();
    run_until(&lp, || {
        read_some(&mut before, &mut echoed);
        echoed == b"still served"
    });
    spin(&lp, 3);
    assert_eq!(conns.borrow().len(), 1);
    lp.close().unwrap();
}

// test_events.py: test_create_unix_server / test_create_unix_connection.
#[test]
fn unix_server_and_connection() {
    let lp = new_loop();
    let dir = std::env::temp_dir().join(format!("shardloop-protocols-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let server_log = Log::default();
    let server = lp
        .run_until_complete(lp.create_unix_server(
            {
                let log = server_log.clone();
                move || Rec::echo(&log)
            },
            &path,
        ))
        .unwrap()
        .unwrap();
    assert!(server.local_addr().is_err());
    let client_log = Log::default();
    let (transport, _) = lp
        .run_until_complete(lp.create_unix_connection(
            {
                let log = client_log.clone();
                move || Rec::new(&log)
            },
            &path,
        ))
        .unwrap()
        .unwrap();
    assert!(transport.peer_addr().is_err());
    // asyncio's peername and sockname, for Unix sockets.
    assert_eq!(
        transport.unix_peer_addr().unwrap().as_pathname(),
        Some(path.as_path())
    );
    assert!(transport.unix_local_addr().unwrap().is_unnamed());
    transport.write(b"over unix");
    run_until(&lp, || data_of(&client_log) == b"over unix");
    transport.close();
    run_until(&lp, || {
        lost_count(&client_log) == 1 && lost_count(&server_log) == 1
    });
    let closed = transport.unix_peer_addr().unwrap_err();
    assert_eq!(closed.kind(), std::io::ErrorKind::NotConnected);
    assert_eq!(
        server_log.borrow()[..],
        [
            Ev::Made,
            Ev::Data(b"over unix".to_vec()),
            Ev::Eof,
            Ev::Lost(None)
        ]
    );
    server.close();
    lp.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

// asyncio's Server.sockets: the listening socket while the server serves (its
// address, its descriptor), none once it is closed; a handle kept from before the
// close has no descriptor then.
#[test]
fn a_servers_sockets_are_its_listening_socket_until_it_closes() {
    let lp = new_loop();
    let log = Log::default();
    let server = lp
        .run_until_complete(lp.create_server(
            {
                let log = log.clone();
                move || Rec::echo(&log)
            },
            "127.0.0.1:0",
        ))
        .unwrap()
        .unwrap();
    let sockets = server.sockets();
    assert_eq!(sockets.len(), 1);
    let socket = sockets[0].clone();
    assert_eq!(socket.local_addr().unwrap(), server.local_addr().unwrap());
    let no_path = socket.unix_local_addr().unwrap_err();
    assert_eq!(no_path.kind(), io::ErrorKind::InvalidInput);
    let fd = socket.raw_fd().unwrap();
    assert!(
        listening::is_listening(fd),
        "fd {fd} is not a listening socket"
    );
    // It is the socket the server accepts on.
    let mut client = StdTcpStream::connect(socket.local_addr().unwrap()).unwrap();
    client.write_all(b"hi").unwrap();
    run_until(&lp, || data_of(&log) == b"hi");

    server.close();
    assert!(server.sockets().is_empty());
    assert_eq!(socket.raw_fd(), None);
    assert_eq!(
        socket.local_addr().unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
    assert!(format!("{socket:?}").contains("closed"), "{socket:?}");
    drop(client);
    lp.close().unwrap();

    // A Unix-domain server's socket has its path.
    let lp = new_loop();
    let dir = std::env::temp_dir().join(format!("shardloop-sockets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("server.sock");
    let _ = std::fs::remove_file(&path);
    let server = lp
        .run_until_complete(lp.create_unix_server(move || Rec::new(&Log::default()), &path))
        .unwrap()
        .unwrap();
    let socket = server.sockets().pop().unwrap();
    assert_eq!(
        socket.unix_local_addr().unwrap().as_pathname(),
        Some(path.as_path())
    );
    assert_eq!(
        socket.local_addr().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert!(listening::is_listening(socket.raw_fd().unwrap()));
    server.close();
    assert_eq!(
        socket.unix_local_addr().unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
    lp.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A datagram protocol that echoes (if `echo`) and records.
#[derive(Default)]
struct Udp {
    t: Option<DatagramTransport>,
    echo: bool,
    got: Vec<(Vec<u8>, SocketAddr)>,
    errors: Vec<io::ErrorKind>,
    made: usize,
    lost: usize,
}

impl DatagramProtocol for Udp {
    fn connection_made(&mut self, t: DatagramTransport) {
        self.made += 1;
        self.t = Some(t);
    }
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
        self.got.push((data.to_vec(), addr));
        if self.echo {
            self.t.as_ref().unwrap().sendto(data, Some(addr)).unwrap();
        }
    }
    fn error_received(&mut self, err: io::Error) {
        self.errors.push(err.kind());
    }
    fn connection_lost(&mut self, _err: Option<io::Error>) {
        self.lost += 1;
    }
}

// test_events.py: test_create_datagram_endpoint (an echo server and a connected
// client).
#[test]
fn datagram_echo() {
    let lp = new_loop();
    let (server, server_proto) = lp
        .run_until_complete(lp.create_datagram_endpoint(
            || Udp {
                echo: true,
                ..Udp::default()
            },
            Some("127.0.0.1:0".parse().unwrap()),
            None,
        ))
        .unwrap()
        .unwrap();
    let server_addr = server.local_addr().unwrap();
    let (client, client_proto) = lp
        .run_until_complete(lp.create_datagram_endpoint(Udp::default, None, Some(server_addr)))
        .unwrap()
        .unwrap();
    assert_eq!(client.peer_addr().unwrap(), server_addr);
    assert!(client
        .sendto(b"x", Some("127.0.0.1:9".parse().unwrap()))
        .is_err());
    client.sendto(b"one", None).unwrap();
    client.sendto(b"two", Some(server_addr)).unwrap();
    run_until(&lp, || client_proto.borrow().got.len() == 2);
    let got: Vec<Vec<u8>> = client_proto
        .borrow()
        .got
        .iter()
        .map(|(d, _)| d.clone())
        .collect();
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(client_proto.borrow().got[0].1, server_addr);
    assert_eq!(server_proto.borrow().got[0].1, client.local_addr().unwrap());
    client.close();
    server.close();
    assert!(client.is_closing());
    run_until(&lp, || {
        client_proto.borrow().lost == 1 && server_proto.borrow().lost == 1
    });
    assert_eq!(client_proto.borrow().made, 1);
    lp.close().unwrap();
}

// test_selector_events.py: test_sendto_error_received_connected /
// test_read_ready_err for datagrams: an ICMP "port unreachable" reaches
// error_received and the endpoint stays open.
#[test]
fn datagram_error_received() {
    let lp = new_loop();
    let closed_port = {
        let s = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let (client, proto) = lp
        .run_until_complete(lp.create_datagram_endpoint(Udp::default, None, Some(closed_port)))
        .unwrap()
        .unwrap();
    let mut sent = 0;
    run_until(&lp, || {
        if proto.borrow().errors.is_empty() && sent < 1000 {
            client.sendto(b"anyone?", None).unwrap();
            sent += 1;
        }
        !proto.borrow().errors.is_empty()
    });
    assert_eq!(proto.borrow().errors[0], io::ErrorKind::ConnectionRefused);
    assert!(!client.is_closing());
    assert_eq!(proto.borrow().lost, 0);
    client.close();
    run_until(&lp, || proto.borrow().lost == 1);
    lp.close().unwrap();
}

// The cooperative budget of the callback path: a peer that keeps the socket full
// does not keep a call_soon callback from running (asyncio reads once per
// iteration; we read a bounded number of times per turn).
#[test]
fn a_flooding_peer_does_not_starve_call_soon() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let addr = server.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut s = StdTcpStream::connect(addr).unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            // Bounded, so that a loop that does starve fails the assertion below
            // instead of hanging.
            for _ in 0..4096 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    run_until(&lp, || {
        conns
            .borrow()
            .first()
            .is_some_and(|(log, _)| data_len(log) > 0)
    });
    let log = conns.borrow()[0].0.clone();
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    lp.call_soon(move || flag.set(true)).unwrap();
    let before = data_len(&log);
    // One iteration runs the callback, however much the peer keeps sending.
    lp.stop();
    lp.run_forever().unwrap();
    assert!(ran.get());
    let read_meanwhile = data_len(&log) - before;
    assert!(
        read_meanwhile <= 16 * 64 * 1024,
        "read {read_meanwhile} bytes in one turn"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    conns.borrow()[0].1.borrow().as_ref().unwrap().abort();
    run_until(&lp, || lost_count(&log) == 1);
    flooder.join().unwrap();
    server.close();
    lp.close().unwrap();
}

// test_selector_events.py: test_close (twice), test_force_close: connection_lost
// exactly once whatever is called, and writes after it are dropped.
#[test]
fn connection_lost_is_called_exactly_once() {
    let lp = new_loop();
    let (server, _conns) = recording_server(&lp, Rec::new);
    let (transport, client_log, _) = connect(&lp, server.local_addr().unwrap());
    transport.close();
    transport.close();
    transport.abort();
    transport.pause_reading();
    transport.resume_reading();
    run_until(&lp, || lost_count(&client_log) == 1);
    for _ in 0..10 {
        transport.write(b"into the void");
    }
    transport.abort();
    spin(&lp, 5);
    assert_eq!(client_log.borrow()[..], [Ev::Made, Ev::Lost(None)]);
    assert_eq!(transport.get_write_buffer_size(), 0);
    assert!(transport.local_addr().is_err(), "the socket is closed");
    server.close();
    lp.close().unwrap();
}

// Closing the loop closes the transports still open: connection_lost with an error
// saying so, and the protocols are freed (no protocol <-> transport cycle leaks).
#[test]
fn closing_the_loop_closes_open_transports() {
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let client_log = Log::default();
    let dropped = Rc::new(Cell::new(false));
    let lost_error = Rc::new(RefCell::new(None));
    let (transport, client) = lp
        .run_until_complete(lp.create_connection(
            {
                let (log, dropped, lost_error) =
                    (client_log.clone(), dropped.clone(), lost_error.clone());
                move || Rec {
                    dropped: DropFlag(dropped),
                    lost_error,
                    ..Rec::new(&log)
                }
            },
            server.local_addr().unwrap(),
        ))
        .unwrap()
        .unwrap();
    run_until(&lp, || !conns.borrow().is_empty());
    drop(client);
    drop(transport);
    assert!(!dropped.get());
    lp.close().unwrap();
    assert_eq!(
        client_log.borrow()[..],
        [Ev::Made, Ev::Lost(Some(io::ErrorKind::Other))]
    );
    assert_eq!(lost_error.borrow().as_deref(), Some("event loop is closed"));
    assert!(dropped.get(), "the protocol was freed");
    let server_side = conns.borrow()[0].0.clone();
    assert_eq!(lost_count(&server_side), 1);
    assert!(!server.is_serving());
}

// test_events.py: test_create_connection_refused.
#[test]
fn create_connection_refused() {
    let lp = new_loop();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let made = Rc::new(Cell::new(false));
    let flag = made.clone();
    let result = lp
        .run_until_complete(lp.create_connection(
            move || {
                flag.set(true);
                Rec::new(&Log::default())
            },
            addr,
        ))
        .unwrap();
    let Err(err) = result else {
        panic!("connected to a closed port");
    };
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(!made.get(), "no protocol is made for a failed connection");
    lp.close().unwrap();
}

/// asyncio 3.12's `Server.wait_closed`: it waits for the close and then for every
/// connection the server accepted to be lost, not just for the listening socket.
#[test]
fn server_wait_closed_waits_for_its_connections_to_be_lost() {
    let lp = new_loop();
    let log: Log = Rc::default();
    let l2 = log.clone();
    let server = lp
        .run_until_complete(lp.create_server(move || Rec::echo(&l2), "127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let mut client = std_client(server.local_addr().unwrap());
    run_until(&lp, || log.borrow().contains(&Ev::Made));
    let server = Rc::new(server);
    let done = Rc::new(Cell::new(false));
    let (s2, d2) = (server.clone(), done.clone());
    let waiter = lp
        .create_task(async move {
            s2.wait_closed().await;
            d2.set(true);
        })
        .unwrap();
    server.close();
    spin(&lp, 5);
    assert!(
        !done.get(),
        "a connection is still open: wait_closed must still wait"
    );
    // The client goes: the connection is lost, and wait_closed is done.
    client.write_all(b"x").unwrap();
    drop(client);
    run_until(&lp, || done.get());
    assert_eq!(lost_count(&log), 1);
    lp.run_until_complete(waiter).unwrap().unwrap();
}

/// `serve_forever` returns when the server is closed, and closes it when its task
/// is cancelled.
#[test]
fn server_serve_forever_ends_with_close_and_closes_when_cancelled() {
    let lp = new_loop();
    let log: Log = Rc::default();
    let l2 = log.clone();
    let server = Rc::new(
        lp.run_until_complete(lp.create_server(move || Rec::echo(&l2), "127.0.0.1:0"))
            .unwrap()
            .unwrap(),
    );
    let s2 = server.clone();
    let serving = lp
        .create_task(async move { s2.serve_forever().await })
        .unwrap();
    spin(&lp, 3);
    assert!(!serving.is_finished(), "serves until closed");
    server.close();
    lp.run_until_complete(serving).unwrap().unwrap();

    let l3 = log.clone();
    let other = Rc::new(
        lp.run_until_complete(lp.create_server(move || Rec::echo(&l3), "127.0.0.1:0"))
            .unwrap()
            .unwrap(),
    );
    let o2 = other.clone();
    let serving = lp
        .create_task(async move { o2.serve_forever().await })
        .unwrap();
    spin(&lp, 3);
    assert!(other.is_serving());
    serving.cancel();
    spin(&lp, 3);
    assert!(
        !other.is_serving(),
        "cancelling serve_forever closes the server"
    );
    lp.run_until_complete(other.wait_closed()).unwrap();
}

/// The server side of every connection made so far, once all `n` are made.
fn peers(lp: &EventLoop, conns: &Conns, n: usize) -> Vec<(Log, Transport)> {
    run_until(lp, || {
        let conns = conns.borrow();
        conns.len() == n && conns.iter().all(|(_, slot)| slot.borrow().is_some())
    });
    let conns = conns.borrow();
    conns
        .iter()
        .map(|(log, slot)| (log.clone(), slot.borrow().clone().unwrap()))
        .collect()
}

// test_server.py (3.13): test_close_clients. `close` then `close_clients`: every
// connection sends all it buffered (more than the socket takes: a `close_clients`
// that aborted would lose it), then ends (connection_lost once, with no error), and
// `wait_closed` returns.
#[test]
fn close_clients_sends_what_is_buffered_then_closes_every_connection() {
    const BIG: usize = 4 << 20;
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let addr = server.local_addr().unwrap();
    let mut clients: Vec<_> = (0..3).map(|_| std_client(addr)).collect();
    let peers = peers(&lp, &conns, 3);
    for (_, t) in &peers {
        let port = t.peer_addr().unwrap().port();
        t.write(&vec![port as u8; BIG]);
        assert!(t.get_write_buffer_size() > 0, "more than the socket takes");
    }
    server.close();
    server.close_clients();
    for (log, t) in &peers {
        assert!(t.is_closing());
        assert_eq!(lost_count(log), 0, "not lost before its buffer is sent");
    }
    let mut got = vec![Vec::new(); clients.len()];
    let mut ended = vec![false; clients.len()];
    run_until(&lp, || {
        for (i, c) in clients.iter_mut().enumerate() {
            ended[i] = ended[i] || read_some(c, &mut got[i]);
        }
        ended.iter().all(|e| *e)
    });
    for (c, got) in clients.iter().zip(&got) {
        let port = c.local_addr().unwrap().port();
        assert_eq!(got.len(), BIG, "all of it, then the end");
        assert!(got.iter().all(|b| *b == port as u8));
    }
    run_until(&lp, || peers.iter().all(|(log, _)| lost_count(log) == 1));
    for (log, _) in &peers {
        assert_eq!(log.borrow().last(), Some(&Ev::Lost(None)));
    }
    lp.run_until_complete(server.wait_closed()).unwrap();
    assert!(
        StdTcpStream::connect(addr).is_err(),
        "the server was closed first"
    );
}

// A server closed from its own callbacks: by the factory (which asyncio allows: the
// factory runs with the server open) and, with `close_clients`, by a protocol's
// `connection_made`. Neither is a panic, and `wait_closed` still waits for the
// connection being made, which counts from before `connection_made`.
#[test]
fn a_server_closed_from_its_own_callbacks_waits_for_that_connection() {
    let lp = new_loop();
    let reported = Rc::new(Cell::new(0usize));
    let r = reported.clone();
    lp.set_exception_handler(move |_| r.set(r.get() + 1));
    let server_slot: Rc<RefCell<Option<Rc<shardloop::Server>>>> = Rc::default();
    let slot = server_slot.clone();
    let log = Log::default();
    let made = log.clone();
    let server = Rc::new(
        lp.run_until_complete(lp.create_server(
            move || {
                if let Some(server) = slot.borrow().as_ref() {
                    server.close();
                }
                Rec {
                    keep_open_on_eof: false,
                    ..Rec::new(&made)
                }
            },
            "127.0.0.1:0",
        ))
        .unwrap()
        .unwrap(),
    );
    server_slot.replace(Some(server.clone()));
    let addr = server.local_addr().unwrap();
    let mut client = std_client(addr);
    run_until(&lp, || log.borrow().first() == Some(&Ev::Made));
    assert!(!server.is_serving(), "the factory closed it");
    assert_eq!(reported.get(), 0, "no panic: {} reported", reported.get());
    let s = server.clone();
    let waiting = lp
        .create_task(async move { s.wait_closed().await })
        .unwrap();
    spin(&lp, 5);
    assert!(!waiting.is_finished(), "a connection is still open");
    // The client leaves; the connection ends and the server is idle.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    run_until(&lp, || lost_count(&log) == 1);
    lp.run_until_complete(waiting).unwrap().unwrap();
    let _ = read_some(&mut client, &mut Vec::new());
    server_slot.replace(None);
}

// test_server.py (3.13): test_abort_clients. What the transports buffered is
// dropped, connection_lost comes once, and the server itself goes on serving.
#[test]
fn abort_clients_drops_what_is_buffered_and_the_server_serves_on() {
    const BIG: usize = 16 << 20;
    let lp = new_loop();
    let (server, conns) = recording_server(&lp, Rec::new);
    let addr = server.local_addr().unwrap();
    // The client does not read: most of the write stays in the transport.
    let mut client = std_client(addr);
    let (log, t) = peers(&lp, &conns, 1).remove(0);
    t.write(&vec![7u8; BIG]);
    assert!(t.get_write_buffer_size() > 0, "more than the socket takes");
    server.abort_clients();
    run_until(&lp, || lost_count(&log) == 1);
    assert_eq!(log.borrow().last(), Some(&Ev::Lost(None)));
    assert_eq!(t.get_write_buffer_size(), 0, "the buffer was dropped");
    let mut got = Vec::new();
    run_until(&lp, || read_some(&mut client, &mut got));
    assert!(got.len() < BIG, "the client got all {BIG} bytes");
    assert!(server.is_serving());
    let _again = std_client(addr);
    assert_eq!(peers(&lp, &conns, 2).len(), 2, "a new client is served");
}

// ---------------------------------------------------------------------------------------
// Running out of file descriptors
// ---------------------------------------------------------------------------------------

/// A protocol server out of file descriptors backs off and keeps serving (asyncio's
/// answer, and what `TcpListener` does): once descriptors are free again, every
/// connection that waited in the backlog is served. On both loops: on the proactor
/// the ring's accept ends with the error and is submitted again after the pause.
/// The test runs itself in a child process with a low descriptor limit
/// (`support/emfile.rs`).
#[test]
fn a_server_out_of_descriptors_backs_off_and_keeps_serving() {
    if emfile::in_child() {
        return emfile_child();
    }
    emfile::run_in_child("a_server_out_of_descriptors_backs_off_and_keeps_serving");
}

fn emfile_child() {
    const CLIENTS: usize = 12;
    const FREED: usize = 2;
    emfile::count_accept_warnings();
    let lp = new_loop();
    // Each connection echoes its byte and closes, giving its descriptor back.
    let served = Rc::new(Cell::new(0usize));
    let s = served.clone();
    let server = lp
        .run_until_complete(lp.create_server(
            move || {
                let s = s.clone();
                Rec {
                    on_data: Some(Box::new(move |t, d| {
                        t.write(d);
                        t.close();
                        s.set(s.get() + 1);
                    })),
                    ..Rec::new(&Log::default())
                }
            },
            "127.0.0.1:0",
        ))
        .unwrap()
        .unwrap();
    let addr = server.local_addr().unwrap();
    // The clients connect (into the backlog) and send before descriptors run out.
    // The server has not accepted yet: its first turn comes with the loop's next
    // run (on the proactor its accept task, and with it the ring's accept, is first
    // polled then), after the descriptors are gone.
    let clients = emfile::clients_that_sent_a_byte(addr, CLIENTS, Duration::from_secs(30));
    let mut hogs = emfile::take_every_descriptor(FREED);
    // Nothing can be accepted until the server has said it ran out; then a few
    // descriptors come back, and every client is served through them.
    run_until(&lp, || emfile::accept_warnings() > 0);
    assert_eq!(served.get(), 0, "served with no descriptor free");
    hogs.truncate(hogs.len() - FREED);
    run_until(&lp, || served.get() == CLIENTS);
    for (i, mut c) in clients.into_iter().enumerate() {
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i as u8);
    }
    assert!(server.is_serving());
    emfile::child_done();
}
