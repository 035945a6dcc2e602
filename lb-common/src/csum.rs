//! Incremental Internet checksum updates (RFC 1624), for NAT rewrites.
//!
//! Values are 16-bit words as loaded from the packet in native order; the
//! one's-complement sum does not depend on byte order as long as every operand
//! is read the same way.

/// Accumulates the change of a set of header words, then applies it to a
/// stored checksum: `HC' = ~(~HC + ~m + m')`.
#[derive(Clone, Copy, Default, Debug)]
pub struct CsumDiff(u64);

impl CsumDiff {
    /// An empty change.
    #[inline(always)]
    pub const fn new() -> Self {
        CsumDiff(0)
    }

    /// A 32-bit word changes from `old` to `new`.
    #[inline(always)]
    pub const fn u32(self, old: u32, new: u32) -> Self {
        let o = !old;
        CsumDiff(
            self.0
                + (o >> 16) as u64
                + (o & 0xffff) as u64
                + (new >> 16) as u64
                + (new & 0xffff) as u64,
        )
    }

    /// A 16-bit word changes from `old` to `new`.
    #[inline(always)]
    pub const fn u16(self, old: u16, new: u16) -> Self {
        CsumDiff(self.0 + (!old) as u64 + new as u64)
    }

    /// The checksum `check` after the change.
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        !fold(self.0 + (!check) as u64)
    }
}

/// Folds a one's-complement accumulator to 16 bits.
#[inline(always)]
pub const fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(words: &[u16]) -> u16 {
        !fold(words.iter().map(|&w| w as u64).sum())
    }

    #[test]
    fn incremental_equals_full_recompute() {
        let mut seed = 0x1234_5678u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..10_000 {
            let mut w: [u16; 8] = core::array::from_fn(|_| rnd() as u16);
            let check = full(&w);
            let (o32, n32, o16, n16) =
                ((w[0] as u32) << 16 | w[1] as u32, rnd(), w[5], rnd() as u16);
            w[0] = (n32 >> 16) as u16;
            w[1] = n32 as u16;
            w[5] = n16;
            let inc = CsumDiff::new().u32(o32, n32).u16(o16, n16).apply(check);
            // 0x0000 and 0xffff are the same value in one's complement.
            let want = full(&w);
            assert!(inc == want || (inc, want) == (0xffff, 0) || (inc, want) == (0, 0xffff));
        }
    }
}
