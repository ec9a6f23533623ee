//! Shard hash v1 (`shard_index_bytes`, `shard_index`, `Runtime::shard_for`): fixed
//! test vectors, so that any change to the algorithm or to the byte stream that a
//! key type feeds it fails here instead of moving keys between shards; and
//! properties: every result is in range, keys spread over the shards.
//!
//! The expected shards were computed by a separate implementation written from the
//! documentation of `shard_index_bytes` (a few lines of Python), not by this crate.

use std::hash::{Hash, Hasher};

use proptest::prelude::*;
use shardloop::{shard_index, shard_index_bytes, Runtime};

/// (key, shard count, shard): `shard_index_bytes(key, shards) == shard`.
const BYTE_VECTORS: &[(&[u8], usize, usize)] = &[
    (b"", 1, 0),
    (b"", 7, 6),
    (b"a", 2, 1),
    (b"foobar", 3, 0),
    (b"user:42", 1, 0),
    (b"user:42", 4, 2),
    (b"user:42", 1000, 599),
    (b"user:42", 2_147_483_659, 1_287_916_518),
    (b"session-7", 5, 4),
    (b"key:000000000001", 16, 12),
    (b"key:000000000002", 16, 3),
    (b"\0", 1000, 722),
    (&[0xff; 32], 3, 0),
];

#[test]
fn byte_keys_match_the_fixed_vectors() {
    for &(key, shards, want) in BYTE_VECTORS {
        assert_eq!(
            shard_index_bytes(key, shards),
            want,
            "shard_index_bytes({:?}, {shards})",
            String::from_utf8_lossy(key)
        );
    }
    let all_bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(shard_index_bytes(&all_bytes, 64), 8);
}

#[test]
fn hash_keys_match_the_fixed_vectors() {
    // str: its bytes, then 0xff (std's `Hash for str`).
    assert_eq!(shard_index("", 3), 0);
    assert_eq!(shard_index("a", 2), 0);
    assert_eq!(shard_index("user:42", 8), 5);
    assert_eq!(shard_index(&String::from("user:42"), 8), 5);
    assert_eq!(shard_index("héllo", 10), 4);
    // Byte slices: the length as 8 little-endian bytes, then the bytes.
    assert_eq!(shard_index(b"user:42".as_slice(), 8), 2);
    assert_eq!(shard_index(&b"user:42".to_vec(), 8), 2);
    // Integers: little-endian at their width; usize and isize as 8 bytes.
    assert_eq!(shard_index(&0u64, 5), 2);
    assert_eq!(shard_index(&42u64, 8), 5);
    assert_eq!(shard_index(&42usize, 8), 5);
    assert_eq!(shard_index(&u64::MAX, 9), 3);
    assert_eq!(shard_index(&7u32, 6), 1);
    assert_eq!(shard_index(&-1i64, 4), 1);
    assert_eq!(shard_index(&200u8, 3), 1);
    assert_eq!(shard_index(&513u16, 11), 4);
    assert_eq!(shard_index(&(1u128 << 100), 13), 9);
    assert_eq!(shard_index(&'z', 6), 2);
    assert_eq!(shard_index(&true, 5), 0);
    // Tuples: each field in order.
    assert_eq!(shard_index(&(3u32, "ab"), 10), 8);
}

#[test]
fn shard_for_is_shard_index_over_the_runtime_s_shards() {
    let rt = Runtime::builder().shards(3).build().unwrap();
    for key in ["", "a", "user:42", "session-7"] {
        assert_eq!(rt.shard_for(key), shard_index(key, 3), "{key:?}");
    }
    assert_eq!(rt.shard_for(&42u64), shard_index(&42u64, 3));
    rt.shutdown(std::time::Duration::from_secs(5)).unwrap();
}

/// A key whose `Hash` writes its bytes and nothing else.
struct RawBytes<'a>(&'a [u8]);

impl Hash for RawBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_shard_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..64),
                               shards in 1usize..=100_000) {
        prop_assert!(shard_index_bytes(&key, shards) < shards);
        prop_assert!(shard_index(&key, shards) < shards);
        prop_assert_eq!(shard_index_bytes(&key, 1), 0);
    }

    #[test]
    fn hash_keys_route_by_the_bytes_they_write(key in proptest::collection::vec(any::<u8>(), 0..64),
                                               n in any::<u64>(),
                                               s in ".{0,16}",
                                               shards in 1usize..=1000) {
        prop_assert_eq!(shard_index(&RawBytes(&key), shards), shard_index_bytes(&key, shards));
        prop_assert_eq!(shard_index(&n, shards), shard_index_bytes(&n.to_le_bytes(), shards));
        let mut with_ff = s.as_bytes().to_vec();
        with_ff.push(0xff);
        prop_assert_eq!(shard_index(s.as_str(), shards), shard_index_bytes(&with_ff, shards));
        let mut prefixed = (key.len() as u64).to_le_bytes().to_vec();
        prefixed.extend_from_slice(&key);
        prop_assert_eq!(shard_index(key.as_slice(), shards), shard_index_bytes(&prefixed, shards));
    }
}

proptest! {
    // Each case hashes a few thousand keys: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn keys_that_share_a_prefix_spread_over_the_shards(prefix in proptest::collection::vec(any::<u8>(), 0..24),
                                                       shards in 2usize..=32) {
        // 256 keys per shard, differing only in a counter after the prefix. Each
        // count is binomial with a standard deviation under 16 (sqrt(256)), so
        // the bounds below (half and one and a half of a fair share, 8 standard
        // deviations) hold for a good hash on any prefix the test may draw.
        let per_shard = 256;
        let mut counts = vec![0usize; shards];
        for i in 0..(per_shard * shards) as u32 {
            let mut key = prefix.clone();
            key.extend_from_slice(i.to_string().as_bytes());
            counts[shard_index_bytes(&key, shards)] += 1;
        }
        for (shard, &c) in counts.iter().enumerate() {
            prop_assert!(c > per_shard / 2 && c < per_shard * 3 / 2,
                         "{} shards: shard {} got {} keys, {:?}", shards, shard, c, counts);
        }
    }
}
