//! Atomicity across shards: a transaction locks the keys it touches on each shard
//! (or the whole shard, for a command that reads the whole keyspace), shards taken in
//! ascending order and held until the end (strict two-phase locking).
//!
//! A command on keys of several shards (`MSET`, `MGET`, `DEL`, `MSETNX`, `RENAME`,
//! ...) and every `MULTI`/`EXEC` block lock what they touch, lowest shard first, run
//! their parts and unlock. While a key is locked, every other command on it waits
//! (single-key ones included), so no client ever sees half of a multi-key command;
//! commands on other keys of the same shard go on. `KEYS`, `DBSIZE`, `FLUSHALL` and
//! `SCAN` lock, or wait for, the whole shard: they see no key of a transaction that
//! is half done.
//!
//! No deadlock: every transaction takes its shards in the same order, and on each
//! shard all it needs in one step. A transaction waiting for a whole shard keeps new
//! key locks out there (so it is not starved), which adds no cycle: whoever it makes
//! wait holds only lower shards. A shard with nothing locked costs one thread-local
//! read per command: single-shard commands keep their fast path.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use futures_util::future::join_all;
use kv_server::kv::{Atomic, Command, Route, Session, Split, StepResult, Store};
use kv_server::resp::Reply;
use shardloop::{current_shard, Runtime};

use crate::STORE;

thread_local! {
    /// This shard's locks.
    static LOCKS: ShardLocks = ShardLocks::default();
}

/// Transaction ids, unique over all shards.
static NEXT_TXN: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct ShardLocks {
    /// The transaction holding the whole shard.
    whole: Cell<Option<u64>>,
    /// Transactions waiting for the whole shard: key locks wait behind them.
    whole_waiting: Cell<usize>,
    /// Locked keys (by [`key_hash`]) and the transaction holding each.
    keys: RefCell<HashMap<u64, u64>>,
    /// Whoever waits for a lock to go, and on what (woken by a release that
    /// overlaps it).
    waiters: RefCell<Vec<(Waker, Arc<Claim>)>>,
}

/// What a transaction locks on one shard.
#[derive(Debug)]
pub enum Claim {
    /// Every key, for a command that reads or writes the whole keyspace.
    Whole,
    /// These keys (by [`key_hash`], sorted, no repeats). Two keys with the same hash
    /// lock each other: a wait that was not needed, never a torn read.
    Keys(Vec<u64>),
}

impl Claim {
    /// What `cmds` (run on one shard) need locked.
    fn of<'c>(cmds: impl IntoIterator<Item = &'c Command>) -> Claim {
        let mut hashes = Vec::new();
        for cmd in cmds {
            let keys = cmd.keys();
            if keys.is_empty() {
                return Claim::Whole;
            }
            hashes.extend(keys.into_iter().map(key_hash));
        }
        Claim::Keys(hashes).normalized()
    }

    fn normalized(self) -> Claim {
        match self {
            Claim::Keys(mut hashes) => {
                hashes.sort_unstable();
                hashes.dedup();
                Claim::Keys(hashes)
            }
            whole => whole,
        }
    }

    /// Whether the two lock something in common (both sorted: one merge walk).
    fn overlaps(&self, other: &Claim) -> bool {
        let (Claim::Keys(a), Claim::Keys(b)) = (self, other) else {
            return true;
        };
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// Both claims at once.
    fn join(self, other: Claim) -> Claim {
        match (self, other) {
            (Claim::Keys(mut a), Claim::Keys(b)) => {
                a.extend(b);
                Claim::Keys(a).normalized()
            }
            _ => Claim::Whole,
        }
    }
}

/// A key's lock-table hash (FNV-1a: keys are short, and a collision only makes
/// one command wait for another).
fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether any transaction holds something on this shard (the fast check before
/// [`blocks`]).
pub fn is_locked() -> bool {
    LOCKS.with(|l| l.whole.get().is_some() || !l.keys.borrow().is_empty())
}

/// Whether `cmd`, run on this shard by no transaction, must wait: a key of it is
/// locked, or it reads the whole keyspace and something is locked.
pub fn blocks(cmd: &Command) -> bool {
    LOCKS.with(|l| {
        if l.whole.get().is_some() {
            return true;
        }
        let locked = l.keys.borrow();
        if locked.is_empty() {
            return false;
        }
        let keys = cmd.keys();
        keys.is_empty() || keys.into_iter().any(|k| locked.contains_key(&key_hash(k)))
    })
}

/// Whether a transaction holds `key` (or its whole shard) on this shard.
pub fn holds_key(key: &[u8]) -> bool {
    LOCKS.with(|l| {
        let locked = l.keys.borrow();
        l.whole.get().is_some() || (!locked.is_empty() && locked.contains_key(&key_hash(key)))
    })
}

/// Waits until `free()` says so, checked again whenever a lock that `on` overlaps
/// is released on this shard.
async fn until(on: &Arc<Claim>, mut free: impl FnMut() -> bool) {
    poll_fn(|cx| {
        if free() {
            return Poll::Ready(());
        }
        LOCKS.with(|l| {
            let mut waiters = l.waiters.borrow_mut();
            // A task polled again while it waits is not queued twice.
            match waiters.iter_mut().find(|(w, _)| w.will_wake(cx.waker())) {
                // The same task waiting again, maybe on something else now.
                Some(entry) => entry.1 = on.clone(),
                None => waiters.push((cx.waker().clone(), on.clone())),
            }
        });
        Poll::Pending
    })
    .await
}

/// Whether no transaction holds anything of `claim` on this shard.
fn is_free(claim: &Claim) -> bool {
    LOCKS.with(|l| {
        if l.whole.get().is_some() {
            return false;
        }
        let locked = l.keys.borrow();
        match claim {
            Claim::Whole => locked.is_empty(),
            Claim::Keys(keys) => keys.iter().all(|k| !locked.contains_key(k)),
        }
    })
}

/// Waits until no transaction holds a key of `cmds` on this shard (or, for a
/// keyless one, anything on it).
pub async fn until_free<'c>(cmds: impl IntoIterator<Item = &'c Command>) {
    if is_locked() {
        until_claim_free(Claim::of(cmds)).await;
    }
}

/// Waits until no transaction holds anything of `claim` on this shard.
async fn until_claim_free(claim: Claim) {
    let on = Arc::new(claim);
    until(&on, || is_free(&on)).await;
}

/// Counts a transaction as waiting for the whole shard while it lives.
struct WaitingForWhole;

impl WaitingForWhole {
    fn new() -> Self {
        LOCKS.with(|l| l.whole_waiting.set(l.whole_waiting.get() + 1));
        WaitingForWhole
    }
}

impl Drop for WaitingForWhole {
    fn drop(&mut self) {
        LOCKS.with(|l| l.whole_waiting.set(l.whole_waiting.get() - 1));
        // Key locks that waited behind this one may go now.
        wake_waiters(&Claim::Whole);
    }
}

/// Whether `claim` can be taken on this shard now.
fn can_take(claim: &Claim) -> bool {
    is_free(claim) && (matches!(claim, Claim::Whole) || LOCKS.with(|l| l.whole_waiting.get() == 0))
}

fn take(txn: u64, claim: &Claim) {
    LOCKS.with(|l| match claim {
        Claim::Whole => l.whole.set(Some(txn)),
        Claim::Keys(keys) => l.keys.borrow_mut().extend(keys.iter().map(|&k| (k, txn))),
    })
}

/// Takes `claim` on this shard for `txn`, once it is free.
async fn acquire(txn: u64, claim: &Arc<Claim>) {
    if can_take(claim) {
        return take(txn, claim);
    }
    let _waiting = matches!(**claim, Claim::Whole).then(WaitingForWhole::new);
    until(claim, || can_take(claim)).await;
    take(txn, claim);
}

/// Gives back what `txn` holds on this shard under `claim`.
fn release(txn: u64, claim: &Claim) {
    LOCKS.with(|l| match claim {
        Claim::Whole => {
            if l.whole.get() == Some(txn) {
                l.whole.set(None);
            }
        }
        Claim::Keys(keys) => {
            let mut locked = l.keys.borrow_mut();
            for k in keys {
                if locked.get(k) == Some(&txn) {
                    locked.remove(k);
                }
            }
        }
    });
    wake_waiters(claim);
}

/// Wakes whoever waits on something `released` overlaps. Each checks again and
/// waits again if it must: a wakeup too many costs a poll, one too few a hang.
fn wake_waiters(released: &Claim) {
    let woken: Vec<Waker> = LOCKS.with(|l| {
        let mut waiters = l.waiters.borrow_mut();
        let mut woken = Vec::new();
        waiters.retain(|(waker, on)| {
            let overlaps = released.overlaps(on);
            if overlaps {
                woken.push(waker.clone());
            }
            !overlaps
        });
        woken
    });
    for waker in woken {
        waker.wake();
    }
}

/// A transaction holding claims on some shards; dropping it releases them (also
/// when the connection that runs it goes away mid-way).
pub struct Txn {
    rt: Arc<Runtime>,
    id: u64,
    /// What it holds, or asked for (a claim still waited for is released too), on
    /// which shard.
    held: Vec<(usize, Arc<Claim>)>,
    /// Set when the transaction is dropped: a claim taken on another shard after
    /// that (its release may have come first) is given back at once.
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

    /// Takes `claim` on `shard` (higher than every shard held so far) and runs `f`
    /// on its store in the same step: on this shard without a message, on another
    /// in one round trip. Strict two-phase locking allows running at once, as
    /// nothing is released before the end. `None` if the shard is shutting down.
    pub async fn lock_and_run<T, F>(&mut self, shard: usize, claim: Claim, f: F) -> Option<T>
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        debug_assert!(self.held.last().map_or(true, |&(last, _)| last < shard));
        let claim = Arc::new(claim);
        self.held.push((shard, claim.clone()));
        let id = self.id;
        if current_shard() == Some(shard) {
            // Dropped while it waits: the claim is not taken, and the release in
            // `drop` finds nothing of it.
            acquire(id, &claim).await;
            return Some(STORE.with(|s| f(&mut s.borrow_mut())));
        }
        let dropped = self.dropped.clone();
        let remote = self.rt.submit_to(shard, move || async move {
            acquire(id, &claim).await;
            // Run even if the transaction was dropped meanwhile (only a shutdown
            // cancels one mid-way): its earlier parts ran, and this one too leaves
            // the command whole rather than half.
            let out = STORE.with(|s| f(&mut s.borrow_mut()));
            if dropped.load(Ordering::Acquire) {
                release(id, &claim);
            }
            out
        });
        remote.await.ok()
    }

    /// [`lock_and_run`](Self::lock_and_run) for the transaction's last shard: the
    /// claim is given back as soon as `f` ran, in the same step. Nothing is taken
    /// after it, so two-phase locking still holds, and no release message follows.
    pub async fn run_last<T, F>(&mut self, shard: usize, claim: Claim, f: F) -> Option<T>
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        debug_assert!(self.held.last().map_or(true, |&(last, _)| last < shard));
        let claim = Arc::new(claim);
        let id = self.id;
        let run = move || async move {
            acquire(id, &claim).await;
            let out = STORE.with(|s| f(&mut s.borrow_mut()));
            release(id, &claim);
            out
        };
        if current_shard() == Some(shard) {
            return Some(run().await);
        }
        self.rt.submit_to(shard, run).await.ok()
    }

    /// Takes `claims` (ascending shards, no repeats), each as soon as it is free.
    async fn lock(&mut self, claims: Vec<(usize, Claim)>) {
        for (shard, claim) in claims {
            self.lock_and_run(shard, claim, |_| ()).await;
        }
    }

    /// Runs `f` on shard `shard`'s store (a shard this transaction holds, so it runs
    /// at once). `None` if the shard is shutting down.
    pub async fn on<T, F>(&self, shard: usize, f: F) -> Option<T>
    where
        F: FnOnce(&mut Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        debug_assert!(self.held.iter().any(|&(s, _)| s == shard));
        if current_shard() == Some(shard) {
            return Some(STORE.with(|s| f(&mut s.borrow_mut())));
        }
        self.rt
            .submit_to(shard, move || async move {
                STORE.with(|s| f(&mut s.borrow_mut()))
            })
            .await
            .ok()
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
        let (id, me) = (self.id, current_shard());
        for (shard, claim) in self.held.drain(..) {
            if me == Some(shard) {
                release(id, &claim);
            } else {
                // Not awaited: the release runs on its shard whether or not anyone
                // looks.
                drop(
                    self.rt
                        .submit_to(shard, move || async move { release(id, &claim) }),
                );
            }
        }
    }
}

/// What `route` locks, per shard (nothing for a keyless one).
fn claims_of(route: &Route, out: &mut Vec<(usize, Claim)>) {
    match route {
        Route::Shard(shard, cmd) => out.push((*shard, Claim::of([cmd]))),
        Route::Split(split) => {
            out.extend(split.parts.iter().map(|(s, c)| (*s, Claim::of([c]))));
        }
        Route::Atomic(Atomic::MSetNx(parts)) => out.extend(parts.iter().map(|(s, pairs)| {
            (
                *s,
                Claim::Keys(pairs.iter().map(|(k, _)| key_hash(k)).collect()).normalized(),
            )
        })),
        Route::Atomic(Atomic::Rename { from, to, .. }) => {
            for (s, key) in [from, to] {
                out.push((*s, Claim::Keys(vec![key_hash(key)])));
            }
        }
        Route::Local(_) | Route::Info(_) => {}
    }
}

/// `claims` merged into one per shard, in ascending shard order.
fn per_shard(mut claims: Vec<(usize, Claim)>) -> Vec<(usize, Claim)> {
    claims.sort_by_key(|c| c.0);
    let mut merged: Vec<(usize, Claim)> = Vec::with_capacity(claims.len());
    for (shard, claim) in claims {
        match merged.last_mut() {
            Some((last, held)) if *last == shard => {
                let previous = std::mem::replace(held, Claim::Whole);
                *held = previous.join(claim);
            }
            _ => merged.push((shard, claim)),
        }
    }
    merged
}

/// Runs `routes` in order as one atomic step: locks what they touch (and the
/// `watched` keys), checks that no watched key was written since its stamp (else
/// `None`: nothing runs), runs each, unlocks. Returns their replies, in order.
pub async fn run_atomically(
    rt: &Arc<Runtime>,
    session: &mut Session,
    routes: Vec<Route>,
    watched: Vec<(Vec<u8>, u64)>,
) -> Option<Vec<Reply>> {
    let mut claims = Vec::new();
    for route in &routes {
        claims_of(route, &mut claims);
    }
    for (key, _) in &watched {
        claims.push((crate::shard_of(rt, key), Claim::Keys(vec![key_hash(key)])));
    }
    let mut txn = Txn::begin(rt);
    txn.lock(per_shard(claims)).await;
    for (key, stamp) in watched {
        let shard = crate::shard_of(rt, &key);
        if txn.on(shard, move |s| s.stamp(&key)).await != Some(stamp) {
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
                if is_locked() {
                    until_claim_free(Claim::Keys(vec![key_hash(&k)])).await;
                }
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

/// Commands split over several shards (`MSET`, `MGET`, `DEL` ...; a pipeline's run
/// of them together) as one atomic step: on each shard, lowest first, every part
/// for it runs in request order as soon as its keys are locked, one round trip per
/// other shard. Returns each command's reply, in order.
pub async fn run_splits(rt: &Arc<Runtime>, splits: Vec<Split>) -> Vec<Reply> {
    let mut by_shard: Vec<Vec<(usize, usize, Command)>> = Vec::new();
    by_shard.resize_with(rt.len(), Vec::new);
    let mut merges = Vec::with_capacity(splits.len());
    let mut replies: Vec<Vec<Option<Reply>>> = Vec::with_capacity(splits.len());
    for (i, split) in splits.into_iter().enumerate() {
        replies.push(vec![None; split.parts.len()]);
        for (j, (shard, cmd)) in split.parts.into_iter().enumerate() {
            by_shard[shard].push((i, j, cmd));
        }
        merges.push(split.merge);
    }
    let last = by_shard.iter().rposition(|parts| !parts.is_empty());
    let mut txn = Txn::begin(rt);
    for (shard, parts) in by_shard.into_iter().enumerate() {
        if parts.is_empty() {
            continue;
        }
        let claim = Claim::of(parts.iter().map(|p| &p.2));
        let run = move |s: &mut Store| {
            let now = Instant::now();
            parts
                .into_iter()
                .map(|(i, j, cmd)| (i, j, s.execute(cmd, now)))
                .collect::<Vec<_>>()
        };
        let done = if Some(shard) == last {
            txn.run_last(shard, claim, run).await
        } else {
            txn.lock_and_run(shard, claim, run).await
        };
        for (i, j, reply) in done.into_iter().flatten() {
            replies[i][j] = Some(reply);
        }
    }
    drop(txn);
    merges
        .into_iter()
        .zip(replies)
        .map(|(merge, parts)| {
            merge.merge(
                parts
                    .into_iter()
                    .map(|r| r.unwrap_or_else(shutting_down))
                    .collect(),
            )
        })
        .collect()
}

/// The reply for a command whose shard is shutting down (its message refused).
pub fn shutting_down() -> Reply {
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
            .await
            .unwrap_or_else(shutting_down),
        Route::Split(split) => {
            // Every part sent at once: the shards run them side by side.
            let parts = split
                .parts
                .into_iter()
                .map(|(shard, cmd)| txn.on(shard, move |s| s.execute(cmd, now)));
            let replies = join_all(parts).await;
            split.merge.merge(
                replies
                    .into_iter()
                    .map(|r| r.unwrap_or_else(shutting_down))
                    .collect(),
            )
        }
        Route::Atomic(atomic) => {
            atomic
                .run(now, |shard, step| async move {
                    txn.on(shard, step).await.unwrap_or(StepResult::Refused)
                })
                .await
        }
        Route::Info(sections) => crate::info_reply(rt, &sections).await,
    }
}
