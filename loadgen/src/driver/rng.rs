//! The deterministic generator behind deliberate drops (`--drop`, `--seed`): the same seed
//! drops the same DATA.

/// splitmix64, for deliberate drops.
pub(super) struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// True with probability `p` (never when `p` is 0 or less).
    pub(super) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}
