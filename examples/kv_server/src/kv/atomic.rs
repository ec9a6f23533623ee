//! Commands whose keys live on several shards and that read before they write
//! (`MSETNX`, `RENAME`): their steps, run against each shard's store by whoever holds
//! those shards (the server, under its shard locks; a test, on stores it owns).

use std::future::Future;
use std::time::Instant;

use super::store::{Entry, Key};
use super::value::Value;
use super::Store;
use crate::resp::Reply;

/// A key's value and expiry, taken out of one shard's store to be put into another's
/// (`RENAME` across shards). Opaque; `Send`.
#[derive(Debug)]
pub struct MovedEntry(Entry);

/// What one step on one shard gives back.
#[derive(Debug)]
pub enum StepResult {
    /// Whether any of the keys asked about exists.
    Exists(bool),
    /// The entry taken out (`None`: the key did not exist).
    Taken(Option<MovedEntry>),
    /// The step only wrote.
    Done,
    /// The shard did not run the step (it is shutting down): the command fails.
    Refused,
}

/// The reply of a command whose step a shard refused.
fn refused() -> Reply {
    Reply::error("ERR a shard this command needs is shutting down")
}

/// One step on one shard's store.
pub type Step = Box<dyn FnOnce(&mut Store) -> StepResult + Send>;

/// Key-value pairs, as `MSET` and `MSETNX` take them.
pub type Pairs = Vec<(Key, Vec<u8>)>;

/// A multi-shard command that must look before it writes. Made by
/// [`Command::route`](super::Command::route) as [`Route::Atomic`](super::Route::Atomic).
#[derive(Debug)]
pub enum Atomic {
    /// `MSETNX` over several shards: each shard's pairs.
    MSetNx(Vec<(usize, Pairs)>),
    /// `RENAME` / `RENAMENX` from a key on one shard to a key on another.
    Rename {
        /// (shard, key) renamed.
        from: (usize, Key),
        /// (shard, key) it becomes.
        to: (usize, Key),
        /// `RENAMENX`.
        nx: bool,
    },
}

impl Atomic {
    /// The shards it touches, ascending: the order in which a server locks them (one
    /// order for everyone, so that two of these never wait on each other).
    pub fn shards(&self) -> Vec<usize> {
        let mut shards: Vec<usize> = match self {
            Atomic::MSetNx(parts) => parts.iter().map(|(s, _)| *s).collect(),
            Atomic::Rename { from, to, .. } => vec![from.0, to.0],
        };
        shards.sort_unstable();
        shards.dedup();
        shards
    }

    /// Runs the command at time `now`, each step through `on_shard(shard, step)`, and
    /// returns the reply. The caller must hold every shard of [`shards`](Self::shards) for the
    /// whole run: nothing else may touch their keys in between.
    ///
    /// ```
    /// use std::future::ready;
    /// use std::time::Instant;
    /// use kv_server::kv::{Command, Route, Store};
    /// use kv_server::resp::Reply;
    /// let mut stores = [Store::new(), Store::new()];
    /// let shard_of = |k: &[u8]| usize::from(k[0] == b'b');
    /// let args = |s: &str| s.split(' ').map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
    /// let Route::Atomic(msetnx) = Command::parse(args("MSETNX a 1 b 2")).unwrap().route(2, shard_of)
    /// else { unreachable!() };
    /// let reply = futures_util::FutureExt::now_or_never(
    ///     msetnx.run(Instant::now(), |i, step| ready(step(&mut stores[i]))),
    /// );
    /// assert_eq!(reply, Some(Reply::Integer(1)));
    /// assert_eq!(stores[1].get(b"b", Instant::now()), Some(&b"2"[..]));
    /// ```
    pub async fn run<F, Fut>(self, now: Instant, mut on_shard: F) -> Reply
    where
        F: FnMut(usize, Step) -> Fut,
        Fut: Future<Output = StepResult>,
    {
        match self {
            Atomic::MSetNx(parts) => {
                for (shard, pairs) in &parts {
                    let keys: Vec<Key> = pairs.iter().map(|(k, _)| k.clone()).collect();
                    let step: Step = Box::new(move |store| {
                        StepResult::Exists(keys.iter().any(|k| store.contains(k, now)))
                    });
                    match on_shard(*shard, step).await {
                        StepResult::Exists(true) => return Reply::Integer(0),
                        StepResult::Refused => return refused(),
                        _ => {}
                    }
                }
                for (shard, pairs) in parts {
                    let step: Step = Box::new(move |store| {
                        for (k, v) in pairs {
                            store.insert(k, Value::Str(v), None);
                        }
                        StepResult::Done
                    });
                    if let StepResult::Refused = on_shard(shard, step).await {
                        return refused();
                    }
                }
                Reply::Integer(1)
            }
            Atomic::Rename { from, to, nx } => {
                if nx {
                    // In Redis's order, as one store checks: the source first (a
                    // missing one is "no such key" whatever the destination), then
                    // the destination. (Each check may remove a key past its
                    // deadline, which DBSIZE then no longer counts.)
                    for (shard, key, stop_if_exists) in
                        [(from.0, &from.1, false), (to.0, &to.1, true)]
                    {
                        let key = key.clone();
                        let step: Step =
                            Box::new(move |store| StepResult::Exists(store.contains(&key, now)));
                        match on_shard(shard, step).await {
                            StepResult::Refused => return refused(),
                            StepResult::Exists(exists) if exists == stop_if_exists => {
                                return if stop_if_exists {
                                    Reply::Integer(0)
                                } else {
                                    Reply::error("ERR no such key")
                                };
                            }
                            _ => {}
                        }
                    }
                }
                let key = from.1;
                let step: Step =
                    Box::new(move |store| StepResult::Taken(store.take(&key, now).map(MovedEntry)));
                let entry = match on_shard(from.0, step).await {
                    StepResult::Taken(Some(MovedEntry(entry))) => entry,
                    StepResult::Refused => return refused(),
                    _ => return Reply::error("ERR no such key"),
                };
                let key = to.1;
                let step: Step = Box::new(move |store| {
                    store.put(key, entry);
                    StepResult::Done
                });
                if let StepResult::Refused = on_shard(to.0, step).await {
                    // Only when the server stops: the value left its old shard and
                    // the new one refused it. Say so rather than +OK.
                    return refused();
                }
                if nx {
                    Reply::Integer(1)
                } else {
                    Reply::ok()
                }
            }
        }
    }
}
