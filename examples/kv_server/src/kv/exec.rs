//! Running a command against one shard's keyspace: Redis's replies, shape for shape.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::command::{CommandQuery, SetTtl, COMMANDS, NOT_AN_INTEGER};
use super::store::{Entry, IntoKey, Key};
use super::value::{Value, WRONGTYPE};
use super::{Command, Condition, Deadline, GetExTtl, Info, Session, Store};
use crate::resp::{
    parse_integer, write_array_len, write_bulk, write_decimal, write_null, Protocol, Reply,
};

/// A deadline turned into the store's clock: `None` when it is not in the future
/// (the key is then deleted, as Redis does), `Err` when it does not fit.
fn resolve(at: Deadline, now: Instant, name: &str) -> Result<Option<Instant>, Reply> {
    let ms = match at {
        Deadline::In(ms) => ms,
        Deadline::AtUnixMillis(unix_ms) => {
            let now_unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            unix_ms.saturating_sub(now_unix)
        }
    };
    if ms <= 0 {
        return Ok(None);
    }
    now.checked_add(Duration::from_millis(ms as u64))
        .map(Some)
        .ok_or_else(|| Reply::error(format!("ERR invalid expire time in '{name}' command")))
}

/// A string value as a reply; WRONGTYPE for a collection.
fn string_reply(entry: Option<&mut Entry>) -> Reply {
    match entry.map(|e| &e.value) {
        None => Reply::Nil,
        Some(Value::Str(v)) => Reply::Bulk(v.clone()),
        Some(_) => Reply::error(WRONGTYPE),
    }
}

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
        // Watched keys are few and rarely any: only then is a write's key list kept.
        // (DEL and UNLINK count as a write only for the keys they remove, as in Redis:
        // `remove` notes those.)
        let written: Option<Vec<Vec<u8>>> =
            (self.has_watches() && !cmd.is_read_only() && !matches!(cmd, Command::Del(_)))
                .then(|| cmd.keys().into_iter().map(<[u8]>::to_vec).collect());
        let flush = matches!(cmd, Command::FlushAll);
        let reply = self.run(cmd, now);
        for key in written.iter().flatten() {
            self.touch(key);
        }
        if flush {
            self.touch_all();
        }
        reply
    }

    fn run(&mut self, cmd: Command, now: Instant) -> Reply {
        match cmd {
            Command::Ping(None) => Reply::Simple("PONG".into()),
            Command::Ping(Some(message)) | Command::Echo(message) => Reply::Bulk(message),
            Command::Get(key) => string_reply(self.live(&key, now)),
            Command::Set {
                key,
                value,
                ttl,
                condition,
                get,
            } => self.set(key, value, ttl, condition, get, now),
            Command::SetNx(key, value) => {
                let reply = self.set(
                    key,
                    value,
                    SetTtl::Clear,
                    Some(Condition::IfMissing),
                    false,
                    now,
                );
                Reply::Integer(i64::from(reply == Reply::ok()))
            }
            Command::GetDel(key) => {
                let reply = string_reply(self.live(&key, now));
                if matches!(reply, Reply::Bulk(_)) {
                    self.remove(&key);
                }
                reply
            }
            Command::GetEx(key, ttl) => {
                let reply = string_reply(self.live(&key, now));
                if !matches!(reply, Reply::Bulk(_)) {
                    return reply;
                }
                match ttl {
                    GetExTtl::Keep => {}
                    GetExTtl::Persist => self.set_deadline(&key, None),
                    GetExTtl::At(at) => match resolve(at, now, "getex") {
                        Ok(Some(at)) => self.set_deadline(&key, Some(at)),
                        Ok(None) => drop(self.remove(&key)),
                        Err(e) => return e,
                    },
                }
                reply
            }
            Command::Append(key, tail) => match self.collection_or_create::<Vec<u8>>(&key, now) {
                Ok(v) => {
                    v.extend_from_slice(&tail);
                    Reply::Integer(v.len() as i64)
                }
                Err(wrong_type) => wrong_type,
            },
            Command::StrLen(key) => match self.collection::<Vec<u8>>(&key, now) {
                Ok(v) => Reply::Integer(v.map_or(0, |v| v.len() as i64)),
                Err(wrong_type) => wrong_type,
            },
            Command::Type(key) => Reply::Simple(self.type_of(&key, now).into()),
            Command::Keys(pattern) => Reply::Array(
                self.keys(Some(&pattern), now)
                    .into_iter()
                    .map(Reply::Bulk)
                    .collect(),
            ),
            Command::Scan {
                cursor,
                pattern,
                count,
                type_name,
            } => {
                // A position of 0 starts the walk (at the top).
                let position = if cursor == 0 {
                    usize::MAX
                } else {
                    cursor as usize
                };
                let (next, keys) = self.scan(
                    position,
                    count,
                    pattern.as_deref(),
                    type_name.as_deref(),
                    now,
                );
                Reply::Array(vec![
                    Reply::Bulk(next.to_string().into_bytes()),
                    Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
                ])
            }
            Command::Persist(key) => match self.live(&key, now) {
                Some(e) if e.expires_at.is_some() => {
                    self.set_deadline(&key, None);
                    Reply::Integer(1)
                }
                _ => Reply::Integer(0),
            },
            Command::Lists(cmd) => self.run_list(cmd, now),
            Command::Hashes(cmd) => self.run_hash(cmd, now),
            Command::Sets(cmd) => self.run_set(cmd, now),
            Command::SortedSets(cmd) => self.run_zset(cmd, now),
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
            // MGET answers nil for a key of another type, as Redis does.
            Command::MGet(keys) => Reply::Array(
                keys.iter()
                    .map(|k| match self.live(k, now).map(|e| &e.value) {
                        Some(Value::Str(v)) => Reply::Bulk(v.clone()),
                        _ => Reply::Nil,
                    })
                    .collect(),
            ),
            Command::MSet(pairs) => {
                for (key, value) in pairs {
                    self.insert(key, Value::Str(value), None);
                }
                Reply::ok()
            }
            Command::MSetNx(pairs) => {
                if pairs.iter().any(|(k, _)| self.contains(k, now)) {
                    return Reply::Integer(0);
                }
                for (key, value) in pairs {
                    self.insert(key, Value::Str(value), None);
                }
                Reply::Integer(1)
            }
            Command::Rename { from, to, nx } => {
                if !self.contains(&from, now) {
                    return Reply::error("ERR no such key");
                }
                if nx && self.contains(&to, now) {
                    return Reply::Integer(0);
                }
                if from != to {
                    let entry = self.take(&from, now).expect("live: checked above");
                    self.put(to, entry);
                }
                if nx {
                    Reply::Integer(1)
                } else {
                    Reply::ok()
                }
            }
            Command::Expire { key, at, condition } => {
                let Some(entry) = self.live(&key, now) else {
                    return Reply::Integer(0);
                };
                // Compared in milliseconds from now: a deadline in the past may be
                // more than an `Instant` can hold.
                let current = entry
                    .expires_at
                    .map(|at| at.saturating_duration_since(now).as_millis() as i128);
                let new_ms = match at {
                    Deadline::In(ms) => i128::from(ms),
                    Deadline::AtUnixMillis(_) => match resolve(at, now, "expireat") {
                        Ok(Some(t)) => t.duration_since(now).as_millis() as i128,
                        Ok(None) => 0,
                        Err(e) => return e,
                    },
                };
                if !condition.allows(current, new_ms) {
                    return Reply::Integer(0);
                }
                match resolve(at, now, "expire") {
                    Ok(Some(deadline)) => {
                        self.set_deadline(&key, Some(deadline));
                        Reply::Integer(1)
                    }
                    Ok(None) => {
                        self.remove(&key);
                        Reply::Integer(1)
                    }
                    Err(e) => e,
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
            // Connection commands, answered as a fresh connection would be: a server
            // answers them with the connection's own `Session`.
            cmd @ (Command::Hello(_)
            | Command::Client(_)
            | Command::Select
            | Command::Quit
            | Command::Shutdown
            | Command::Multi
            | Command::Exec
            | Command::Discard
            | Command::Watch(_)
            | Command::Unwatch) => Session::new(0).execute(cmd).0,
        }
    }

    /// Runs `cmd` like [`execute`](Store::execute) and appends the reply's bytes, in
    /// `proto`, to `out`. For a command answered on the connection's own shard this skips building
    /// a [`Reply`]: `GET` and `MGET` write values straight from the keyspace, without a
    /// copy in between.
    ///
    /// ```
    /// use std::time::Instant;
    /// use kv_server::kv::{Command, Store};
    /// use kv_server::resp::Protocol;
    /// let mut store = Store::new();
    /// let now = Instant::now();
    /// let mut out = Vec::new();
    /// let resp2 = Protocol::Resp2;
    /// store.execute_into(Command::MSet(vec![(b"k"[..].into(), b"v".to_vec())]), now, resp2, &mut out);
    /// store.execute_into(Command::MGet(vec![b"k"[..].into(), b"x"[..].into()]), now, resp2, &mut out);
    /// assert_eq!(out, b"+OK\r\n*2\r\n$1\r\nv\r\n$-1\r\n");
    /// ```
    pub fn execute_into(&mut self, cmd: Command, now: Instant, proto: Protocol, out: &mut Vec<u8>) {
        match cmd {
            Command::Get(key) => match self.live(&key, now).map(|e| &e.value) {
                Some(Value::Str(v)) => write_bulk(out, v),
                None => write_null(out, proto),
                Some(_) => Reply::error(WRONGTYPE).encode_as(out, proto),
            },
            Command::MGet(keys) => {
                write_array_len(out, keys.len());
                for key in &keys {
                    match self.live(key, now).map(|e| &e.value) {
                        Some(Value::Str(v)) => write_bulk(out, v),
                        _ => write_null(out, proto),
                    }
                }
            }
            other => self.execute(other, now).encode_as(out, proto),
        }
    }

    fn set(
        &mut self,
        key: impl IntoKey,
        value: Vec<u8>,
        ttl: SetTtl,
        condition: Option<Condition>,
        get: bool,
        now: Instant,
    ) -> Reply {
        // Look the key up only when the answer matters: plain SET is one hash lookup.
        let old = match (condition, ttl, get) {
            (None, SetTtl::Clear | SetTtl::After(_) | SetTtl::AtUnixMillis(_), false) => None,
            _ => Some(
                self.live(key.as_ref(), now)
                    .map(|e| (e.expires_at, e.value.clone())),
            ),
        };
        let exists = matches!(old, Some(Some(_)));
        let old_value = match &old {
            Some(Some((_, Value::Str(v)))) if get => Reply::Bulk(v.clone()),
            Some(Some(_)) if get => return Reply::error(WRONGTYPE),
            _ => Reply::Nil,
        };
        let done = if get { old_value.clone() } else { Reply::ok() };
        let refused = if get { old_value } else { Reply::Nil };
        match condition {
            Some(Condition::IfMissing) if exists => return refused,
            Some(Condition::IfExists) if !exists => return refused,
            _ => {}
        }
        let expires_at = match ttl {
            SetTtl::Clear => None,
            SetTtl::Keep => old.flatten().and_then(|(at, _)| at),
            SetTtl::After(d) => match now.checked_add(d) {
                Some(at) => Some(at),
                None => return Reply::error("ERR invalid expire time in 'set' command"),
            },
            SetTtl::AtUnixMillis(ms) => match resolve(Deadline::AtUnixMillis(ms), now, "set") {
                Ok(Some(at)) => Some(at),
                // A deadline already past: the key is set and gone at once, as in Redis.
                Ok(None) => {
                    self.remove(key.as_ref());
                    return done;
                }
                Err(e) => return e,
            },
        };
        self.insert(key, Value::Str(value), expires_at);
        done
    }

    fn incr_by(&mut self, key: Key, by: i64, now: Instant) -> Reply {
        let value = match self.collection::<Vec<u8>>(&key, now) {
            Err(wrong_type) => return wrong_type,
            Ok(None) => {
                let mut value = Vec::new();
                write_decimal(&mut value, by);
                self.insert(key, Value::Str(value), None);
                return Reply::Integer(by);
            }
            Ok(Some(value)) => value,
        };
        let Some(current) = parse_integer(value) else {
            return Reply::error(NOT_AN_INTEGER);
        };
        let Some(next) = current.checked_add(by) else {
            return Reply::error("ERR increment or decrement would overflow");
        };
        // In place: the key keeps its deadline, as in Redis.
        value.clear();
        write_decimal(value, next);
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
        // A map in RESP3 (Redis's shape), with no documentation in it.
        CommandQuery::Docs => Reply::Map(Vec::new()),
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

/// `CONFIG GET`: name-value pairs for the parameters named (`*` for all); a map in
/// RESP3, a flat array in RESP2, as Redis answers.
fn config_get(params: &[Vec<u8>]) -> Reply {
    let mut out = Vec::new();
    for &(name, value) in CONFIG {
        if params
            .iter()
            .any(|p| p.as_slice() == b"*" || p.eq_ignore_ascii_case(name.as_bytes()))
        {
            out.push((
                Reply::Bulk(name.as_bytes().to_vec()),
                Reply::Bulk(value.as_bytes().to_vec()),
            ));
        }
    }
    Reply::Map(out)
}
