//! The core's one random generator: seeded by the caller, never by libtorch's global
//! generator, so that mining, augmentation and sampling depend only on their seeds.

/// splitmix64: a tiny, well-mixed generator, so that randomness depends only on the seed
/// and never on libtorch's global generator.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The golden-ratio increment between states; also what spreads a counter over the
    /// state space when seeds are derived (see [`crate::train::mix_seed`]).
    pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        Self::mix(self.0)
    }

    /// SplitMix64's output function: a bijection of u64 whose output bits each depend on
    /// every input bit.
    pub(crate) fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n), by the multiply-high method (no modulo bias worth a branch).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}
