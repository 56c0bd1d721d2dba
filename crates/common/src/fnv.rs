//! 64-bit FNV-1a for hash maps whose keys are short and chosen by us (system
//! call names, machine names): SipHash's protection against chosen keys buys
//! nothing there, and it costs a visible part of a launch or a DNS answer.

use std::hash::{BuildHasherDefault, Hasher};

/// The FNV-1a hasher state.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fnv(u64);

/// For `HashMap<K, V, FnvBuild>` and `HashSet<K, FnvBuild>`.
pub type FnvBuild = BuildHasherDefault<Fnv>;

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let hash = |b: &[u8]| {
            let mut h = Fnv::default();
            h.write(b);
            h.finish()
        };
        // The published FNV-1a test vectors.
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
