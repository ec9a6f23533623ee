//! Hashes: `HSET`, `HMSET`, `HGET`, `HMGET`, `HDEL`, `HGETALL`, `HKEYS`, `HVALS`, `HLEN`,
//! `HINCRBY`, `HEXISTS`.

use std::time::Instant;

use indexmap::IndexMap;

use super::command::{arg, arity_error, bytes, integer};
use super::store::{IntoKey, Key};
use super::Store;
use crate::resp::{parse_integer, write_decimal, Reply};

type Hash = IndexMap<Vec<u8>, Vec<u8>>;

/// A hash command. Every one touches one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashCommand {
    /// `HSET key field value [field value ...]`: how many fields are new.
    /// `HMSET` (the same, answered `+OK`) sets `ok`.
    Set {
        /// The key.
        key: Key,
        /// Field-value pairs, set in order.
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        /// `HMSET`: reply `+OK` instead of the count.
        ok: bool,
    },
    /// `HGET key field`.
    Get(Key, Vec<u8>),
    /// `HMGET key field [field ...]`: an array with nil for missing fields.
    MGet(Key, Vec<Vec<u8>>),
    /// `HDEL key field [field ...]`: how many were removed.
    Del(Key, Vec<Vec<u8>>),
    /// `HGETALL key`: a map (a flat array in RESP2).
    GetAll(Key),
    /// `HKEYS key`.
    Keys(Key),
    /// `HVALS key`.
    Vals(Key),
    /// `HLEN key`.
    Len(Key),
    /// `HINCRBY key field increment`.
    IncrBy {
        /// The key.
        key: Key,
        /// The field.
        field: Vec<u8>,
        /// The amount to add.
        by: i64,
    },
    /// `HEXISTS key field`.
    Exists(Key, Vec<u8>),
}

impl HashCommand {
    /// Parses the arguments after the name and the key (arity already checked).
    pub(super) fn parse<A: IntoKey + Into<Vec<u8>>>(
        name: &str,
        key: Key,
        mut rest: impl ExactSizeIterator<Item = A>,
    ) -> Result<HashCommand, Reply> {
        Ok(match name {
            "hset" | "hmset" => {
                if rest.len() % 2 != 0 {
                    return Err(arity_error(name));
                }
                // Straight from the request: no list of the arguments first.
                let mut pairs = Vec::with_capacity(rest.len() / 2);
                while let (Some(f), Some(v)) = (rest.next(), rest.next()) {
                    pairs.push((f.into(), v.into()));
                }
                HashCommand::Set {
                    key,
                    pairs,
                    ok: name == "hmset",
                }
            }
            "hget" => HashCommand::Get(key, arg(rest.next())),
            "hmget" => HashCommand::MGet(key, rest.map(A::into).collect()),
            "hdel" => HashCommand::Del(key, rest.map(A::into).collect()),
            "hgetall" => HashCommand::GetAll(key),
            "hkeys" => HashCommand::Keys(key),
            "hvals" => HashCommand::Vals(key),
            "hlen" => HashCommand::Len(key),
            "hincrby" => {
                let field = arg(rest.next());
                HashCommand::IncrBy {
                    key,
                    field,
                    by: integer(bytes(&rest.next()))?,
                }
            }
            "hexists" => HashCommand::Exists(key, arg(rest.next())),
            _ => unreachable!("only hash commands are sent here"),
        })
    }

    /// The one key it touches.
    pub fn key(&self) -> &[u8] {
        match self {
            HashCommand::Set { key, .. }
            | HashCommand::IncrBy { key, .. }
            | HashCommand::Get(key, _)
            | HashCommand::MGet(key, _)
            | HashCommand::Del(key, _)
            | HashCommand::GetAll(key)
            | HashCommand::Keys(key)
            | HashCommand::Vals(key)
            | HashCommand::Len(key)
            | HashCommand::Exists(key, _) => key,
        }
    }
}

impl Store {
    pub(super) fn run_hash(&mut self, cmd: HashCommand, now: Instant) -> Reply {
        // Commands that only read: a missing key reads as an empty hash.
        let read = |store: &mut Store, key: &[u8], f: &dyn Fn(&Hash) -> Reply| match store
            .collection::<Hash>(key, now)
        {
            Ok(Some(h)) => f(h),
            Ok(None) => f(&Hash::new()),
            Err(wrong_type) => wrong_type,
        };
        match cmd {
            HashCommand::Set { key, pairs, ok } => {
                match self.collection_or_create::<Hash>(&key, now) {
                    Ok(h) => {
                        let mut added = 0;
                        for (field, value) in pairs {
                            added += usize::from(h.insert(field, value).is_none());
                        }
                        if ok {
                            Reply::ok()
                        } else {
                            Reply::Integer(added as i64)
                        }
                    }
                    Err(wrong_type) => wrong_type,
                }
            }
            HashCommand::Get(key, field) => read(self, &key, &|h| {
                h.get(&field).map_or(Reply::Nil, |v| Reply::Bulk(v.clone()))
            }),
            HashCommand::MGet(key, fields) => read(self, &key, &|h| {
                Reply::Array(
                    fields
                        .iter()
                        .map(|f| h.get(f).map_or(Reply::Nil, |v| Reply::Bulk(v.clone())))
                        .collect(),
                )
            }),
            HashCommand::Del(key, fields) => match self.collection::<Hash>(&key, now) {
                Ok(Some(h)) => {
                    let n = fields
                        .iter()
                        .filter(|f| h.swap_remove(*f).is_some())
                        .count();
                    self.drop_if_empty(&key);
                    Reply::Integer(n as i64)
                }
                Ok(None) => Reply::Integer(0),
                Err(wrong_type) => wrong_type,
            },
            HashCommand::GetAll(key) => read(self, &key, &|h| {
                Reply::Map(
                    h.iter()
                        .map(|(f, v)| (Reply::Bulk(f.clone()), Reply::Bulk(v.clone())))
                        .collect(),
                )
            }),
            HashCommand::Keys(key) => read(self, &key, &|h| {
                Reply::Array(h.keys().map(|f| Reply::Bulk(f.clone())).collect())
            }),
            HashCommand::Vals(key) => read(self, &key, &|h| {
                Reply::Array(h.values().map(|v| Reply::Bulk(v.clone())).collect())
            }),
            HashCommand::Len(key) => read(self, &key, &|h| Reply::Integer(h.len() as i64)),
            HashCommand::Exists(key, field) => read(self, &key, &|h| {
                Reply::Integer(i64::from(h.contains_key(&field)))
            }),
            HashCommand::IncrBy { key, field, by } => {
                let current = match self.collection::<Hash>(&key, now) {
                    Err(wrong_type) => return wrong_type,
                    Ok(h) => match h.and_then(|h| h.get(&field)) {
                        None => 0,
                        Some(v) => match parse_integer(v) {
                            Some(n) => n,
                            None => return Reply::error("ERR hash value is not an integer"),
                        },
                    },
                };
                let Some(next) = current.checked_add(by) else {
                    return Reply::error("ERR increment or decrement would overflow");
                };
                let mut text = Vec::new();
                write_decimal(&mut text, next);
                match self.collection_or_create::<Hash>(&key, now) {
                    Ok(h) => drop(h.insert(field, text)),
                    Err(wrong_type) => return wrong_type,
                }
                Reply::Integer(next)
            }
        }
    }
}
