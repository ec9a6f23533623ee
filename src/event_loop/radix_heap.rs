//! The timer queue's priority queue: a radix heap over nanosecond deadlines.
//!
//! A radix heap exploits that the loop takes deadlines out in increasing order: an
//! entry sits in the bucket of the highest bit in which its deadline differs from the
//! last one taken out, so inserting is a push onto a `Vec`, and taking out the
//! minimum empties the lowest non-empty bucket into lower ones (an entry only ever
//! moves down, at most 64 times, in sequential memory). Against a binary heap it
//! saves the log-n random-access sift of every pop, the bulk of a timer's cost.
//!
//! Order is exact, as the loop promises: `(deadline, sequence number)`. Entries whose
//! deadline equals the last one taken out wait in `front`, in sequence order. A
//! deadline *earlier* than the last one taken out (a `call_at` in the past) goes to
//! `overdue`, a small binary heap that always comes first.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// A heap entry: a timer's slot and the deadline and sequence number it was pushed
/// with. Ordered by `(at, seq)`, reversed (for `BinaryHeap`, a max-heap).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Entry {
    /// The deadline, in nanoseconds since the timer queue's epoch.
    pub(crate) at: u64,
    pub(crate) seq: u64,
    pub(crate) slot: u32,
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

const BUCKETS: usize = 64;

pub(crate) struct RadixHeap {
    /// The deadline of the last entry taken out of the buckets (never decreases).
    last: u64,
    /// Entries due exactly at `last`, in sequence order.
    front: VecDeque<Entry>,
    /// Bucket `b`: deadlines whose highest bit differing from `last` is bit `b`.
    buckets: [Vec<Entry>; BUCKETS],
    /// Deadlines before `last`: they come before everything else.
    overdue: BinaryHeap<Entry>,
    len: usize,
}

impl RadixHeap {
    pub(crate) fn new() -> Self {
        RadixHeap {
            last: 0,
            front: VecDeque::new(),
            buckets: std::array::from_fn(|_| Vec::new()),
            overdue: BinaryHeap::new(),
            len: 0,
        }
    }

    fn bucket(&self, at: u64) -> usize {
        debug_assert!(at > self.last);
        (63 - (at ^ self.last).leading_zeros()) as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        self.len += 1;
        match entry.at.cmp(&self.last) {
            Ordering::Less => self.overdue.push(entry),
            // Sequence numbers only grow: a new entry goes behind those waiting.
            Ordering::Equal => self.front.push_back(entry),
            Ordering::Greater => {
                let b = self.bucket(entry.at);
                self.buckets[b].push(entry);
            }
        }
    }

    /// Makes `front` hold the earliest deadline of the buckets, if any is left.
    fn refill(&mut self) {
        if !self.front.is_empty() {
            return;
        }
        let Some(b) = self.buckets.iter().position(|v| !v.is_empty()) else {
            return;
        };
        let mut entries = std::mem::take(&mut self.buckets[b]);
        let min = entries
            .iter()
            .map(|e| e.at)
            .min()
            .expect("non-empty bucket");
        self.last = min;
        for e in entries.drain(..) {
            if e.at == min {
                self.front.push_back(e);
            } else {
                // Shares every bit above `b` with `min`: lands in a lower bucket.
                let to = self.bucket(e.at);
                self.buckets[to].push(e);
            }
        }
        // Keep the bucket's allocation for next time.
        self.buckets[b] = entries;
        self.front.make_contiguous().sort_unstable_by_key(|e| e.seq);
    }

    /// The earliest entry.
    pub(crate) fn peek(&mut self) -> Option<&Entry> {
        if !self.overdue.is_empty() {
            return self.overdue.peek();
        }
        self.refill();
        self.front.front()
    }

    /// Takes the earliest entry out.
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let popped = if self.overdue.is_empty() {
            self.refill();
            self.front.pop_front()
        } else {
            self.overdue.pop()
        };
        if popped.is_some() {
            self.len -= 1;
        }
        popped
    }

    /// Keeps only the entries for which `keep` is true, in place.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        self.front.retain(|e| keep(e));
        for bucket in &mut self.buckets {
            bucket.retain(|e| keep(e));
        }
        self.overdue.retain(|e| keep(e));
        self.len = self.front.len()
            + self.overdue.len()
            + self.buckets.iter().map(Vec::len).sum::<usize>();
    }

    pub(crate) fn clear(&mut self) {
        self.front.clear();
        self.buckets.iter_mut().for_each(Vec::clear);
        self.overdue.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Pops come out in `(at, seq)` order, the same as a sorted model, with
        /// pushes interleaved, deadlines in the past included.
        #[test]
        fn pops_in_order(ops in proptest::collection::vec((any::<bool>(), 0u64..64, any::<bool>()), 1..500)) {
            let mut heap = RadixHeap::new();
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut seq = 0;
            let mut floor = 1000u64;
            for (push, delta, past) in ops {
                if push {
                    let at = if past { floor.saturating_sub(delta) } else { floor + delta * delta * 1000 };
                    heap.push(Entry { at, seq, slot: 0 });
                    model.push((at, seq));
                    seq += 1;
                } else {
                    model.sort_unstable();
                    let want = if model.is_empty() { None } else { Some(model.remove(0)) };
                    let got = heap.pop().map(|e| (e.at, e.seq));
                    prop_assert_eq!(got, want);
                    if let Some((at, _)) = got {
                        floor = floor.max(at);
                    }
                }
                prop_assert_eq!(heap.len(), model.len());
            }
        }
    }
}
