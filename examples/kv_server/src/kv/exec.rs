//! Running a command against one shard's keyspace: Redis's replies, shape for shape.

use std::time::{Duration, Instant};

use super::command::{CommandQuery, SetTtl, COMMANDS, NOT_AN_INTEGER};
use super::{Command, Condition, Info, Store};
use crate::resp::{parse_integer, write_array_len, write_bulk, write_decimal, write_nil, Reply};

impl Store {
    /// Runs `cmd` on this keyspace at time `now` and returns Redis's reply.
    ///
    /// Commands without keys (`PING`, `ECHO`, `COMMAND`, `CONFIG GET`, ...) are
    /// answered too, so a server can send any command here. On a sharded server the
    /// keyed ones must come here only for keys this shard owns (see
    /// [`Command::route`]); `DBSIZE`, `FLUSHALL` and `INFO` then speak for this shard
    /// alone.
    ///
    /// ```
    /// use std::time::Instant;
    /// use kv_server::kv::{Command, Store};
    /// use kv_server::resp::Reply;
    /// let args = |s: &str| s.split(' ').map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
    /// let mut store = Store::new();
    /// let mut run = |s| store.execute(Command::parse(args(s)).unwrap(), Instant::now());
    /// assert_eq!(run("INCR n"), Reply::Integer(1));
    /// assert_eq!(run("INCRBY n 41"), Reply::Integer(42));
    /// assert_eq!(run("GET n"), Reply::Bulk(b"42".to_vec()));
    /// assert_eq!(run("SET n x NX"), Reply::Nil);
    /// assert_eq!(run("TTL n"), Reply::Integer(-1));
    /// ```
    pub fn execute(&mut self, cmd: Command, now: Instant) -> Reply {
        match cmd {
            Command::Ping(None) => Reply::Simple("PONG".into()),
            Command::Ping(Some(message)) | Command::Echo(message) => Reply::Bulk(message),
            Command::Get(key) => match self.live(&key, now) {
                Some(e) => Reply::Bulk(e.value.clone()),
                None => Reply::Nil,
            },
            Command::Set {
                key,
                value,
                ttl,
                condition,
            } => self.set(key, value, ttl, condition, now),
            Command::Del(keys) => {
                let n = keys
                    .iter()
                    .filter(|k| self.contains(k, now) && self.remove(k))
                    .count();
                Reply::Integer(n as i64)
            }
            Command::Exists(keys) => {
                let n = keys.iter().filter(|k| self.contains(k, now)).count();
                Reply::Integer(n as i64)
            }
            Command::IncrBy { key, by } => self.incr_by(key, by, now),
            Command::MGet(keys) => Reply::Array(
                keys.iter()
                    .map(|k| match self.live(k, now) {
                        Some(e) => Reply::Bulk(e.value.clone()),
                        None => Reply::Nil,
                    })
                    .collect(),
            ),
            Command::MSet(pairs) => {
                for (key, value) in pairs {
                    self.insert(key, value, None);
                }
                Reply::ok()
            }
            Command::Expire {
                key,
                seconds,
                condition,
            } => {
                let Some(entry) = self.live(&key, now) else {
                    return Reply::Integer(0);
                };
                // Compare in milliseconds from now: a negative `seconds` is a deadline in
                // the past, which an `Instant` may not be able to hold.
                let current = entry
                    .expires_at
                    .map(|at| at.saturating_duration_since(now).as_millis() as i128);
                if !condition.allows(current, i128::from(seconds) * 1000) {
                    return Reply::Integer(0);
                }
                if seconds <= 0 {
                    self.remove(&key);
                    return Reply::Integer(1);
                }
                match now.checked_add(Duration::from_secs(seconds as u64)) {
                    Some(at) => {
                        self.set_deadline(&key, Some(at));
                        Reply::Integer(1)
                    }
                    None => Reply::error("ERR invalid expire time in 'expire' command"),
                }
            }
            Command::Ttl(key) => self.ttl(&key, now, false),
            Command::Pttl(key) => self.ttl(&key, now, true),
            Command::DbSize => Reply::Integer(self.len() as i64),
            Command::FlushAll => {
                self.clear();
                Reply::ok()
            }
            Command::Info(sections) => Info::new().shards(&[self.stats()]).render(&sections),
            Command::Command(query) => command_reply(query),
            Command::ConfigGet(params) => config_get(&params),
            Command::ClientSet { .. } | Command::Select | Command::Quit => Reply::ok(),
        }
    }

    /// Runs `cmd` like [`execute`](Store::execute) and appends the reply's bytes to
    /// `out`. For a command answered on the connection's own shard this skips building
    /// a [`Reply`]: `GET` and `MGET` write values straight from the keyspace, without a
    /// copy in between.
    ///
    /// ```
    /// use std::time::Instant;
    /// use kv_server::kv::{Command, Store};
    /// let mut store = Store::new();
    /// let now = Instant::now();
    /// let mut out = Vec::new();
    /// store.execute_into(Command::MSet(vec![(b"k".to_vec(), b"v".to_vec())]), now, &mut out);
    /// store.execute_into(Command::MGet(vec![b"k".to_vec(), b"x".to_vec()]), now, &mut out);
    /// assert_eq!(out, b"+OK\r\n*2\r\n$1\r\nv\r\n$-1\r\n");
    /// ```
    pub fn execute_into(&mut self, cmd: Command, now: Instant, out: &mut Vec<u8>) {
        match cmd {
            Command::Get(key) => match self.live(&key, now) {
                Some(e) => write_bulk(out, &e.value),
                None => write_nil(out),
            },
            Command::MGet(keys) => {
                write_array_len(out, keys.len());
                for key in &keys {
                    match self.live(key, now) {
                        Some(e) => write_bulk(out, &e.value),
                        None => write_nil(out),
                    }
                }
            }
            other => self.execute(other, now).encode(out),
        }
    }

    fn set(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: SetTtl,
        condition: Option<Condition>,
        now: Instant,
    ) -> Reply {
        // Look the key up only when the answer matters: plain SET is one hash lookup.
        let old = match (condition, ttl) {
            (None, SetTtl::Clear | SetTtl::After(_)) => None,
            _ => Some(self.live(&key, now).map(|e| e.expires_at)),
        };
        let exists = matches!(old, Some(Some(_)));
        match condition {
            Some(Condition::IfMissing) if exists => return Reply::Nil,
            Some(Condition::IfExists) if !exists => return Reply::Nil,
            _ => {}
        }
        let expires_at = match ttl {
            SetTtl::Clear => None,
            SetTtl::Keep => old.flatten().flatten(),
            SetTtl::After(d) => match now.checked_add(d) {
                Some(at) => Some(at),
                None => return Reply::error("ERR invalid expire time in 'set' command"),
            },
        };
        self.insert(key, value, expires_at);
        Reply::ok()
    }

    fn incr_by(&mut self, key: Vec<u8>, by: i64, now: Instant) -> Reply {
        let Some(entry) = self.live(&key, now) else {
            let mut value = Vec::new();
            write_decimal(&mut value, by);
            self.insert(key, value, None);
            return Reply::Integer(by);
        };
        let Some(current) = parse_integer(&entry.value) else {
            return Reply::error(NOT_AN_INTEGER);
        };
        let Some(next) = current.checked_add(by) else {
            return Reply::error("ERR increment or decrement would overflow");
        };
        // In place: the key keeps its deadline, as in Redis.
        entry.value.clear();
        write_decimal(&mut entry.value, next);
        Reply::Integer(next)
    }

    fn ttl(&mut self, key: &[u8], now: Instant, millis: bool) -> Reply {
        let Some(entry) = self.live(key, now) else {
            return Reply::Integer(-2);
        };
        let Some(at) = entry.expires_at else {
            return Reply::Integer(-1);
        };
        let ms = at.saturating_duration_since(now).as_millis() as i64;
        Reply::Integer(if millis { ms } else { (ms + 500) / 1000 })
    }
}

/// The classic six-field `COMMAND` entry: name, arity, flags, first key, last key, step.
fn command_entry(&(name, arity, first, last, step): &(&str, i32, i64, i64, i64)) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(name.as_bytes().to_vec()),
        Reply::Integer(i64::from(arity)),
        Reply::Array(Vec::new()),
        Reply::Integer(first),
        Reply::Integer(last),
        Reply::Integer(step),
    ])
}

fn command_reply(query: CommandQuery) -> Reply {
    match query {
        CommandQuery::All => Reply::Array(COMMANDS.iter().map(command_entry).collect()),
        CommandQuery::List => Reply::Array(
            COMMANDS
                .iter()
                .map(|c| Reply::Bulk(c.0.as_bytes().to_vec()))
                .collect(),
        ),
        CommandQuery::Count => Reply::Integer(COMMANDS.len() as i64),
        CommandQuery::Docs => Reply::Array(Vec::new()),
        CommandQuery::Info(names) => Reply::Array(
            names
                .iter()
                .map(|n| {
                    let n = n.to_ascii_lowercase();
                    COMMANDS
                        .iter()
                        .find(|c| c.0.as_bytes() == n)
                        .map_or(Reply::Nil, command_entry)
                })
                .collect(),
        ),
    }
}

/// The configuration reported to clients that ask (`redis-benchmark` reads `save` and
/// `appendonly` at start): no persistence, one database.
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no"), ("databases", "1")];

/// `CONFIG GET`: name-value pairs for the parameters named (`*` for all).
fn config_get(params: &[Vec<u8>]) -> Reply {
    let mut out = Vec::new();
    for &(name, value) in CONFIG {
        if params
            .iter()
            .any(|p| p.as_slice() == b"*" || p.eq_ignore_ascii_case(name.as_bytes()))
        {
            out.push(Reply::Bulk(name.as_bytes().to_vec()));
            out.push(Reply::Bulk(value.as_bytes().to_vec()));
        }
    }
    Reply::Array(out)
}
