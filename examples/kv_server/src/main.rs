//! A Redis-protocol (RESP2 and RESP3) key-value server with one event loop per core:
//! strings, lists, hashes, sets and sorted sets.
//!
//! The keyspace is partitioned by `shard_index_bytes(key, shards)` (shardloop's
//! fixed *shard hash v1* over the key's bytes, so a client can compute a key's shard
//! too): each shard owns its own [`Store`] in a thread-local. A connection is served
//! by the shard that accepted it;
//! a command for a key another shard owns is sent there with `submit_to` and the reply
//! awaited. Pipelined commands are parsed together, the remote ones grouped per
//! target shard (one message per target shard for all of a loop iteration's
//! connections), and the replies written back in order, in the protocol
//! the connection chose with `HELLO`. Each connection has a [`Session`] (protocol,
//! name, id) that answers `HELLO`, `CLIENT`, `SELECT`, `QUIT` and `SHUTDOWN`.
//!
//! What is atomic: every command, and every `MULTI`/`EXEC` block. A command on one
//! key runs whole on the key's shard, which runs one thing at a time. A command on
//! keys of several shards is a transaction (`txn.rs`): it appends its part for each
//! shard to that shard's inbox, all in one step, so that every shard runs the
//! transactions it shares with others in the same order, and no client sees half of
//! one. A pipeline's run of such commands in a row is one transaction. An `EXEC` (and
//! `MSETNX`, `RENAME`) appends claims instead: each shard grants the keys at the
//! block's turn, and holds them until it ends. `WATCH` makes an `EXEC` give up (a nil
//! reply) if another write touched a watched key first: each shard stamps its
//! watched keys on every write, and `EXEC` compares the stamps under its locks.
//!
//! What is weaker than Redis: a pipeline's commands run in request order on each
//! shard, but the shards run their parts independently, so another client may see
//! the effect of a later command on one shard before that of an earlier one on
//! another (Redis, with one thread, never shows that). Ordering them would make every
//! pipeline that spans shards a transaction; a client that needs it sends `MULTI` /
//! `EXEC`.
//!
//! ```text
//! cargo run --release -p kv_server -- --port 6379 --shards 4 --placement dispatch
//! redis-cli -p 6379 set greeting hello && redis-cli -p 6379 get greeting
//! ```
//! `--placement reuseport` (default): every shard binds its own listener with
//! SO_REUSEPORT and the kernel spreads connections. `--placement dispatch`: shard 0
//! accepts and hands each connection to the shard with the fewest open connections.
//! Shards are pinned one per CPU; `--no-pin` leaves them to the scheduler. A shard
//! that runs out of work keeps looking for more (replies from other shards, requests
//! on its sockets) for `--spin-us` microseconds (default 50) before it parks,
//! yielding its core between looks: work that comes within that window costs no
//! sleep, eventfd write or wakeup, and a client on the same core is not held up
//! (`LoopBuilder::spin_before_park`). `--spin-us 0` parks at once. SIGINT /
//! SIGTERM: stop accepting, finish the requests in flight (for up to `--grace-ms`,
//! default 5000), exit 0. `--help` lists the flags; a bad one exits 2.

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use kv_server::kv::{After, Command, Info, Merge, Route, Session, Split, Store};
use kv_server::resp::{Decoder, Limits, Protocol, Reply};
use lexopt::prelude::*;
use shardloop::net::{Dispatcher, Placement, TcpListener, TcpStream};
use shardloop::{current_shard, shard_index_bytes, LoopHandle, Runtime, Task};

// The command-line helpers every example shares: they live with the other examples,
// outside this package, so that all of them parse flags the same way.
#[path = "../../cli/mod.rs"]
mod cli;
mod groups;
mod txn;

use groups::{Groups, Replies};

/// mimalloc, not glibc's malloc: see Cargo.toml (and BENCHMARKS.md for the effect).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    /// This shard's part of the keyspace.
    static STORE: RefCell<Store> = RefCell::new(Store::new());
    /// This shard's accept loop, cancelled when the server stops accepting.
    static ACCEPTOR: RefCell<Option<Task<()>>> = const { RefCell::new(None) };
    /// Connections on this shard in the middle of a request.
    static BUSY: Cell<usize> = const { Cell::new(0) };
    /// Set when the server stops: a connection finishes the request it is in and
    /// closes instead of starting another.
    static DRAINING: Cell<bool> = const { Cell::new(false) };
}

/// Connected clients, all shards (for INFO).
static CLIENTS: AtomicUsize = AtomicUsize::new(0);
/// The last `CLIENT ID` given out.
static CLIENT_IDS: AtomicU64 = AtomicU64::new(0);
/// The main thread's loop, which waits for a signal (or `SHUTDOWN`) to stop.
static MAIN_LOOP: OnceLock<LoopHandle> = OnceLock::new();

struct Args {
    port: u16,
    shards: usize,
    placement: Option<Placement>,
    grace: Duration,
    pin: bool,
    spin: Duration,
    /// `None`: the default (the selector loop, or `SHARDLOOP_PROACTOR=1`).
    proactor: Option<bool>,
}

/// Parses the command line, or exits (see `cli`).
fn parse_args() -> Args {
    let defaults = Args {
        port: 6379,
        shards: num_cpus::get(),
        placement: None,
        grace: Duration::from_secs(5),
        pin: true,
        spin: Duration::from_micros(50),
        proactor: None,
    };
    let options = [
        (
            "--port N".to_string(),
            format!(
                "port to listen on (default {}, 0 = any free port)",
                defaults.port
            ),
        ),
        (
            "--shards N".to_string(),
            format!("shards, one loop thread each (default {})", defaults.shards),
        ),
        (
            "--placement P".to_string(),
            "reuseport (default): every shard listens with SO_REUSEPORT; \
             dispatch: shard 0 accepts for the least-loaded shard"
                .to_string(),
        ),
        (
            "--grace-ms N".to_string(),
            format!(
                "how long requests in flight get to finish after SIGINT/SIGTERM (default {})",
                defaults.grace.as_millis()
            ),
        ),
        cli::proactor_option("every shard"),
        (
            "--no-pin".to_string(),
            "leave the shards to the scheduler instead of one per CPU".to_string(),
        ),
        (
            "--spin-us N".to_string(),
            format!(
                "how long an idle shard looks for work before it parks, in microseconds \
                 (default {}, 0 = at once)",
                defaults.spin.as_micros()
            ),
        ),
    ];
    let about = "A Redis-protocol key-value server on 127.0.0.1, one event loop per core.";
    let usage = cli::usage("kv_server", about, &options);
    cli::parse_or_exit("kv_server", &usage, |p| {
        let mut args = defaults;
        while let Some(arg) = p.next()? {
            match arg {
                Long("port") => args.port = cli::value(p, "--port")?,
                Long("shards") => args.shards = cli::count(p, "--shards")?,
                Long("grace-ms") => {
                    args.grace = Duration::from_millis(cli::value(p, "--grace-ms")?)
                }
                Long("no-pin") => args.pin = false,
                Long("proactor") => args.proactor = Some(true),
                Long("spin-us") => args.spin = Duration::from_micros(cli::value(p, "--spin-us")?),
                Long("placement") => {
                    args.placement = match cli::value::<String>(p, "--placement")?.as_str() {
                        "reuseport" => None,
                        "dispatch" => Some(Placement::LeastLoaded),
                        other => {
                            return Err(format!(
                                "--placement: reuseport or dispatch, not {other:?}"
                            )
                            .into())
                        }
                    }
                }
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(args))
    })
}

/// Runs `cmd` on this shard's store.
fn execute_here(cmd: Command, now: Instant) -> Reply {
    STORE.with(|s| s.borrow_mut().execute(cmd, now))
}

/// Where one request's reply comes from.
enum Slot {
    Ready(Reply),
    /// Reply `idx` of the group sent to `shard`.
    Remote {
        shard: usize,
        idx: usize,
    },
    /// Parts (each local or remote), merged.
    Split(Vec<Slot>, Merge),
    Info(Vec<Vec<u8>>),
    /// A command on several shards that reads before it writes (`MSETNX`,
    /// `RENAME`), run as one atomic step under the locks of what it touches.
    Atomic(Route),
    /// Commands split over several shards (`MSET`, `MGET` ...): a pipeline's run of
    /// them in a row, run together as one atomic step (`txn::run_splits`).
    Splits(Vec<Split>),
    /// A request read after one of the two kinds above, routed when it was read (the
    /// session was what it is at its turn): it runs at its turn.
    Routed(Route),
    /// An `EXEC` block with the keys it watches: nothing runs if one was written.
    Exec(Vec<Route>, Vec<(Vec<u8>, u64)>),
    /// `WATCH`: register the keys with their shards and note their stamps.
    Watch(Vec<Vec<u8>>),
    /// A request read after an `EXEC` or a `WATCH` (or a connection command after
    /// `Routed` ones): it runs whole at its turn (queued in a `MULTI`, answered by
    /// the session, or routed and run), so that it sees what the requests before it
    /// did.
    Deferred(Result<Command, Reply>),
}

/// How a batch adds its next request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Runs it at once, or queues it for its shard's group.
    Free,
    /// A request before it runs at its turn, after the groups; the session is as it
    /// will be then: routes it now, to run at its turn (`Slot::Routed`, `Splits`).
    Routed,
    /// A request before it runs at its turn and may change the session: defers it
    /// whole (`Slot::Deferred`).
    Deferred,
}

/// What the connection does after a request was added to the batch.
#[derive(PartialEq, Eq)]
enum Added {
    /// Go on with the next request.
    Next,
    /// Reply, then close (`QUIT`, `SHUTDOWN`).
    Close,
}

/// One read's worth of pipelined requests: local ones run at once, remote ones are
/// grouped per shard, and each group goes out with the other connections' groups
/// for that shard in this loop iteration (`groups.rs`).
///
/// Replies go straight into the connection's output buffer, encoded from the
/// keyspace without an intermediate [`Reply`], for as long as every request so far
/// was answered here; from the first one that is not, the rest wait in `slots`, in
/// order, until the remote replies are in.
struct Batch<'a> {
    rt: &'a Arc<Runtime>,
    me: usize,
    /// One clock reading for the whole read (for expiry checks and TTLs).
    now: Instant,
    /// The connection's protocol and name (`HELLO` may change them mid-pipeline).
    session: &'a mut Session,
    out: &'a mut Vec<u8>,
    /// The connection's, empty between reads: kept so that its room is too. Each
    /// reply is written in the protocol in force when its request was read.
    slots: &'a mut Vec<(Slot, Protocol)>,
    /// Commands for other shards (and for this one, while a transaction holds
    /// their keys).
    groups: Groups,
    /// A command of this batch for this shard went into its group: every later one
    /// for this shard goes there too, after it, or it would run first.
    grouped_here: bool,
    /// Once a request of this batch runs at its turn, after the ones before it
    /// (under locks, or it changes the session), every later one runs at its turn
    /// too, so that it sees what came before.
    order: Order,
}

impl<'a> Batch<'a> {
    fn new(
        rt: &'a Arc<Runtime>,
        me: usize,
        session: &'a mut Session,
        out: &'a mut Vec<u8>,
        slots: &'a mut Vec<(Slot, Protocol)>,
    ) -> Self {
        debug_assert!(out.is_empty() && slots.is_empty());
        Batch {
            rt,
            me,
            now: Instant::now(),
            session,
            out,
            slots,
            groups: Groups::default(),
            grouped_here: false,
            order: Order::Free,
        }
    }

    /// Whether there is anything to send back.
    fn has_replies(&self) -> bool {
        !self.out.is_empty() || !self.slots.is_empty()
    }

    /// A reply made here, in order after those before it.
    fn answer(&mut self, reply: Reply) {
        let proto = self.session.protocol();
        if self.slots.is_empty() {
            reply.encode_as(self.out, proto);
        } else {
            self.slots.push((Slot::Ready(reply), proto));
        }
    }

    /// Runs a command whose keys (if any) this shard owns.
    fn run_here(&mut self, cmd: Command) {
        let proto = self.session.protocol();
        if self.slots.is_empty() {
            let (now, out) = (self.now, &mut *self.out);
            STORE.with(|s| s.borrow_mut().execute_into(cmd, now, proto, out));
        } else {
            let reply = execute_here(cmd, self.now);
            self.slots.push((Slot::Ready(reply), proto));
        }
    }

    /// Where a single-shard part of a split request gets its reply (a `Reply`, for
    /// the merge).
    fn place_part(&mut self, shard: usize, cmd: Command) -> Slot {
        if shard == self.me && !self.must_wait_here(&cmd) {
            return Slot::Ready(execute_here(cmd, self.now));
        }
        self.grouped_here |= shard == self.me;
        let idx = self.groups.add(self.rt.len(), shard, cmd, None);
        Slot::Remote { shard, idx }
    }

    /// A command for `shard`, another shard or this one while a transaction holds a
    /// key of it: it runs with that shard's group, which waits for the lock, and its
    /// reply comes back as bytes.
    fn place(&mut self, shard: usize, cmd: Command) -> Slot {
        let proto = self.session.protocol();
        self.grouped_here |= shard == self.me;
        let idx = self.groups.add(self.rt.len(), shard, cmd, Some(proto));
        Slot::Remote { shard, idx }
    }

    /// Whether `cmd`, for this shard, must go into this shard's group rather than
    /// run now: a transaction holds a key of it, or an earlier command of the batch
    /// went there (a `DEL j k` waiting for `j`, then a `SET k`, must not run first).
    fn must_wait_here(&self, cmd: &Command) -> bool {
        self.grouped_here || txn::blocks(cmd)
    }

    /// Adds a request: runs it, queues it for its shard, or (inside `MULTI`) queues it
    /// in the session.
    fn add(&mut self, request: Result<Command, Reply>) -> Added {
        match self.order {
            Order::Free => {}
            Order::Routed => {
                self.add_routed(request);
                return Added::Next;
            }
            Order::Deferred => {
                let proto = self.session.protocol();
                self.slots.push((Slot::Deferred(request), proto));
                return Added::Next;
            }
        }
        let cmd = match self.session.queue(request) {
            Ok(queued) => {
                self.answer(queued);
                return Added::Next;
            }
            Err(Ok(cmd)) => cmd,
            Err(Err(reply)) => {
                self.answer(reply);
                return Added::Next;
            }
        };
        let proto = self.session.protocol();
        if cmd.is_connection() {
            let (reply, after) = self.session.execute(cmd);
            match after {
                After::Continue => self.answer(reply),
                After::Close => {
                    self.answer(reply);
                    return Added::Close;
                }
                After::Shutdown => {
                    stop_server();
                    return Added::Close;
                }
                After::Exec(commands, watched) => {
                    let routes = commands.into_iter().map(|c| route(self.rt, c)).collect();
                    self.slots.push((Slot::Exec(routes, watched), proto));
                    self.order = Order::Deferred;
                }
                After::Watch(keys) => {
                    // Later requests must not write these keys before they are watched.
                    self.slots.push((Slot::Watch(keys), proto));
                    self.order = Order::Deferred;
                }
                After::Unwatch(keys) => {
                    txn::unwatch(self.rt, keys);
                    self.answer(reply);
                }
            }
            return Added::Next;
        }
        let slot = match route(self.rt, cmd) {
            Route::Shard(shard, cmd) if shard != self.me => self.place(shard, cmd),
            // A transaction holds a key of it: the command waits for it.
            Route::Shard(_, cmd) if self.must_wait_here(&cmd) => self.place(self.me, cmd),
            Route::Local(cmd) | Route::Shard(_, cmd) => {
                self.run_here(cmd);
                return Added::Next;
            }
            route @ Route::Atomic(_) => {
                self.order = Order::Routed;
                Slot::Atomic(route)
            }
            Route::Split(split) if spans_shards(&split) => {
                self.order = Order::Routed;
                Slot::Splits(vec![split])
            }
            Route::Split(split) => {
                let parts = split
                    .parts
                    .into_iter()
                    .map(|(shard, cmd)| self.place_part(shard, cmd))
                    .collect();
                Slot::Split(parts, split.merge)
            }
            Route::Info(sections) => Slot::Info(sections),
        };
        self.slots.push((slot, proto));
        Added::Next
    }

    /// Adds a request read after one that runs at its turn, the session being what
    /// it will be then: a command split over shards joins the run of them just
    /// before it, if any; a connection command defers everything from there.
    fn add_routed(&mut self, request: Result<Command, Reply>) {
        let proto = self.session.protocol();
        debug_assert!(!self.session.in_multi(), "a request before it was routed");
        let slot = match request {
            Err(reply) => Slot::Ready(reply),
            Ok(cmd) if cmd.is_connection() => {
                self.order = Order::Deferred;
                Slot::Deferred(Ok(cmd))
            }
            Ok(cmd) => match (route(self.rt, cmd), self.slots.last_mut()) {
                (Route::Split(split), Some((Slot::Splits(run), p)))
                    if spans_shards(&split) && *p == proto =>
                {
                    run.push(split);
                    return;
                }
                (Route::Split(split), _) if spans_shards(&split) => Slot::Splits(vec![split]),
                (route, _) => Slot::Routed(route),
            },
        };
        self.slots.push((slot, proto));
    }

    /// Sends the remote groups, waits for their replies and encodes the replies not
    /// yet in the output, in request order. Returns whether the connection closes
    /// (a deferred `QUIT` or `SHUTDOWN`; the requests after it are not run).
    async fn finish(self) -> bool {
        let mut remote = self.groups.send(self.rt).await;
        for (slot, proto) in self.slots.drain(..) {
            match slot {
                Slot::Remote { shard, idx } => remote.write(shard, idx, proto, self.out),
                Slot::Deferred(request) => {
                    let (reply, close) = run_deferred(request, self.rt, self.session).await;
                    if let Some(reply) = reply {
                        // In the protocol in force now: a deferred HELLO switched it.
                        reply.encode_as(self.out, self.session.protocol());
                    }
                    if close {
                        return true;
                    }
                }
                Slot::Splits(splits) => {
                    for reply in txn::run_splits(self.rt, splits).await {
                        reply.encode_as(self.out, proto);
                    }
                }
                slot => resolve(slot, &mut remote, self.rt, self.session)
                    .await
                    .encode_as(self.out, proto),
            }
        }
        false
    }
}

/// Stops the whole server gracefully (`SHUTDOWN`): the main thread's loop waits for
/// SIGINT / SIGTERM, and stopping it starts the same stop a signal does.
fn stop_server() {
    if let Some(main) = MAIN_LOOP.get() {
        main.stop();
    }
}

/// Runs a deferred request whole, as `Batch::add` would have, at its turn. Returns
/// its reply (none for `SHUTDOWN`) and whether the connection closes after it.
async fn run_deferred(
    request: Result<Command, Reply>,
    rt: &Arc<Runtime>,
    session: &mut Session,
) -> (Option<Reply>, bool) {
    let cmd = match session.queue(request) {
        Ok(reply) | Err(Err(reply)) => return (Some(reply), false),
        Err(Ok(cmd)) => cmd,
    };
    if cmd.is_connection() {
        let (reply, after) = session.execute(cmd);
        return match after {
            After::Continue => (Some(reply), false),
            After::Close => (Some(reply), true),
            After::Shutdown => {
                stop_server();
                (None, true)
            }
            After::Exec(commands, watched) => {
                let routes = commands.into_iter().map(|c| route(rt, c)).collect();
                (Some(exec(rt, session, routes, watched).await), false)
            }
            After::Watch(keys) => {
                watch(rt, session, keys).await;
                (Some(Reply::ok()), false)
            }
            After::Unwatch(keys) => {
                txn::unwatch(rt, keys);
                (Some(reply), false)
            }
        };
    }
    let route = route(rt, cmd);
    (Some(run_routed(rt, session, route).await), false)
}

/// Runs a routed command at its turn, once no transaction holds its keys.
async fn run_routed(rt: &Arc<Runtime>, session: &mut Session, route: Route) -> Reply {
    match route {
        Route::Local(cmd) => execute_here(cmd, Instant::now()),
        Route::Info(sections) => info_reply(rt, &sections).await,
        Route::Shard(shard, cmd) => {
            if current_shard() == Some(shard) && !txn::blocks(&cmd) {
                return execute_here(cmd, Instant::now());
            }
            rt.submit_to(shard, move || async move {
                txn::until_free([&cmd]).await;
                execute_here(cmd, Instant::now())
            })
            .await
            .unwrap_or_else(|_| txn::shutting_down())
        }
        Route::Split(split) => txn::run_splits(rt, vec![split])
            .await
            .pop()
            .unwrap_or(Reply::NilArray),
        atomic @ Route::Atomic(_) => txn::run_atomically(rt, session, vec![atomic], Vec::new())
            .await
            .and_then(|mut replies| replies.pop())
            .unwrap_or(Reply::NilArray),
    }
}

/// An `EXEC` block: its replies, or a nil array if a watched key was written.
async fn exec(
    rt: &Arc<Runtime>,
    session: &mut Session,
    routes: Vec<Route>,
    watched: Vec<(Vec<u8>, u64)>,
) -> Reply {
    let keys: Vec<Vec<u8>> = watched.iter().map(|(k, _)| k.clone()).collect();
    let replies = txn::run_atomically(rt, session, routes, watched).await;
    txn::unwatch(rt, keys);
    replies.map_or(Reply::NilArray, Reply::Array)
}

/// `WATCH`: registers `keys` with their shards and notes their stamps.
async fn watch(rt: &Arc<Runtime>, session: &mut Session, keys: Vec<Vec<u8>>) {
    for (key, stamp) in txn::watch(rt, keys).await {
        session.watching(key, stamp);
    }
}

async fn resolve(
    slot: Slot,
    remote: &mut Replies,
    rt: &Arc<Runtime>,
    session: &mut Session,
) -> Reply {
    match slot {
        Slot::Ready(reply) => reply,
        Slot::Remote { shard, idx } => remote.reply(shard, idx),
        Slot::Split(parts, merge) => {
            let replies = parts
                .into_iter()
                .map(|part| match part {
                    Slot::Ready(reply) => reply,
                    Slot::Remote { shard, idx } => remote.reply(shard, idx),
                    _ => unreachable!("split parts are single-shard"),
                })
                .collect();
            merge.merge(replies)
        }
        Slot::Info(sections) => info_reply(rt, &sections).await,
        Slot::Atomic(route) | Slot::Routed(route) => run_routed(rt, session, route).await,
        Slot::Exec(routes, watched) => exec(rt, session, routes, watched).await,
        Slot::Watch(keys) => {
            watch(rt, session, keys).await;
            Reply::ok()
        }
        Slot::Deferred(_) | Slot::Splits(_) => {
            unreachable!("finish runs deferred requests and splits itself")
        }
    }
}

/// `INFO`, with every shard's key counts.
async fn info_reply(rt: &Runtime, sections: &[Vec<u8>]) -> Reply {
    let mut stats = Vec::with_capacity(rt.len());
    for r in rt.broadcast(|_| async { STORE.with(|s| s.borrow().stats()) }) {
        match r.await {
            Ok(s) => stats.push(s),
            Err(e) => return Reply::error(format!("ERR {e}")),
        }
    }
    Info::new()
        .field(
            "Clients",
            "connected_clients",
            CLIENTS.load(Ordering::Relaxed),
        )
        .shards(&stats)
        .render(sections)
}

/// Where `cmd` runs on this server.
fn route(rt: &Runtime, cmd: Command) -> Route {
    let shards = rt.len();
    cmd.route(shards, |key| shard_index_bytes(key, shards))
}

/// The shard that owns `key`.
fn shard_of(rt: &Runtime, key: &[u8]) -> usize {
    shard_index_bytes(key, rt.len())
}

/// Whether a split command's parts are on more than one shard.
fn spans_shards(split: &kv_server::kv::Split) -> bool {
    split.parts.windows(2).any(|w| w[0].0 != w[1].0)
}

/// Counts this connection as in the middle of a request (what a graceful stop waits
/// for) until dropped, also when the task ends early.
struct Busy;

impl Busy {
    fn new() -> Busy {
        BUSY.with(|b| b.set(b.get() + 1));
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(b.get() - 1));
    }
}

/// A reply buffer bigger than this after a write is freed, not kept for the next.
const OUT_KEEP: usize = 64 * 1024;

/// How much a connection reads at a time: little at first, so that an idle
/// connection holds little (Redis keeps about 10 KiB per idle client); twice as
/// much after a read that filled it (a deep pipeline, a big value), half after one
/// that used under an eighth. A read waits with this room in the decoder's buffer,
/// which shrinks with it.
struct ReadSize(usize);

impl ReadSize {
    const MIN: usize = 1024;
    /// What every read asked for before reads were sized: a big request (a pipeline,
    /// a value) takes as many reads as then, and keeps no more memory.
    const MAX: usize = 16 * 1024;

    /// A read of `room` bytes brought `n`.
    fn after(&mut self, n: usize, room: usize) {
        if n == room && self.0 < Self::MAX {
            self.0 *= 2;
        } else if n < self.0 / 8 && self.0 > Self::MIN {
            self.0 /= 2;
        }
    }
}

/// Serves one client until it quits, disconnects or breaks the protocol.
async fn serve(mut stream: TcpStream, rt: Arc<Runtime>) {
    CLIENTS.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let me = current_shard().expect("connections are served on shards");
    let mut decoder = Decoder::new(Limits::default());
    let mut session = Session::new(CLIENT_IDS.fetch_add(1, Ordering::Relaxed) + 1);
    let mut out = Vec::new();
    let mut slots = Vec::new();
    let mut read_size = ReadSize(ReadSize::MIN);
    let by_ring = shardloop::get_running_loop().is_ok_and(|lp| lp.is_proactor());
    'conn: loop {
        // No await between this check and `Busy::new`: a stop that set DRAINING on
        // this shard either sees this request as busy or this connection closes.
        if DRAINING.with(Cell::get) {
            break;
        }
        let busy = Busy::new();
        let mut batch = Batch::new(&rt, me, &mut session, &mut out, &mut slots);
        let mut quit = false;
        let mut broken = None;
        loop {
            match decoder.next_request() {
                Ok(Some(args)) => match batch.add(Command::parse_args(args)) {
                    Added::Next => {}
                    Added::Close => {
                        quit = true;
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        if batch.has_replies() {
            quit |= batch.finish().await;
            // On a proactor the reply goes out as a ring send, in the loop's next
            // batch with every other connection's, not a send(2) of its own.
            let written = if by_ring {
                let (written, sent) = stream.write_all_owned(std::mem::take(&mut out)).await;
                out = sent;
                written
            } else {
                stream.write_all(&out).await
            };
            out.clear();
            if out.capacity() > OUT_KEEP {
                out = Vec::new();
            }
            if written.is_err() {
                break 'conn;
            }
        }
        if let Some(e) = broken {
            // A protocol error closes this connection only, after saying why.
            let _ = stream.write_all(&e.to_resp()).await;
            break;
        }
        drop(busy);
        if quit {
            break;
        }
        let room = decoder.read_buf(read_size.0);
        let asked = room.len();
        match stream.read(room).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                decoder.commit(n);
                read_size.after(n, asked);
            }
        }
    }
    txn::unwatch(
        &rt,
        session.take_watched().into_iter().map(|(k, _)| k).collect(),
    );
    CLIENTS.fetch_sub(1, Ordering::Relaxed);
}

/// Starts shard `shard`'s part of the server: its expiry timer, and its accept loop
/// (every shard with SO_REUSEPORT; shard 0 only with the dispatcher).
fn start_shard(
    rt: Arc<Runtime>,
    shard: usize,
    port: u16,
    placement: Option<Placement>,
) -> std::io::Result<u16> {
    drop(shardloop::spawn(async {
        let mut tick = shardloop::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            // A key a transaction holds stays as the transaction saw it.
            STORE.with(|s| {
                s.borrow_mut()
                    .expire_some_but(Instant::now(), 200, txn::holds_key)
            });
        }
    }));
    let listener = match placement {
        None => TcpListener::bind_reuseport(("127.0.0.1", port))?,
        Some(_) if shard == 0 => TcpListener::bind(("127.0.0.1", port))?,
        Some(_) => return Ok(port),
    };
    let bound = listener.local_addr()?.port();
    let acceptor = shardloop::spawn(async move {
        match placement {
            None => loop {
                match listener.accept().await {
                    Ok((stream, _)) => drop(shardloop::spawn(serve(stream, rt.clone()))),
                    Err(e) => log::warn!("accept failed: {e}"),
                }
            },
            Some(placement) => {
                let dispatcher = Dispatcher::new(rt.shards().to_vec(), placement);
                let rt = rt.clone();
                if let Err(e) = dispatcher
                    .run(&listener, move |s| serve(s, rt.clone()))
                    .await
                {
                    log::error!("the dispatcher stopped: {e}");
                }
            }
        }
    });
    ACCEPTOR.with(|a| *a.borrow_mut() = Some(acceptor));
    Ok(bound)
}

/// Binds every shard's listener; with `--port 0`, shard 0 picks the port and the
/// others join it.
fn start(rt: &Arc<Runtime>, port: u16, placement: Option<Placement>) -> Result<u16, String> {
    let mut port = port;
    for shard in 0..rt.len() {
        let rt2 = rt.clone();
        port = rt
            .submit_to(shard, move || async move {
                start_shard(rt2, shard, port, placement)
            })
            .wait()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("shard {shard} cannot listen on port {port}: {e}"))?;
    }
    Ok(port)
}

/// Graceful stop: no new connections and no new requests, then wait (up to `grace`)
/// until no connection is in the middle of a request, then shut the shards down.
///
/// Once every shard has DRAINING set, a shard's BUSY count only goes down (a request
/// on one shard that forwards to another is counted on its own shard until its
/// replies are back), so one zero sum over the shards, read one after the other,
/// means that no request is left anywhere, and the shutdown refuses no forwarded key.
fn stop(rt: &Runtime, grace: Duration) {
    for r in rt.broadcast(|_| async {
        DRAINING.with(|d| d.set(true));
        if let Some(acceptor) = ACCEPTOR.with(|a| a.borrow_mut().take()) {
            acceptor.cancel();
        }
    }) {
        let _ = r.wait();
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        let busy: usize = rt
            .broadcast(|_| async { BUSY.with(Cell::get) })
            .into_iter()
            .map(|r| r.wait().unwrap_or(0))
            .sum();
        if busy == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match rt.shutdown(Duration::from_millis(50)) {
        Ok(report) => eprintln!(
            "stopped: {} tasks finished, {} idle connections and timers cancelled",
            report.finished(),
            report.cancelled()
        ),
        Err(e) => eprintln!("shutdown: {e}"),
    }
}

fn main() {
    env_logger::init();
    let args = parse_args();
    let mut builder = Runtime::builder();
    if let Some(on) = args.proactor {
        builder = builder.proactor(on);
    }
    let rt = Arc::new(
        builder
            .shards(args.shards)
            .pin_to_cores(args.pin)
            .thread_name("kv-shard")
            .spin_before_park(args.spin)
            .build()
            .expect("start the shards"),
    );
    // Before any client can connect: SHUTDOWN stops this loop.
    let lp = shardloop::get_event_loop().expect("the main thread's loop");
    let _ = MAIN_LOOP.set(lp.handle());
    let port = match start(&rt, args.port, args.placement) {
        Ok(port) => port,
        Err(e) => {
            eprintln!("kv_server: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on 127.0.0.1:{port}");
    let _ = std::io::stdout().flush();
    eprintln!(
        "kv_server: {} shards, {} placement; try: redis-cli -p {port} ping",
        rt.len(),
        if args.placement.is_some() {
            "dispatcher"
        } else {
            "SO_REUSEPORT"
        }
    );

    // The main thread's loop waits for SIGINT / SIGTERM.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let stopper = lp.clone();
        lp.add_signal_handler(sig, move || stopper.stop())
            .expect("install the signal handlers");
    }
    lp.run_forever().expect("wait for a signal");
    eprintln!("kv_server: signal or SHUTDOWN received, stopping");
    stop(&rt, args.grace);
}

#[cfg(test)]
mod tests {
    use super::ReadSize;

    #[test]
    fn the_read_size_follows_what_the_reads_bring() {
        let mut size = ReadSize(ReadSize::MIN);
        // Reads that fill it: it doubles, up to the most.
        for _ in 0..10 {
            let room = size.0;
            size.after(room, room);
        }
        assert_eq!(size.0, ReadSize::MAX);
        // A short read of a full room (the buffer limit) is not a small read.
        size.after(ReadSize::MAX / 2, ReadSize::MAX / 2);
        assert_eq!(size.0, ReadSize::MAX);
        // Reads of a few bytes: it halves, down to the least.
        for _ in 0..10 {
            size.after(10, size.0);
        }
        assert_eq!(size.0, ReadSize::MIN);
    }
}
