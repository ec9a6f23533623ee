//! A blocking web server whose handler threads hand each request's work to a shard.
//!
//! This is the "blocking web thread hands work to a loop thread" use: the HTTP side
//! is `tiny_http`, a plain thread pool of blocking handlers; the state lives on the
//! shards of a [`Runtime`], one event loop per core, each owning its part of it. A
//! handler routes the request to the shard that owns its key, waits for the answer
//! with `wait_timeout`, and answers `503 Service Unavailable` when the shard does not
//! answer in time (the work is then cancelled on the shard).
//!
//! ```text
//! cargo run --example blocking_handoff -- --port 8081
//! curl 'http://127.0.0.1:8081/work?key=alice'     # shard=1 key=alice count=1
//! curl 'http://127.0.0.1:8081/slow?ms=500'        # 503: the shard took too long
//! curl 'http://127.0.0.1:8081/stats'              # in-flight requests, per-shard state
//! ```
//!
//! Options: `--port N` (default 8081, 0 = any free port), `--shards N` (default: one
//! per CPU), `--workers N` (blocking handler threads, default 8), `--timeout-ms N`
//! (how long a handler waits for its shard, default 100), `--spin-us N` (how long a
//! shard that ran out of work keeps looking for more before it parks, yielding its
//! core between looks; default 50, 0 parks at once); `--help` lists them. The first
//! line on stdout is `listening on 127.0.0.1:PORT`. SIGINT or SIGTERM shut it down
//! gracefully: no new requests are taken, the handlers finish the ones they have,
//! the runtime shuts down, and the process exits 0.
//!
//! A tiny_http caveat: its connection thread pool adds a thread only when none is
//! idle at that moment, so in a burst of new keep-alive connections one can wait for
//! a thread until another connection closes (`bench/handoff_bench.sh` works around it
//! by growing the pool before each round).

mod handoff_common;
use handoff_common::{parse_args, query_param, Args};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use shardloop::{current_shard, time::sleep, Error, Runtime};
use tiny_http::{Method, Request, Response, Server};

/// How long the runtime's shards get to finish their tasks at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a shard that ran out of work looks for more before it parks: handlers
/// hand work over one request at a time, so the next often comes within it.
const DEFAULT_SPIN: Duration = Duration::from_micros(50);

// Shard-owned state. Each shard is one thread running one loop, so a thread-local is
// that shard's private state: only work routed to the shard touches it, with no
// locks, which is the point of routing by key.
thread_local! {
    /// How many times each key was asked for on this shard.
    static COUNTS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
    /// `/slow` tasks on this shard that were dropped before they finished
    /// (their handler gave up waiting, or shutdown cancelled them).
    static SLOW_CANCELLED: Cell<u64> = const { Cell::new(0) };
}

/// What every handler thread shares.
struct App {
    rt: Runtime,
    timeout: Duration,
    /// Requests a handler has taken and not yet answered.
    in_flight: AtomicUsize,
    /// Set once a shutdown signal arrived.
    stopping: AtomicBool,
}

/// A reply: status code and plain-text body.
type Reply = (u16, String);

fn main() -> ExitCode {
    let args = parse_args("blocking_handoff", 8081, Some(DEFAULT_SPIN));
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blocking_handoff: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rt = Runtime::builder()
        .shards(args.shards)
        .thread_name("shard")
        .spin_before_park(args.spin.unwrap_or(DEFAULT_SPIN))
        .build()?;
    let server = Arc::new(Server::http(("127.0.0.1", args.port))?);
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("the server is not on a TCP address")?;

    // Signals are handled by the main thread's loop; the handler only stops that
    // loop, and the shutdown sequence runs below, on the main thread, once it returns.
    // Installed before "listening" is printed, so a client that waits for that line
    // can signal us right away.
    let main_loop = shardloop::get_event_loop()?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let handle = main_loop.handle();
        main_loop.add_signal_handler(sig, move || handle.stop())?;
    }

    let app = Arc::new(App {
        rt,
        timeout: args.timeout,
        in_flight: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
    });
    let workers = (0..args.workers)
        .map(|i| {
            let (server, app) = (server.clone(), app.clone());
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || handler_thread(&server, &app))
        })
        .collect::<Result<Vec<_>, _>>()?;

    println!("listening on {addr}");
    std::io::stdout().flush()?;

    main_loop.run_forever()?;

    // Graceful shutdown. tiny_http's `unblock` queues one wake-up per call behind the
    // requests already queued, so each handler first answers what was taken before the
    // signal, then sees its wake-up and returns.
    eprintln!("shutting down: finishing in-flight requests");
    app.stopping.store(true, Ordering::SeqCst);
    for _ in 0..workers.len() {
        server.unblock();
    }
    for w in workers {
        if w.join().is_err() {
            eprintln!("a handler thread panicked");
        }
    }
    // The last reference: dropping it closes the listening socket.
    drop(server);
    let report = app.rt.shutdown(SHUTDOWN_GRACE)?;
    eprintln!(
        "runtime shut down: {} tasks finished, {} cancelled",
        report.finished(),
        report.cancelled()
    );
    Ok(())
}

/// One blocking handler thread: take a request, answer it, repeat until shutdown.
fn handler_thread(server: &Server, app: &App) {
    loop {
        match server.recv() {
            Ok(request) => {
                app.in_flight.fetch_add(1, Ordering::SeqCst);
                let reply = route(app, &request);
                respond(request, reply);
                app.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            // The shutdown wake-up (or a listener error that came in with it).
            Err(_) if app.stopping.load(Ordering::SeqCst) => return,
            // tiny_http reports accept errors (say, out of file descriptors) through
            // `recv`; the server keeps listening, so keep serving.
            Err(e) => {
                eprintln!("accept error: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn respond(request: Request, (status, body): Reply) {
    let response = Response::from_string(body).with_status_code(status);
    // The client may have hung up; nothing else to do for it.
    let _ = request.respond(response);
}

fn route(app: &App, request: &Request) -> Reply {
    if *request.method() != Method::Get {
        return (405, "only GET is served\n".to_string());
    }
    let (path, query) = match request.url().split_once('?') {
        Some((p, q)) => (p, q),
        None => (request.url(), ""),
    };
    match path {
        "/" => (
            200,
            format!(
                "blocking_handoff: {} shards behind blocking handlers\n\
                 GET /work?key=K   count K on its shard\n\
                 GET /slow?ms=M    the shard sleeps M ms (503 past {} ms)\n\
                 GET /stats        in-flight requests and per-shard state\n",
                app.rt.len(),
                app.timeout.as_millis()
            ),
        ),
        "/work" => match query_param(query, "key") {
            Some(key) => work(app, key),
            None => (400, "missing ?key=\n".to_string()),
        },
        "/slow" => match query_param(query, "ms").map(|ms| ms.parse::<u64>()) {
            Some(Ok(ms)) => slow(app, ms, query_param(query, "key").unwrap_or_default()),
            _ => (400, "missing or bad ?ms=\n".to_string()),
        },
        "/stats" => stats(app),
        _ => (404, "not found\n".to_string()),
    }
}

/// Counts `key` on the shard that owns it.
fn work(app: &App, key: String) -> Reply {
    let shard = app.rt.shard_for(key.as_str());
    let remote = app.rt.submit_to(shard, move || async move {
        let count = COUNTS.with(|counts| {
            let mut counts = counts.borrow_mut();
            let n = counts.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        });
        format!("shard={} key={key} count={count}\n", on_shard())
    });
    answer(app, shard, remote.wait_timeout(app.timeout))
}

/// Sleeps `ms` on the shard that owns `key`: work that outlives the handler's patience.
fn slow(app: &App, ms: u64, key: String) -> Reply {
    let shard = app.rt.shard_for(key.as_str());
    let remote = app.rt.submit_to(shard, move || async move {
        // Counts the task as cancelled if its future is dropped before the end.
        let guard = CancelCounter { finished: false };
        sleep(Duration::from_millis(ms)).await;
        let mut guard = guard;
        guard.finished = true;
        format!("shard={} slept={ms}\n", on_shard())
    });
    answer(app, shard, remote.wait_timeout(app.timeout))
}

/// Each shard's state, gathered with one broadcast.
fn stats(app: &App) -> Reply {
    let mut body = format!("in_flight={}\n", app.in_flight.load(Ordering::SeqCst));
    let remotes = app.rt.broadcast(|i| async move {
        let keys = COUNTS.with(|c| c.borrow().len());
        let cancelled = SLOW_CANCELLED.with(Cell::get);
        format!("shard={i} keys={keys} slow_cancelled={cancelled}\n")
    });
    for (i, remote) in remotes.into_iter().enumerate() {
        match remote.wait_timeout(app.timeout) {
            Ok(line) => body.push_str(&line),
            Err(e) => body.push_str(&format!("shard={i} error={e}\n")),
        }
    }
    (200, body)
}

/// Turns a shard's answer (or its absence) into a reply.
fn answer(app: &App, shard: usize, result: Result<String, Error>) -> Reply {
    match result {
        Ok(body) => (200, body),
        Err(Error::Timeout) => (
            503,
            format!(
                "shard {shard} did not answer within {} ms\n",
                app.timeout.as_millis()
            ),
        ),
        Err(Error::Closed) => (503, "shutting down\n".to_string()),
        Err(e) => (500, format!("shard {shard} failed: {e}\n")),
    }
}

/// The shard this code runs on; only called from work submitted to a shard.
fn on_shard() -> usize {
    current_shard().expect("work submitted to the runtime runs on a shard")
}

/// Counts a `/slow` task as cancelled when dropped unfinished.
struct CancelCounter {
    finished: bool,
}

impl Drop for CancelCounter {
    fn drop(&mut self) {
        if !self.finished {
            SLOW_CANCELLED.with(|c| c.set(c.get() + 1));
        }
    }
}
