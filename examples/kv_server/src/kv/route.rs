//! Where a command runs on a sharded server, and how split replies are put back.
//!
//! A command on keys of one shard goes to that shard whole. A command on keys of
//! several shards (`MGET`, `MSET`, `DEL`, `EXISTS`) is split into one command per shard,
//! each keeping its keys in their original order, and the replies are merged back
//! into the reply one shard holding every key would have given. `DBSIZE`, `FLUSHALL`
//! and `KEYS` go to every shard. `SCAN` walks one shard at a time: the client's cursor
//! says which shard and where in it (`position * shards + shard`).

use super::atomic::Pairs;
use super::{Atomic, Command};
use crate::resp::Reply;

/// Where to run a command. Made by [`Command::route`].
#[derive(Debug)]
pub enum Route {
    /// Touches no key: run it on any shard, e.g. the connection's own.
    Local(Command),
    /// Every key it touches is on this shard.
    Shard(usize, Command),
    /// Run each part on its shard, then [`Merge::merge`] the replies.
    Split(Split),
    /// A command on several shards that reads before it writes (`MSETNX`, `RENAME`):
    /// run it with [`Atomic::run`] while holding every shard it names.
    Atomic(Atomic),
    /// `INFO` with these sections: gather [`Store::stats`](super::Store::stats) from
    /// every shard and answer with [`Info`](super::Info)`::new()`, the server's own
    /// fields, [`shards`](super::Info::shards) and [`render`](super::Info::render).
    Info(Vec<Vec<u8>>),
}

/// A command split into per-shard parts.
#[derive(Debug)]
pub struct Split {
    /// `(shard, command)` pairs, at most one per shard. Send each to its shard and
    /// keep the replies in this order.
    pub parts: Vec<(usize, Command)>,
    /// Puts the parts' replies back together.
    pub merge: Merge,
}

/// How the replies of a [`Split`]'s parts become one reply.
#[derive(Debug)]
pub struct Merge(MergeKind);

#[derive(Debug)]
enum MergeKind {
    /// Integers added up (`DEL`, `EXISTS`, `DBSIZE`).
    Sum,
    /// `+OK` from every part (`MSET`, `FLUSHALL`).
    AllOk,
    /// Arrays whose items go back to these positions (`MGET`): one list per part, and
    /// the total length.
    Scatter(Vec<Vec<usize>>, usize),
    /// Arrays joined (`KEYS`).
    Concat,
    /// One shard's `SCAN` reply, its cursor turned into the client's: (shard, shards).
    ScanCursor(usize, usize),
}

impl Merge {
    /// The reply for the whole command, from the parts' replies in
    /// [`Split::parts`] order. An error from any part is the reply (the first one).
    pub fn merge(self, replies: Vec<Reply>) -> Reply {
        if let Some(err) = replies.iter().find(|r| r.is_error()) {
            return err.clone();
        }
        match self.0 {
            MergeKind::Sum => {
                let mut total: i64 = 0;
                for reply in replies {
                    match reply {
                        Reply::Integer(n) => total = total.saturating_add(n),
                        other => return mismatch("an integer", &other),
                    }
                }
                Reply::Integer(total)
            }
            MergeKind::AllOk => match replies.into_iter().find(|r| *r != Reply::ok()) {
                None => Reply::ok(),
                Some(other) => mismatch("+OK", &other),
            },
            MergeKind::Scatter(positions, len) => {
                if replies.len() != positions.len() {
                    return Reply::error("ERR internal error: a shard's reply is missing");
                }
                let mut out = vec![Reply::Nil; len];
                for (reply, places) in replies.into_iter().zip(positions) {
                    match reply {
                        Reply::Array(items) if items.len() == places.len() => {
                            for (item, at) in items.into_iter().zip(places) {
                                out[at] = item;
                            }
                        }
                        other => return mismatch("an array", &other),
                    }
                }
                Reply::Array(out)
            }
            MergeKind::Concat => {
                let mut out = Vec::new();
                for reply in replies {
                    match reply {
                        Reply::Array(items) => out.extend(items),
                        other => return mismatch("an array", &other),
                    }
                }
                Reply::Array(out)
            }
            MergeKind::ScanCursor(shard, shards) => match replies.into_iter().next() {
                Some(Reply::Array(mut parts)) if parts.len() == 2 => {
                    let next = match &parts[0] {
                        Reply::Bulk(b) => std::str::from_utf8(b).ok().and_then(|t| t.parse().ok()),
                        _ => None,
                    };
                    let Some(next) = next else {
                        return mismatch("a cursor", &parts[0]);
                    };
                    parts[0] =
                        Reply::Bulk(global_cursor(next, shard, shards).to_string().into_bytes());
                    Reply::Array(parts)
                }
                Some(other) => mismatch("a SCAN reply", &other),
                None => Reply::error("ERR internal error: a shard's reply is missing"),
            },
        }
    }
}

/// The client's `SCAN` cursor for shard `shard`'s position `next` (0: that shard is
/// done, so the walk moves on to the start of the next shard, or ends).
fn global_cursor(next: u64, shard: usize, shards: usize) -> u64 {
    if next == 0 {
        if shard + 1 < shards {
            (shard + 1) as u64
        } else {
            0
        }
    } else {
        next.saturating_mul(shards as u64) + shard as u64
    }
}

/// A part's reply of the wrong shape: a bug in the server's wiring, answered as an
/// error rather than a panic.
fn mismatch(expected: &str, got: &Reply) -> Reply {
    Reply::error(format!(
        "ERR internal error: a shard replied {got:?} where {expected} was expected"
    ))
}

impl Command {
    /// Decides where the command runs on a server with `shards` shards, `shard_of`
    /// giving each key's shard (e.g. `shardloop::shard_index_bytes`).
    ///
    /// # Panics
    /// If `shard_of` returns `shards` or more.
    ///
    /// ```
    /// use kv_server::kv::{Command, Route, Store};
    /// use kv_server::resp::Reply;
    /// use std::time::Instant;
    ///
    /// let keys = |ks: &[&str]| ks.iter().map(|k| k.as_bytes().into()).collect::<Vec<_>>();
    /// let shard_of = |k: &[u8]| (k[0] - b'a') as usize % 2; // a, c -> 0; b -> 1
    /// let mut stores = [Store::new(), Store::new()];
    /// let mset = Command::MSet(vec![(b"a"[..].into(), b"1".to_vec()), (b"b"[..].into(), b"2".to_vec())]);
    /// let Route::Split(split) = mset.route(2, shard_of) else { unreachable!() };
    /// let replies = split.parts.into_iter().map(|(i, c)| stores[i].execute(c, Instant::now())).collect();
    /// assert_eq!(split.merge.merge(replies), Reply::ok());
    ///
    /// let Route::Split(split) = Command::MGet(keys(&["b", "c", "a"])).route(2, shard_of) else { unreachable!() };
    /// let replies = split.parts.into_iter().map(|(i, c)| stores[i].execute(c, Instant::now())).collect();
    /// assert_eq!(
    ///     split.merge.merge(replies),
    ///     Reply::Array(vec![Reply::Bulk(b"2".to_vec()), Reply::Nil, Reply::Bulk(b"1".to_vec())])
    /// );
    /// ```
    pub fn route(self, shards: usize, shard_of: impl Fn(&[u8]) -> usize) -> Route {
        let shard = |key: &[u8]| {
            let s = shard_of(key);
            assert!(s < shards, "shard_of gave shard {s} of {shards}");
            s
        };
        if let Some(key) = self.single_key() {
            if !matches!(
                self,
                Command::Del(_) | Command::Exists(_) | Command::MGet(_) | Command::MSet(_)
            ) {
                return Route::Shard(shard(key), self);
            }
        }
        match self {
            Command::Del(keys) => split(keys, |k| k, shard, Command::Del, MergeKind::Sum),
            Command::Exists(keys) => split(keys, |k| k, shard, Command::Exists, MergeKind::Sum),
            Command::MSet(pairs) => split(pairs, |p| &p.0, shard, Command::MSet, MergeKind::AllOk),
            Command::MGet(keys) => {
                let len = keys.len();
                split(
                    keys,
                    |k| k,
                    shard,
                    Command::MGet,
                    MergeKind::Scatter(Vec::new(), len),
                )
            }
            Command::DbSize | Command::FlushAll => Route::Split(Split {
                parts: (0..shards).map(|i| (i, self.clone())).collect(),
                merge: Merge(if self == Command::DbSize {
                    MergeKind::Sum
                } else {
                    MergeKind::AllOk
                }),
            }),
            Command::MSetNx(pairs) => {
                let mut groups: Vec<(usize, Pairs)> = Vec::new();
                for pair in pairs {
                    let s = shard(&pair.0);
                    match groups.iter_mut().find(|g| g.0 == s) {
                        Some(group) => group.1.push(pair),
                        None => groups.push((s, vec![pair])),
                    }
                }
                match <[_; 1]>::try_from(groups) {
                    Ok([(s, pairs)]) => Route::Shard(s, Command::MSetNx(pairs)),
                    Err(groups) => Route::Atomic(Atomic::MSetNx(groups)),
                }
            }
            Command::Rename { from, to, nx } => {
                let (a, b) = (shard(&from), shard(&to));
                if a == b {
                    Route::Shard(a, Command::Rename { from, to, nx })
                } else {
                    Route::Atomic(Atomic::Rename {
                        from: (a, from),
                        to: (b, to),
                        nx,
                    })
                }
            }
            Command::Keys(_) => Route::Split(Split {
                parts: (0..shards).map(|i| (i, self.clone())).collect(),
                merge: Merge(MergeKind::Concat),
            }),
            Command::Scan {
                cursor,
                pattern,
                count,
                type_name,
            } => {
                let n = shards as u64;
                let on = (cursor % n) as usize;
                Route::Split(Split {
                    parts: vec![(
                        on,
                        Command::Scan {
                            cursor: cursor / n,
                            pattern,
                            count,
                            type_name,
                        },
                    )],
                    merge: Merge(MergeKind::ScanCursor(on, shards)),
                })
            }
            Command::Info(sections) => Route::Info(sections),
            other => Route::Local(other),
        }
    }
}

/// Groups `items` by the shard of their key, keeping their order within each group.
/// One group: the command goes whole to that shard. Several: a [`Split`], with each
/// item's original position recorded for a `Scatter` merge.
fn split<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &[u8],
    shard: impl Fn(&[u8]) -> usize,
    rebuild: impl Fn(Vec<T>) -> Command,
    kind: MergeKind,
) -> Route {
    let shards: Vec<usize> = items.iter().map(|item| shard(key(item))).collect();
    let first = shards.first().copied().unwrap_or(0);
    if shards.iter().all(|&s| s == first) {
        return Route::Shard(first, rebuild(items));
    }
    // Groups in order of first appearance: (shard, items, their positions).
    let mut groups: Vec<(usize, Vec<T>, Vec<usize>)> = Vec::new();
    for (position, (item, s)) in items.into_iter().zip(shards).enumerate() {
        match groups.iter_mut().find(|g| g.0 == s) {
            Some(group) => {
                group.1.push(item);
                group.2.push(position);
            }
            None => groups.push((s, vec![item], vec![position])),
        }
    }
    let mut positions = Vec::with_capacity(groups.len());
    let mut parts = Vec::with_capacity(groups.len());
    for (s, items, places) in groups {
        parts.push((s, rebuild(items)));
        positions.push(places);
    }
    let kind = match kind {
        MergeKind::Scatter(_, len) => MergeKind::Scatter(positions, len),
        other => other,
    };
    Route::Split(Split {
        parts,
        merge: Merge(kind),
    })
}
