//! Requests parsed into typed commands, with Redis's checks and error wording.

use std::time::Duration;

use super::hashes::HashCommand;
use super::lists::ListCommand;
use super::session::{ClientCommand, Hello};
use super::sets::SetCommand;
use super::store::{IntoKey, Key};
use super::zsets::ZSetCommand;
use crate::resp::{parse_integer, Args, Reply};

/// One parsed command. Everything a command needs is in it (it is `Send`), so it can
/// run on whichever shard owns its keys.
///
/// Build one with [`Command::parse`]; run it with
/// [`Store::execute`](super::Store::execute); decide where with
/// [`Command::route`](Command::route).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// `PING [message]`: `+PONG`, or the message as a bulk string.
    Ping(Option<Vec<u8>>),
    /// `ECHO message`.
    Echo(Vec<u8>),
    /// `SET key value [EX seconds | PX milliseconds | EXAT | PXAT | KEEPTTL] [NX | XX]
    /// [GET]`.
    Set {
        /// The key.
        key: Key,
        /// The value.
        value: Vec<u8>,
        /// What happens to the key's time to live.
        ttl: SetTtl,
        /// Set only if the key does / does not exist.
        condition: Option<Condition>,
        /// `GET`: reply the old value (nil if none) instead of `+OK`.
        get: bool,
    },
    /// `SETNX key value`: 1 if set, 0 if the key existed.
    SetNx(Key, Vec<u8>),
    /// `GET key`.
    Get(Key),
    /// `GETDEL key`: the value, and the key is gone.
    GetDel(Key),
    /// `GETEX key [EX | PX | EXAT | PXAT | PERSIST]`: the value, with a new expiry.
    GetEx(Key, GetExTtl),
    /// `APPEND key value`: the new length.
    Append(Key, Vec<u8>),
    /// `STRLEN key`.
    StrLen(Key),
    /// `DEL` / `UNLINK key [key ...]`: how many existed.
    Del(Vec<Key>),
    /// `TYPE key`: `string`, `list`, `hash`, `set`, `zset` or `none`.
    Type(Key),
    /// `KEYS pattern`.
    Keys(Vec<u8>),
    /// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
    Scan {
        /// Where the walk is (0: start). On a sharded server [`Command::route`] turns
        /// the client's cursor into one shard's position and back.
        cursor: u64,
        /// `MATCH`.
        pattern: Option<Vec<u8>>,
        /// `COUNT`: how many keys to look at (default 10).
        count: usize,
        /// `TYPE`.
        type_name: Option<Vec<u8>>,
    },
    /// `EXISTS key [key ...]`: how many exist (a key named twice counts twice).
    Exists(Vec<Key>),
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`: add `by` to the integer at `key`.
    IncrBy {
        /// The key.
        key: Key,
        /// The amount to add (negative for `DECR`/`DECRBY`).
        by: i64,
    },
    /// `MGET key [key ...]`.
    MGet(Vec<Key>),
    /// `MSET key value [key value ...]`.
    MSet(Vec<(Key, Vec<u8>)>),
    /// `MSETNX key value [key value ...]`: sets them all only if none exists (1), or
    /// none (0).
    MSetNx(Vec<(Key, Vec<u8>)>),
    /// `RENAME` / `RENAMENX source destination`: moves the value and its expiry.
    Rename {
        /// The key renamed.
        from: Key,
        /// Its new name.
        to: Key,
        /// `RENAMENX`: only if `to` does not exist (reply 1/0 instead of `+OK`).
        nx: bool,
    },
    /// `MULTI`: queue the next commands until `EXEC` (a connection command).
    Multi,
    /// `EXEC`: run the queued commands as one atomic step (a connection command).
    Exec,
    /// `DISCARD`: drop the queued commands (a connection command).
    Discard,
    /// `WATCH key [key ...]`: the next `EXEC` runs only if none of these keys was
    /// written meanwhile (a connection command).
    Watch(Vec<Key>),
    /// `UNWATCH`: forget the watched keys (a connection command).
    Unwatch,
    /// `EXPIRE` / `PEXPIRE` / `EXPIREAT` / `PEXPIREAT key time [NX | XX | GT | LT]`.
    Expire {
        /// The key.
        key: Key,
        /// The new deadline; one not in the future deletes the key.
        at: Deadline,
        /// Conditions on the key's current expiry (`NX`, `XX`, `GT`, `LT`).
        condition: ExpireCondition,
    },
    /// `PERSIST key`: 1 if a deadline was removed.
    Persist(Key),
    /// `TTL key`: seconds left, -1 without expiry, -2 when missing.
    Ttl(Key),
    /// `PTTL key`: milliseconds left, -1 without expiry, -2 when missing.
    Pttl(Key),
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
    /// A list command (`LPUSH`, `LRANGE`, ...).
    Lists(ListCommand),
    /// A hash command (`HSET`, `HGETALL`, ...).
    Hashes(HashCommand),
    /// A set command (`SADD`, `SPOP`, ...).
    Sets(SetCommand),
    /// A sorted-set command (`ZADD`, `ZRANGE`, ...).
    SortedSets(ZSetCommand),
    /// `HELLO [protover [AUTH username password] [SETNAME name]]`: a connection
    /// command (see [`Session`](super::Session)).
    Hello(Hello),
    /// `CLIENT SETNAME | GETNAME | ID | SETINFO`: a connection command.
    Client(ClientCommand),
    /// `SELECT 0` (the only database).
    Select,
    /// `SHUTDOWN [NOSAVE | SAVE | NOW | FORCE]`: the server stops as on SIGTERM.
    Shutdown,
    /// `QUIT`: `+OK`, then the server closes the connection.
    Quit,
}

/// An expiry deadline as a command states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// This many milliseconds after the command runs (`EXPIRE`, `PEXPIRE`, `EX`, `PX`).
    In(i64),
    /// At this Unix time in milliseconds (`EXPIREAT`, `PEXPIREAT`, `EXAT`, `PXAT`).
    AtUnixMillis(i64),
}

/// What `GETEX` does to the key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetExTtl {
    /// No option: leave it.
    Keep,
    /// `PERSIST`: remove it.
    Persist,
    /// `EX`, `PX`, `EXAT`, `PXAT`.
    At(Deadline),
}

/// What `SET` does to the key's time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTtl {
    /// No expiry (the default: `SET` clears an old one).
    Clear,
    /// Expire this long after the command runs (`EX`, `PX`).
    After(Duration),
    /// Expire at this Unix time in milliseconds (`EXAT`, `PXAT`).
    AtUnixMillis(i64),
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
    // Strings.
    ("get", 2, 1, 1, 1),
    ("set", -3, 1, 1, 1),
    ("setnx", 3, 1, 1, 1),
    ("getdel", 2, 1, 1, 1),
    ("getex", -2, 1, 1, 1),
    ("append", 3, 1, 1, 1),
    ("strlen", 2, 1, 1, 1),
    ("incr", 2, 1, 1, 1),
    ("decr", 2, 1, 1, 1),
    ("incrby", 3, 1, 1, 1),
    ("decrby", 3, 1, 1, 1),
    ("mget", -2, 1, -1, 1),
    ("mset", -3, 1, -1, 2),
    ("msetnx", -3, 1, -1, 2),
    // Lists.
    ("lpush", -3, 1, 1, 1),
    ("rpush", -3, 1, 1, 1),
    ("lpop", -2, 1, 1, 1),
    ("rpop", -2, 1, 1, 1),
    ("lrange", 4, 1, 1, 1),
    ("llen", 2, 1, 1, 1),
    ("lindex", 3, 1, 1, 1),
    // Hashes.
    ("hset", -4, 1, 1, 1),
    ("hmset", -4, 1, 1, 1),
    ("hget", 3, 1, 1, 1),
    ("hmget", -3, 1, 1, 1),
    ("hdel", -3, 1, 1, 1),
    ("hgetall", 2, 1, 1, 1),
    ("hkeys", 2, 1, 1, 1),
    ("hvals", 2, 1, 1, 1),
    ("hlen", 2, 1, 1, 1),
    ("hincrby", 4, 1, 1, 1),
    ("hexists", 3, 1, 1, 1),
    // Sets.
    ("sadd", -3, 1, 1, 1),
    ("srem", -3, 1, 1, 1),
    ("spop", -2, 1, 1, 1),
    ("smembers", 2, 1, 1, 1),
    ("sismember", 3, 1, 1, 1),
    ("scard", 2, 1, 1, 1),
    // Sorted sets.
    ("zadd", -4, 1, 1, 1),
    ("zincrby", 4, 1, 1, 1),
    ("zpopmin", -2, 1, 1, 1),
    ("zpopmax", -2, 1, 1, 1),
    ("zrange", -4, 1, 1, 1),
    ("zscore", 3, 1, 1, 1),
    ("zrem", -3, 1, 1, 1),
    ("zcard", 2, 1, 1, 1),
    // Keys.
    ("del", -2, 1, -1, 1),
    ("unlink", -2, 1, -1, 1),
    ("exists", -2, 1, -1, 1),
    ("rename", 3, 1, 2, 1),
    ("renamenx", 3, 1, 2, 1),
    ("type", 2, 1, 1, 1),
    ("keys", 2, 0, 0, 0),
    ("scan", -2, 0, 0, 0),
    ("expire", -3, 1, 1, 1),
    ("pexpire", -3, 1, 1, 1),
    ("expireat", -3, 1, 1, 1),
    ("pexpireat", -3, 1, 1, 1),
    ("persist", 2, 1, 1, 1),
    ("ttl", 2, 1, 1, 1),
    ("pttl", 2, 1, 1, 1),
    // Server and connection.
    ("ping", -1, 0, 0, 0),
    ("echo", 2, 0, 0, 0),
    ("dbsize", 1, 0, 0, 0),
    ("flushall", -1, 0, 0, 0),
    ("flushdb", -1, 0, 0, 0),
    ("info", -1, 0, 0, 0),
    ("command", -1, 0, 0, 0),
    ("config", -2, 0, 0, 0),
    ("hello", -1, 0, 0, 0),
    ("client", -2, 0, 0, 0),
    ("select", 2, 0, 0, 0),
    ("shutdown", -1, 0, 0, 0),
    ("quit", -1, 0, 0, 0),
    ("multi", 1, 0, 0, 0),
    ("exec", 1, 0, 0, 0),
    ("discard", 1, 0, 0, 0),
    ("watch", -2, 1, -1, 1),
    ("unwatch", 1, 0, 0, 0),
];

pub(crate) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub(super) const SYNTAX: &str = "ERR syntax error";

pub(super) fn arity_error(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub(super) fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    Reply::error(format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        truncated(sub, 128)
    ))
}

/// `bytes` as text for an error message: at most `max` bytes, invalid UTF-8 replaced.
pub(super) fn truncated(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// Redis's reply to an unknown command: the name and the first arguments, quoted.
fn unknown_command(name: &[u8], args: impl Iterator<Item = Vec<u8>>) -> Reply {
    let mut shown = String::new();
    for arg in args {
        if shown.len() >= 128 {
            break;
        }
        // Redis's budget is taken before the opening quote is added.
        let budget = 128 - shown.len();
        shown.push('\'');
        shown.push_str(&truncated(&arg, budget));
        shown.push_str("' ");
    }
    Reply::error(format!(
        "ERR unknown command '{}', with args beginning with: {shown}",
        truncated(name, 128)
    ))
}

/// An argument that may be missing (the arity check rules that out where it
/// matters) as bytes: a missing one is empty.
pub(super) fn bytes<A: AsRef<[u8]>>(arg: &Option<A>) -> &[u8] {
    arg.as_ref().map_or(&[], AsRef::as_ref)
}

/// An argument that may be missing as a `Vec` (a missing one is empty).
pub(super) fn arg<A: Into<Vec<u8>>>(arg: Option<A>) -> Vec<u8> {
    arg.map(A::into).unwrap_or_default()
}

pub(super) fn integer(arg: &[u8]) -> Result<i64, Reply> {
    parse_integer(arg).ok_or(Reply::error(NOT_AN_INTEGER))
}

/// A `count` argument (`LPOP k 2`, `SPOP k 2`, `ZPOPMIN k 2`): zero or more.
pub(super) fn positive_count(arg: &[u8]) -> Result<usize, Reply> {
    match parse_integer(arg) {
        Some(n) if n >= 0 => Ok(n as usize),
        _ => Err(Reply::error("ERR value is out of range, must be positive")),
    }
}

/// An expiry time argument in `unit_ms` milliseconds, checked against overflow as
/// Redis checks it (`name` is the command, for the message).
fn expire_time(arg: &[u8], unit_ms: i64, name: &str) -> Result<i64, Reply> {
    integer(arg)?
        .checked_mul(unit_ms)
        .ok_or_else(|| Reply::error(format!("ERR invalid expire time in '{name}' command")))
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
    /// assert_eq!(Command::parse(args("get k")), Ok(Command::Get(b"k"[..].into())));
    /// assert_eq!(
    ///     Command::parse(args("GET")),
    ///     Err(Reply::error("ERR wrong number of arguments for 'get' command"))
    /// );
    /// assert_eq!(
    ///     Command::parse(args("foo a b")),
    ///     Err(Reply::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' "))
    /// );
    /// ```
    pub fn parse(args: Vec<Vec<u8>>) -> Result<Command, Reply> {
        let mut args = args.into_iter();
        let Some(name) = args.next() else {
            return Err(Reply::error("ERR empty command"));
        };
        // The arguments move into the command, never copied.
        Command::parse_parts(&name, args)
    }

    /// Parses a request as the [`Decoder`](crate::resp::Decoder) hands it out: only
    /// the arguments the command keeps (keys, values) are copied out of the buffer.
    ///
    /// ```
    /// use kv_server::kv::Command;
    /// use kv_server::resp::{Decoder, Limits};
    /// let mut decoder = Decoder::new(Limits::default());
    /// decoder.extend(b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n");
    /// let args = decoder.next_request()?.unwrap();
    /// assert_eq!(Command::parse_args(args), Ok(Command::Get(b"k"[..].into())));
    /// # Ok::<(), kv_server::resp::ProtocolError>(())
    /// ```
    pub fn parse_args(args: Args<'_>) -> Result<Command, Reply> {
        let Some(name) = args.get(0) else {
            return Err(Reply::error("ERR empty command"));
        };
        Command::parse_parts(name, args.iter().skip(1))
    }

    /// Parses the command `name` with the arguments after it, `rest`.
    fn parse_parts<A: IntoKey + Into<Vec<u8>>>(
        name: &[u8],
        rest: impl ExactSizeIterator<Item = A>,
    ) -> Result<Command, Reply> {
        let found = COMMANDS
            .iter()
            .find(|c| c.0.as_bytes().eq_ignore_ascii_case(name));
        let Some(&(name, arity, ..)) = found else {
            return Err(unknown_command(name, rest.map(A::into)));
        };
        let argc = rest.len() as i64 + 1;
        let arity = i64::from(arity);
        if (arity > 0 && argc != arity) || argc < -arity {
            return Err(arity_error(name));
        }
        // Keys go inline, taken from the request with no allocation of their own;
        // other arguments become `Vec`s (a value is stored as one).
        let mut rest = Rest(rest);
        Ok(match name {
            "get" => Command::Get(rest.key()),
            "set" => {
                let key = rest.key();
                let value = rest.arg();
                return parse_set(key, value, rest.args());
            }
            "lpush" | "rpush" | "lpop" | "rpop" | "lrange" | "llen" | "lindex" => {
                let key = rest.key();
                Command::Lists(ListCommand::parse(name, key, rest.0)?)
            }
            "hset" | "hmset" | "hget" | "hmget" | "hdel" | "hgetall" | "hkeys" | "hvals"
            | "hlen" | "hincrby" | "hexists" => {
                let key = rest.key();
                Command::Hashes(HashCommand::parse(name, key, rest.0)?)
            }
            "sadd" | "srem" | "spop" | "smembers" | "sismember" | "scard" => {
                let key = rest.key();
                Command::Sets(SetCommand::parse(name, key, rest.0)?)
            }
            "zadd" | "zincrby" | "zpopmin" | "zpopmax" | "zrange" | "zscore" | "zrem" | "zcard" => {
                let key = rest.key();
                Command::SortedSets(ZSetCommand::parse(name, key, rest.0)?)
            }
            "getdel" => Command::GetDel(rest.key()),
            "getex" => {
                let key = rest.key();
                Command::GetEx(key, parse_getex(rest.args())?)
            }
            "setnx" => {
                let key = rest.key();
                Command::SetNx(key, rest.arg())
            }
            "append" => {
                let key = rest.key();
                Command::Append(key, rest.arg())
            }
            "strlen" => Command::StrLen(rest.key()),
            "type" => Command::Type(rest.key()),
            "keys" => Command::Keys(rest.arg()),
            "scan" => parse_scan(rest.args())?,
            "persist" => Command::Persist(rest.key()),
            "hello" => Command::Hello(Hello::parse(rest.args())?),
            "client" => Command::Client(ClientCommand::parse(rest.args())?),
            "shutdown" => {
                let ok = ["nosave", "save", "now", "force"];
                if !rest.all(|a| ok.iter().any(|o| a.eq_ignore_ascii_case(o.as_bytes()))) {
                    return Err(Reply::error(SYNTAX));
                }
                Command::Shutdown
            }
            "ttl" => Command::Ttl(rest.key()),
            "pttl" => Command::Pttl(rest.key()),
            "echo" => Command::Echo(rest.arg()),
            "incr" => Command::IncrBy {
                key: rest.key(),
                by: 1,
            },
            "decr" => Command::IncrBy {
                key: rest.key(),
                by: -1,
            },
            "incrby" => {
                let key = rest.key();
                Command::IncrBy {
                    key,
                    by: integer(&rest.arg())?,
                }
            }
            "decrby" => {
                let key = rest.key();
                let by = integer(&rest.arg())?
                    .checked_neg()
                    .ok_or(Reply::error("ERR decrement would overflow"))?;
                Command::IncrBy { key, by }
            }
            "del" | "unlink" => Command::Del(rest.keys()),
            "exists" => Command::Exists(rest.keys()),
            "mget" => Command::MGet(rest.keys()),
            "mset" | "msetnx" => {
                if argc % 2 == 0 {
                    return Err(arity_error(name));
                }
                let mut pairs = Vec::with_capacity(rest.0.len() / 2);
                while rest.0.len() >= 2 {
                    let key = rest.key();
                    pairs.push((key, rest.arg()));
                }
                if name == "mset" {
                    Command::MSet(pairs)
                } else {
                    Command::MSetNx(pairs)
                }
            }
            "rename" | "renamenx" => {
                let from = rest.key();
                Command::Rename {
                    from,
                    to: rest.key(),
                    nx: name == "renamenx",
                }
            }
            "multi" => Command::Multi,
            "watch" => Command::Watch(rest.keys()),
            "unwatch" => Command::Unwatch,
            "exec" => Command::Exec,
            "discard" => Command::Discard,
            "expire" | "pexpire" | "expireat" | "pexpireat" => {
                let key = rest.key();
                let unit = if name.starts_with('p') { 1 } else { 1000 };
                let ms = expire_time(&rest.arg(), unit, name)?;
                let at = if name.ends_with("at") {
                    Deadline::AtUnixMillis(ms)
                } else {
                    Deadline::In(ms)
                };
                let condition = parse_expire_condition(rest.args())?;
                Command::Expire { key, at, condition }
            }
            "ping" => {
                if argc > 2 {
                    return Err(arity_error(name));
                }
                Command::Ping((rest.0.len() == 1).then(|| rest.arg()))
            }
            "dbsize" => Command::DbSize,
            "flushall" | "flushdb" => {
                if argc > 2
                    || !rest.all(|a| {
                        a.eq_ignore_ascii_case(b"async") || a.eq_ignore_ascii_case(b"sync")
                    })
                {
                    return Err(Reply::error(SYNTAX));
                }
                Command::FlushAll
            }
            "info" => Command::Info(rest.args()),
            "command" => parse_command_query(rest.args())?,
            "config" => {
                let sub = rest.arg();
                if !sub.eq_ignore_ascii_case(b"get") {
                    return Err(unknown_subcommand(&sub, "CONFIG"));
                }
                if argc < 3 {
                    return Err(arity_error("config|get"));
                }
                Command::ConfigGet(rest.args())
            }
            "select" => match integer(&rest.arg())? {
                0 => Command::Select,
                _ => return Err(Reply::error("ERR DB index is out of range")),
            },
            "quit" => Command::Quit,
            _ => unreachable!("every name in COMMANDS is matched above"),
        })
    }

    /// The command's lower-case name, as in error messages (`INCR` and `DECRBY` both
    /// parse to [`Command::IncrBy`], named `incrby`; a data type's commands are named
    /// by their type: `list`, `hash`, `set`, `zset`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping(_) => "ping",
            Command::Echo(_) => "echo",
            Command::Set { .. } => "set",
            Command::SetNx(..) => "setnx",
            Command::Get(_) => "get",
            Command::GetDel(_) => "getdel",
            Command::GetEx(..) => "getex",
            Command::Append(..) => "append",
            Command::StrLen(_) => "strlen",
            Command::Type(_) => "type",
            Command::Keys(_) => "keys",
            Command::Scan { .. } => "scan",
            Command::Persist(_) => "persist",
            Command::Lists(_) => "list",
            Command::Hashes(_) => "hash",
            Command::Sets(_) => "set",
            Command::SortedSets(_) => "zset",
            Command::Hello(_) => "hello",
            Command::Client(_) => "client",
            Command::Shutdown => "shutdown",
            Command::Del(_) => "del",
            Command::Exists(_) => "exists",
            Command::IncrBy { .. } => "incrby",
            Command::MGet(_) => "mget",
            Command::MSet(_) => "mset",
            Command::MSetNx(_) => "msetnx",
            Command::Rename { nx: false, .. } => "rename",
            Command::Rename { nx: true, .. } => "renamenx",
            Command::Multi => "multi",
            Command::Exec => "exec",
            Command::Discard => "discard",
            Command::Watch(_) => "watch",
            Command::Unwatch => "unwatch",
            Command::Expire { .. } => "expire",
            Command::Ttl(_) => "ttl",
            Command::Pttl(_) => "pttl",
            Command::DbSize => "dbsize",
            Command::FlushAll => "flushall",
            Command::Info(_) => "info",
            Command::Command(_) => "command",
            Command::ConfigGet(_) => "config",
            Command::Select => "select",
            Command::Quit => "quit",
        }
    }

    /// The keys the command reads or writes, in the order given (empty for commands
    /// that touch no key or every key).
    ///
    /// ```
    /// use kv_server::kv::Command;
    /// let cmd = Command::MSet(vec![(b"a"[..].into(), b"1".to_vec()), (b"b"[..].into(), b"2".to_vec())]);
    /// assert_eq!(cmd.keys(), [&b"a"[..], &b"b"[..]]);
    /// ```
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            Command::Del(keys) | Command::Exists(keys) | Command::MGet(keys) => {
                keys.iter().map(|k| &k[..]).collect()
            }
            Command::MSet(pairs) | Command::MSetNx(pairs) => {
                pairs.iter().map(|(k, _)| k.as_slice()).collect()
            }
            Command::Rename { from, to, .. } => vec![from, to],
            _ => self.single_key().into_iter().collect(),
        }
    }

    /// The key of a command that touches exactly one: what [`keys`](Self::keys)
    /// would list alone, without building the list (routing asks it of every
    /// command).
    ///
    /// ```
    /// use kv_server::kv::Command;
    /// assert_eq!(Command::Get(b"a"[..].into()).single_key(), Some(&b"a"[..]));
    /// assert_eq!(Command::Del(vec![b"a"[..].into(), b"b"[..].into()]).single_key(), None);
    /// ```
    pub fn single_key(&self) -> Option<&[u8]> {
        match self {
            Command::Set { key, .. } | Command::Get(key) => Some(key),
            Command::SetNx(key, _)
            | Command::GetDel(key)
            | Command::GetEx(key, _)
            | Command::Append(key, _)
            | Command::StrLen(key)
            | Command::Type(key)
            | Command::Persist(key)
            | Command::IncrBy { key, .. }
            | Command::Expire { key, .. }
            | Command::Ttl(key)
            | Command::Pttl(key) => Some(key),
            Command::Lists(c) => Some(c.key()),
            Command::Hashes(c) => Some(c.key()),
            Command::Sets(c) => Some(c.key()),
            Command::SortedSets(c) => Some(c.key()),
            Command::Del(keys) | Command::Exists(keys) | Command::MGet(keys) => match &keys[..] {
                [key] => Some(key),
                _ => None,
            },
            Command::MSet(pairs) | Command::MSetNx(pairs) => match &pairs[..] {
                [(key, _)] => Some(key),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the server closes the connection after replying (`QUIT`).
    pub fn is_quit(&self) -> bool {
        matches!(self, Command::Quit)
    }

    /// Whether it is about the connection, not the keyspace (`HELLO`, `CLIENT`,
    /// `SELECT`, `QUIT`, `SHUTDOWN`, `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`): a
    /// server answers it with the connection's [`Session`](super::Session).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Command::Hello(_)
                | Command::Client(_)
                | Command::Select
                | Command::Quit
                | Command::Shutdown
                | Command::Multi
                | Command::Exec
                | Command::Discard
                | Command::Watch(_)
                | Command::Unwatch
        )
    }

    /// Whether it only reads: every other command counts as a write of its keys for
    /// `WATCH` (a command that wrote nothing, like a refused `SET NX`, included, which
    /// can only make an `EXEC` give up when it need not have).
    pub fn is_read_only(&self) -> bool {
        match self {
            Command::Lists(c) => matches!(
                c,
                ListCommand::Range { .. } | ListCommand::Len(_) | ListCommand::Index { .. }
            ),
            Command::Hashes(c) => !matches!(
                c,
                HashCommand::Set { .. } | HashCommand::Del(..) | HashCommand::IncrBy { .. }
            ),
            Command::Sets(c) => matches!(
                c,
                SetCommand::Members(_) | SetCommand::IsMember(..) | SetCommand::Card(_)
            ),
            Command::SortedSets(c) => matches!(
                c,
                ZSetCommand::Range { .. }
                    | ZSetCommand::RangeByScore { .. }
                    | ZSetCommand::Score(..)
                    | ZSetCommand::Card(_)
            ),
            cmd => {
                matches!(
                    cmd,
                    Command::Ping(_)
                        | Command::Echo(_)
                        | Command::Get(_)
                        | Command::StrLen(_)
                        | Command::Exists(_)
                        | Command::MGet(_)
                        | Command::Type(_)
                        | Command::Keys(_)
                        | Command::Scan { .. }
                        | Command::Ttl(_)
                        | Command::Pttl(_)
                        | Command::DbSize
                        | Command::Info(_)
                        | Command::Command(_)
                        | Command::ConfigGet(_)
                ) || cmd.is_connection()
            }
        }
    }
}

/// A command's arguments after its name, taken one at a time: a key inline, any
/// other argument as a `Vec` (an argument that is missing, which the arity check
/// rules out where it matters, is empty).
struct Rest<I>(I);

impl<A: IntoKey + Into<Vec<u8>>, I: ExactSizeIterator<Item = A>> Rest<I> {
    fn key(&mut self) -> Key {
        self.0.next().map_or_else(Key::new, A::into_key)
    }

    fn arg(&mut self) -> Vec<u8> {
        self.0.next().map(A::into).unwrap_or_default()
    }

    fn keys(&mut self) -> Vec<Key> {
        self.0.by_ref().map(A::into_key).collect()
    }

    fn args(&mut self) -> Vec<Vec<u8>> {
        self.0.by_ref().map(A::into).collect()
    }

    fn all(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        self.0.all(|a| f(a.as_ref()))
    }
}

fn parse_set(key: Key, value: Vec<u8>, opts: Vec<Vec<u8>>) -> Result<Command, Reply> {
    let mut condition = None;
    let mut keep_ttl = false;
    let mut get = false;
    let mut expire: Option<(ExpireUnit, &[u8])> = None;
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
            (b"get", _) => get = true,
            // The same option again replaces the value, as in Redis; a different one
            // is a syntax error.
            (b"ex" | b"px" | b"exat" | b"pxat", Some(v))
                if !keep_ttl
                    && expire.map_or(true, |(u, _)| u == ExpireUnit::from_option(&opt)) =>
            {
                expire = Some((ExpireUnit::from_option(&opt), v));
                i += 1;
            }
            _ => return Err(Reply::error(SYNTAX)),
        }
        i += 1;
    }
    let ttl = match expire {
        None if keep_ttl => SetTtl::Keep,
        None => SetTtl::Clear,
        Some((unit, v)) => match unit.deadline(v, "set")? {
            Deadline::In(ms) => SetTtl::After(Duration::from_millis(ms as u64)),
            Deadline::AtUnixMillis(ms) => SetTtl::AtUnixMillis(ms),
        },
    };
    Ok(Command::Set {
        key,
        value,
        ttl,
        condition,
        get,
    })
}

/// The unit of an `EX` / `PX` / `EXAT` / `PXAT` option.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ExpireUnit {
    Seconds,
    Millis,
    UnixSeconds,
    UnixMillis,
}

impl ExpireUnit {
    /// From the option's lower-case name (one of the four).
    fn from_option(opt: &[u8]) -> ExpireUnit {
        match opt {
            b"ex" => ExpireUnit::Seconds,
            b"px" => ExpireUnit::Millis,
            b"exat" => ExpireUnit::UnixSeconds,
            _ => ExpireUnit::UnixMillis,
        }
    }

    /// The option's value as a deadline; Redis refuses zero or less here.
    fn deadline(self, value: &[u8], name: &str) -> Result<Deadline, Reply> {
        let n = integer(value)?;
        let invalid = || Reply::error(format!("ERR invalid expire time in '{name}' command"));
        if n <= 0 {
            return Err(invalid());
        }
        let ms = match self {
            ExpireUnit::Seconds | ExpireUnit::UnixSeconds => {
                n.checked_mul(1000).ok_or_else(invalid)?
            }
            ExpireUnit::Millis | ExpireUnit::UnixMillis => n,
        };
        Ok(match self {
            ExpireUnit::Seconds | ExpireUnit::Millis => Deadline::In(ms),
            ExpireUnit::UnixSeconds | ExpireUnit::UnixMillis => Deadline::AtUnixMillis(ms),
        })
    }
}

fn parse_getex(opts: Vec<Vec<u8>>) -> Result<GetExTtl, Reply> {
    match opts.as_slice() {
        [] => Ok(GetExTtl::Keep),
        [opt] if opt.eq_ignore_ascii_case(b"persist") => Ok(GetExTtl::Persist),
        [opt, value] => {
            let opt = opt.to_ascii_lowercase();
            if !matches!(opt.as_slice(), b"ex" | b"px" | b"exat" | b"pxat") {
                return Err(Reply::error(SYNTAX));
            }
            Ok(GetExTtl::At(
                ExpireUnit::from_option(&opt).deadline(value, "getex")?,
            ))
        }
        _ => Err(Reply::error(SYNTAX)),
    }
}

fn parse_scan(args: Vec<Vec<u8>>) -> Result<Command, Reply> {
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or(Reply::error("ERR invalid cursor"))?;
    let (mut pattern, mut count, mut type_name) = (None, 10, None);
    let mut opts = args.into_iter().skip(1);
    while let Some(opt) = opts.next() {
        let value = opts.next().ok_or(Reply::error(SYNTAX))?;
        match opt.to_ascii_lowercase().as_slice() {
            b"match" => pattern = Some(value),
            b"count" => match parse_integer(&value) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return Err(Reply::error(SYNTAX)),
                None => return Err(Reply::error(NOT_AN_INTEGER)),
            },
            b"type" => type_name = Some(value),
            _ => return Err(Reply::error(SYNTAX)),
        }
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
        type_name,
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
