//! asyncio's streams (API.md section 7), mirroring test_asyncio/test_streams.py:
//! the reader's readline / readuntil / readexactly / read and their limit and
//! end-of-stream cases, the writer's background sending, flow control, half-close
//! and close, the servers (several clients, close, failing handlers), Unix sockets,
//! and a reader and a writer used from two tasks.
//!
//! Reader tests run over `UnixStream::pair()`, whose other end the test writes to
//! piece by piece. `settle()` lets the loop run a little between pieces (so that a
//! reader has seen the first before the next comes); no result depends on how
//! long anything takes, and every test body is bounded by HANG_LIMIT.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/example.rs"]
mod example;
#[path = "support/listening.rs"]
mod listening;

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::Rc;
use std::time::Duration;

use shardloop::net::UnixStream;
use shardloop::streams::{self, StreamReader, StreamWriter, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};
use shardloop::{spawn, Error};

use bounded::block_on;

/// Lets the loop poll I/O and run other tasks for a moment. Tests use it to make
/// data arrive in pieces; what they assert holds however the pieces arrive.
async fn settle() {
    shardloop::time::sleep(Duration::from_millis(5)).await;
}

type Unix = (StreamReader<UnixStream>, StreamWriter<UnixStream>);

/// Two connected streams: (ours, the peer's).
fn pair() -> (Unix, Unix) {
    let (a, b) = UnixStream::pair().unwrap();
    (streams::from_socket(a), streams::from_socket(b))
}

/// `n` clients connected to `server`.
async fn connect(server: &streams::Server, n: usize) -> Vec<(StreamReader, StreamWriter)> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(streams::open_connection(server.local_addr()).await.unwrap());
    }
    clients
}

/// Bytes that differ by position, so that reordered or lost data is caught.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A limit overrun's `(consumed, separator_found, message)`; panics on anything else.
fn overrun(result: Result<Vec<u8>, Error>) -> (usize, bool, String) {
    match result {
        Err(
            e @ Error::LimitOverrun {
                consumed,
                separator_found,
            },
        ) => (consumed, separator_found, e.to_string()),
        other => panic!("expected a limit overrun, got {other:?}"),
    }
}

/// An incomplete read's `(partial, expected, message)`; panics on anything else.
fn incomplete(result: Result<Vec<u8>, Error>) -> (Vec<u8>, Option<usize>, String) {
    match result {
        Err(e @ Error::IncompleteRead { .. }) => {
            let message = e.to_string();
            let Error::IncompleteRead { partial, expected } = e else {
                unreachable!()
            };
            (partial, expected, message)
        }
        other => panic!("expected an incomplete read, got {other:?}"),
    }
}

fn kind(e: &Error) -> Option<io::ErrorKind> {
    match e {
        Error::Io(e) => Some(e.kind()),
        _ => None,
    }
}

// test_streams.py: test_readline (a line fed in several chunks, what follows the
// newline kept).
#[test]
fn readline_joins_a_line_split_across_writes() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        let line = spawn(async move {
            let line = r.readline().await;
            (r, line)
        });
        pw.write(b"chunk1 ");
        settle().await;
        pw.write(b"chunk2 ");
        settle().await;
        pw.write(b"chunk3 \n chunk4");
        let (mut r, line) = line.await.unwrap();
        assert_eq!(line.unwrap(), b"chunk1 chunk2 chunk3 \n");
        pw.write_eof();
        assert_eq!(r.read_to_eof().await.unwrap(), b" chunk4");
    });
}

// test_readline_eof and test_readline_empty_eof: the partial line at the end, then
// empty, and at_eof.
#[test]
fn readline_at_eof_returns_the_partial_line_then_empty() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        pw.write(b"some data");
        pw.write_eof();
        assert_eq!(r.readline().await.unwrap(), b"some data");
        assert!(r.at_eof());
        assert_eq!(r.readline().await.unwrap(), b"");
        assert_eq!(r.readline().await.unwrap(), b"");
    });
}

// test_readline_limit_with_existing_data: over the limit with the newline found,
// the line and its newline are dropped and the rest stays; without it, the buffer
// is emptied (and, test_readline_limit, the rest of the line comes next).
#[test]
fn readline_over_the_limit_drops_the_line() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        r.set_limit(3).unwrap();
        pw.write(b"line1\nline2\n");
        let (consumed, found, _) = overrun(r.readline().await);
        assert_eq!((consumed, found), (5, true));
        assert_eq!(r.read(100).await.unwrap(), b"line2\n");

        pw.write(b"line1li");
        let (_, found, message) = overrun(r.readline().await);
        assert!(!found);
        assert_eq!(
            message,
            "separator is not found, and chunk exceed the limit"
        );
        pw.write(b"ne2\nok\n");
        assert_eq!(r.readline().await.unwrap(), b"ne2\n");
        assert_eq!(r.readline().await.unwrap(), b"ok\n");
    });
}

// test_readuntil_limit_found_sep: readuntil leaves the data in the buffer on an
// overrun, not found and then found.
#[test]
fn readuntil_over_the_limit_keeps_the_data() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        r.set_limit(3).unwrap();
        pw.write(b"some dataAA");
        let (consumed, found, _) = overrun(r.readuntil(b"AAA").await);
        assert_eq!((consumed, found), (9, false));
        pw.write(b"A");
        settle().await;
        let (consumed, found, message) = overrun(r.readuntil(b"AAA").await);
        assert_eq!((consumed, found), (9, true));
        assert_eq!(
            message,
            "separator is found, but chunk is longer than limit"
        );
        assert_eq!(r.readexactly(12).await.unwrap(), b"some dataAAA");
    });
}

// test_readuntil_multi_chunks_1: a multi-byte separator split across writes.
#[test]
fn readuntil_finds_a_separator_split_across_writes() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        let found = spawn(async move {
            let found = r.readuntil(b"aaa").await;
            (r, found)
        });
        for piece in [&b"QWEaa"[..], b"XYaa", b"a"] {
            pw.write(piece);
            settle().await;
        }
        let (mut r, found) = found.await.unwrap();
        assert_eq!(found.unwrap(), b"QWEaaXYaaa");

        pw.write(b"XYa");
        settle().await;
        pw.write(b"aa");
        assert_eq!(r.readuntil(b"aaa").await.unwrap(), b"XYaaa");
        pw.write(b"aaa");
        assert_eq!(r.readuntil(b"aaa").await.unwrap(), b"aaa");
    });
}

// test_readuntil_eof: no separator before the end: IncompleteRead with everything,
// expected unknown, and the buffer emptied.
#[test]
fn readuntil_at_eof_is_an_incomplete_read() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        pw.write(b"some dataAA");
        pw.write_eof();
        let (partial, expected, message) = incomplete(r.readuntil(b"AAA").await);
        assert_eq!(partial, b"some dataAA");
        assert_eq!(expected, None);
        assert_eq!(
            message,
            "11 bytes read on a total of undefined expected bytes"
        );
        assert!(r.at_eof());
        assert_eq!(r.read(100).await.unwrap(), b"");
    });
}

// test_readexactly, test_readexactly_zero_or_less, test_readexactly_eof.
#[test]
fn readexactly_waits_for_n_bytes_and_reports_an_early_end() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        let exact = spawn(async move {
            let got = r.readexactly(10).await;
            (r, got)
        });
        for _ in 0..3 {
            pw.write(b"chunk");
            settle().await;
        }
        let (mut r, got) = exact.await.unwrap();
        assert_eq!(got.unwrap(), b"chunkchunk");
        assert_eq!(r.readexactly(0).await.unwrap(), b"");
        assert_eq!(r.readexactly(5).await.unwrap(), b"chunk");

        pw.write(b"chunk");
        pw.write_eof();
        let (partial, expected, message) = incomplete(r.readexactly(10).await);
        assert_eq!(partial, b"chunk");
        assert_eq!(expected, Some(10));
        assert_eq!(message, "5 bytes read on a total of 10 expected bytes");
        assert!(r.at_eof());
    });
}

// ---------------------------------------------------------------------------------
// Cancel safety: StreamReader's docs promise that a read dropped while it waits (a
// timeout) loses nothing, what it had read staying in the buffer for the next call.
// asyncio's reader gives the same (its buffer is the reader's, not the call's), which
// `wait_for(reader.readline(), t)` users rely on; test_streams.py has no such test.
// ---------------------------------------------------------------------------------

/// How long a read under a timeout waits before it is dropped: long enough for the
/// pieces written before it to have been read into the buffer, which is the case
/// these tests are after. No result depends on it: a piece still on its way when
/// the timeout fires is read by the next call all the same.
const GIVE_UP: Duration = Duration::from_millis(50);

/// Runs `read` under a timeout that must fire, since what it waits for is not all
/// there: the call is dropped mid-read, as a caller giving up on a slow peer does.
async fn times_out<T: std::fmt::Debug>(read: impl std::future::Future<Output = Result<T, Error>>) {
    let result = shardloop::time::timeout(GIVE_UP, read).await;
    assert!(
        matches!(result, Err(Error::Timeout)),
        "expected the timeout to fire, got {result:?}"
    );
}

#[test]
fn readline_dropped_by_a_timeout_keeps_the_part_that_came() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        pw.write(b"chunk1 ");
        settle().await;
        times_out(r.readline()).await;
        pw.write(b"chunk2 ");
        settle().await;
        times_out(r.readline()).await; // with chunk1 buffered by the first call
        pw.write(b"chunk3\nnext");
        assert_eq!(r.readline().await.unwrap(), b"chunk1 chunk2 chunk3\n");
        // What came after the newline was kept as well.
        times_out(r.readline()).await;
        pw.write(b" line\n");
        assert_eq!(r.readline().await.unwrap(), b"next line\n");
    });
}

#[test]
fn readuntil_dropped_by_a_timeout_finds_a_separator_split_around_it() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        // The separator's first bytes come before the timeout, the rest after: the
        // next call finds it across the two.
        pw.write(b"HEAD\r\n\r");
        settle().await;
        times_out(r.readuntil(b"\r\n\r\n")).await;
        pw.write(b"\nbody");
        assert_eq!(r.readuntil(b"\r\n\r\n").await.unwrap(), b"HEAD\r\n\r\n");
        // What a dropped readuntil read is there for any next call, here a readline.
        pw.write(b" and more\nrest");
        settle().await;
        times_out(r.readuntil(b"END")).await;
        assert_eq!(r.readline().await.unwrap(), b"body and more\n");
        pw.write_eof();
        assert_eq!(r.read_to_eof().await.unwrap(), b"rest");
    });
}

#[test]
fn readexactly_dropped_by_a_timeout_loses_no_byte() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        pw.write(b"chunk");
        settle().await;
        times_out(r.readexactly(10)).await;
        pw.write(b"chunk and more");
        assert_eq!(r.readexactly(10).await.unwrap(), b"chunkchunk");
        assert_eq!(r.readexactly(9).await.unwrap(), b" and more");

        // Several reads' worth (the reader reads at most 256 KiB at a time) before the
        // timeout, the rest after it: every byte once, in order.
        let big = pattern(1024 * 1024 + 7);
        let (head, tail) = big.split_at(600 * 1024);
        pw.write(head);
        settle().await;
        times_out(r.readexactly(big.len())).await;
        pw.write(tail);
        let got = r.readexactly(big.len()).await.unwrap();
        assert!(
            got == big,
            "{} bytes read, not the {} sent in order",
            got.len(),
            big.len()
        );
        pw.write_eof();
        assert_eq!(r.read(10).await.unwrap(), b"", "nothing left over");
    });
}

// test_read_zero, test_read, test_read_until_eof (read(-1)), test_read_eof.
#[test]
fn read_takes_up_to_n_and_read_to_eof_everything() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        assert_eq!(r.read(0).await.unwrap(), b"", "read(0) returns at once");
        pw.write(b"line1\nline2\n");
        assert_eq!(r.read(5).await.unwrap(), b"line1");
        assert_eq!(r.read(100).await.unwrap(), b"\nline2\n");

        let big = pattern(300 * 1024);
        let writer = spawn({
            let big = big.clone();
            async move {
                pw.write(&big);
                pw.drain().await.unwrap();
                pw.write_eof();
                pw
            }
        });
        assert_eq!(r.read_to_eof().await.unwrap(), big);
        assert_eq!(r.read(10).await.unwrap(), b"", "empty at the end");
        writer.await.unwrap();
    });
}

// test_at_eof: not at the end while data is buffered, nor before the end is seen.
#[test]
fn at_eof_once_the_end_is_read() {
    block_on(async {
        let ((mut r, _w), (_pr, mut pw)) = pair();
        assert!(!r.at_eof());
        pw.write(b"some data\n");
        assert_eq!(r.readline().await.unwrap(), b"some data\n");
        assert!(!r.at_eof(), "the end has not come");
        pw.write(b"tail");
        pw.write_eof();
        assert_eq!(r.read(2).await.unwrap(), b"ta");
        assert_eq!(r.read(2).await.unwrap(), b"il");
        assert_eq!(r.read(2).await.unwrap(), b"");
        assert!(r.at_eof());
    });
}

// test_invalid_limit and test_readuntil_separator (an empty separator); asyncio's
// set_write_buffer_limits refuses low > high.
#[test]
fn bad_arguments_are_errors() {
    block_on(async {
        let ((mut r, mut w), _peer) = pair();
        assert_eq!(
            kind(&r.set_limit(0).unwrap_err()),
            Some(io::ErrorKind::InvalidInput)
        );
        assert_eq!(r.limit(), streams::DEFAULT_LIMIT);
        let e = r.readuntil(b"").await.unwrap_err();
        assert_eq!(kind(&e), Some(io::ErrorKind::InvalidInput));
        let e = w.set_write_buffer_limits(1, 2).unwrap_err();
        assert_eq!(kind(&e), Some(io::ErrorKind::InvalidInput));
    });
}

// asyncio's transport keeps sending what write() buffered, drain() or not
// (test_selector_events.py: SelectorSocketTransportTests.test_write_partial).
#[test]
fn written_data_goes_out_without_drain() {
    block_on(async {
        let ((_r, mut w), (mut pr, _pw)) = pair();
        let data = pattern(4 * 1024 * 1024);
        w.write(&data);
        assert!(
            w.get_write_buffer_size() > 0,
            "4 MiB does not fit a socket buffer: some of it waits in the writer"
        );
        // No drain, no further call on the writer: the flusher sends it all.
        assert_eq!(pr.readexactly(data.len()).await.unwrap(), data);
        assert_eq!(w.get_write_buffer_size(), 0);
    });
}

// FlowControlMixin (test_streams.py: test_multiple_drain's pause and resume): drain
// waits while the buffer is above the high-water mark and returns once it is down
// to the low one. The peer reads nothing until the drain is seen waiting, so the
// drain cannot have finished by then whatever the timing.
#[test]
fn drain_waits_for_a_slow_reader() {
    block_on(async {
        let ((_r, mut w), (mut pr, _pw)) = pair();
        let data = pattern(2 * 1024 * 1024);
        w.write(&data);
        assert!(w.get_write_buffer_size() > DEFAULT_HIGH_WATER);
        let drain = spawn(async move {
            let drained = w.drain().await;
            (w, drained)
        });
        for _ in 0..5 {
            settle().await;
            assert!(
                !drain.is_finished(),
                "drain returned while the peer read nothing"
            );
        }
        let reader = spawn(async move { pr.readexactly(data.len()).await.map(|got| got == data) });
        let (w, drained) = drain.await.unwrap();
        drained.unwrap();
        assert!(w.get_write_buffer_size() <= DEFAULT_LOW_WATER);
        assert!(
            reader.await.unwrap().unwrap(),
            "the peer got the data in order"
        );
    });
}

// test_drain_raises: a peer that closes at once (a plain thread, as in CPython);
// write + drain in a loop must end with a connection error, not spin forever.
#[test]
fn drain_reports_a_connection_the_peer_closed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || drop(listener.accept().unwrap()));
    block_on(async move {
        let (_r, mut w) = streams::open_connection(addr).await.unwrap();
        let mut failed = None;
        for _ in 0..1_000_000 {
            w.write(b"foo\n");
            if let Err(e) = w.drain().await {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("writing to a closed peer kept succeeding");
        assert!(
            matches!(
                kind(&e),
                Some(
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionAborted
                )
            ),
            "{e:?}"
        );
        assert!(w.is_closing());
        assert!(
            w.wait_closed().await.is_err(),
            "wait_closed reports the failure too"
        );
    });
    peer.join().unwrap();
}

// The half-close (SelectorSocketTransportTests.test_write_eof): the peer reads the
// end of the request and still answers on the other direction.
#[test]
fn write_eof_is_a_half_close() {
    block_on(async {
        let server = streams::start_server("127.0.0.1:0", |mut r, mut w| async move {
            let request = r.read_to_eof().await?;
            w.write(format!("{} bytes\n", request.len()).as_bytes());
            w.drain().await
        })
        .await
        .unwrap();
        let (mut r, mut w) = streams::open_connection(server.local_addr()).await.unwrap();
        assert!(w.can_write_eof());
        w.write(b"hello");
        w.write_eof();
        assert!(!w.is_closing(), "a half-close is not a close");
        assert_eq!(r.readline().await.unwrap(), b"5 bytes\n");
        assert_eq!(
            r.readline().await.unwrap(),
            b"",
            "the server closed after answering"
        );

        w.write(b"late");
        let e = w.drain().await.unwrap_err();
        assert_eq!(
            kind(&e),
            Some(io::ErrorKind::BrokenPipe),
            "writes after write_eof are refused"
        );
        server.close();
    });
}

// test_wait_closed_on_close and test_eof_feed_when_closing_writer: close sends what
// is buffered, wait_closed returns, and the reader is at its end.
#[test]
fn close_sends_the_buffer_then_wait_closed_returns() {
    block_on(async {
        let received = Rc::new(RefCell::new(Vec::new()));
        let server = streams::start_server("127.0.0.1:0", {
            let received = received.clone();
            move |mut r, _w| {
                let received = received.clone();
                async move {
                    let all = r.read_to_eof().await?;
                    received.borrow_mut().push(all);
                    Ok::<_, Error>(())
                }
            }
        })
        .await
        .unwrap();
        let (mut r, mut w) = streams::open_connection(server.local_addr()).await.unwrap();
        let data = pattern(1024 * 1024);
        w.write(&data);
        assert!(!w.is_closing());
        w.close();
        assert!(w.is_closing());
        w.wait_closed().await.unwrap();
        assert!(r.at_eof(), "the writer's close ends the reader too");
        assert_eq!(r.read(10).await.unwrap(), b"");

        drop((r, w));
        server.close();
        server.wait_closed().await;
        assert_eq!(*received.borrow(), vec![data]);
    });
}

// test_server.py (3.13): test_close_clients, on a streams server. Each handler
// waits to read to the end; `close_clients` sends what its writer buffered (more
// than the socket takes), shuts the connection down, the handlers see the end and
// return, and `wait_closed` returns.
#[test]
fn close_clients_sends_what_is_buffered_and_ends_every_handler() {
    block_on(async {
        const BIG: usize = 4 << 20;
        let server = streams::start_server("127.0.0.1:0", move |mut r, mut w| async move {
            w.write(&pattern(BIG));
            let rest = r.read_to_eof().await?;
            assert!(rest.is_empty());
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        let mut clients = connect(&server, 3).await;
        settle().await; // the handlers run and buffer their writes
        server.close();
        server.close_clients();
        for (r, _w) in &mut clients {
            assert_eq!(
                r.read_to_eof().await.unwrap(),
                pattern(BIG),
                "all, then the end"
            );
        }
        server.wait_closed().await;
    });
}

// A handler that dropped its writer and only reads is still a client of the server:
// `close_clients` and `abort_clients` end its reader too (asyncio closes the
// transport, whoever holds the writer).
#[test]
fn close_and_abort_clients_reach_a_handler_that_dropped_its_writer() {
    for abort in [false, true] {
        block_on(async move {
            let ended = Rc::new(Cell::new(0));
            let server = streams::start_server("127.0.0.1:0", {
                let ended = ended.clone();
                move |mut r, w| {
                    let ended = ended.clone();
                    async move {
                        drop(w);
                        let rest = r.read_to_eof().await?;
                        assert!(rest.is_empty());
                        ended.set(ended.get() + 1);
                        Ok::<_, Error>(())
                    }
                }
            })
            .await
            .unwrap();
            let mut clients = connect(&server, 3).await;
            for (r, _w) in &mut clients {
                // The handler's dropped writer half-closed: it has started.
                assert_eq!(r.read_to_eof().await.unwrap(), b"");
            }
            server.close();
            assert_eq!(ended.get(), 0, "the handlers wait for their clients");
            if abort {
                server.abort_clients();
            } else {
                server.close_clients();
            }
            server.wait_closed().await;
            assert_eq!(ended.get(), 3, "abort: {abort}");
        });
    }
}

// test_server.py (3.13): test_abort_clients, on a streams server: what the writers
// buffered is dropped, the handlers' readers see the end and their writers say the
// connection was aborted, and the server serves on.
#[test]
fn abort_clients_drops_what_is_buffered_and_the_handlers_hear_of_it() {
    block_on(async {
        const BIG: usize = 16 << 20;
        let drained = Rc::new(RefCell::new(Vec::new()));
        let server = streams::start_server("127.0.0.1:0", {
            let drained = drained.clone();
            move |mut r, mut w| {
                let drained = drained.clone();
                async move {
                    w.write(&pattern(BIG));
                    // The client does not read: this waits until the abort.
                    let result = w.drain().await;
                    drained.borrow_mut().push(result.map_err(|e| kind(&e)));
                    assert_eq!(r.read(10).await.unwrap(), b"", "the reader is at its end");
                    Ok::<_, Error>(())
                }
            }
        })
        .await
        .unwrap();
        let (mut r, _w) = streams::open_connection(server.local_addr()).await.unwrap();
        while drained.borrow().is_empty() {
            settle().await;
            server.abort_clients();
        }
        assert_eq!(
            *drained.borrow(),
            vec![Err(Some(io::ErrorKind::ConnectionAborted))]
        );
        let got = r.read_to_eof().await.unwrap_or_default();
        assert!(got.len() < BIG, "the client got all {BIG} bytes");
        assert!(
            server.is_serving(),
            "aborting the clients does not close the server"
        );
        let (mut r2, mut w2) = streams::open_connection(server.local_addr()).await.unwrap();
        w2.write(b"x");
        drop(r2.read(1).await);
        server.close();
    });
}

// test_async_writer_api_exception_after_close: drain after close is "connection
// lost".
#[test]
fn drain_after_close_is_connection_lost() {
    block_on(async {
        let ((_r, mut w), _peer) = pair();
        w.write(b"bye");
        w.close();
        w.wait_closed().await.unwrap();
        w.write(b"data");
        let e = w.drain().await.unwrap_err();
        assert_eq!(kind(&e), Some(io::ErrorKind::ConnectionReset));
        assert_eq!(e.to_string(), "i/o error: connection lost");
    });
}

/// An echo handler: each line back until the end.
async fn echo_lines<S: streams::StreamSocket>(
    mut r: StreamReader<S>,
    mut w: StreamWriter<S>,
) -> Result<(), Error> {
    loop {
        let line = r.readline().await?;
        if line.is_empty() {
            return Ok(());
        }
        w.write(&line);
        w.drain().await?;
    }
}

// test_start_server: several clients at once, each getting its own lines back.
#[test]
fn a_server_serves_several_clients_at_once() {
    block_on(async {
        let server = streams::start_server("127.0.0.1:0", echo_lines)
            .await
            .unwrap();
        let addr = server.local_addr();
        let clients: Vec<_> = (0..5)
            .map(|c| {
                spawn(async move {
                    let (mut r, mut w) = streams::open_connection(addr).await?;
                    for i in 0..20 {
                        let line = format!("client {c} line {i}\n");
                        w.write(line.as_bytes());
                        w.drain().await?;
                        assert_eq!(r.readline().await?, line.as_bytes());
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap().unwrap();
        }
        server.close();
        server.wait_closed().await;
    });
}

// Server.close stops accepting at once; wait_closed waits for the handlers still
// running (asyncio 3.12's wait_closed).
#[test]
fn closing_a_server_stops_accepting() {
    block_on(async {
        let server = streams::start_server("127.0.0.1:0", echo_lines)
            .await
            .unwrap();
        let addr = server.local_addr();
        let (mut r, mut w) = streams::open_connection(addr).await.unwrap();
        w.write(b"before\n");
        assert_eq!(r.readline().await.unwrap(), b"before\n");

        assert!(server.is_serving());
        server.close();
        assert!(!server.is_serving());
        let refused = streams::open_connection(addr).await.unwrap_err();
        assert_eq!(kind(&refused), Some(io::ErrorKind::ConnectionRefused));

        let server = Rc::new(server);
        let closed = spawn({
            let server = server.clone();
            async move { server.wait_closed().await }
        });
        // The accepted connection is still served.
        w.write(b"after\n");
        assert_eq!(r.readline().await.unwrap(), b"after\n");
        assert!(!closed.is_finished(), "a handler still runs");
        w.close();
        closed.await.unwrap();
    });
}

// test_unhandled_exceptions: a handler that fails (a panic, an error) is reported
// to the exception handler, and the server goes on serving.
#[test]
fn failing_handlers_are_reported_and_the_server_serves_on() {
    block_on(async {
        let reports = Rc::new(RefCell::new(Vec::new()));
        let lp = shardloop::get_running_loop().unwrap();
        lp.set_exception_handler({
            let reports = reports.clone();
            move |ctx| {
                reports
                    .borrow_mut()
                    .push((ctx.message.clone(), ctx.panic.clone()))
            }
        });
        let server = streams::start_server("127.0.0.1:0", |mut r, mut w| async move {
            let line = r.readline().await?;
            match &line[..] {
                b"panic\n" => panic!("handler boom"),
                b"error\n" => Err(io::Error::other("handler failed")),
                _ => {
                    w.write(&line);
                    w.drain().await.map_err(io::Error::from)
                }
            }
        })
        .await
        .unwrap();
        let addr = server.local_addr();
        for request in [&b"panic\n"[..], b"error\n"] {
            let (mut r, mut w) = streams::open_connection(addr).await.unwrap();
            w.write(request);
            assert_eq!(
                r.readline().await.unwrap(),
                b"",
                "the failed handler's connection closes"
            );
        }
        let (mut r, mut w) = streams::open_connection(addr).await.unwrap();
        w.write(b"still serving\n");
        assert_eq!(r.readline().await.unwrap(), b"still serving\n");

        let reports = reports.borrow();
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert_eq!(reports[0].1.as_deref(), Some("handler boom"));
        assert_eq!(
            reports[1].0,
            "unhandled error in client_connected_cb: handler failed"
        );
        server.close();
    });
}

// test_open_unix_connection and test_start_unix_server.
#[test]
fn unix_socket_servers_and_connections() {
    let dir = std::env::temp_dir().join(format!("shardloop-streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    block_on(async {
        let server = streams::start_unix_server(&path, echo_lines).await.unwrap();
        assert_eq!(server.local_addr().as_pathname(), Some(path.as_path()));
        let (mut r, mut w) = streams::open_unix_connection(&path).await.unwrap();
        assert_eq!(w.peer_addr().unwrap().as_pathname(), Some(path.as_path()));
        w.writelines([&b"over "[..], b"a unix socket\n"]);
        assert_eq!(r.readline().await.unwrap(), b"over a unix socket\n");
        w.close();
        w.wait_closed().await.unwrap();
        server.close();
        server.wait_closed().await;
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

// asyncio's Server.sockets on a stream server: its listening socket while it
// serves, for TCP and Unix servers; none once closed, and a kept handle then has no
// descriptor.
#[test]
fn a_stream_servers_sockets_are_its_listening_socket_until_it_closes() {
    let dir = std::env::temp_dir().join(format!("shardloop-stream-sockets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("server.sock");
    let _ = std::fs::remove_file(&path);
    block_on(async {
        let server = streams::start_server("127.0.0.1:0", echo_lines)
            .await
            .unwrap();
        let socket = server.sockets().pop().unwrap();
        assert_eq!(socket.local_addr().unwrap(), server.local_addr());
        assert!(listening::is_listening(socket.raw_fd().unwrap()));
        let (mut r, mut w) = streams::open_connection(socket.local_addr().unwrap())
            .await
            .unwrap();
        w.write(b"through its socket\n");
        assert_eq!(r.readline().await.unwrap(), b"through its socket\n");
        server.close();
        assert!(server.sockets().is_empty());
        assert_eq!(socket.raw_fd(), None);
        assert_eq!(
            socket.local_addr().unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );

        let server = streams::start_unix_server(&path, echo_lines).await.unwrap();
        let sockets = server.sockets();
        assert_eq!(sockets.len(), 1);
        let unix = sockets[0].unix_local_addr().unwrap();
        assert_eq!(unix.as_pathname(), Some(path.as_path()));
        assert_eq!(
            sockets[0].local_addr().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(listening::is_listening(sockets[0].raw_fd().unwrap()));
        server.close();
        assert_eq!(sockets[0].raw_fd(), None);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

// asyncio's reader and writer are independent: one task writes while another
// reads. The echo's buffers are far smaller than the data, so this only finishes
// if both run at once.
#[test]
fn reader_and_writer_work_from_different_tasks() {
    block_on(async {
        let server = streams::start_server("127.0.0.1:0", |mut r, mut w| async move {
            loop {
                let data = r.read(64 * 1024).await?;
                if data.is_empty() {
                    return Ok::<_, Error>(());
                }
                w.write(&data);
                w.drain().await?;
            }
        })
        .await
        .unwrap();
        let (mut r, mut w) = streams::open_connection(server.local_addr()).await.unwrap();
        let data = pattern(8 * 1024 * 1024);
        let writer = spawn({
            let data = data.clone();
            async move {
                for chunk in data.chunks(16 * 1024) {
                    w.write(chunk);
                    w.drain().await?;
                }
                w.write_eof();
                Ok::<_, Error>(())
            }
        });
        let reader = spawn(async move { r.readexactly(data.len()).await.map(|got| got == data) });
        writer.await.unwrap().unwrap();
        assert!(
            reader.await.unwrap().unwrap(),
            "the echo came back in order"
        );
        server.close();
    });
}

// test_open_connection_error.
#[test]
fn a_refused_connection_is_an_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    block_on(async move {
        let e = streams::open_connection(addr).await.unwrap_err();
        assert_eq!(kind(&e), Some(io::ErrorKind::ConnectionRefused));
    });
}

// examples/echo_streams: the benchmarks' streams echo server echoes, and exits
// cleanly on SIGTERM.
#[test]
fn the_echo_streams_example_echoes() {
    let server = example::Example::start("echo_streams", &[]);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let data = pattern(1024 * 1024);
    let sender = std::thread::spawn({
        let mut conn = conn.try_clone().unwrap();
        let data = data.clone();
        move || {
            std::io::Write::write_all(&mut conn, &data).unwrap();
            conn.shutdown(std::net::Shutdown::Write).unwrap();
        }
    });
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    assert!(back == data, "the echo differs");
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

// API.md section 7's stream calls, as written there (a local server in place of
// Redis).
#[test]
fn the_api_contract_calls() {
    block_on(async {
        let server = shardloop::streams::start_server("127.0.0.1:0", |mut r, mut w| async move {
            let ping = r.readline().await.unwrap();
            w.write(&ping);
            w.write(b"four");
            w.write(b"until\r\nsome");
            w.drain().await.unwrap();
        })
        .await
        .unwrap();
        let addr = server.local_addr().to_string();
        let run = async {
            let (mut r, mut w) = shardloop::streams::open_connection(addr.as_str()).await?;
            w.write(b"PING\r\n");
            w.drain().await?;
            let line: Vec<u8> = r.readline().await?;
            let n: Vec<u8> = r.readexactly(4).await?;
            let upto: Vec<u8> = r.readuntil(b"\r\n").await?;
            let some: Vec<u8> = r.read(1024).await?;
            w.close();
            w.wait_closed().await?;
            Ok::<_, Error>((line, n, upto, some))
        };
        let (line, n, upto, some) = run.await.unwrap();
        assert_eq!(line, b"PING\r\n");
        assert_eq!(n, b"four");
        assert_eq!(upto, b"until\r\n");
        assert_eq!(some, b"some");
        server.local_addr();
        server.close();
    });
}
