//! One shard's keyspace: keys, values, and their expiry.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use indexmap::IndexMap;

use super::glob::glob_match;
use super::value::{Kind, Value, WRONGTYPE};
use crate::resp::Reply;

/// A key's value and its deadline.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) value: Value,
    pub(super) expires_at: Option<Instant>,
}

impl Entry {
    fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A keyspace's size, for `INFO`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Keys held (keys past their deadline count until they are removed, as in Redis).
    pub keys: usize,
    /// Keys with a deadline.
    pub expires: usize,
}

/// One shard's keyspace: byte-string keys to values (strings, lists, hashes, sets,
/// sorted sets), each with an optional deadline. **A building block of the
/// `kv_server` example.**
///
/// A key past its deadline is gone: every command that looks at it removes it first
/// (lazy expiry). Keys nobody looks at again are removed by
/// [`expire_some`](Store::expire_some), which a server calls from a timer. Time is
/// always passed in (`now`), so the store does no I/O and tests need no clock.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kv_server::kv::{Command, Store};
/// use kv_server::resp::Reply;
///
/// let mut store = Store::new();
/// let now = Instant::now();
/// let set = Command::parse(vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec(), b"EX".to_vec(), b"10".to_vec()]);
/// assert_eq!(store.execute(set.unwrap(), now), Reply::ok());
/// assert_eq!(store.get(b"k", now), Some(&b"v"[..]));
/// assert_eq!(store.get(b"k", now + Duration::from_secs(10)), None); // expired
/// assert!(store.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct Store {
    /// Keys in an order that only changes where a key is removed (the last key moves
    /// into its place): what lets `SCAN` walk the keyspace with a plain index.
    /// Hashed with foldhash (seeded per process): SipHash, the standard library's,
    /// cost about a tenth of a `GET`'s instructions.
    map: IndexMap<Key, Entry, foldhash::fast::RandomState>,
    /// Deadlines, earliest first. An item is stale when its key is gone or has another
    /// deadline now; stale items are skipped when popped and dropped by `compact`.
    deadlines: BinaryHeap<Reverse<(Instant, Vec<u8>)>>,
    /// Keys in `map` with a deadline.
    expires: usize,
    /// The state of the generator `SPOP` picks members with.
    random: u64,
    /// Keys some connection `WATCH`es: how many watchers, and the key's stamp, which
    /// changes on every write of the key.
    watched: HashMap<Vec<u8>, (usize, u64)>,
    /// The last stamp given.
    stamps: u64,
}

/// A key as the keyspace holds it: inline up to 24 bytes (see Cargo.toml). `GET`
/// and `SET` carry theirs in this form from the parser on, so that a short key is
/// never a heap allocation of its own.
pub type Key = smallvec::SmallVec<[u8; 24]>;

/// A key in a form the keyspace can take: a [`Key`], a slice of a request (copied),
/// or a `Vec` (copied inline if short, its allocation kept if long).
pub trait IntoKey: AsRef<[u8]> {
    /// The key as the keyspace holds it.
    fn into_key(self) -> Key;
}

impl IntoKey for Key {
    fn into_key(self) -> Key {
        self
    }
}

impl IntoKey for &[u8] {
    fn into_key(self) -> Key {
        Key::from_slice(self)
    }
}

impl IntoKey for Vec<u8> {
    fn into_key(self) -> Key {
        if self.len() <= 24 {
            Key::from_slice(&self)
        } else {
            Key::from_vec(self)
        }
    }
}

/// Rebuild the deadline heap when it is this much bigger than the live deadlines, so
/// overwritten deadlines (e.g. `SET k v EX` in a loop) cannot pile up.
const COMPACT_SLACK: usize = 64;

impl Store {
    /// An empty keyspace.
    pub fn new() -> Store {
        Store::default()
    }

    /// Keys held, including any past their deadline that were not removed yet.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Key counts for `INFO`.
    pub fn stats(&self) -> ShardStats {
        ShardStats {
            keys: self.map.len(),
            expires: self.expires,
        }
    }

    /// The string at `key`, if it exists, holds a string and has not expired by `now`.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<&[u8]> {
        match self.live(key, now) {
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => Some(v.as_slice()),
            _ => None,
        }
    }

    /// Removes up to `budget` keys whose deadline is at or before `now`, earliest
    /// first, and returns how many it removed. Each call does at most `budget` steps,
    /// so a server's timer callback stays short; call again while it returns `budget`
    /// to catch up.
    pub fn expire_some(&mut self, now: Instant, budget: usize) -> usize {
        self.expire_some_but(now, budget, |_| false)
    }

    /// [`expire_some`](Store::expire_some), stopping at the first due key for which
    /// `held(key)` is true (a key a transaction has locked keeps what the transaction
    /// saw until it ends; the next call goes on from there).
    pub fn expire_some_but(
        &mut self,
        now: Instant,
        budget: usize,
        held: impl Fn(&[u8]) -> bool,
    ) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            match self.deadlines.peek() {
                Some(Reverse((at, key))) if *at <= now && !held(key) => {}
                _ => break,
            }
            let Some(Reverse((at, key))) = self.deadlines.pop() else {
                break;
            };
            if self
                .map
                .get(&key[..])
                .is_some_and(|e| e.expires_at == Some(at))
            {
                self.remove(&key);
                removed += 1;
            }
        }
        removed
    }

    /// The earliest deadline recorded, to time the next
    /// [`expire_some`](Store::expire_some). It may belong to a key that was since
    /// deleted or given a new deadline; calling `expire_some` then just does nothing.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Starts watching `key` for one more watcher; returns its stamp now, to compare
    /// with [`stamp`](Self::stamp) at `EXEC`.
    pub fn watch(&mut self, key: &[u8]) -> u64 {
        let entry = self.watched.entry(key.to_vec()).or_insert((0, 0));
        entry.0 += 1;
        entry.1
    }

    /// One watcher of `key` stops watching it.
    pub fn unwatch(&mut self, key: &[u8]) {
        if let Some(entry) = self.watched.get_mut(key) {
            entry.0 -= 1;
            if entry.0 == 0 {
                self.watched.remove(key);
            }
        }
    }

    /// `key`'s stamp: it differs from the one [`watch`](Self::watch) gave as soon as
    /// the key was written (set, changed, deleted, expired, flushed) since.
    pub fn stamp(&self, key: &[u8]) -> u64 {
        self.watched.get(key).map_or(0, |e| e.1)
    }

    pub(super) fn has_watches(&self) -> bool {
        !self.watched.is_empty()
    }

    /// Notes a write of `key`, if it is watched.
    pub(super) fn touch(&mut self, key: &[u8]) {
        if let Some(entry) = self.watched.get_mut(key) {
            self.stamps += 1;
            entry.1 = self.stamps;
        }
    }

    /// Notes a write of every watched key (`FLUSHALL`).
    pub(super) fn touch_all(&mut self) {
        for entry in self.watched.values_mut() {
            self.stamps += 1;
            entry.1 = self.stamps;
        }
    }

    /// A new pseudo-random number (for `SPOP`).
    pub(super) fn next_random(&mut self) -> u64 {
        self.random = super::sets::splitmix(self.random);
        self.random
    }

    /// Deletes every key.
    pub fn clear(&mut self) {
        self.map.clear();
        self.deadlines.clear();
        self.expires = 0;
    }

    /// The entry at `key` if it is live at `now`; an expired one is removed.
    pub(super) fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut Entry> {
        // Without deadlines nothing can be expired: one lookup, the common case.
        if self.expires > 0 && self.map.get(key).is_some_and(|e| e.is_expired(now)) {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    /// Whether `key` is live at `now` (an expired one is removed).
    pub(super) fn contains(&mut self, key: &[u8], now: Instant) -> bool {
        self.live(key, now).is_some()
    }

    /// The collection of kind `T` at `key`: `Ok(None)` when the key does not exist,
    /// `Err` (Redis's WRONGTYPE) when it holds another type.
    pub(super) fn collection<T: Kind>(
        &mut self,
        key: &[u8],
        now: Instant,
    ) -> Result<Option<&mut T>, Reply> {
        match self.live(key, now) {
            None => Ok(None),
            Some(entry) => T::of(&mut entry.value)
                .map(Some)
                .ok_or(Reply::error(WRONGTYPE)),
        }
    }

    /// The collection of kind `T` at `key`, created empty (without a deadline) when
    /// the key does not exist; `Err` (WRONGTYPE) when it holds another type. A caller
    /// that may leave it empty calls [`drop_if_empty`](Self::drop_if_empty) after.
    pub(super) fn collection_or_create<T: Kind>(
        &mut self,
        key: &[u8],
        now: Instant,
    ) -> Result<&mut T, Reply> {
        if self.live(key, now).is_none() {
            self.map.insert(
                Key::from_slice(key),
                Entry {
                    value: T::empty(),
                    expires_at: None,
                },
            );
        }
        let entry = self
            .map
            .get_mut(key)
            .expect("present: found or inserted above");
        T::of(&mut entry.value).ok_or(Reply::error(WRONGTYPE))
    }

    /// Removes `key` if it holds an empty collection, as Redis does after every
    /// command that takes elements out.
    pub(super) fn drop_if_empty(&mut self, key: &[u8]) {
        if self
            .map
            .get(key)
            .is_some_and(|e| e.value.is_empty_collection())
        {
            self.remove(key);
        }
    }

    /// The `TYPE` of `key`: `none` when it does not exist.
    pub(super) fn type_of(&mut self, key: &[u8], now: Instant) -> &'static str {
        self.live(key, now).map_or("none", |e| e.value.type_name())
    }

    /// The live keys matching `pattern` (every key without one), in no particular
    /// order. Keys found expired are removed.
    pub(super) fn keys(&mut self, pattern: Option<&[u8]>, now: Instant) -> Vec<Vec<u8>> {
        let (_, keys) = self.scan(self.map.len(), usize::MAX, pattern, None, now);
        keys
    }

    /// One step of `SCAN` over this shard: `position` is how many keys (by index)
    /// are still to be visited, this visits up to `count` of them from the top down
    /// and returns the next position (0: done) and the live matching keys seen.
    ///
    /// Visiting from the top down is what makes the walk safe while keys come and go:
    /// a new key is appended above the position (not visited, as Redis allows for keys
    /// added during a scan), and removing a key moves only the *last* key into its
    /// place, which was visited already (it may be returned twice, which Redis
    /// allows). So every key that exists for the whole walk is returned.
    pub(super) fn scan(
        &mut self,
        position: usize,
        count: usize,
        pattern: Option<&[u8]>,
        type_name: Option<&[u8]>,
        now: Instant,
    ) -> (usize, Vec<Vec<u8>>) {
        let mut position = position.min(self.map.len());
        let mut found = Vec::new();
        let mut expired = Vec::new();
        let mut visited = 0;
        while position > 0 && visited < count {
            position -= 1;
            visited += 1;
            let (key, entry) = self.map.get_index(position).expect("position < len");
            if entry.is_expired(now) {
                expired.push(key.to_vec());
                continue;
            }
            let type_ok = type_name.map_or(true, |t| {
                t.eq_ignore_ascii_case(entry.value.type_name().as_bytes())
            });
            if type_ok && pattern.map_or(true, |p| glob_match(p, key)) {
                found.push(key.to_vec());
            }
        }
        // Removing moves keys from the end, which this walk has passed already.
        for key in expired {
            self.remove(&key);
        }
        (position.min(self.map.len()), found)
    }

    /// Takes `key`'s entry out (its value and deadline), if it is live.
    pub(super) fn take(&mut self, key: &[u8], now: Instant) -> Option<Entry> {
        self.live(key, now)?;
        self.touch(key);
        let entry = self.map.swap_remove(key)?;
        if entry.expires_at.is_some() {
            self.expires -= 1;
        }
        Some(entry)
    }

    /// Puts an entry taken with [`take`](Self::take) at `key`, replacing what was there.
    pub(super) fn put(&mut self, key: impl IntoKey, entry: Entry) {
        self.insert(key, entry.value, entry.expires_at);
    }

    /// Sets `key` to `value` with deadline `expires_at`, replacing what was there.
    pub(super) fn insert(&mut self, key: impl IntoKey, value: Value, expires_at: Option<Instant>) {
        // A write, for WATCH (cross-shard RENAME and MSETNX write through here).
        self.touch(key.as_ref());
        if let Some(at) = expires_at {
            self.deadlines.push(Reverse((at, key.as_ref().to_vec())));
            self.expires += 1;
        }
        let old = self.map.insert(key.into_key(), Entry { value, expires_at });
        if old.is_some_and(|o| o.expires_at.is_some()) {
            self.expires -= 1;
        }
        self.compact_if_needed();
    }

    /// Removes `key` if present (live or not); whether it was there.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.swap_remove(key) {
            Some(old) => {
                // Deleted or expired: a write, for WATCH.
                if self.has_watches() {
                    self.touch(key);
                }
                if old.expires_at.is_some() {
                    self.expires -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// Gives the existing `key` the deadline `at` (`None`: no deadline).
    pub(super) fn set_deadline(&mut self, key: &[u8], at: Option<Instant>) {
        let Some(entry) = self.map.get_mut(key) else {
            return;
        };
        match (entry.expires_at.is_some(), at.is_some()) {
            (false, true) => self.expires += 1,
            (true, false) => self.expires -= 1,
            _ => {}
        }
        entry.expires_at = at;
        if let Some(at) = at {
            self.deadlines.push(Reverse((at, key.to_vec())));
            self.compact_if_needed();
        }
    }

    fn compact_if_needed(&mut self) {
        if self.deadlines.len() > 2 * self.expires + COMPACT_SLACK {
            self.deadlines = self
                .map
                .iter()
                .filter_map(|(k, e)| e.expires_at.map(|at| Reverse((at, k.to_vec()))))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lazy_expiry_removes_on_access() {
        let mut s = Store::new();
        let t0 = Instant::now();
        s.insert(
            b"a".to_vec(),
            Value::Str(b"1".to_vec()),
            Some(t0 + Duration::from_secs(1)),
        );
        s.insert(b"b".to_vec(), Value::Str(b"2".to_vec()), None);
        assert_eq!(
            s.stats(),
            ShardStats {
                keys: 2,
                expires: 1
            }
        );
        assert_eq!(s.get(b"a", t0), Some(&b"1"[..]));
        assert_eq!(s.get(b"a", t0 + Duration::from_secs(1)), None);
        assert_eq!(
            s.stats(),
            ShardStats {
                keys: 1,
                expires: 0
            }
        );
    }

    #[test]
    fn active_expiry_respects_budget_and_order() {
        let mut s = Store::new();
        let t0 = Instant::now();
        for i in 0..10u64 {
            let key = format!("k{i}").into_bytes();
            s.insert(
                key,
                Value::Str(b"v".to_vec()),
                Some(t0 + Duration::from_millis(i)),
            );
        }
        s.insert(b"forever".to_vec(), Value::Str(b"v".to_vec()), None);
        assert_eq!(s.next_deadline(), Some(t0));
        assert_eq!(s.expire_some(t0 + Duration::from_millis(4), 3), 3);
        assert_eq!(s.expire_some(t0 + Duration::from_millis(4), 100), 2);
        assert_eq!(s.len(), 6);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(s.expire_some(t0 + Duration::from_secs(60), 100), 5);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn active_expiry_stops_at_a_held_key() {
        let mut s = Store::new();
        let t0 = Instant::now();
        for (i, key) in ["a", "held", "b"].into_iter().enumerate() {
            let at = t0 + Duration::from_millis(i as u64);
            s.insert(key.as_bytes().to_vec(), Value::Str(b"v".to_vec()), Some(at));
        }
        let later = t0 + Duration::from_secs(1);
        assert_eq!(s.expire_some_but(later, 100, |k| k == b"held"), 1);
        assert_eq!(s.len(), 2, "the held key and the one due after it stay");
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(s.expire_some_but(later, 100, |_| false), 2);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn overwritten_deadlines_are_stale_not_fatal() {
        let mut s = Store::new();
        let t0 = Instant::now();
        s.insert(
            b"k".to_vec(),
            Value::Str(b"v".to_vec()),
            Some(t0 + Duration::from_secs(1)),
        );
        // A new deadline: the old heap item no longer matches and must not remove it.
        s.set_deadline(b"k", Some(t0 + Duration::from_secs(100)));
        assert_eq!(s.expire_some(t0 + Duration::from_secs(2), 10), 0);
        assert_eq!(s.get(b"k", t0 + Duration::from_secs(2)), Some(&b"v"[..]));
        // No deadline at all: never expires.
        s.set_deadline(b"k", None);
        assert_eq!(s.expire_some(t0 + Duration::from_secs(1000), 10), 0);
        assert_eq!(
            s.stats(),
            ShardStats {
                keys: 1,
                expires: 0
            }
        );
    }

    #[test]
    fn deadline_heap_stays_bounded() {
        let mut s = Store::new();
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            s.insert(
                b"k".to_vec(),
                Value::Str(b"v".to_vec()),
                Some(t0 + Duration::from_secs(i + 1)),
            );
        }
        assert!(s.deadlines.len() <= 2 * s.expires + COMPACT_SLACK + 1);
        assert_eq!(
            s.stats(),
            ShardStats {
                keys: 1,
                expires: 1
            }
        );
        s.remove(b"k");
        assert_eq!(s.stats(), ShardStats::default());
    }
}
