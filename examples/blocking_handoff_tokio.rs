//! The benchmark peer of `blocking_handoff`: the same `tiny_http` server and blocking
//! handler threads, handing each request's work to tokio instead of to a shardloop
//! shard. It is what a user would write without shardloop.
//!
//! The loop side mirrors shardloop's shards: `--shards N` current-thread tokio
//! runtimes, each on its own thread, each owning its keys' counters in a
//! thread-local, with keys routed by the same fixed hash. A handler hands work over
//! with `Handle::spawn`, gets the answer through a one-shot channel, and waits for it
//! with a timeout (`503` and `JoinHandle::abort` when it runs out).
//!
//! ```text
//! cargo run --release --example blocking_handoff_tokio -- --port 8082 --shards 2
//! curl 'http://127.0.0.1:8082/work?key=alice'
//! ```
//!
//! Options and routes are those of `blocking_handoff` (`/`, `/work?key=K`,
//! `/slow?ms=M`), without `/stats` and without graceful shutdown: it is a benchmark
//! peer, stopped with a signal.

mod handoff_common;
use handoff_common::{parse_args, query_param, Args};

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use tiny_http::{Method, Request, Response, Server};
use tokio::runtime::Handle;

thread_local! {
    /// This runtime thread's counters: how many times each of its keys was asked for.
    static COUNTS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
    /// Which of the runtimes this thread drives.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// What the handler threads share: one tokio handle per runtime thread.
struct App {
    shards: Vec<Handle>,
    timeout: Duration,
}

type Reply = (u16, String);

fn main() -> ExitCode {
    let args = parse_args("blocking_handoff_tokio", 8082, None);
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blocking_handoff_tokio: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shards = (0..args.shards)
        .map(start_runtime_thread)
        .collect::<Result<Vec<_>, _>>()?;
    let server = Arc::new(Server::http(("127.0.0.1", args.port))?);
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("the server is not on a TCP address")?;
    let app = Arc::new(App {
        shards,
        timeout: args.timeout,
    });
    let workers = (0..args.workers)
        .map(|i| {
            let (server, app) = (server.clone(), app.clone());
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || loop {
                    match server.recv() {
                        Ok(request) => {
                            let reply = route(&app, &request);
                            respond(request, reply);
                        }
                        Err(e) => {
                            eprintln!("accept error: {e}");
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                })
        })
        .collect::<Result<Vec<_>, _>>()?;

    println!("listening on {addr}");
    std::io::stdout().flush()?;
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// A current-thread runtime driven forever by its own thread; returns its handle.
fn start_runtime_thread(i: usize) -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    thread::Builder::new()
        .name(format!("tokio-{i}"))
        .spawn(move || {
            SHARD.with(|s| s.set(i));
            // A current-thread runtime runs spawned tasks only inside `block_on`.
            rt.block_on(std::future::pending::<()>());
        })?;
    Ok(handle)
}

fn respond(request: Request, (status, body): Reply) {
    let response = Response::from_string(body).with_status_code(status);
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
                "blocking_handoff_tokio: {} tokio runtimes behind blocking handlers\n",
                app.shards.len()
            ),
        ),
        "/work" => match query_param(query, "key") {
            Some(key) => work(app, key),
            None => (400, "missing ?key=\n".to_string()),
        },
        "/slow" => match query_param(query, "ms").map(|ms| ms.parse::<u64>()) {
            Some(Ok(ms)) => {
                let key = query_param(query, "key").unwrap_or_default();
                let shard = shardloop::shard_index(key.as_str(), app.shards.len());
                hand_off(app, shard, async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    format!("shard={} slept={ms}\n", SHARD.with(|s| s.get()))
                })
            }
            _ => (400, "missing or bad ?ms=\n".to_string()),
        },
        _ => (404, "not found\n".to_string()),
    }
}

fn work(app: &App, key: String) -> Reply {
    let shard = shardloop::shard_index(key.as_str(), app.shards.len());
    hand_off(app, shard, async move {
        let count = COUNTS.with(|counts| {
            let mut counts = counts.borrow_mut();
            let n = counts.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        });
        format!(
            "shard={} key={key} count={count}\n",
            SHARD.with(|s| s.get())
        )
    })
}

/// Spawns `work` on runtime `shard` and waits for its answer for at most the timeout;
/// past it the task is aborted and the reply is 503.
fn hand_off(app: &App, shard: usize, work: impl Future<Output = String> + Send + 'static) -> Reply {
    // A one-shot: one slot, one answer.
    let (tx, rx) = mpsc::sync_channel(1);
    let task = app.shards[shard].spawn(async move {
        let _ = tx.send(work.await);
    });
    match rx.recv_timeout(app.timeout) {
        Ok(body) => (200, body),
        Err(_) => {
            task.abort();
            (
                503,
                format!(
                    "shard {shard} did not answer within {} ms\n",
                    app.timeout.as_millis()
                ),
            )
        }
    }
}
