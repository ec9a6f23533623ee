//! What a key holds: a string, or one of Redis's collections.

use std::collections::VecDeque;

use indexmap::{IndexMap, IndexSet};

use super::zset::ZSet;

/// Redis's error for a command run on a key of another type.
pub(crate) const WRONGTYPE: &str =
    "WRONGTYPE Operation against a key holding the wrong kind of value";

/// One key's value.
#[derive(Clone, Debug)]
pub(super) enum Value {
    Str(Vec<u8>),
    List(VecDeque<Vec<u8>>),
    /// Indexed for a stable field order (what `HGETALL` lists), whatever the hasher.
    Hash(IndexMap<Vec<u8>, Vec<u8>>),
    /// Indexed, so that `SPOP` can take a random member in constant time.
    Set(IndexSet<Vec<u8>>),
    ZSet(ZSet),
}

impl Value {
    /// The name `TYPE` answers.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    /// An empty collection: Redis deletes a key whose collection becomes empty.
    pub(super) fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }
}

/// A [`Value`] variant, for reaching the collection of a key whose type a command
/// expects (see `Store::collection`).
pub(super) trait Kind: Sized {
    /// An empty value of this kind (for a command that creates the key).
    fn empty() -> Value;
    /// This kind's collection, if `value` is of this kind.
    fn of(value: &mut Value) -> Option<&mut Self>;
}

macro_rules! kind {
    ($ty:ty, $variant:ident) => {
        impl Kind for $ty {
            fn empty() -> Value {
                Value::$variant(Default::default())
            }
            fn of(value: &mut Value) -> Option<&mut Self> {
                match value {
                    Value::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

kind!(Vec<u8>, Str);
kind!(VecDeque<Vec<u8>>, List);
kind!(IndexMap<Vec<u8>, Vec<u8>>, Hash);
kind!(IndexSet<Vec<u8>>, Set);
kind!(ZSet, ZSet);
