//! Lists: `LPUSH`, `RPUSH`, `LPOP`, `RPOP`, `LRANGE`, `LLEN`, `LINDEX`.

use std::collections::VecDeque;
use std::time::Instant;

use super::command::{bytes, integer, positive_count};
use super::store::{IntoKey, Key};
use super::Store;
use crate::resp::Reply;

/// A list command. Every one touches one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListCommand {
    /// `LPUSH` / `RPUSH key element [element ...]`: the list's new length.
    Push {
        /// The key.
        key: Key,
        /// Pushed in this order (so `LPUSH k a b` leaves `b` first).
        elements: Vec<Vec<u8>>,
        /// `LPUSH` (the head) or `RPUSH` (the tail).
        head: bool,
    },
    /// `LPOP` / `RPOP key [count]`.
    Pop {
        /// The key.
        key: Key,
        /// With a count the reply is an array (nil when the key is missing).
        count: Option<usize>,
        /// `LPOP` (the head) or `RPOP` (the tail).
        head: bool,
    },
    /// `LRANGE key start stop` (inclusive, negative from the end).
    Range {
        /// The key.
        key: Key,
        /// First index.
        start: i64,
        /// Last index.
        stop: i64,
    },
    /// `LLEN key`.
    Len(Key),
    /// `LINDEX key index`.
    Index {
        /// The key.
        key: Key,
        /// The index (negative from the end).
        index: i64,
    },
}

impl ListCommand {
    /// Parses the arguments after the name and the key (arity already checked).
    pub(super) fn parse<A: IntoKey + Into<Vec<u8>>>(
        name: &str,
        key: Key,
        mut rest: impl ExactSizeIterator<Item = A>,
    ) -> Result<ListCommand, Reply> {
        Ok(match name {
            "lpush" | "rpush" => ListCommand::Push {
                key,
                elements: rest.map(A::into).collect(),
                head: name == "lpush",
            },
            "lpop" | "rpop" => {
                if rest.len() > 1 {
                    return Err(super::command::arity_error(name));
                }
                let count = rest
                    .next()
                    .map(|c| positive_count(c.as_ref()))
                    .transpose()?;
                ListCommand::Pop {
                    key,
                    count,
                    head: name == "lpop",
                }
            }
            "lrange" => {
                let (start, stop) = (rest.next(), rest.next());
                ListCommand::Range {
                    key,
                    start: integer(bytes(&start))?,
                    stop: integer(bytes(&stop))?,
                }
            }
            "llen" => ListCommand::Len(key),
            "lindex" => ListCommand::Index {
                key,
                index: integer(bytes(&rest.next()))?,
            },
            _ => unreachable!("only list commands are sent here"),
        })
    }

    /// The one key it touches.
    pub fn key(&self) -> &[u8] {
        match self {
            ListCommand::Push { key, .. }
            | ListCommand::Pop { key, .. }
            | ListCommand::Range { key, .. }
            | ListCommand::Len(key)
            | ListCommand::Index { key, .. } => key,
        }
    }
}

/// Redis's inclusive `start..=stop` (negative counts from the end) over `len` items,
/// clamped: `None` when it selects nothing.
pub(super) fn clamp_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop + len
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len).then_some((start as usize, stop as usize))
}

fn bulks<'a>(items: impl Iterator<Item = &'a Vec<u8>>) -> Reply {
    Reply::Array(items.map(|v| Reply::Bulk(v.clone())).collect())
}

impl Store {
    pub(super) fn run_list(&mut self, cmd: ListCommand, now: Instant) -> Reply {
        match cmd {
            ListCommand::Push {
                key,
                elements,
                head,
            } => match self.collection_or_create::<VecDeque<Vec<u8>>>(&key, now) {
                Ok(list) => {
                    for element in elements {
                        if head {
                            list.push_front(element);
                        } else {
                            list.push_back(element);
                        }
                    }
                    Reply::Integer(list.len() as i64)
                }
                Err(wrong_type) => wrong_type,
            },
            ListCommand::Pop { key, count, head } => {
                let list = match self.collection::<VecDeque<Vec<u8>>>(&key, now) {
                    Ok(Some(list)) => list,
                    Ok(None) if count.is_some() => return Reply::NilArray,
                    Ok(None) => return Reply::Nil,
                    Err(wrong_type) => return wrong_type,
                };
                let mut pop = || {
                    if head {
                        list.pop_front()
                    } else {
                        list.pop_back()
                    }
                };
                let reply = match count {
                    None => pop().map_or(Reply::Nil, Reply::Bulk),
                    Some(n) => {
                        Reply::Array(std::iter::from_fn(pop).take(n).map(Reply::Bulk).collect())
                    }
                };
                self.drop_if_empty(&key);
                reply
            }
            ListCommand::Range { key, start, stop } => {
                match self.collection::<VecDeque<Vec<u8>>>(&key, now) {
                    Ok(Some(list)) => match clamp_range(start, stop, list.len()) {
                        Some((a, b)) => bulks(list.range(a..=b)),
                        None => Reply::Array(Vec::new()),
                    },
                    Ok(None) => Reply::Array(Vec::new()),
                    Err(wrong_type) => wrong_type,
                }
            }
            ListCommand::Len(key) => match self.collection::<VecDeque<Vec<u8>>>(&key, now) {
                Ok(list) => Reply::Integer(list.map_or(0, |l| l.len() as i64)),
                Err(wrong_type) => wrong_type,
            },
            ListCommand::Index { key, index } => {
                match self.collection::<VecDeque<Vec<u8>>>(&key, now) {
                    Ok(Some(list)) => {
                        let i = if index < 0 {
                            index + list.len() as i64
                        } else {
                            index
                        };
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| list.get(i))
                            .map_or(Reply::Nil, |v| Reply::Bulk(v.clone()))
                    }
                    Ok(None) => Reply::Nil,
                    Err(wrong_type) => wrong_type,
                }
            }
        }
    }
}
