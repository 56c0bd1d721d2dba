//! Deterministic pseudo-random inputs for the parsers' "never panics" tests
//! (an xorshift generator: no dependency, the same inputs on every run).

/// `len` items drawn from `alphabet`, advancing `state`.
pub fn picks<T: Copy>(state: &mut u64, alphabet: &[T], len: usize) -> Vec<T> {
    (0..len)
        .filter_map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            alphabet
                .get((*state % alphabet.len().max(1) as u64) as usize)
                .copied()
        })
        .collect()
}
