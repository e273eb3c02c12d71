//! Maps keyed by the host's own integer ids (task ids, daemon ids,
//! connection tokens), hashed by one multiplication rather than SipHash.
//!
//! The host looks a task or a connection up several times per task (a
//! result's task, its daemon, its connection); SipHash was about 1% of R's
//! thread in `clusterApplyLB()` (measured with perf). These keys are handed
//! out by the host itself, counting up, never chosen by a peer, so a hash
//! built to resist chosen keys buys nothing here. Keys a peer chooses
//! (relayed task ids, share digests) keep the standard hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A HashMap keyed by one of the host's integer ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing: the product's high bits, which the table's control
/// bytes use, depend on every bit of the key, and consecutive keys land in
/// consecutive low bits, which index the buckets.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_the_high_bits() {
        let top = |n: u64| {
            let mut h = IdHasher::default();
            h.write_u64(n);
            h.finish() >> 57
        };
        let distinct: std::collections::HashSet<u64> = (0..1000).map(top).collect();
        assert_eq!(distinct.len(), 128);
    }

    #[test]
    fn a_map_keeps_what_it_is_given() {
        let mut m: IdMap<u64, u64> = IdMap::default();
        for i in 0..10_000 {
            m.insert(i * 3, i);
        }
        assert!((0..10_000).all(|i| m.get(&(i * 3)) == Some(&i)));
        assert_eq!(m.get(&1), None);
    }
}
