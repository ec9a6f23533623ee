//! HTTP/1.1 with keep-alive on every shard, through hyper.
//!
//! Each shard binds its own `SO_REUSEPORT` listener on 127.0.0.1:PORT (the kernel
//! spreads connections over them) and serves each connection as a task on its loop.
//! Routes: `/` (plain text), `/json`, `/shard` (which shard served it), and
//! `/sleep/MS`, which answers "started" at once and "finished" MS milliseconds later
//! (at most 10 s), to watch a graceful shutdown let a request finish.
//!
//! ```text
//! cargo run --release --features hyper --example http_server -- --port 8080 --shards 2
//! curl http://127.0.0.1:8080/shard
//! ```
//!
//! `--spin-us N` (default 50): how long a shard that ran out of work keeps polling
//! its sockets, yielding its core between polls, before it sleeps in `epoll_wait`;
//! 0 sleeps at once. `--help` lists the flags.
//!
//! SIGINT or SIGTERM shuts it down gracefully: the shards stop accepting, idle
//! connections close, requests in flight are answered (with `connection: close`),
//! and the process exits 0 once they are, or after a grace period.

#[path = "http_common/mod.rs"]
mod common;

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{select, Either};
use http_body_util::{Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use shardloop::net::TcpListener;
use shardloop::{current_shard, Runtime};
use slab::Slab;

/// How long requests in flight get to finish after SIGINT/SIGTERM.
const GRACE: Duration = Duration::from_secs(5);

/// How long a shard that ran out of work keeps looking for more (its sockets'
/// readiness) before it parks in `epoll_wait`, yielding its core between looks
/// (`--spin-us`; `LoopBuilder::spin_before_park`).
const DEFAULT_SPIN: Duration = Duration::from_micros(50);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::Args::parse("http_server", "shards", num_cpus::get(), Some(DEFAULT_SPIN));
    let rt = Runtime::builder()
        .shards(args.threads)
        .spin_before_park(args.spin.unwrap_or(DEFAULT_SPIN))
        .build()?;

    // Shard 0 binds first: with `--port 0` its port is the one the others share.
    let http2 = args.http2;
    let port = rt.submit_to(0, move || listen(args.port, http2)).wait()??;
    for i in 1..rt.len() {
        rt.submit_to(i, move || listen(port, http2)).wait()??;
    }

    // The main thread's loop waits for the signal.
    let lp = shardloop::get_event_loop()?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let handle = lp.handle();
        lp.add_signal_handler(sig, move || handle.stop())?;
    }
    println!("listening on 127.0.0.1:{port} ({} shards)", rt.len());
    std::io::stdout().flush()?;
    lp.run_forever()?;

    eprintln!("shutting down: no new connections, finishing requests in flight");
    for stopped in rt.broadcast(|_| async { STOP.with(|s| s.set()) }) {
        stopped.wait()?;
    }
    let report = rt.shutdown(GRACE)?;
    eprintln!(
        "done: {} tasks finished, {} cancelled at the end of the grace period",
        report.finished(),
        report.cancelled()
    );
    Ok(())
}

/// Binds this shard's listener on `port` and starts accepting; returns the port.
async fn listen(port: u16, http2: bool) -> std::io::Result<u16> {
    let listener = TcpListener::bind_reuseport(("127.0.0.1", port))?;
    let port = listener.local_addr()?.port();
    drop(shardloop::spawn(accept_loop(listener, http2)));
    Ok(port)
}

/// Accepts until the shard is told to stop; one task per connection.
async fn accept_loop(listener: TcpListener, http2: bool) {
    let mut builder = shardloop::hyper::http1();
    common::configure(&mut builder);
    let mut stopping = pin!(STOP.with(|s| s.wait()));
    loop {
        let accept = pin!(listener.accept());
        match select(accept, stopping.as_mut()).await {
            Either::Left((Ok((stream, _peer)), _)) => {
                let _ = stream.set_nodelay(true);
                let service = service_fn(route);
                #[cfg(feature = "http2")]
                if http2 {
                    let conn = shardloop::hyper::http2().serve_connection(stream, service);
                    // An HTTP/2 connection ends with its client or with the shard
                    // (the grace period's end cancels it).
                    drop(shardloop::spawn(async move {
                        let _ = conn.await;
                    }));
                    continue;
                }
                let _ = http2; // always HTTP/1.1 without the http2 feature
                let conn = builder.serve_connection(stream, service);
                let stop = STOP.with(|s| s.wait());
                drop(shardloop::spawn(async move {
                    // Errors here are one client's (a timeout, a reset): the
                    // connection ends, the server goes on.
                    let _ = shardloop::hyper::graceful(conn, stop).await;
                }));
            }
            // Out of descriptors is retried inside `accept`; anything else is one
            // failed connection.
            Either::Left((Err(e), _)) => eprintln!("accept: {e}"),
            // Dropping the listener closes it: new connections go to no shard.
            Either::Right(((), _)) => return,
        }
    }
}

/// The common routes' body (no allocation for it), or `/sleep/MS`'s.
type Body = http_body_util::Either<Full<Bytes>, StreamBody<SlowChunks>>;

/// `/sleep/MS`'s chunks; `!Send`, as they wait on a loop timer.
type SlowChunks = Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>>>;

async fn route(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if let Some(ms) = req.uri().path().strip_prefix("/sleep/") {
        let ms = ms.parse::<u64>().unwrap_or(0).min(10_000);
        return Ok(Response::new(http_body_util::Either::Right(slow_body(
            Duration::from_millis(ms),
        ))));
    }
    let resp = common::route(req, || {
        format!("shard {}", current_shard().expect("runs on a shard"))
    })
    .await?;
    Ok(resp.map(http_body_util::Either::Left))
}

/// "started\n" now, "finished\n" after `delay`.
fn slow_body(delay: Duration) -> StreamBody<SlowChunks> {
    StreamBody::new(Box::pin(futures_util::stream::unfold(
        0,
        move |step| async move {
            let chunk: &'static [u8] = match step {
                0 => b"started\n",
                1 => {
                    shardloop::time::sleep(delay).await;
                    b"finished\n"
                }
                _ => return None,
            };
            Some((Ok(Frame::data(Bytes::from_static(chunk))), step + 1))
        },
    )))
}

thread_local! {
    /// This shard's "stop accepting, finish up" signal.
    static STOP: Rc<Stop> = Rc::new(Stop::default());
}

/// A one-shot signal on one loop (asyncio's `Event`, set once): every [`Wait`]
/// completes once [`set`](Stop::set) is called.
#[derive(Default)]
struct Stop {
    set: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl Stop {
    fn set(&self) {
        self.set.set(true);
        // Taken out first: a woken task may drop its `Wait` (which borrows `waiters`).
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    fn wait(self: &Rc<Self>) -> Wait {
        Wait {
            stop: self.clone(),
            key: None,
        }
    }
}

/// Completes when its [`Stop`] is set. Keeps one waker slot while pending, so polling
/// it again and again (as every request on a connection does) stores no more.
struct Wait {
    stop: Rc<Stop>,
    key: Option<usize>,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.stop.set.get() {
            return Poll::Ready(());
        }
        let mut waiters = this.stop.waiters.borrow_mut();
        match this.key {
            Some(k) if waiters.contains(k) => {
                if !waiters[k].will_wake(cx.waker()) {
                    waiters[k] = cx.waker().clone();
                }
            }
            _ => this.key = Some(waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            // After `set` the slab was emptied: the key means nothing any more.
            if !self.stop.set.get() {
                self.stop.waiters.borrow_mut().try_remove(k);
            }
        }
    }
}
