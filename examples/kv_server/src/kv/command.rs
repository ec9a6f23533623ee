//! Requests parsed into typed commands, with Redis's checks and error wording.

use std::time::Duration;

use crate::resp::{parse_integer, Reply};

/// One parsed command. Everything a command needs is in it (it is `Send`), so it can
/// run on whichever shard owns its keys.
///
/// Build one with [`Command::parse`]; run it with
/// [`Store::execute`](super::Store::execute); decide where with
/// [`Command::route`](Command::route).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `PING [message]`: `+PONG`, or the message as a bulk string.
    Ping(Option<Vec<u8>>),
    /// `ECHO message`.
    Echo(Vec<u8>),
    /// `SET key value [EX seconds | PX milliseconds | KEEPTTL] [NX | XX]`.
    Set {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// What happens to the key's time to live.
        ttl: SetTtl,
        /// Set only if the key does / does not exist.
        condition: Option<Condition>,
    },
    /// `GET key`.
    Get(Vec<u8>),
    /// `DEL key [key ...]`: how many existed.
    Del(Vec<Vec<u8>>),
    /// `EXISTS key [key ...]`: how many exist (a key named twice counts twice).
    Exists(Vec<Vec<u8>>),
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`: add `by` to the integer at `key`.
    IncrBy {
        /// The key.
        key: Vec<u8>,
        /// The amount to add (negative for `DECR`/`DECRBY`).
        by: i64,
    },
    /// `MGET key [key ...]`.
    MGet(Vec<Vec<u8>>),
    /// `MSET key value [key value ...]`.
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// `EXPIRE key seconds [NX | XX | GT | LT]`.
    Expire {
        /// The key.
        key: Vec<u8>,
        /// Seconds from now; zero or less deletes the key.
        seconds: i64,
        /// Conditions on the key's current expiry (`NX`, `XX`, `GT`, `LT`).
        condition: ExpireCondition,
    },
    /// `TTL key`: seconds left, -1 without expiry, -2 when missing.
    Ttl(Vec<u8>),
    /// `PTTL key`: milliseconds left, -1 without expiry, -2 when missing.
    Pttl(Vec<u8>),
    /// `DBSIZE`: the number of keys.
    DbSize,
    /// `FLUSHALL [ASYNC | SYNC]`: delete every key.
    FlushAll,
    /// `INFO [section ...]`.
    Info(Vec<Vec<u8>>),
    /// `COMMAND [COUNT | DOCS | INFO | LIST]`, enough for `redis-cli` to start.
    Command(CommandQuery),
    /// `CONFIG GET parameter [parameter ...]`, enough for `redis-benchmark` to start.
    ConfigGet(Vec<Vec<u8>>),
    /// `CLIENT SETNAME` / `CLIENT SETINFO`: accepted and answered `+OK`; the server may
    /// record the name.
    ClientSet {
        /// `NAME` for `SETNAME`, else the `SETINFO` attribute as sent.
        attribute: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// `SELECT 0` (the only database).
    Select,
    /// `QUIT`: `+OK`, then the server closes the connection.
    Quit,
}

/// What `SET` does to the key's time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTtl {
    /// No expiry (the default: `SET` clears an old one).
    Clear,
    /// Expire this long after the command runs (`EX`, `PX`).
    After(Duration),
    /// Keep the existing expiry (`KEEPTTL`).
    Keep,
}

/// `SET`'s existence condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `NX`: only if the key does not exist.
    IfMissing,
    /// `XX`: only if the key exists.
    IfExists,
}

/// `EXPIRE`'s options: conditions on the key's current expiry, all of which must hold
/// (no expiry counts as an infinitely late one, as in Redis).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireCondition {
    /// `NX`: only if the key has no expiry.
    pub nx: bool,
    /// `XX`: only if the key has an expiry.
    pub xx: bool,
    /// `GT`: only if the new expiry is later than the current one.
    pub gt: bool,
    /// `LT`: only if the new expiry is earlier than the current one.
    pub lt: bool,
}

impl ExpireCondition {
    /// Whether a key whose expiry is `current` may get the expiry `new`.
    pub fn allows<T: PartialOrd>(&self, current: Option<T>, new: T) -> bool {
        let later = current.as_ref().is_some_and(|c| new > *c);
        let earlier = current.as_ref().map_or(true, |c| new < *c);
        (!self.nx || current.is_none())
            && (!self.xx || current.is_some())
            && (!self.gt || later)
            && (!self.lt || earlier)
    }
}

/// The `COMMAND` subcommands answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandQuery {
    /// `COMMAND`: a short entry per command (name, arity, flags, key positions).
    All,
    /// `COMMAND LIST`: the command names.
    List,
    /// `COMMAND COUNT`: how many commands there are.
    Count,
    /// `COMMAND DOCS [name ...]`: an empty array (no documentation is served).
    Docs,
    /// `COMMAND INFO name ...`: each name's entry, nil for an unknown one.
    Info(Vec<Vec<u8>>),
}

/// Every command served: name, Redis's arity (negative: at least that many arguments,
/// the name included), and where its keys are (first, last (-1: the end), step), as
/// `COMMAND` reports them.
pub(crate) const COMMANDS: &[(&str, i32, i64, i64, i64)] = &[
    ("get", 2, 1, 1, 1),
    ("set", -3, 1, 1, 1),
    ("incr", 2, 1, 1, 1),
    ("decr", 2, 1, 1, 1),
    ("incrby", 3, 1, 1, 1),
    ("decrby", 3, 1, 1, 1),
    ("mget", -2, 1, -1, 1),
    ("mset", -3, 1, -1, 2),
    ("del", -2, 1, -1, 1),
    ("exists", -2, 1, -1, 1),
    ("expire", -3, 1, 1, 1),
    ("ttl", 2, 1, 1, 1),
    ("pttl", 2, 1, 1, 1),
    ("ping", -1, 0, 0, 0),
    ("echo", 2, 0, 0, 0),
    ("dbsize", 1, 0, 0, 0),
    ("flushall", -1, 0, 0, 0),
    ("info", -1, 0, 0, 0),
    ("command", -1, 0, 0, 0),
    ("config", -2, 0, 0, 0),
    ("client", -2, 0, 0, 0),
    ("select", 2, 0, 0, 0),
    ("quit", -1, 0, 0, 0),
];

pub(crate) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn arity_error(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    Reply::error(format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        truncated(sub, 128)
    ))
}

/// `bytes` as text for an error message: at most `max` bytes, invalid UTF-8 replaced.
fn truncated(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// Redis's reply to an unknown command: the name and the first arguments, quoted.
fn unknown_command(args: &[Vec<u8>]) -> Reply {
    let mut shown = String::new();
    for arg in &args[1..] {
        if shown.len() >= 128 {
            break;
        }
        // Redis's budget is taken before the opening quote is added.
        let budget = 128 - shown.len();
        shown.push('\'');
        shown.push_str(&truncated(arg, budget));
        shown.push_str("' ");
    }
    Reply::error(format!(
        "ERR unknown command '{}', with args beginning with: {shown}",
        truncated(&args[0], 128)
    ))
}

fn integer(arg: &[u8]) -> Result<i64, Reply> {
    parse_integer(arg).ok_or(Reply::error(NOT_AN_INTEGER))
}

impl Command {
    /// Parses a request's arguments (as [`Decoder`](crate::resp::Decoder) gives them).
    ///
    /// `Err` is the error reply to send, in Redis's words; the connection stays open.
    ///
    /// ```
    /// use kv_server::kv::Command;
    /// use kv_server::resp::Reply;
    /// let args = |s: &str| s.split(' ').map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
    /// assert_eq!(Command::parse(args("get k")), Ok(Command::Get(b"k".to_vec())));
    /// assert_eq!(
    ///     Command::parse(args("GET")),
    ///     Err(Reply::error("ERR wrong number of arguments for 'get' command"))
    /// );
    /// assert_eq!(
    ///     Command::parse(args("foo a b")),
    ///     Err(Reply::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' "))
    /// );
    /// ```
    pub fn parse(mut args: Vec<Vec<u8>>) -> Result<Command, Reply> {
        let Some(name) = args.first() else {
            return Err(Reply::error("ERR empty command"));
        };
        let found = COMMANDS
            .iter()
            .find(|c| c.0.as_bytes().eq_ignore_ascii_case(name));
        let Some(&(name, arity, ..)) = found else {
            return Err(unknown_command(&args));
        };
        let argc = args.len() as i64;
        let arity = i64::from(arity);
        if (arity > 0 && argc != arity) || argc < -arity {
            return Err(arity_error(name));
        }
        // Take the arguments out by value: keys and values move, never copy.
        let mut rest = args.drain(1..);
        let mut next = || rest.next().unwrap_or_default();
        Ok(match name {
            "get" => Command::Get(next()),
            "ttl" => Command::Ttl(next()),
            "pttl" => Command::Pttl(next()),
            "echo" => Command::Echo(next()),
            "incr" => Command::IncrBy { key: next(), by: 1 },
            "decr" => Command::IncrBy {
                key: next(),
                by: -1,
            },
            "incrby" => {
                let key = next();
                Command::IncrBy {
                    key,
                    by: integer(&next())?,
                }
            }
            "decrby" => {
                let key = next();
                let by = integer(&next())?
                    .checked_neg()
                    .ok_or(Reply::error("ERR decrement would overflow"))?;
                Command::IncrBy { key, by }
            }
            "del" => Command::Del(rest.collect()),
            "exists" => Command::Exists(rest.collect()),
            "mget" => Command::MGet(rest.collect()),
            "mset" => {
                if argc % 2 == 0 {
                    return Err(arity_error(name));
                }
                let mut pairs = Vec::with_capacity(rest.len() / 2);
                while let (Some(k), Some(v)) = (rest.next(), rest.next()) {
                    pairs.push((k, v));
                }
                Command::MSet(pairs)
            }
            "set" => {
                let key = next();
                let value = next();
                parse_set(key, value, rest.collect())?
            }
            "expire" => {
                let key = next();
                let seconds = integer(&next())?;
                let condition = parse_expire_condition(rest.collect())?;
                if seconds.checked_mul(1000).is_none() {
                    return Err(Reply::error("ERR invalid expire time in 'expire' command"));
                }
                Command::Expire {
                    key,
                    seconds,
                    condition,
                }
            }
            "ping" => {
                if argc > 2 {
                    return Err(arity_error(name));
                }
                Command::Ping(rest.next())
            }
            "dbsize" => Command::DbSize,
            "flushall" => {
                if argc > 2
                    || !rest.all(|a| {
                        a.eq_ignore_ascii_case(b"async") || a.eq_ignore_ascii_case(b"sync")
                    })
                {
                    return Err(Reply::error(SYNTAX));
                }
                Command::FlushAll
            }
            "info" => Command::Info(rest.collect()),
            "command" => parse_command_query(rest.collect())?,
            "config" => {
                let sub = next();
                if !sub.eq_ignore_ascii_case(b"get") {
                    return Err(unknown_subcommand(&sub, "CONFIG"));
                }
                if argc < 3 {
                    return Err(arity_error("config|get"));
                }
                Command::ConfigGet(rest.collect())
            }
            "client" => {
                let sub = next();
                if sub.eq_ignore_ascii_case(b"setname") {
                    if argc != 3 {
                        return Err(arity_error("client|setname"));
                    }
                    Command::ClientSet {
                        attribute: b"NAME".to_vec(),
                        value: next(),
                    }
                } else if sub.eq_ignore_ascii_case(b"setinfo") {
                    if argc != 4 {
                        return Err(arity_error("client|setinfo"));
                    }
                    let attribute = next();
                    Command::ClientSet {
                        attribute,
                        value: next(),
                    }
                } else {
                    return Err(unknown_subcommand(&sub, "CLIENT"));
                }
            }
            "select" => match integer(&next())? {
                0 => Command::Select,
                _ => return Err(Reply::error("ERR DB index is out of range")),
            },
            "quit" => Command::Quit,
            _ => unreachable!("every name in COMMANDS is matched above"),
        })
    }

    /// The command's lower-case name, as in error messages (`INCR` and `DECRBY` both
    /// parse to [`Command::IncrBy`], named `incrby`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping(_) => "ping",
            Command::Echo(_) => "echo",
            Command::Set { .. } => "set",
            Command::Get(_) => "get",
            Command::Del(_) => "del",
            Command::Exists(_) => "exists",
            Command::IncrBy { .. } => "incrby",
            Command::MGet(_) => "mget",
            Command::MSet(_) => "mset",
            Command::Expire { .. } => "expire",
            Command::Ttl(_) => "ttl",
            Command::Pttl(_) => "pttl",
            Command::DbSize => "dbsize",
            Command::FlushAll => "flushall",
            Command::Info(_) => "info",
            Command::Command(_) => "command",
            Command::ConfigGet(_) => "config",
            Command::ClientSet { .. } => "client",
            Command::Select => "select",
            Command::Quit => "quit",
        }
    }

    /// The keys the command reads or writes, in the order given (empty for commands
    /// that touch no key or every key).
    ///
    /// ```
    /// use kv_server::kv::Command;
    /// let cmd = Command::MSet(vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
    /// assert_eq!(cmd.keys(), [&b"a"[..], &b"b"[..]]);
    /// ```
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            Command::Set { key, .. }
            | Command::Get(key)
            | Command::IncrBy { key, .. }
            | Command::Expire { key, .. }
            | Command::Ttl(key)
            | Command::Pttl(key) => vec![key],
            Command::Del(keys) | Command::Exists(keys) | Command::MGet(keys) => {
                keys.iter().map(Vec::as_slice).collect()
            }
            Command::MSet(pairs) => pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the server closes the connection after replying (`QUIT`).
    pub fn is_quit(&self) -> bool {
        matches!(self, Command::Quit)
    }
}

fn parse_set(key: Vec<u8>, value: Vec<u8>, opts: Vec<Vec<u8>>) -> Result<Command, Reply> {
    enum Unit {
        Seconds,
        Millis,
    }
    let mut condition = None;
    let mut keep_ttl = false;
    let mut expire: Option<(Unit, &[u8])> = None;
    let mut i = 0;
    // Options first, values after, as Redis checks them: a syntax error wins over a bad
    // number.
    while i < opts.len() {
        let opt = opts[i].to_ascii_lowercase();
        let next = opts.get(i + 1);
        match (opt.as_slice(), next) {
            (b"nx", _) if condition != Some(Condition::IfExists) => {
                condition = Some(Condition::IfMissing)
            }
            (b"xx", _) if condition != Some(Condition::IfMissing) => {
                condition = Some(Condition::IfExists)
            }
            (b"keepttl", _) if expire.is_none() => keep_ttl = true,
            (b"ex", Some(v)) if !keep_ttl && !matches!(expire, Some((Unit::Millis, _))) => {
                expire = Some((Unit::Seconds, v));
                i += 1;
            }
            (b"px", Some(v)) if !keep_ttl && !matches!(expire, Some((Unit::Seconds, _))) => {
                expire = Some((Unit::Millis, v));
                i += 1;
            }
            _ => return Err(Reply::error(SYNTAX)),
        }
        i += 1;
    }
    let ttl = match expire {
        None if keep_ttl => SetTtl::Keep,
        None => SetTtl::Clear,
        Some((unit, v)) => {
            let n = integer(v)?;
            let invalid = || Reply::error("ERR invalid expire time in 'set' command");
            if n <= 0 {
                return Err(invalid());
            }
            let ms = match unit {
                Unit::Seconds => n.checked_mul(1000).ok_or_else(invalid)?,
                Unit::Millis => n,
            };
            SetTtl::After(Duration::from_millis(ms as u64))
        }
    };
    Ok(Command::Set {
        key,
        value,
        ttl,
        condition,
    })
}

fn parse_expire_condition(opts: Vec<Vec<u8>>) -> Result<ExpireCondition, Reply> {
    let mut c = ExpireCondition::default();
    for opt in &opts {
        match opt.to_ascii_lowercase().as_slice() {
            b"nx" => c.nx = true,
            b"xx" => c.xx = true,
            b"gt" => c.gt = true,
            b"lt" => c.lt = true,
            _ => {
                return Err(Reply::error(format!(
                    "ERR Unsupported option {}",
                    truncated(opt, 128)
                )))
            }
        }
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if c.gt && c.lt {
        return Err(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(c)
}

fn parse_command_query(args: Vec<Vec<u8>>) -> Result<Command, Reply> {
    let Some(sub) = args.first() else {
        return Ok(Command::Command(CommandQuery::All));
    };
    let query = match sub.to_ascii_lowercase().as_slice() {
        b"list" => CommandQuery::List,
        b"docs" => CommandQuery::Docs,
        b"count" if args.len() == 1 => CommandQuery::Count,
        b"count" => return Err(arity_error("command|count")),
        b"info" => CommandQuery::Info(args[1..].to_vec()),
        _ => return Err(unknown_subcommand(sub, "COMMAND")),
    };
    Ok(Command::Command(query))
}
