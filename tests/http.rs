//! hyper on shardloop, checked with real HTTP clients (ureq, hyper's own client) and
//! with raw sockets for the bad-input cases: routes, keep-alive, 400 on a garbage
//! request line, 431 on oversized headers, a dribbling client that holds up no
//! other, idle keep-alive connections closed by the header-read timeout.
#![cfg(feature = "hyper")]

#[cfg(feature = "http2")]
#[path = "support/client.rs"]
mod client;
#[path = "support/example.rs"]
mod example;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use example::Example;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use shardloop::net::{TcpListener, TcpStream, UnixStream};

/// The longest any socket read in these tests waits: a bound, never an assertion.
const READ_BOUND: Duration = Duration::from_secs(20);

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = match req.uri().path() {
        "/" => Response::builder()
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"Hello, World!"))),
        "/json" => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"message":"Hello, World!"}"#,
            ))),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new())),
    };
    Ok(resp.expect("a valid response"))
}

/// A hyper server on its own thread's loop, on 127.0.0.1; stopped when dropped.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    handle: shardloop::LoopHandle,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(configure: impl FnOnce(&mut http1::Builder) + Send + 'static) -> Server {
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let lp = shardloop::new_event_loop().unwrap();
            shardloop::set_event_loop(Some(lp.clone()));
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send((listener.local_addr().unwrap(), lp.handle()))
                .unwrap();
            let mut builder = shardloop::hyper::http1();
            configure(&mut builder);
            // Runs until `Drop` stops the loop.
            let _ = lp.run_until_complete(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    drop(shardloop::spawn(
                        builder.serve_connection(stream, service_fn(route)),
                    ));
                }
            });
            lp.close().unwrap();
        });
        let (addr, handle) = rx.recv().unwrap();
        Server {
            addr,
            accepted,
            handle,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        url(self.addr, path)
    }

    fn connect(&self) -> std::net::TcpStream {
        connect(self.addr)
    }
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// A plain client connection, its reads bounded.
fn connect(addr: SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_BOUND)).unwrap();
    s
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Everything the server sends until it closes the connection.
fn read_to_close(mut s: std::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the response (the server closed with request bytes
            // still unread) ends the stream too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One response with a `content-length` body, read whole (however the bytes are
/// split up on the way), leaving the connection open.
fn read_response(s: &mut std::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length header");
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-response: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn ureq_gets_plain_text_and_json() {
    let server = Server::start(|_| {});
    let mut resp = ureq::get(&server.url("/")).call().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "Hello, World!");

    let mut resp = ureq::get(&server.url("/json")).call().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.body_mut().read_to_string().unwrap(),
        r#"{"message":"Hello, World!"}"#
    );

    let err = ureq::get(&server.url("/nope")).call().unwrap_err();
    assert!(matches!(err, ureq::Error::StatusCode(404)), "{err}");
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = Server::start(|_| {});
    let addr = server.addr;
    let bodies = shardloop::run(async move {
        // hyper's client, on a shardloop loop of this thread.
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(stream).await?;
        drop(shardloop::spawn(conn));
        let mut bodies = Vec::new();
        for path in ["/", "/json"] {
            let req = Request::get(path)
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            assert_eq!(resp.status(), 200);
            bodies.push(resp.into_body().collect().await?.to_bytes());
        }
        Ok::<_, Box<dyn std::error::Error>>(bodies)
    })
    .unwrap()
    .unwrap();
    assert_eq!(bodies[0], "Hello, World!");
    assert_eq!(bodies[1], r#"{"message":"Hello, World!"}"#);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1, "one connection");
}

#[test]
fn garbage_request_line_gets_400() {
    let server = Server::start(|_| {});
    let mut s = server.connect();
    s.write_all(b"\x01\x02 THIS IS NOT HTTP \xff\r\n\r\n")
        .unwrap();
    let resp = read_to_close(s);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp:?}");
    // The server is still fine.
    let mut ok = ureq::get(&server.url("/")).call().unwrap();
    assert_eq!(ok.body_mut().read_to_string().unwrap(), "Hello, World!");
}

#[test]
fn oversized_headers_get_431() {
    let server = Server::start(|b| {
        b.max_header_size(8 * 1024);
    });
    let mut s = server.connect();
    let big = "x".repeat(32 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    // The server may answer and close before reading all of it.
    let _ = s.write_all(req.as_bytes());
    let resp = read_to_close(s);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp:?}");
    let mut ok = ureq::get(&server.url("/")).call().unwrap();
    assert_eq!(ok.body_mut().read_to_string().unwrap(), "Hello, World!");
}

#[test]
fn a_dribbling_client_holds_up_no_other() {
    let server = Server::start(|_| {});
    let mut slow = server.connect();
    let normal_done = Arc::new(AtomicBool::new(false));
    let dribble_done = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel();
    let dribbler = {
        let normal_done = normal_done.clone();
        let dribble_done = dribble_done.clone();
        std::thread::spawn(move || {
            let req = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: yes\r\n\r\n";
            let (last, head) = req.split_last().unwrap();
            for (i, byte) in head.iter().enumerate() {
                slow.write_all(&[*byte]).unwrap();
                if i == 4 {
                    started_tx.send(()).unwrap();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Hold the last byte back until the normal client is answered (or a
            // generous bound passes, should the server be stuck on this client:
            // then the ordering check below fails).
            for _ in 0..400 {
                if normal_done.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            slow.write_all(&[*last]).unwrap();
            let resp = read_response(&mut slow);
            dribble_done.store(true, Ordering::SeqCst);
            resp
        })
    };
    started_rx.recv().unwrap();
    let resp = ureq::get(&server.url("/json")).call().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        !dribble_done.load(Ordering::SeqCst),
        "the normal client was answered only after the dribbler"
    );
    normal_done.store(true, Ordering::SeqCst);
    let slow_resp = dribbler.join().unwrap();
    assert!(slow_resp.starts_with("HTTP/1.1 200"), "{slow_resp:?}");
    assert!(slow_resp.ends_with("Hello, World!"), "{slow_resp:?}");
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_timeout() {
    let server = Server::start(|b| {
        b.header_read_timeout(Duration::from_millis(200));
    });
    let mut s = server.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(!resp.to_ascii_lowercase().contains("connection: close"));
    // Kept alive, then idle: the server closes it (end-of-stream, not our bound).
    match s.read(&mut [0u8; 64]) {
        Ok(0) => {}
        other => panic!("expected the server to close the idle connection, got {other:?}"),
    }
}

#[test]
fn unix_streams_and_futures_io_speak_http_too() {
    let body = shardloop::run(async {
        let (server_end, client_end) = UnixStream::pair()?;
        // Server on the stream itself, client through the generic FuturesIo adapter.
        drop(shardloop::spawn(shardloop::hyper::serve_connection(
            server_end,
            service_fn(route),
        )));
        let io = shardloop::hyper::FuturesIo::new(client_end);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        drop(shardloop::spawn(conn));
        let req = Request::get("/json")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        assert_eq!(resp.headers()["content-type"], "application/json");
        Ok::<_, Box<dyn std::error::Error>>(resp.into_body().collect().await?.to_bytes())
    })
    .unwrap()
    .unwrap();
    assert_eq!(body, r#"{"message":"Hello, World!"}"#);
}

#[test]
fn graceful_shutdown_answers_the_request_in_flight_then_closes() {
    let (resp, server_result) = shardloop::run(async {
        let (server_end, client_end) = UnixStream::pair()?;
        // The handler says when it has the request, then takes a while to answer.
        let (in_flight_tx, in_flight_rx) = flume::bounded::<()>(1);
        let svc = service_fn(move |_: Request<Incoming>| {
            let in_flight = in_flight_tx.clone();
            async move {
                let _ = in_flight.send_async(()).await;
                shardloop::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
            }
        });
        let conn = shardloop::hyper::http1().serve_connection(server_end, svc);
        // Shut down while the request is in flight.
        let stop = async move {
            let _ = in_flight_rx.recv_async().await;
        };
        let server = shardloop::spawn(shardloop::hyper::graceful(conn, stop));

        let (mut sender, conn) = hyper::client::conn::http1::handshake(client_end).await?;
        let client_conn = shardloop::spawn(conn);
        let req = Request::get("/")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let head = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        // The server ends the connection after its answer: so does the client's side.
        client_conn.await??;
        Ok::<_, Box<dyn std::error::Error>>(((head, body), server.await?))
    })
    .unwrap()
    .unwrap();
    let (head, body) = resp;
    assert_eq!(body, "done");
    assert_eq!(head["connection"], "close");
    server_result.unwrap();
}

/// examples/http_server on 127.0.0.1 with two shards (see support/example.rs for how
/// it is found and stopped), and its address.
fn start_example() -> (Example, SocketAddr) {
    let server = Example::start("http_server", &["--shards", "2"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    (server, addr)
}

#[test]
fn example_serves_on_every_shard_and_exits_0_on_sigterm() {
    let (server, addr) = start_example();
    let mut resp = ureq::get(&url(addr, "/json")).call().unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.body_mut().read_to_string().unwrap(),
        r#"{"message":"Hello, World!"}"#
    );
    // A new connection each time: the kernel spreads them over the shards'
    // listeners (missing one shard in 32 tries: chance 2^-31).
    let mut seen = [false; 2];
    for _ in 0..32 {
        let agent = ureq::Agent::new_with_defaults();
        let body = agent
            .get(&url(addr, "/shard"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let shard: usize = body.strip_prefix("shard ").unwrap().parse().unwrap();
        seen[shard] = true;
    }
    assert_eq!(seen, [true, true], "both shards served");
    assert!(server.terminate().success());
}

#[test]
fn example_finishes_requests_in_flight_on_sigterm() {
    let (server, addr) = start_example();
    // An idle keep-alive connection...
    let mut idle = connect(addr);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut idle).ends_with("Hello, World!"));
    let mut buf = [0u8; 1024];
    // ...and a request in flight: its first chunk has come, the rest is 300 ms out.
    let mut busy = connect(addr);
    busy.write_all(b"GET /sleep/300 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("started") {
        let n = busy.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }

    let status = server.terminate();
    assert!(status.success(), "{status}");
    // The request in flight was finished (the chunked body's end included), and
    // the server closed both connections.
    let rest = read_to_close(busy);
    got.extend_from_slice(rest.as_bytes());
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("finished\n"), "{got:?}");
    assert!(got.ends_with("0\r\n\r\n"), "{got:?}");
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "idle connection closed");
}

/// `--http2`: both benchmark servers (shardloop's and its tokio peer) answer every
/// route over HTTP/2 with prior knowledge, as h2load speaks it in bench/http_bench.sh.
#[cfg(feature = "http2")]
#[test]
fn both_http_servers_speak_h2c_with_http2() {
    for (name, threads) in [
        ("http_server", "--shards"),
        ("http_server_tokio", "--workers"),
    ] {
        let server = Example::start(name, &[threads, "2", "--http2"]);
        for (path, body) in [
            ("/", "Hello, World!"),
            ("/json", r#"{"message":"Hello, World!"}"#),
        ] {
            let out = client::run_ok(
                std::process::Command::new("curl")
                    .args(["--silent", "--show-error", "--max-time", "20"])
                    .arg("--http2-prior-knowledge")
                    .args(["--write-out", "\n%{http_code} %{http_version}"])
                    .arg(format!("http://127.0.0.1:{}{path}", server.port)),
            );
            assert_eq!(out, format!("{body}\n200 2"), "{name} {path}");
        }
        // The tokio peer stops on Ctrl-C only; SIGTERM ends it either way.
        let status = server.terminate();
        assert!(
            name != "http_server" || status.success(),
            "{name}: {status}"
        );
    }
}
