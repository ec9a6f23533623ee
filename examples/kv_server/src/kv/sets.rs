//! Sets: `SADD`, `SREM`, `SPOP`, `SMEMBERS`, `SISMEMBER`, `SCARD`.

use std::time::Instant;

use indexmap::IndexSet;

use super::command::{arg, positive_count};
use super::store::{IntoKey, Key};
use super::Store;
use crate::resp::Reply;

type Set = IndexSet<Vec<u8>>;

/// A set command. Every one touches one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetCommand {
    /// `SADD key member [member ...]`: how many are new.
    Add(Key, Vec<Vec<u8>>),
    /// `SREM key member [member ...]`: how many were removed.
    Rem(Key, Vec<Vec<u8>>),
    /// `SPOP key [count]`: random members, removed. With a count the reply is a set.
    Pop(Key, Option<usize>),
    /// `SMEMBERS key`.
    Members(Key),
    /// `SISMEMBER key member`.
    IsMember(Key, Vec<u8>),
    /// `SCARD key`.
    Card(Key),
}

impl SetCommand {
    /// Parses the arguments after the name and the key (arity already checked).
    pub(super) fn parse<A: IntoKey + Into<Vec<u8>>>(
        name: &str,
        key: Key,
        mut rest: impl ExactSizeIterator<Item = A>,
    ) -> Result<SetCommand, Reply> {
        Ok(match name {
            "sadd" => SetCommand::Add(key, rest.map(A::into).collect()),
            "srem" => SetCommand::Rem(key, rest.map(A::into).collect()),
            "spop" => match (rest.next(), rest.len()) {
                (None, _) => SetCommand::Pop(key, None),
                (Some(count), 0) => SetCommand::Pop(key, Some(positive_count(count.as_ref())?)),
                _ => return Err(Reply::error("ERR syntax error")),
            },
            "smembers" => SetCommand::Members(key),
            "sismember" => SetCommand::IsMember(key, arg(rest.next())),
            "scard" => SetCommand::Card(key),
            _ => unreachable!("only set commands are sent here"),
        })
    }

    /// The one key it touches.
    pub fn key(&self) -> &[u8] {
        match self {
            SetCommand::Add(key, _)
            | SetCommand::Rem(key, _)
            | SetCommand::Pop(key, _)
            | SetCommand::Members(key)
            | SetCommand::IsMember(key, _)
            | SetCommand::Card(key) => key,
        }
    }
}

impl Store {
    pub(super) fn run_set(&mut self, cmd: SetCommand, now: Instant) -> Reply {
        match cmd {
            SetCommand::Add(key, members) => match self.collection_or_create::<Set>(&key, now) {
                Ok(set) => {
                    // A member taken by value: a new one is stored as it came.
                    let added = members
                        .into_iter()
                        .fold(0, |n, m| n + usize::from(set.insert(m)));
                    Reply::Integer(added as i64)
                }
                Err(wrong_type) => wrong_type,
            },
            SetCommand::Rem(key, members) => match self.collection::<Set>(&key, now) {
                Ok(Some(set)) => {
                    let n = members.iter().filter(|m| set.swap_remove(*m)).count();
                    self.drop_if_empty(&key);
                    Reply::Integer(n as i64)
                }
                Ok(None) => Reply::Integer(0),
                Err(wrong_type) => wrong_type,
            },
            SetCommand::Pop(key, count) => {
                let mut seed = self.next_random();
                let set = match self.collection::<Set>(&key, now) {
                    Ok(Some(set)) => set,
                    Ok(None) if count.is_some() => return Reply::Set(Vec::new()),
                    Ok(None) => return Reply::Nil,
                    Err(wrong_type) => return wrong_type,
                };
                let mut pop = || {
                    if set.is_empty() {
                        return None;
                    }
                    seed = splitmix(seed);
                    set.swap_remove_index((seed % set.len() as u64) as usize)
                };
                let reply = match count {
                    None => pop().map_or(Reply::Nil, Reply::Bulk),
                    Some(n) => {
                        Reply::Set(std::iter::from_fn(pop).take(n).map(Reply::Bulk).collect())
                    }
                };
                self.drop_if_empty(&key);
                reply
            }
            SetCommand::Members(key) => match self.collection::<Set>(&key, now) {
                Ok(set) => Reply::Set(
                    set.iter()
                        .flat_map(|s| s.iter())
                        .map(|m| Reply::Bulk(m.clone()))
                        .collect(),
                ),
                Err(wrong_type) => wrong_type,
            },
            SetCommand::IsMember(key, member) => match self.collection::<Set>(&key, now) {
                Ok(set) => Reply::Integer(i64::from(set.is_some_and(|s| s.contains(&member)))),
                Err(wrong_type) => wrong_type,
            },
            SetCommand::Card(key) => match self.collection::<Set>(&key, now) {
                Ok(set) => Reply::Integer(set.map_or(0, |s| s.len() as i64)),
                Err(wrong_type) => wrong_type,
            },
        }
    }
}

/// One step of splitmix64: a fast, well-mixed sequence for picking members (not for
/// anything that needs to be unpredictable).
pub(super) fn splitmix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
