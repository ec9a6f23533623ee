//! One shard's keyspace: keys, values, and their expiry.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// A key's value and its deadline.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) value: Vec<u8>,
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

/// One shard's keyspace: byte-string keys to byte-string values, each with an optional
/// deadline. **A building block of the `kv_server` example.**
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
    map: HashMap<Vec<u8>, Entry>,
    /// Deadlines, earliest first. An item is stale when its key is gone or has another
    /// deadline now; stale items are skipped when popped and dropped by `compact`.
    deadlines: BinaryHeap<Reverse<(Instant, Vec<u8>)>>,
    /// Keys in `map` with a deadline.
    expires: usize,
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

    /// The value at `key`, if it exists and has not expired by `now`.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<&[u8]> {
        self.live(key, now).map(|e| e.value.as_slice())
    }

    /// Removes up to `budget` keys whose deadline is at or before `now`, earliest
    /// first, and returns how many it removed. Each call does at most `budget` steps,
    /// so a server's timer callback stays short; call again while it returns `budget`
    /// to catch up.
    pub fn expire_some(&mut self, now: Instant, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            match self.deadlines.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((at, key))) = self.deadlines.pop() else {
                break;
            };
            if self.map.get(&key).is_some_and(|e| e.expires_at == Some(at)) {
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

    /// Sets `key` to `value` with deadline `expires_at`, replacing what was there.
    pub(super) fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, expires_at: Option<Instant>) {
        if let Some(at) = expires_at {
            self.deadlines.push(Reverse((at, key.clone())));
            self.expires += 1;
        }
        let old = self.map.insert(key, Entry { value, expires_at });
        if old.is_some_and(|o| o.expires_at.is_some()) {
            self.expires -= 1;
        }
        self.compact_if_needed();
    }

    /// Removes `key` if present (live or not); whether it was there.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(old) => {
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
                .filter_map(|(k, e)| e.expires_at.map(|at| Reverse((at, k.clone()))))
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
            b"1".to_vec(),
            Some(t0 + Duration::from_secs(1)),
        );
        s.insert(b"b".to_vec(), b"2".to_vec(), None);
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
            s.insert(key, b"v".to_vec(), Some(t0 + Duration::from_millis(i)));
        }
        s.insert(b"forever".to_vec(), b"v".to_vec(), None);
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
    fn overwritten_deadlines_are_stale_not_fatal() {
        let mut s = Store::new();
        let t0 = Instant::now();
        s.insert(
            b"k".to_vec(),
            b"v".to_vec(),
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
                b"v".to_vec(),
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
