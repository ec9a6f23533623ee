//! Key-to-shard routing with a fixed, written-down hash: [`shard_index_bytes`] for
//! byte keys, [`shard_index`] (behind [`Runtime::shard_for`](super::Runtime::shard_for))
//! for `Hash` keys.
//!
//! Peers route alike (another process, another machine, a client library in another
//! language picking a shard's port), so the algorithm is part of the API: the one
//! below is *shard hash v1*, and it never changes. A different algorithm would be a
//! new version under a new name, next to this one.
//!
//! It is unseeded, and it is not meant to resist keys chosen to collide: skewing
//! shards takes no collisions, only many requests for one key.

use std::hash::{Hash, Hasher};

/// FNV-1a 64's offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64's prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The shard of `shards` that the byte string `key` belongs to, by *shard hash v1*,
/// which is fixed forever (the same on every platform, build and compiler version):
///
/// 1. `h` = FNV-1a 64 of `key`: `h = 0xcbf29ce484222325`, then for each byte `b`,
///    `h = (h ^ b) * 0x100000001b3` (64-bit wrapping multiply).
/// 2. murmur3's 64-bit finalizer (`fmix64`), since a byte reaches FNV's high bits
///    only through the multiplies after it (the last bytes would barely move them):
///    `h ^= h >> 33; h *= 0xff51afd7ed558ccd; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53;
///    h ^= h >> 33`.
/// 3. Multiply-shift onto `0..shards`: the shard is the high 64 bits of the 128-bit
///    product `h * shards`, i.e. `floor(h * shards / 2^64)`.
///
/// A client library computes the same route from these three steps; the test
/// vectors in `tests/shard_hash.rs` check an implementation (e.g. `"user:42"` over
/// 4 shards is shard 2, `""` over 7 is shard 6).
///
/// ```
/// assert_eq!(shardloop::shard_index_bytes(b"user:42", 4), 2);
/// let rt = shardloop::Runtime::builder().shards(4).build()?;
/// let remote = rt.submit_to(shardloop::shard_index_bytes(b"user:42", rt.len()), || async {
///     shardloop::current_shard()
/// });
/// assert_eq!(remote.wait()?, Some(2));
/// # Ok::<(), shardloop::Error>(())
/// ```
///
/// # Panics
/// If `shards` is zero.
pub fn shard_index_bytes(key: &[u8], shards: usize) -> usize {
    let mut h = ShardHasher::default();
    h.write(key);
    h.shard(shards)
}

/// The shard of `shards` that `key` belongs to, hashing the bytes that `key`'s
/// [`Hash`] implementation writes: the same as
/// [`Runtime::shard_for`](crate::Runtime::shard_for) on a runtime with that many
/// shards, for code that routes keys the same way without one.
///
/// The [`Hasher`] it uses feeds *shard hash v1* (see [`shard_index_bytes`]) with
/// one byte stream, independent of platform:
/// - `write(bytes)`: the bytes as they are; consecutive writes concatenate (no
///   boundary is added: marking boundaries is the `Hash` implementation's job);
/// - `write_u8` ... `write_u128` and the signed ones: the value's little-endian
///   bytes, at the type's width;
/// - `write_usize` / `write_isize`: 8 little-endian bytes on every platform, so a
///   32-bit and a 64-bit peer agree.
///
/// So `shard_index(key, n)` is `shard_index_bytes(stream, n)` for the bytes `key`'s
/// `Hash` writes. What the standard library's implementations write (Rust 1.80 to
/// at least 1.95; std does not promise these byte streams across versions):
/// - an integer (`u64`, `i32`, `usize`, ...): its little-endian bytes, as above;
///   `char` as a `u32`, `bool` as a `u8`;
/// - `str` / `String`: the UTF-8 bytes, then one `0xff` byte;
/// - `[u8]` / `Vec<u8>` / `[u8; N]`: the length (8 bytes, little-endian), then the
///   bytes;
/// - `&T` as `T`; tuples and derived structs: each field in order;
/// - a slice of wider integers (`[u32]`, `Vec<u64>`, ...): the length, then the
///   elements' memory in the machine's byte order, so such keys route differently
///   on big-endian peers.
///
/// Which routes match [`shard_index_bytes`]: an integer key matches its
/// little-endian bytes, a `str` key its bytes followed by `0xff`; a byte-slice key
/// matches nothing simpler than its length prefix plus its bytes. For a route that
/// is fixed forever and that any peer computes from the key's bytes alone, use
/// [`shard_index_bytes`] (the `kv_server` example does); `shard_index` is fixed for
/// as long as the key type's `Hash` writes the same bytes, and this crate's test
/// vectors pin std's current streams for `str`, `[u8]` and integers, so a change
/// in a new compiler fails the tests rather than moving keys silently.
///
/// ```
/// use shardloop::{shard_index, shard_index_bytes};
/// // Integers: their little-endian bytes.
/// assert_eq!(shard_index(&42u64, 8), shard_index_bytes(&42u64.to_le_bytes(), 8));
/// assert_eq!(shard_index(&42usize, 8), shard_index_bytes(&42u64.to_le_bytes(), 8));
/// // str: its bytes, then 0xff.
/// assert_eq!(shard_index("user:42", 8), shard_index_bytes(b"user:42\xff", 8));
///
/// // A key type whose Hash writes just its bytes routes like shard_index_bytes.
/// struct Bytes<'a>(&'a [u8]);
/// impl std::hash::Hash for Bytes<'_> {
///     fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
///         state.write(self.0)
///     }
/// }
/// assert_eq!(shard_index(&Bytes(b"user:42"), 8), shard_index_bytes(b"user:42", 8));
///
/// let rt = shardloop::Runtime::builder().shards(3).build()?;
/// for key in ["a", "user:42", "session-7"] {
///     assert_eq!(shard_index(key, 3), rt.shard_for(key));
/// }
/// # Ok::<(), shardloop::Error>(())
/// ```
///
/// # Panics
/// If `shards` is zero.
pub fn shard_index<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    let mut h = ShardHasher::default();
    key.hash(&mut h);
    h.shard(shards)
}

/// FNV-1a 64 over the byte stream described on [`shard_index`]; `finish` applies
/// the finalizer of *shard hash v1*.
struct ShardHasher(u64);

impl Default for ShardHasher {
    fn default() -> Self {
        ShardHasher(FNV_OFFSET)
    }
}

impl ShardHasher {
    /// Step 3 of *shard hash v1*: multiply-shift of the finished hash onto
    /// `0..shards`.
    fn shard(&self, shards: usize) -> usize {
        assert!(shards > 0, "a shard index over zero shards");
        // The product's high half is below `shards`, so it fits in a usize.
        ((u128::from(self.finish()) * shards as u128) >> 64) as usize
    }
}

impl Hasher for ShardHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    // Integers go in as their little-endian bytes at their own width, which is
    // what Hasher's default methods do on a little-endian machine (they write
    // `to_ne_bytes`); a big-endian peer must agree too. usize and isize are
    // widened to 8 bytes so that 32- and 64-bit peers agree.
    fn write_u16(&mut self, n: u16) {
        self.write(&n.to_le_bytes());
    }
    fn write_u32(&mut self, n: u32) {
        self.write(&n.to_le_bytes());
    }
    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }
    fn write_u128(&mut self, n: u128) {
        self.write(&n.to_le_bytes());
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_i16(&mut self, n: i16) {
        self.write_u16(n as u16);
    }
    fn write_i32(&mut self, n: i32) {
        self.write_u32(n as u32);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_i128(&mut self, n: i128) {
        self.write_u128(n as u128);
    }
    fn write_isize(&mut self, n: isize) {
        self.write_i64(n as i64);
    }
    // write_u8 and write_i8 keep their defaults: one byte, the same everywhere.

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
    use super::{shard_index_bytes, ShardHasher};
    use std::hash::Hasher;

    /// FNV-1a 64 alone, without the finalizer.
    fn fnv1a(bytes: &[u8]) -> u64 {
        let mut h = ShardHasher::default();
        h.write(bytes);
        h.0
    }

    #[test]
    fn step_one_is_the_published_fnv_1a_64() {
        // The reference vectors of FNV's authors (Fowler, Noll, Vo).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn similar_keys_spread_evenly() {
        // Keys that differ in one byte, the shape of most real keyspaces.
        for shards in [2usize, 3, 4, 16] {
            let mut counts = vec![0usize; shards];
            let n = 20_000;
            for i in 0..n {
                counts[shard_index_bytes(format!("key:{i:012}").as_bytes(), shards)] += 1;
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
        // Same length, different last or first byte; keys that differ only in
        // trailing zeros.
        let base = shard_index_bytes(b"abcdefghijklmnop", 1 << 20);
        assert_ne!(base, shard_index_bytes(b"abcdefghijklmnoq", 1 << 20));
        assert_ne!(base, shard_index_bytes(b"bbcdefghijklmnop", 1 << 20));
        assert_ne!(
            shard_index_bytes(b"a", 1 << 20),
            shard_index_bytes(b"a\0", 1 << 20)
        );
    }
}
