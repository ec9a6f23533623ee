//! [`shard_index`]: the fixed key-to-shard hash behind [`Runtime::shard_for`](super::Runtime::shard_for).
//!
//! Routing runs once per request on a sharded server, so the hash takes the key's
//! bytes eight at a time (a byte-at-a-time hash such as FNV-1a costs several times
//! more on typical keys), then mixes the result so that its value modulo a small
//! shard count is well spread. It is unseeded: the same key goes to the same shard
//! in every process of the same build. It is not meant to resist keys chosen to
//! collide: skewing shards takes no collisions, only many requests for one key.

use std::hash::{Hash, Hasher};

/// The shard of `shards` that `key` belongs to: the same as
/// [`Runtime::shard_for`](crate::Runtime::shard_for) on a runtime with that many
/// shards, for code that routes keys the same way without one (a peer in a
/// benchmark, a client that picks a shard's port).
///
/// ```
/// let rt = shardloop::Runtime::builder().shards(3).build()?;
/// for key in ["a", "user:42", "session-7"] {
///     assert_eq!(shardloop::shard_index(key, 3), rt.shard_for(key));
/// }
/// assert_eq!(shardloop::shard_index(&17u64, 1), 0);
/// # Ok::<(), shardloop::Error>(())
/// ```
///
/// # Panics
/// If `shards` is zero.
pub fn shard_index<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    assert!(shards > 0, "shard_index over zero shards");
    if shards == 1 {
        return 0;
    }
    let mut h = WordHasher::default();
    key.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Multiply-rotate over 8-byte words, finished by murmur3's 64-bit avalanche.
struct WordHasher(u64);

impl Default for WordHasher {
    fn default() -> Self {
        // Not zero: from zero, leading all-zero words would leave no trace.
        WordHasher(0x243f_6a88_85a3_08d3)
    }
}

impl WordHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut last = [0u8; 8];
            last[..tail.len()].copy_from_slice(tail);
            // The tail's length goes in too: "a" and "a\0" differ.
            self.mix(u64::from_le_bytes(last) ^ ((tail.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::{shard_index, WordHasher};
    use std::hash::Hasher;

    #[test]
    fn similar_keys_spread_evenly() {
        // Keys that differ in one byte, the shape of most real keyspaces.
        for shards in [2usize, 3, 4, 16] {
            let mut counts = vec![0usize; shards];
            let n = 20_000;
            for i in 0..n {
                counts[shard_index(&format!("key:{i:012}"), shards)] += 1;
            }
            let fair = n / shards;
            for (shard, &c) in counts.iter().enumerate() {
                assert!(
                    c > fair * 9 / 10 && c < fair * 11 / 10,
                    "{shards} shards: shard {shard} got {c} of {n}"
                );
            }
        }
    }

    #[test]
    fn every_byte_of_the_key_counts() {
        // Same length, different last or first byte; and keys that differ only in
        // length (zero padding must not make them equal).
        let base = shard_index(b"abcdefghijklmnop".as_slice(), 1 << 20);
        assert_ne!(base, shard_index(b"abcdefghijklmnoq".as_slice(), 1 << 20));
        assert_ne!(base, shard_index(b"bbcdefghijklmnop".as_slice(), 1 << 20));
        assert_ne!(
            shard_index(b"a".as_slice(), 1 << 20),
            shard_index(b"a\0".as_slice(), 1 << 20)
        );
        // Without a length prefix (`write` alone), leading zero words still count.
        let hash = |bytes: &[u8]| {
            let mut h = WordHasher::default();
            h.write(bytes);
            h.finish()
        };
        assert_ne!(hash(b"k"), hash(b"\0\0\0\0\0\0\0\0k"));
    }
}
