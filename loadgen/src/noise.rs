//! Cheap reproducible pseudo-random numbers (xorshift64) for what needs no
//! more: WebSocket masking keys, garbage bytes, when members are dropped.

/// The next number of the xorshift64 sequence in `state` (never 0 once
/// seeded with a non-zero value).
pub fn xorshift64(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// A non-zero seed derived from `value`, spread so that neighbouring
/// values (client ids) start far apart in the sequence.
pub fn seed(value: u64) -> u64 {
    value.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_repeat_per_seed_and_differ_between_seeds() {
        let (mut a, mut b, mut c) = (seed(3), seed(3), seed(4));
        let first = xorshift64(&mut a);
        assert_eq!(first, xorshift64(&mut b));
        assert_ne!(first, xorshift64(&mut c));
        assert_ne!(seed(0), 0);
    }
}
