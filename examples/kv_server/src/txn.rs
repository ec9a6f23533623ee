//! Atomicity across shards: every transaction takes one place in an order that every
//! shard keeps, and no key is held across a round trip between shards (the order
//! that Dragonfly's VLL scheme gives its transactions, made here by appending to the
//! shards' inboxes in one step).
//!
//! A command on keys of several shards (`MSET`, `MGET`, `DEL`, `MSETNX`, `RENAME`,
//! ...; a pipeline's run of such commands together), a command that reads or writes
//! whole shards (`KEYS`, `DBSIZE`, `FLUSHALL`) and every `MULTI`/`EXEC` block is a
//! transaction. It appends a part to the inbox of each shard it touches, all of them
//! in one step: the inboxes' mutexes are taken in ascending shard order, only for the
//! appends. So two transactions that meet on several shards are in the same order in
//! each of their inboxes, and each shard runs its inbox in order:
//! - A command in one step (`MSET`, `MGET`, `DEL`, `EXISTS`, `KEYS`, ...) runs its
//!   part at its turn, on each shard independently of the others: no locks, and every
//!   shard works through its queue while the others work through theirs.
//! - A transaction of several steps (an `EXEC` block; `MSETNX` and `RENAME`, which
//!   read before they write) appends claims instead: at its turn, a shard grants the
//!   keys it touches there (or the whole shard), and they stay held until the
//!   transaction ends (strict two-phase locking). It runs its steps once every shard
//!   granted its claim.
//! - A part whose turn comes while an earlier transaction holds one of its keys
//!   waits, and so does every later part on those keys: they keep the order.
//!
//! No deadlock: a part only ever waits for parts before it in that one order.
//!
//! A command on one key is not a transaction: it runs at once, unless its key is held
//! or a waiting part needs it, and it runs what its shard's inbox holds first. A
//! transaction's parts are in all of its inboxes before any of them runs, so a command
//! sees every transaction that any client could have seen a part of (after a client
//! read `b` from an `MSET a b`, a `GET a` sees that `MSET`'s `a`, or later).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Poll, Waker};
use std::time::Instant;

use futures_channel::oneshot;
use futures_util::future::join_all;
use kv_server::kv::{Atomic, Command, Route, Session, Split, StepResult, Store};
use kv_server::resp::Reply;
use shardloop::{current_shard, Runtime};

use crate::STORE;

thread_local! {
    /// This shard's locks and waiting parts.
    static LOCKS: ShardLocks = ShardLocks::default();
}

/// Transaction ids, unique over all shards.
static NEXT_TXN: AtomicU64 = AtomicU64::new(1);

/// Every shard's inbox of transaction parts (made at the first transaction).
static INBOXES: OnceLock<Box<[Inbox]>> = OnceLock::new();

/// What a transaction locks, or runs on, on one shard.
#[derive(Debug)]
pub enum Claim {
    /// Every key, for a command that reads or writes the whole keyspace.
    Whole,
    /// These keys (by [`key_hash`], sorted, no repeats). Two keys with the same hash
    /// order each other: a wait that was not needed, never a torn read.
    Keys(Vec<u64>),
}

impl Claim {
    /// What `cmds` (run on one shard) touch.
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

    /// Whether the two touch something in common (both sorted: one merge walk).
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

/// One shard's part of a transaction.
enum Part {
    /// Runs `work` on the shard's store at its turn: a command in one step.
    Run {
        claim: Claim,
        work: Box<dyn FnOnce(&mut Store) + Send>,
    },
    /// Grants `claim` to transaction `txn` at its turn, held until it is released,
    /// and says so on `granted`. Nothing is granted to a transaction already
    /// dropped: no one would release it.
    Grant {
        txn: u64,
        claim: Arc<Claim>,
        dropped: Arc<AtomicBool>,
        granted: oneshot::Sender<()>,
    },
}

impl Part {
    fn claim(&self) -> &Claim {
        match self {
            Part::Run { claim, .. } => claim,
            Part::Grant { claim, .. } => claim,
        }
    }
}

/// A shard's inbox of transaction parts, appended to by any shard.
#[derive(Default)]
struct Inbox {
    queue: Mutex<Queue>,
    /// Whether `queue` holds parts: read, without the lock, before every command
    /// the shard runs on its own.
    filled: AtomicBool,
}

#[derive(Default)]
struct Queue {
    parts: Vec<Part>,
    /// A callback that runs the inbox is queued on the shard's loop.
    run_queued: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The lock is held only to push or take parts (nothing that can panic
        // half-way), so a poisoned queue is still whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes every part, in order. `by_callback`: the queued callback takes them.
    fn take(&self, by_callback: bool) -> Vec<Part> {
        let mut queue = self.lock();
        if by_callback {
            queue.run_queued = false;
        }
        self.filled.store(false, Ordering::Relaxed);
        std::mem::take(&mut queue.parts)
    }
}

/// The inboxes of the server's runtime (one per process: the shards' stores are
/// thread-locals too).
fn inboxes(shards: usize) -> &'static [Inbox] {
    let all = INBOXES.get_or_init(|| (0..shards).map(|_| Inbox::default()).collect());
    assert_eq!(all.len(), shards, "one runtime per process");
    all
}

/// This shard's inbox, once there are inboxes.
fn own_inbox() -> Option<&'static Inbox> {
    INBOXES.get()?.get(current_shard()?)
}

/// Appends `parts` (one per shard, ascending shards) to their shards' inboxes in
/// one step, and has each shard run its inbox: this shard at once, the others in a
/// callback on their loops (one per inbox until it runs).
fn append(rt: &Runtime, parts: Vec<(usize, Part)>) {
    debug_assert!(parts.windows(2).all(|w| w[0].0 < w[1].0));
    let all = inboxes(rt.len());
    let me = current_shard();
    let mut to_call = Vec::new();
    {
        // In ascending order, all held at once: whoever appends to two of the same
        // inboxes does it before or after this, on both.
        let mut queues: Vec<MutexGuard<'_, Queue>> =
            parts.iter().map(|(shard, _)| all[*shard].lock()).collect();
        for ((shard, part), queue) in parts.into_iter().zip(&mut queues) {
            queue.parts.push(part);
            all[shard].filled.store(true, Ordering::Relaxed);
            if me != Some(shard) && !std::mem::replace(&mut queue.run_queued, true) {
                to_call.push(shard);
            }
        }
    }
    for shard in to_call {
        let job = InboxCallback {
            inbox: &all[shard],
            ran: false,
        };
        // Refused (the shard is closing), the callback is dropped, and the drop
        // answers the parts.
        let _ = rt.shard(shard).call_soon_threadsafe(move || job.run());
    }
    run_inbox();
}

/// Runs a shard's inbox from its loop; dropped without running (the loop closed
/// first), it drops the parts, so that each transaction's wait for them ends.
struct InboxCallback {
    inbox: &'static Inbox,
    ran: bool,
}

impl InboxCallback {
    fn run(mut self) {
        self.ran = true;
        for part in self.inbox.take(true) {
            admit(part);
        }
    }
}

impl Drop for InboxCallback {
    fn drop(&mut self) {
        if !self.ran {
            drop(self.inbox.take(true));
        }
    }
}

/// Runs (or queues behind what holds their keys) the parts in this shard's inbox.
fn run_inbox() {
    if let Some(inbox) = own_inbox() {
        if inbox.filled.load(Ordering::Relaxed) {
            for part in inbox.take(false) {
                admit(part);
            }
        }
    }
}

/// A part at its turn: it runs, or waits if what it needs is held, or needed by a
/// part that waits.
fn admit(part: Part) {
    if LOCKS.with(|l| l.conflicts(part.claim())) {
        LOCKS.with(|l| l.wait(part));
    } else {
        run(part);
    }
}

/// Runs a part whose turn it is.
fn run(part: Part) {
    match part {
        Part::Run { claim, work } => {
            STORE.with(|s| work(&mut s.borrow_mut()));
            wake_waiters(&claim);
        }
        Part::Grant {
            txn,
            claim,
            dropped,
            granted,
        } => {
            // A drop after this load sends its release here after the grant.
            if dropped.load(Ordering::Acquire) {
                wake_waiters(&claim);
                return;
            }
            LOCKS.with(|l| match &*claim {
                Claim::Whole => l.whole.set(Some(txn)),
                Claim::Keys(keys) => l.keys.borrow_mut().extend(keys.iter().map(|&k| (k, txn))),
            });
            let _ = granted.send(());
        }
    }
}

#[derive(Default)]
struct ShardLocks {
    /// The transaction holding the whole shard.
    whole: Cell<Option<u64>>,
    /// Held keys (by [`key_hash`]) and the transaction holding each.
    keys: RefCell<HashMap<u64, u64>>,
    /// Parts whose turn came while what they need was held, in order.
    waiting: RefCell<VecDeque<Part>>,
    /// How many waiting parts need each key, and the whole shard.
    waiting_keys: RefCell<HashMap<u64, usize>>,
    waiting_whole: Cell<usize>,
    /// Commands (not parts) waiting for a key to be free, and on what (woken by a
    /// change that touches it).
    waiters: RefCell<Vec<(Waker, Arc<Claim>)>>,
}

impl ShardLocks {
    /// Whether nothing is held and no part waits (one look per command).
    fn is_clear(&self) -> bool {
        self.whole.get().is_none()
            && self.keys.borrow().is_empty()
            && self.waiting_whole.get() == 0
            && self.waiting_keys.borrow().is_empty()
    }

    fn held_overlaps(&self, claim: &Claim) -> bool {
        if self.whole.get().is_some() {
            return true;
        }
        let held = self.keys.borrow();
        match claim {
            Claim::Whole => !held.is_empty(),
            Claim::Keys(keys) => !held.is_empty() && keys.iter().any(|k| held.contains_key(k)),
        }
    }

    /// Whether `claim` must wait: something of it is held, or a waiting part
    /// (which is before it) needs it.
    fn conflicts(&self, claim: &Claim) -> bool {
        if self.held_overlaps(claim) || self.waiting_whole.get() > 0 {
            return true;
        }
        let waiting = self.waiting_keys.borrow();
        match claim {
            Claim::Whole => !waiting.is_empty() || !self.waiting.borrow().is_empty(),
            Claim::Keys(keys) => {
                !waiting.is_empty() && keys.iter().any(|k| waiting.contains_key(k))
            }
        }
    }

    fn wait(&self, part: Part) {
        match part.claim() {
            Claim::Whole => self.waiting_whole.set(self.waiting_whole.get() + 1),
            Claim::Keys(keys) => {
                let mut waiting = self.waiting_keys.borrow_mut();
                for &k in keys {
                    *waiting.entry(k).or_default() += 1;
                }
            }
        }
        self.waiting.borrow_mut().push_back(part);
    }

    /// Takes the first waiting part that can run now: nothing of it held, and no
    /// part before it that still waits needs any of it.
    fn next_runnable(&self) -> Option<Part> {
        let mut waiting = self.waiting.borrow_mut();
        let mut ahead_keys = HashSet::new();
        let mut ahead_whole = false;
        let mut found = None;
        for (i, part) in waiting.iter().enumerate() {
            let claim = part.claim();
            let behind = ahead_whole
                || match claim {
                    Claim::Whole => i > 0,
                    Claim::Keys(keys) => keys.iter().any(|k| ahead_keys.contains(k)),
                };
            if !behind && !self.held_overlaps(claim) {
                found = Some(i);
                break;
            }
            match claim {
                Claim::Whole => ahead_whole = true,
                Claim::Keys(keys) => ahead_keys.extend(keys.iter().copied()),
            }
        }
        let part = waiting.remove(found?)?;
        match part.claim() {
            Claim::Whole => self.waiting_whole.set(self.waiting_whole.get() - 1),
            Claim::Keys(keys) => {
                let mut counts = self.waiting_keys.borrow_mut();
                for k in keys {
                    if let Some(n) = counts.get_mut(k) {
                        *n -= 1;
                        if *n == 0 {
                            counts.remove(k);
                        }
                    }
                }
            }
        }
        Some(part)
    }
}

/// Whether `cmd`, run on this shard by no transaction, must wait: a key of it is
/// held or needed by a waiting part, or it reads the whole keyspace and anything
/// is held or waits. Runs this shard's inbox first.
pub fn blocks(cmd: &Command) -> bool {
    run_inbox();
    LOCKS.with(|l| {
        if l.is_clear() {
            return false;
        }
        let keys = cmd.keys();
        if keys.is_empty() {
            return true;
        }
        l.conflicts(&Claim::Keys(keys.into_iter().map(key_hash).collect()).normalized())
    })
}

/// Whether a transaction holds `key` (or its whole shard) on this shard.
pub fn holds_key(key: &[u8]) -> bool {
    LOCKS.with(|l| {
        let held = l.keys.borrow();
        l.whole.get().is_some() || (!held.is_empty() && held.contains_key(&key_hash(key)))
    })
}

/// Waits until `claim` need not wait on this shard, checked again whenever a
/// change touches it.
async fn until_clear(claim: Claim) {
    let on = Arc::new(claim);
    poll_fn(|cx| {
        run_inbox();
        if !LOCKS.with(|l| l.conflicts(&on)) {
            return Poll::Ready(());
        }
        LOCKS.with(|l| {
            let mut waiters = l.waiters.borrow_mut();
            // A task polled again while it waits is not queued twice.
            match waiters.iter_mut().find(|(w, _)| w.will_wake(cx.waker())) {
                Some(entry) => entry.1 = on.clone(),
                None => waiters.push((cx.waker().clone(), on.clone())),
            }
        });
        Poll::Pending
    })
    .await
}

/// Waits until no transaction holds a key of `cmds` on this shard and no waiting
/// part needs one (for a keyless one: nothing held, nothing waiting).
pub async fn until_free<'c>(cmds: impl IntoIterator<Item = &'c Command>) {
    run_inbox();
    if !LOCKS.with(ShardLocks::is_clear) {
        until_clear(Claim::of(cmds)).await;
    }
}

/// Gives back what `txn` holds on this shard under `claim`, then runs the waiting
/// parts that can run now.
fn release(txn: u64, claim: &Claim) {
    LOCKS.with(|l| match claim {
        Claim::Whole => {
            if l.whole.get() == Some(txn) {
                l.whole.set(None);
            }
        }
        Claim::Keys(keys) => {
            let mut held = l.keys.borrow_mut();
            for k in keys {
                if held.get(k) == Some(&txn) {
                    held.remove(k);
                }
            }
        }
    });
    while let Some(part) = LOCKS.with(ShardLocks::next_runnable) {
        run(part);
    }
    wake_waiters(claim);
}

/// Wakes the commands waiting on something `changed` overlaps. Each checks again
/// and waits again if it must: a wakeup too many costs a poll, one too few a hang.
fn wake_waiters(changed: &Claim) {
    let woken: Vec<Waker> = LOCKS.with(|l| {
        let mut waiters = l.waiters.borrow_mut();
        if waiters.is_empty() {
            return Vec::new();
        }
        let mut woken = Vec::new();
        waiters.retain(|(waker, on)| {
            let overlaps = changed.overlaps(on);
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
    /// What it holds, or asked for (a claim not granted yet is released too), on
    /// which shard.
    held: Vec<(usize, Arc<Claim>)>,
    /// Set when the transaction is dropped: a claim whose turn comes after that is
    /// not granted.
    dropped: Arc<AtomicBool>,
}

impl Txn {
    /// Appends `claims` (ascending shards, no repeats) to their shards' inboxes and
    /// waits until every shard granted its own. A shard shutting down grants
    /// nothing: running there then answers `None`.
    async fn lock(rt: &Arc<Runtime>, claims: Vec<(usize, Claim)>) -> Txn {
        let mut txn = Txn {
            rt: rt.clone(),
            id: NEXT_TXN.fetch_add(1, Ordering::Relaxed),
            held: Vec::with_capacity(claims.len()),
            dropped: Arc::new(AtomicBool::new(false)),
        };
        let mut grants = Vec::with_capacity(claims.len());
        let mut parts = Vec::with_capacity(claims.len());
        for (shard, claim) in claims {
            let claim = Arc::new(claim);
            txn.held.push((shard, claim.clone()));
            let (granted, grant) = oneshot::channel();
            grants.push(grant);
            let (txn, dropped) = (txn.id, txn.dropped.clone());
            parts.push((
                shard,
                Part::Grant {
                    txn,
                    claim,
                    dropped,
                    granted,
                },
            ));
        }
        append(rt, parts);
        join_all(grants).await;
        txn
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
                // A shard that refuses it is closing: nothing waits there any more.
                let _ = self
                    .rt
                    .shard(shard)
                    .call_soon_threadsafe(move || release(id, &claim));
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
    let txn = Txn::lock(rt, per_shard(claims)).await;
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

/// Registers `keys` as watched with their shards (after every transaction before
/// it on them): each key with its stamp now.
pub async fn watch(rt: &Arc<Runtime>, keys: Vec<Vec<u8>>) -> Vec<(Vec<u8>, u64)> {
    let mut stamps = Vec::with_capacity(keys.len());
    for key in keys {
        let shard = crate::shard_of(rt, &key);
        let k = key.clone();
        let stamp = rt
            .submit_to(shard, move || async move {
                until_clear(Claim::Keys(vec![key_hash(&k)])).await;
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

/// One shard's replies to its parts of some splits: (split, part, reply).
type PartReplies = Vec<(usize, usize, Reply)>;

/// Commands split over several shards (`MSET`, `MGET`, `DEL` ...; a pipeline's run
/// of them together) as one transaction in one step: each shard runs every part for
/// it, in request order, at the transaction's turn. Returns each command's reply, in
/// order.
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
    let mut parts = Vec::new();
    let mut answers = Vec::new();
    for (shard, cmds) in by_shard.into_iter().enumerate() {
        if cmds.is_empty() {
            continue;
        }
        let claim = Claim::of(cmds.iter().map(|p| &p.2));
        let (answer, answered) = oneshot::channel::<PartReplies>();
        let work = Box::new(move |s: &mut Store| {
            let now = Instant::now();
            let done = cmds
                .into_iter()
                .map(|(i, j, cmd)| (i, j, s.execute(cmd, now)))
                .collect();
            let _ = answer.send(done);
        });
        parts.push((shard, Part::Run { claim, work }));
        answers.push(answered);
    }
    append(rt, parts);
    for done in join_all(answers).await {
        for (i, j, reply) in done.into_iter().flatten() {
            replies[i][j] = Some(reply);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures_util::FutureExt;

    /// The inboxes are the process's: one test at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn runtime() -> Arc<Runtime> {
        let rt = Runtime::builder().shards(2).pin_to_cores(false).build();
        Arc::new(rt.expect("a runtime of 2 shards"))
    }

    fn key_on(shard: usize, skip: usize) -> Vec<u8> {
        (0..)
            .map(|i| format!("t{i}").into_bytes())
            .filter(|k| shardloop::shard_index_bytes(k, 2) == shard)
            .nth(skip)
            .unwrap()
    }

    fn cmd(words: &[&[u8]]) -> Command {
        Command::parse(words.iter().map(|w| w.to_vec()).collect()).unwrap()
    }

    fn get(key: &[u8]) -> Reply {
        STORE.with(|s| s.borrow_mut().execute(cmd(&[b"GET", key]), Instant::now()))
    }

    /// A part that sets `key` to `value`, then calls `then`.
    fn set_part(key: &[u8], value: &[u8], then: impl FnOnce() + Send + 'static) -> Part {
        let set = cmd(&[b"SET", key, value]);
        Part::Run {
            claim: Claim::Keys(vec![key_hash(key)]),
            work: Box::new(move |s| {
                s.execute(set, Instant::now());
                then();
            }),
        }
    }

    /// The real-time half of atomicity: once a client could have seen one part of a
    /// transaction, a command on another of its shards sees that shard's part, even
    /// when that shard has not got round to its inbox (it was busy in a job here).
    #[test]
    fn a_command_runs_its_shards_inbox_before_it_runs() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let rt = runtime();
        let (a, b) = (key_on(0, 0), key_on(1, 0));
        let (busy, a_written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (job_busy, job_a_written, job_b) = (busy.clone(), a_written.clone(), b.clone());
        let seen = rt.submit_to(1, move || async move {
            job_busy.store(true, Ordering::Release);
            // Shard 1 stays in this job, without yielding to its loop, until shard 0
            // ran its part: the callback that would run shard 1's inbox waits.
            while !job_a_written.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            assert!(!blocks(&cmd(&[b"GET", &job_b])));
            get(&job_b)
        });
        while !busy.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let written = a_written.clone();
        append(
            &rt,
            vec![
                (
                    0,
                    set_part(&a, b"1", move || written.store(true, Ordering::Release)),
                ),
                (1, set_part(&b, b"1", || ())),
            ],
        );
        assert_eq!(seen.wait().unwrap(), Reply::Bulk(b"1".to_vec()));
        rt.shutdown(Duration::from_secs(1)).unwrap();
    }

    /// Parts whose keys a transaction holds wait, in order, and so does a part
    /// behind them on the whole shard (and a part on a free key behind that); a part
    /// on a free key ahead of them runs at once; the release runs them all in order.
    #[test]
    fn parts_wait_in_order_behind_a_held_key() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let rt = runtime();
        let shard_rt = rt.clone();
        let (a, c, d) = (key_on(0, 0), key_on(0, 1), key_on(0, 2));
        rt.submit_to(0, move || async move {
            let rt = shard_rt;
            let txn = Txn::lock(&rt, vec![(0, Claim::Keys(vec![key_hash(&a)]))]).await;
            assert!(holds_key(&a));
            append(&rt, vec![(0, set_part(&a, b"1", || ()))]);
            append(&rt, vec![(0, set_part(&a, b"2", || ()))]);
            append(&rt, vec![(0, set_part(&c, b"free", || ()))]);
            let counted = Arc::new(AtomicUsize::new(usize::MAX));
            let count = counted.clone();
            let dbsize = cmd(&[b"DBSIZE"]);
            append(
                &rt,
                vec![(
                    0,
                    Part::Run {
                        claim: Claim::Whole,
                        work: Box::new(move |s| {
                            if let Reply::Integer(n) = s.execute(dbsize, Instant::now()) {
                                count.store(n as usize, Ordering::Relaxed);
                            }
                        }),
                    },
                )],
            );
            append(&rt, vec![(0, set_part(&d, b"after", || ()))]);
            assert_eq!(get(&c), Reply::Bulk(b"free".to_vec()));
            assert_eq!(get(&a), Reply::Nil);
            assert_eq!(
                get(&d),
                Reply::Nil,
                "a part behind a waiting whole-shard one"
            );
            assert!(blocks(&cmd(&[b"GET", &a])));
            assert!(
                blocks(&cmd(&[b"GET", &d])),
                "a waiting part is on the whole shard"
            );
            assert_eq!(counted.load(Ordering::Relaxed), usize::MAX);
            drop(txn);
            assert_eq!(get(&a), Reply::Bulk(b"2".to_vec()));
            assert_eq!(counted.load(Ordering::Relaxed), 2, "a and c, before d");
            assert_eq!(get(&d), Reply::Bulk(b"after".to_vec()));
            assert!(!blocks(&cmd(&[b"GET", &a])));
        })
        .wait()
        .unwrap();
        rt.shutdown(Duration::from_secs(1)).unwrap();
    }

    /// A transaction dropped while its claim waits (its connection went away) is
    /// never granted it: nothing stays held that no one would release.
    #[test]
    fn a_dropped_transaction_is_not_granted_its_claim() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let rt = runtime();
        let shard_rt = rt.clone();
        let a = key_on(0, 0);
        rt.submit_to(0, move || async move {
            let rt = shard_rt;
            let claim = || vec![(0, Claim::Keys(vec![key_hash(&a)]))];
            let first = Txn::lock(&rt, claim()).await;
            let mut second = Box::pin(Txn::lock(&rt, claim()));
            assert!(
                (&mut second).now_or_never().is_none(),
                "waits for the first"
            );
            drop(second);
            drop(first);
            assert!(!holds_key(&a));
            assert!(!blocks(&cmd(&[b"GET", &a])));
        })
        .wait()
        .unwrap();
        rt.shutdown(Duration::from_secs(1)).unwrap();
    }

    /// A part appended to a shard that has closed is dropped at once, so the
    /// transaction waiting for it gets an answer ("shutting down"), not a hang.
    #[test]
    fn a_part_for_a_closed_shard_is_answered() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let rt = runtime();
        rt.shutdown(Duration::from_secs(1)).unwrap();
        let (answer, mut answered) = oneshot::channel::<()>();
        let part = Part::Run {
            claim: Claim::Whole,
            work: Box::new(move |_| {
                let _ = answer.send(());
            }),
        };
        append(&rt, vec![(1, part)]);
        assert!(
            answered.try_recv().is_err(),
            "the part was dropped, not kept"
        );
    }
}
