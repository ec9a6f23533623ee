//! Atomicity across shards: one lock per shard, taken in ascending shard order and
//! held until the end (strict two-phase locking).
//!
//! A command on keys of several shards (`MSET`, `MGET`, `DEL`, `MSETNX`, `RENAME`, ...)
//! and every `MULTI`/`EXEC` block lock the shards they touch, lowest index first, run
//! their parts, and unlock. While a shard is locked, every other command that reads
//! or writes its keys waits (single-key ones included), so no client ever sees half of
//! a multi-key command. Everyone locks in the same order, so two transactions never
//! wait on each other in a cycle. A shard nobody has locked costs one thread-local
//! read per command: single-shard commands keep their fast path.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use std::time::Instant;

use kv_server::kv::{Command, Route, Session, Split, StepResult, Store};
use kv_server::resp::Reply;
use shardloop::{Remote, Runtime};

use crate::STORE;

thread_local! {
    /// This shard's lock.
    static LOCK: ShardLock = const {
        ShardLock {
            holder: Cell::new(None),
            waiters: RefCell::new(Vec::new()),
        }
    };
}

/// Transaction ids, unique over all shards.
static NEXT_TXN: AtomicU64 = AtomicU64::new(1);

struct ShardLock {
    /// The transaction holding this shard.
    holder: Cell<Option<u64>>,
    /// Whoever waits for the shard to be free (woken all at once on release).
    waiters: RefCell<Vec<Waker>>,
}

/// Whether a transaction holds this shard: then a command on its keys must wait.
pub fn is_locked() -> bool {
    LOCK.with(|l| l.holder.get().is_some())
}

/// Waits until no transaction but `txn` holds this shard.
pub async fn unlocked(txn: Option<u64>) {
    poll_fn(|cx| {
        LOCK.with(|l| match l.holder.get() {
            Some(holder) if Some(holder) != txn => {
                let mut waiters = l.waiters.borrow_mut();
                // A task polled again while it waits is not queued twice.
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        })
    })
    .await
}

/// Takes this shard's lock for `txn`, once it is free. If the transaction was
/// dropped meanwhile (its release may have come before this), gives it back at once:
/// no lock outlives its transaction.
async fn acquire(txn: u64, dropped: &AtomicBool) {
    unlocked(Some(txn)).await;
    LOCK.with(|l| l.holder.set(Some(txn)));
    if dropped.load(Ordering::Acquire) {
        release(txn);
    }
}

fn release(txn: u64) {
    let waiters = LOCK.with(|l| {
        if l.holder.get() != Some(txn) {
            return Vec::new();
        }
        l.holder.set(None);
        l.waiters.take()
    });
    for waker in waiters {
        waker.wake();
    }
}

/// A transaction holding some shards; dropping it releases them (also when the
/// connection that runs it goes away mid-way).
pub struct Txn {
    rt: Arc<Runtime>,
    id: u64,
    /// The shards locked, or asked to lock (a lock still waited for is released too).
    held: Vec<usize>,
    /// Set when the transaction is dropped: a lock taken after that is given back.
    dropped: Arc<AtomicBool>,
}

impl Txn {
    /// A transaction that holds nothing yet.
    pub fn begin(rt: &Arc<Runtime>) -> Txn {
        Txn {
            rt: rt.clone(),
            id: NEXT_TXN.fetch_add(1, Ordering::Relaxed),
            held: Vec::new(),
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Locks `shards` (ascending, no repeats), each as soon as it is free.
    pub async fn lock(rt: &Arc<Runtime>, shards: &[usize]) -> Txn {
        debug_assert!(shards.windows(2).all(|w| w[0] < w[1]));
        let mut txn = Txn::begin(rt);
        for &shard in shards {
            let (id, dropped) = (txn.id, txn.dropped.clone());
            // Held before the wait: a transaction dropped while it waits releases it.
            txn.held.push(shard);
            // A shard that is shutting down refuses: there is nothing left to protect.
            let _ = rt
                .submit_to(shard, move || async move { acquire(id, &dropped).await })
                .await;
        }
        txn
    }

    /// Locks `shard` (higher than every shard held so far) and runs `f` on its store
    /// in the same step: one round trip. Strict two-phase locking allows it, as
    /// nothing is released before the end.
    pub fn lock_and_run<T, F>(&mut self, shard: usize, f: F) -> OnShard<T>
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        debug_assert!(self.held.last().map_or(true, |&last| last < shard));
        self.held.push(shard);
        let (id, dropped) = (self.id, self.dropped.clone());
        OnShard(self.rt.submit_to(shard, move || async move {
            acquire(id, &dropped).await;
            STORE.with(|s| f(&mut s.borrow_mut()))
        }))
    }

    /// Sends `f` to run on shard `shard`'s store (a shard this transaction holds);
    /// the `Remote` gives its result, an error if the shard is shutting down.
    pub fn on<T, F>(&self, shard: usize, f: F) -> OnShard<T>
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        debug_assert!(self.held.contains(&shard));
        let id = self.id;
        OnShard(self.rt.submit_to(shard, move || async move {
            unlocked(Some(id)).await;
            STORE.with(|s| f(&mut s.borrow_mut()))
        }))
    }
}

/// The result of [`Txn::on`]: `None` if the shard was shutting down.
pub struct OnShard<T>(Remote<T>);

impl<T> OnShard<T> {
    /// Waits for the result.
    pub async fn get(self) -> Option<T> {
        self.0.await.ok()
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
        let id = self.id;
        for &shard in &self.held {
            // Not awaited: the release runs on its shard whether or not anyone looks.
            drop(self.rt.submit_to(shard, move || async move { release(id) }));
        }
    }
}

/// The shards a routed command touches (none for a keyless one).
fn shards_of(route: &Route) -> Vec<usize> {
    match route {
        Route::Shard(shard, _) => vec![*shard],
        Route::Split(split) => split.parts.iter().map(|(s, _)| *s).collect(),
        Route::Atomic(atomic) => atomic.shards(),
        Route::Local(_) | Route::Info(_) => Vec::new(),
    }
}

/// Runs `routes` in order as one atomic step: locks every shard they touch (and the
/// shards of the `watched` keys), checks that no watched key was written since its
/// stamp (else `None`: nothing runs), runs each, unlocks. Returns their replies, in
/// order.
pub async fn run_atomically(
    rt: &Arc<Runtime>,
    session: &mut Session,
    routes: Vec<Route>,
    watched: Vec<(Vec<u8>, u64)>,
) -> Option<Vec<Reply>> {
    if let ([Route::Split(_)], true) = (&routes[..], watched.is_empty()) {
        let Some(Route::Split(split)) = routes.into_iter().next() else {
            unreachable!("matched above")
        };
        return Some(vec![run_split(rt, split).await]);
    }
    let mut shards: Vec<usize> = routes.iter().flat_map(shards_of).collect();
    shards.extend(watched.iter().map(|(key, _)| crate::shard_of(rt, key)));
    shards.sort_unstable();
    shards.dedup();
    let txn = Txn::lock(rt, &shards).await;
    for (key, stamp) in watched {
        let shard = crate::shard_of(rt, &key);
        let now = txn.on(shard, move |s| s.stamp(&key)).get().await;
        if now != Some(stamp) {
            return None;
        }
    }
    let mut replies = Vec::with_capacity(routes.len());
    // One clock reading for the whole block, as Redis runs a block at one time.
    let now = Instant::now();
    for route in routes {
        replies.push(run_one(&txn, rt, session, route, now).await);
    }
    Some(replies)
}

/// Registers `keys` as watched with their shards (after any transaction holding
/// them): each key with its stamp now.
pub async fn watch(rt: &Arc<Runtime>, keys: Vec<Vec<u8>>) -> Vec<(Vec<u8>, u64)> {
    let mut stamps = Vec::with_capacity(keys.len());
    for key in keys {
        let shard = crate::shard_of(rt, &key);
        let k = key.clone();
        let stamp = rt
            .submit_to(shard, move || async move {
                unlocked(None).await;
                STORE.with(|s| s.borrow_mut().watch(&k))
            })
            .await;
        if let Ok(stamp) = stamp {
            stamps.push((key, stamp));
        }
    }
    stamps
}

/// Unregisters watched `keys` with their shards (not awaited).
pub fn unwatch(rt: &Arc<Runtime>, keys: Vec<Vec<u8>>) {
    for key in keys {
        let shard = crate::shard_of(rt, &key);
        drop(rt.submit_to(shard, move || async move {
            STORE.with(|s| s.borrow_mut().unwatch(&key))
        }));
    }
}

/// One command split over several shards (`MSET`, `MGET`, `DEL` ...): each part runs
/// as its shard is locked, lowest shard first, one round trip per shard.
async fn run_split(rt: &Arc<Runtime>, split: Split) -> Reply {
    let mut txn = Txn::begin(rt);
    let mut parts: Vec<(usize, usize, Command)> = split
        .parts
        .into_iter()
        .enumerate()
        .map(|(i, (shard, cmd))| (shard, i, cmd))
        .collect();
    parts.sort_unstable_by_key(|p| p.0);
    let mut replies: Vec<Option<Reply>> = vec![None; parts.len()];
    for (shard, i, cmd) in parts {
        let reply = txn.lock_and_run(shard, move |s| s.execute(cmd, Instant::now()));
        replies[i] = Some(reply.get().await.unwrap_or_else(shutting_down));
    }
    drop(txn);
    split.merge.merge(
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(shutting_down))
            .collect(),
    )
}

fn shutting_down() -> Reply {
    Reply::error("ERR the shard owning this key is shutting down")
}

async fn run_one(
    txn: &Txn,
    rt: &Arc<Runtime>,
    session: &mut Session,
    route: Route,
    now: Instant,
) -> Reply {
    match route {
        // Queued connection commands (`CLIENT SETNAME` in a MULTI block, say).
        Route::Local(cmd) if cmd.is_connection() => session.execute(cmd).0,
        Route::Local(cmd) => crate::execute_here(cmd, now),
        Route::Shard(shard, cmd) => txn
            .on(shard, move |s| s.execute(cmd, now))
            .get()
            .await
            .unwrap_or_else(shutting_down),
        Route::Split(split) => {
            // Every part sent at once: the shards run them side by side.
            let parts: Vec<_> = split
                .parts
                .into_iter()
                .map(|(shard, cmd)| txn.on(shard, move |s| s.execute(cmd, now)))
                .collect();
            let mut replies = Vec::with_capacity(parts.len());
            for part in parts {
                replies.push(part.get().await.unwrap_or_else(shutting_down));
            }
            split.merge.merge(replies)
        }
        Route::Atomic(atomic) => {
            atomic
                .run(now, |shard, step| {
                    let part = txn.on(shard, step);
                    async move { part.get().await.unwrap_or(StepResult::Refused) }
                })
                .await
        }
        Route::Info(sections) => crate::info_reply(rt, &sections).await,
    }
}
