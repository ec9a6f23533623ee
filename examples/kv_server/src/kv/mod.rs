//! A Redis-compatible keyspace, sharded: commands, their execution, and their routing;
//! strings, lists, hashes, sets and sorted sets, and each connection's session.
//!
//! **A building block of the `kv_server` example.** It does no I/O and keeps no clock:
//! the server parses requests with [`resp`](crate::resp), turns each into a
//! [`Command`], asks [`Command::route`] where it runs, runs it with
//! [`Store::execute`] on the shard that owns its keys (one [`Store`] per shard), and
//! writes the [`Reply`](crate::resp::Reply) back.
//!
//! The server's loop for one request, in outline:
//!
//! ```
//! use std::time::Instant;
//! use kv_server::kv::{Command, Info, Route, Store};
//! use kv_server::resp::Reply;
//!
//! // Two shards, simulated in one thread; a server sends each part to its shard's
//! // loop (`submit_to`) and awaits the replies.
//! let mut stores = vec![Store::new(), Store::new()];
//! let shard_of = |key: &[u8]| key.len() % 2;
//! let mut handle = |args: Vec<Vec<u8>>| -> Reply {
//!     let now = Instant::now();
//!     let cmd = match Command::parse(args) {
//!         Ok(cmd) => cmd,
//!         Err(reply) => return reply, // wrong arity, unknown command, bad number
//!     };
//!     match cmd.route(stores.len(), shard_of) {
//!         Route::Local(cmd) => stores[0].execute(cmd, now),
//!         Route::Shard(i, cmd) => stores[i].execute(cmd, now),
//!         Route::Split(split) => {
//!             let replies = split.parts.into_iter().map(|(i, c)| stores[i].execute(c, now)).collect();
//!             split.merge.merge(replies)
//!         }
//!         Route::Info(sections) => {
//!             let stats: Vec<_> = stores.iter().map(Store::stats).collect();
//!             Info::new().field("Clients", "connected_clients", 1).shards(&stats).render(&sections)
//!         }
//!         // MSETNX, RENAME across shards: steps on each shard, all of them held (a
//!         // server locks the shards; here nothing else runs anyway).
//!         Route::Atomic(atomic) => futures_util::FutureExt::now_or_never(
//!             atomic.run(now, |i, step| std::future::ready(step(&mut stores[i]))),
//!         )
//!         .unwrap(),
//!     }
//! };
//! let args = |s: &str| s.split(' ').map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
//! assert_eq!(handle(args("MSET a 1 bb 2 ccc 3")), Reply::ok());
//! assert_eq!(handle(args("DEL a bb x")), Reply::Integer(2));
//! assert_eq!(handle(args("DBSIZE")), Reply::Integer(1));
//! assert_eq!(handle(args("PING")), Reply::Simple("PONG".into()));
//! assert_eq!(handle(args("RENAME ccc dd")), Reply::ok());
//! assert_eq!(handle(args("GET dd")), Reply::Bulk(b"3".to_vec()));
//! ```
//!
//! On a server, a command whose parts are on several shards (a [`Split`] over more
//! than one shard, or an [`Atomic`]) is atomic only if the server keeps every other
//! command off what it touches while it runs: the keys of [`Command::keys`], or the
//! whole shard for a keyless one (`KEYS`, `DBSIZE`, `FLUSHALL`, `SCAN`). `kv_server`
//! does, with key locks (see its `txn.rs`).
//!
//! Expired keys vanish when looked at; call [`Store::expire_some`] from a timer on each
//! shard to reclaim the rest.

mod atomic;
mod command;
mod exec;
mod glob;
mod hashes;
mod info;
mod lists;
mod route;
mod session;
mod sets;
mod store;
mod value;
mod zset;
mod zsets;

pub use atomic::{Atomic, MovedEntry, Step, StepResult};
pub use command::{Command, CommandQuery, Condition, Deadline, ExpireCondition, GetExTtl, SetTtl};
pub use glob::glob_match;
pub use hashes::HashCommand;
pub use info::Info;
pub use lists::ListCommand;
pub use route::{Merge, Route, Split};
pub use session::{After, ClientCommand, Hello, Session, MAX_QUEUED, REDIS_VERSION};
pub use sets::SetCommand;
pub use store::{IntoKey, Key, ShardStats, Store};
pub use zsets::{ScoreBound, ZAddFlags, ZSetCommand};
