//! Compact sketches used on the request path: a 64-bit hash, HyperLogLog, SimHash, a Bloom
//! filter and a tiny deterministic PRNG. All have fixed, documented sizes so per-account memory
//! stays bounded.

use serde::{Deserialize, Serialize};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Finalizer from MurmurHash3: spreads the bits of an FNV-style accumulator.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Incremental FNV-1a state; call [`WordHasher::finish`] for a well-mixed 64-bit value.
#[derive(Clone, Copy)]
pub struct WordHasher(u64);

impl WordHasher {
    #[inline]
    pub fn new() -> Self {
        Self(FNV_OFFSET)
    }
    #[inline]
    pub fn push(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    #[inline]
    pub fn finish(self) -> u64 {
        mix64(self.0)
    }
}

impl Default for WordHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Hash of a byte string (FNV-1a then Murmur finalizer), for names; words use [`hash_word`].
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = WordHasher::new();
    for &b in bytes {
        h.push(b);
    }
    h.finish()
}

/// Combine two hashes (order-sensitive).
#[inline]
pub fn combine(a: u64, b: u64) -> u64 {
    mix64(a.rotate_left(17) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Seed of [`hash_word`].
pub const WORD_SEED: u64 = 0x6a09_e667_f3bc_c908;

/// Hash of one normalized word of the request text (the request path computes the same value
/// eight bytes at a time, see `features::Stream`): the bytes in 8-byte little-endian chunks, the
/// last one zero-padded (word bytes are never zero), folded as `acc = c0 ^ WORD_SEED`, then
/// `acc = mix64(acc) ^ c` for each further chunk, finished with [`mix64`]. A word of at most 8
/// bytes costs one finalizer, and no two such words collide (`mix64` is a bijection).
///
/// Names (organizations, addresses, link values) keep [`hash_bytes`]: their hashes are part of
/// stored keys and cluster ids and are not on the per-word path.
pub fn hash_word(bytes: &[u8]) -> u64 {
    let mut acc = WORD_SEED;
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        let c = u64::from_le_bytes(buf);
        acc = if i == 0 { acc ^ c } else { mix64(acc) ^ c };
    }
    mix64(acc)
}

/// Start value of a word-sequence fold ([`seq_push`]).
pub const SEQ_SEED: u64 = 0x1234_5678_9abc_def0;
/// Multiplier of the word-sequence fold (odd, so invertible modulo 2^64).
const SEQ_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// One step of the polynomial fold over word hashes: `acc · M + w` (mod 2^64). One
/// multiplication per word; the fold of any run of words follows from the folds before and
/// after it ([`seq_slice`]), so line and span hashes need no chain of their own.
#[inline]
pub fn seq_push(acc: u64, w: u64) -> u64 {
    acc.wrapping_mul(SEQ_MUL).wrapping_add(w)
}

/// The fold from [`SEQ_SEED`] over the `len` words between two prefix folds: `before` (after
/// the words preceding the run) and `after` (after the run).
#[inline]
pub fn seq_slice(before: u64, after: u64, len: usize) -> u64 {
    let mut pow = 1u64;
    let mut base = SEQ_MUL;
    let mut e = len;
    while e > 0 {
        if e & 1 == 1 {
            pow = pow.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    after.wrapping_add(SEQ_SEED.wrapping_sub(before).wrapping_mul(pow))
}

/// Finish a fold into a well-mixed hash.
#[inline]
pub fn seq_finish(acc: u64) -> u64 {
    mix64(acc)
}

/// Hash of a word sequence given the per-word hashes (order-sensitive).
pub fn hash_seq(words: &[u64]) -> u64 {
    seq_finish(words.iter().fold(SEQ_SEED, |acc, &w| seq_push(acc, w)))
}

/// Feature of a pair of adjacent tokens (SimHash bigrams): order-sensitive, one multiplication.
#[inline]
pub fn pair(a: u64, b: u64) -> u64 {
    let x = (a.rotate_left(23) ^ b).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 31)
}

/// HyperLogLog distinct counter with `2^p` one-byte registers. The harmonic sum is maintained
/// incrementally so [`Hll::estimate`] is O(1) (the request path reads it on every request).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hll {
    p: u8,
    regs: Vec<u8>,
    /// Sum of 2^-reg over all registers.
    sum: f64,
    zeros: u32,
}

impl Hll {
    /// New sketch with precision `p` (4..=16); memory is `2^p` bytes.
    pub fn new(p: u8) -> Self {
        let p = p.clamp(4, 16);
        let m = 1usize << p;
        Self {
            p,
            regs: vec![0; m],
            sum: m as f64,
            zeros: m as u32,
        }
    }

    /// Number of registers (= bytes of register memory).
    pub fn registers(&self) -> usize {
        self.regs.len()
    }

    /// Insert an already-hashed item.
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        let p = u32::from(self.p);
        let idx = (hash >> (64 - p)) as usize;
        let rest = hash << p;
        let rank = (rest.leading_zeros().min(64 - p) + 1) as u8;
        if let Some(r) = self.regs.get_mut(idx)
            && rank > *r
        {
            if *r == 0 {
                self.zeros -= 1;
            }
            self.sum += pow2_neg(rank) - pow2_neg(*r);
            *r = rank;
        }
    }

    /// Estimated number of distinct items.
    pub fn estimate(&self) -> f64 {
        let m = self.regs.len() as f64;
        let alpha = match self.regs.len() {
            16 => 0.673,
            32 => 0.697,
            64 => 0.709,
            _ => 0.7213 / (1.0 + 1.079 / m),
        };
        let raw = alpha * m * m / self.sum;
        if raw <= 2.5 * m && self.zeros > 0 {
            m * (m / f64::from(self.zeros)).ln()
        } else {
            raw
        }
    }

    /// Merge another sketch of the same precision into this one (register-wise max).
    pub fn merge(&mut self, other: &Hll) {
        if other.p != self.p {
            return;
        }
        for (a, &b) in self.regs.iter_mut().zip(other.regs.iter()) {
            if b > *a {
                if *a == 0 {
                    self.zeros -= 1;
                }
                self.sum += pow2_neg(b) - pow2_neg(*a);
                *a = b;
            }
        }
    }

    /// Recompute the cached sum (after deserialization from an untrusted snapshot).
    pub fn repair(&mut self) {
        let m = 1usize << self.p.clamp(4, 16);
        self.regs.resize(m, 0);
        self.sum = self.regs.iter().map(|&r| pow2_neg(r)).sum();
        self.zeros = self.regs.iter().filter(|&&r| r == 0).count() as u32;
    }
}

/// A small HyperLogLog for the segments of an account: 128 registers of four bits packed in
/// 64 bytes (standard error 1.04/√128 ≈ 9.2 %), with linear counting for small counts (the
/// standard small-range correction: below 2.5·m, while some register is empty, the estimate is
/// `m·ln(m / empty registers)`). A four-bit register holds ranks up to 15, enough for counts up
/// to about 128·2¹³ ≈ 10⁶ per segment; beyond that it under-counts, which can only lower a
/// segment's novelty. Inserting is a shift and a mask; the estimate sums 128 registers and runs
/// only when a segment is scored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmallHll {
    regs: [u64; SMALL_HLL_WORDS],
}

/// Registers of a [`SmallHll`].
pub const SMALL_HLL_REGISTERS: usize = 128;
const SMALL_HLL_WORDS: usize = SMALL_HLL_REGISTERS / 16;

impl SmallHll {
    /// Insert an already-hashed item.
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        let idx = (hash >> 57) as usize;
        let rank = ((hash << 7).leading_zeros().min(57) + 1).min(15) as u64;
        let shift = (idx % 16) * 4;
        if let Some(w) = self.regs.get_mut(idx / 16)
            && (*w >> shift) & 0xf < rank
        {
            *w = (*w & !(0xf << shift)) | (rank << shift);
        }
    }

    /// Register `i` (0..128).
    fn reg(&self, i: usize) -> u8 {
        self.regs
            .get(i / 16)
            .map_or(0, |w| ((w >> ((i % 16) * 4)) & 0xf) as u8)
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.regs.iter().all(|&w| w == 0)
    }

    /// Estimated number of distinct items.
    pub fn estimate(&self) -> f64 {
        let m = SMALL_HLL_REGISTERS as f64;
        let (mut sum, mut zeros) = (0.0, 0u32);
        for i in 0..SMALL_HLL_REGISTERS {
            let r = self.reg(i);
            sum += pow2_neg(r);
            zeros += u32::from(r == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / f64::from(zeros)).ln()
        } else {
            raw
        }
    }
}

#[inline]
fn pow2_neg(r: u8) -> f64 {
    f64::from_bits((1023u64.saturating_sub(u64::from(r))) << 52)
}

/// Byte → eight one-byte lanes holding its bits (lane j = bit j).
const fn spread_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        let mut v = 0u64;
        while j < 8 {
            v |= (((b >> j) & 1) as u64) << (8 * j);
            j += 1;
        }
        t[b] = v;
        b += 1;
    }
    t
}
static SPREAD: [u64; 256] = spread_table();

/// Features a [`BitCounter`] buffers before counting them as a batch.
pub const BATCH: usize = 16;

/// Carry-save adder of three bit vectors: (sum, carry) bit by bit.
#[inline(always)]
fn csa(a: u64, b: u64, c: u64) -> (u64, u64) {
    let u = a ^ b;
    (u ^ c, (a & b) | (u & c))
}

/// Per-bit set counters for `8 * WORDS`-bit features (a positional popcount).
///
/// The counts are kept bit-sliced: bit `i` of `planes[k]` is bit `k` of the count of features
/// with bit `i` set, so 64 counters are eight words. Features are buffered and counted sixteen at
/// a time with a carry-save adder tree (Harley–Seal: about five word operations per feature),
/// whose carries of weight 16 ripple into the upper planes. Before the eight planes could
/// overflow (255 features) they are moved into wide counters, which only texts of more than
/// 255 words need; the SimHash majority is read from the planes directly with a bit-sliced
/// comparison.
#[derive(Clone)]
pub struct BitCounter<const WORDS: usize> {
    buf: [u64; BATCH],
    len: usize,
    planes: [u64; 8],
    /// Features counted in the planes since they were last moved into `wide` (≤ 255).
    in_planes: u32,
    /// Whether `wide` holds counts.
    flushed: bool,
    wide: [u32; 64],
    n: u32,
}

impl<const WORDS: usize> BitCounter<WORDS> {
    pub fn new() -> Self {
        Self {
            buf: [0; BATCH],
            len: 0,
            planes: [0; 8],
            in_planes: 0,
            flushed: false,
            wide: [0; 64],
            n: 0,
        }
    }
    #[inline]
    pub fn add(&mut self, feature: u64) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = feature;
        }
        self.len += 1;
        self.n += 1;
        if self.len == BATCH {
            self.batch();
        }
    }
    fn batch(&mut self) {
        let buf = self.buf;
        self.len = 0;
        self.count_batch(&buf);
    }
    /// Add sixteen features at once (zeros count nothing), `real` of them counted in
    /// [`BitCounter::count`]: for callers that buffer features themselves.
    pub fn add_batch(&mut self, batch: &[u64; BATCH], real: u32) {
        self.n += real;
        self.count_batch(batch);
    }
    fn count_batch(&mut self, b: &[u64; BATCH]) {
        if self.in_planes + BATCH as u32 > 255 {
            self.flush();
        }
        self.in_planes += BATCH as u32;
        let p = &mut self.planes;
        let (o, ta) = csa(p[0], b[0], b[1]);
        let (o, tb) = csa(o, b[2], b[3]);
        let (t, fa) = csa(p[1], ta, tb);
        let (o, ta) = csa(o, b[4], b[5]);
        let (o, tb) = csa(o, b[6], b[7]);
        let (t, fb) = csa(t, ta, tb);
        let (f, ea) = csa(p[2], fa, fb);
        let (o, ta) = csa(o, b[8], b[9]);
        let (o, tb) = csa(o, b[10], b[11]);
        let (t, fa) = csa(t, ta, tb);
        let (o, ta) = csa(o, b[12], b[13]);
        let (o, tb) = csa(o, b[14], b[15]);
        let (t, fb) = csa(t, ta, tb);
        let (f, eb) = csa(f, fa, fb);
        let (e, sixteens) = csa(p[3], ea, eb);
        (p[0], p[1], p[2], p[3]) = (o, t, f, e);
        // Weight-16 carries into planes 4..8 (no carry out: at most 255 features in the planes).
        let mut carry = sixteens;
        for q in &mut p[4..] {
            let c = *q & carry;
            *q ^= carry;
            carry = c;
        }
    }
    /// Move the plane counts into the wide counters.
    fn flush(&mut self) {
        // Eight one-byte counters per word (each count ≤ 255 fits), then widened.
        let mut lanes = [0u64; WORDS];
        for (k, &plane) in self.planes.iter().enumerate() {
            for (b, l) in lanes.iter_mut().enumerate() {
                *l += SPREAD[((plane >> (8 * b)) & 0xff) as usize] << k;
            }
        }
        for (b, &l) in lanes.iter().enumerate() {
            for j in 0..8 {
                self.wide[8 * b + j] += ((l >> (8 * j)) & 0xff) as u32;
            }
        }
        self.planes = [0; 8];
        self.in_planes = 0;
        self.flushed = true;
    }
    /// Count what is still buffered (the unused part of the buffer zeroed).
    fn settle(&mut self) {
        if self.len > 0 {
            for slot in self.buf.iter_mut().skip(self.len) {
                *slot = 0;
            }
            self.batch();
        }
    }
    /// Number of features added.
    pub fn count(&self) -> u32 {
        self.n
    }
    /// Count of features with bit `i` set, for `i < 8 * WORDS`.
    pub fn ones(&mut self) -> [u32; 64] {
        self.settle();
        self.flush();
        self.wide
    }
    /// Bit `i` set when more than half of the features have bit `i` set, for `i < 8 * WORDS`.
    pub fn majority(&mut self) -> u64 {
        self.majority_of(self.n)
    }
    /// [`BitCounter::majority`] when `n` features were added (for [`BitCounter::add_batch`]
    /// callers, whose batches may hold zeros for missing features).
    pub fn majority_of(&mut self, n: u32) -> u64 {
        self.settle();
        let t = n / 2;
        if !self.flushed && t <= 255 {
            // Every count is in the planes: compare them with ⌊n/2⌋ bit-sliced, from the top
            // bit down (2c > n ⇔ c > ⌊n/2⌋).
            let (mut greater, mut equal) = (0u64, u64::MAX);
            for k in (0..8).rev() {
                let p = self.planes[k];
                if (t >> k) & 1 == 0 {
                    greater |= equal & p;
                    equal &= !p;
                } else {
                    equal &= p;
                }
            }
            let bits = 8 * WORDS as u32;
            return if bits >= 64 {
                greater
            } else {
                greater & ((1u64 << bits) - 1)
            };
        }
        let ones = self.ones();
        ones.iter()
            .take(8 * WORDS)
            .enumerate()
            .fold(
                0u64,
                |h, (i, &c)| if 2 * c > n { h | (1u64 << i) } else { h },
            )
    }
}

impl<const WORDS: usize> Default for BitCounter<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

/// 64-bit SimHash accumulator over hashed features (Charikar). Near-duplicate inputs give
/// hashes with a small Hamming distance.
#[derive(Clone, Default)]
pub struct SimHasher(BitCounter<8>);

impl SimHasher {
    pub fn new() -> Self {
        Self(BitCounter::new())
    }
    #[inline]
    pub fn add(&mut self, feature: u64) {
        self.0.add(feature);
    }
    pub fn count(&self) -> u32 {
        self.0.count()
    }
    pub fn finish(&mut self) -> u64 {
        self.0.majority()
    }
}

/// SimHash of a sequence of word hashes using word bigrams as features.
pub fn simhash_words(words: &[u64]) -> u64 {
    let mut s = SimHasher::new();
    if words.len() == 1 {
        s.add(words[0]);
    }
    for w in words.windows(2) {
        s.add(pair(w[0], w[1]));
    }
    s.finish()
}

/// Hamming distance between two SimHashes.
#[inline]
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Bloom filter over 64-bit hashes (double hashing, `k` probes).
#[derive(Clone, Debug)]
pub struct Bloom {
    bits: Vec<u64>,
    k: u32,
}

impl Bloom {
    /// Size the filter for `n` items at false-positive rate `fp`.
    pub fn with_capacity(n: usize, fp: f64) -> Self {
        let n = n.max(1) as f64;
        let fp = fp.clamp(1e-9, 0.5);
        let m = (-(n * fp.ln()) / (std::f64::consts::LN_2.powi(2)))
            .ceil()
            .max(64.0);
        let words = (m / 64.0).ceil() as usize;
        let k = ((m / n) * std::f64::consts::LN_2).round().clamp(1.0, 16.0) as u32;
        Self {
            bits: vec![0; words],
            k,
        }
    }
    fn nbits(&self) -> u64 {
        self.bits.len() as u64 * 64
    }
    pub fn insert(&mut self, h: u64) {
        let (a, b) = (h, mix64(h) | 1);
        let m = self.nbits();
        for i in 0..u64::from(self.k) {
            let bit = a.wrapping_add(i.wrapping_mul(b)) % m;
            if let Some(w) = self.bits.get_mut((bit / 64) as usize) {
                *w |= 1 << (bit % 64);
            }
        }
    }
    pub fn contains(&self, h: u64) -> bool {
        let (a, b) = (h, mix64(h) | 1);
        let m = self.nbits();
        (0..u64::from(self.k)).all(|i| {
            let bit = a.wrapping_add(i.wrapping_mul(b)) % m;
            self.bits
                .get((bit / 64) as usize)
                .is_some_and(|w| w & (1 << (bit % 64)) != 0)
        })
    }
    /// Memory used by the bit array in bytes.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// SplitMix64: a tiny deterministic PRNG (used by the corpus generator; no external crate so
/// corpora stay identical across dependency upgrades).
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hll_accuracy_within_bounds() {
        for &n in &[100u64, 1_000, 10_000, 100_000] {
            let mut h = Hll::new(10);
            for i in 0..n {
                h.insert(mix64(i.wrapping_mul(7919) + 13));
                // duplicates must not change the estimate
                h.insert(mix64(i.wrapping_mul(7919) + 13));
            }
            let est = h.estimate();
            let err = (est - n as f64).abs() / n as f64;
            // standard error 1.04/sqrt(1024) = 3.25%; allow ~3 sigma
            assert!(err < 0.10, "n={n} est={est} err={err}");
        }
    }

    #[test]
    fn small_hll_accuracy_within_bounds() {
        // Standard error 1.04/sqrt(128) = 9.2 %; the bound allows ~3 sigma, checked over
        // several independent hash streams per count so one lucky stream cannot pass it.
        for &n in &[10u64, 50, 200, 1_000, 10_000, 100_000] {
            let mut worst: f64 = 0.0;
            for stream in 0..8u64 {
                let mut h = SmallHll::default();
                assert!(h.is_empty());
                for i in 0..n {
                    let x = mix64(i.wrapping_mul(7919) + 13 + stream * 1_000_003);
                    h.insert(x);
                    h.insert(x); // duplicates must not change the estimate
                }
                assert!(!h.is_empty());
                let est = h.estimate();
                worst = worst.max((est - n as f64).abs() / n as f64);
            }
            assert!(worst < 0.3, "n={n} worst relative error {worst}");
        }
        // Small counts are nearly exact (linear counting).
        let mut h = SmallHll::default();
        for i in 0..5u64 {
            h.insert(mix64(i + 99));
        }
        assert!((h.estimate() - 5.0).abs() < 0.5, "{}", h.estimate());
        assert_eq!(SmallHll::default().estimate(), 0.0);
    }

    #[test]
    fn small_hll_is_64_bytes_and_round_trips() {
        assert_eq!(std::mem::size_of::<SmallHll>(), 64);
        let mut h = SmallHll::default();
        for i in 0..300u64 {
            h.insert(mix64(i));
        }
        let back: SmallHll = serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.estimate().to_bits(), h.estimate().to_bits());
    }

    #[test]
    fn hll_merge_equals_union() {
        let mut a = Hll::new(10);
        let mut b = Hll::new(10);
        let mut u = Hll::new(10);
        for i in 0..5000u64 {
            a.insert(mix64(i));
            u.insert(mix64(i));
        }
        for i in 2500..9000u64 {
            b.insert(mix64(i));
            u.insert(mix64(i));
        }
        a.merge(&b);
        assert!((a.estimate() - u.estimate()).abs() < 1e-6);
        let mut r = a.clone();
        r.repair();
        assert!((r.estimate() - a.estimate()).abs() < 1e-6);
    }

    #[test]
    fn simhash_near_duplicates_are_close() {
        let words = |s: &str| {
            s.split_whitespace()
                .map(|w| hash_bytes(w.as_bytes()))
                .collect::<Vec<_>>()
        };
        let a = words(
            "please explain in detail how photosynthesis converts light energy into chemical energy in plants and algae",
        );
        let b = words(
            "please explain in detail how photosynthesis converts light energy into chemical energy in green plants and algae",
        );
        let c = words(
            "write a python function that parses a csv file and returns the rows sorted by the second column",
        );
        let (ha, hb, hc) = (simhash_words(&a), simhash_words(&b), simhash_words(&c));
        assert!(
            hamming(ha, hb) <= 12,
            "near dup distance {}",
            hamming(ha, hb)
        );
        assert!(
            hamming(ha, hc) >= 16,
            "unrelated distance {}",
            hamming(ha, hc)
        );
    }

    #[test]
    fn bit_counter_counts_every_bit_exactly() {
        let mut r = SplitMix::new(3);
        for n in [
            0u32, 1, 2, 15, 16, 17, 31, 100, 224, 240, 254, 255, 256, 300, 1000, 5000,
        ] {
            let mut c = BitCounter::<8>::new();
            let mut small = BitCounter::<4>::new();
            let mut want = [0u32; 64];
            for _ in 0..n {
                // Sparse and dense features, so counts reach both ends.
                let f = match r.below(3) {
                    0 => r.next_u64(),
                    1 => r.next_u64() & r.next_u64() & r.next_u64(),
                    _ => r.next_u64() | r.next_u64(),
                };
                for (i, w) in want.iter_mut().enumerate() {
                    *w += ((f >> i) & 1) as u32;
                }
                c.add(f);
                small.add(f);
            }
            let majority = want
                .iter()
                .enumerate()
                .fold(0u64, |h, (i, &w)| if 2 * w > n { h | 1 << i } else { h });
            assert_eq!(c.clone().majority(), majority, "n={n}");
            assert_eq!(c.count(), n);
            assert_eq!(c.ones(), want, "n={n}");
            assert_eq!(small.clone().majority(), majority & 0xffff_ffff, "n={n}");
            assert_eq!(small.ones()[..32], want[..32], "n={n}");
        }
    }

    #[test]
    fn word_hash_and_sequence_slices() {
        // Words of up to 8 bytes: one finalizer over the zero-padded chunk.
        assert_eq!(
            hash_word(b"step"),
            mix64(WORD_SEED ^ u64::from_le_bytes(*b"step\0\0\0\0"))
        );
        assert_ne!(hash_word(b"abcdefgh"), hash_word(b"abcdefgh\0"));
        let words: Vec<u64> = (0..40u64).map(mix64).collect();
        let mut pre = vec![SEQ_SEED];
        for &w in &words {
            pre.push(seq_push(*pre.last().unwrap(), w));
        }
        for i in 0..words.len() {
            for j in i..=words.len() {
                assert_eq!(
                    seq_finish(seq_slice(pre[i], pre[j], j - i)),
                    hash_seq(&words[i..j]),
                    "{i}..{j}"
                );
            }
        }
    }

    #[test]
    fn bloom_has_no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::with_capacity(10_000, 0.01);
        for i in 0..10_000u64 {
            b.insert(mix64(i));
        }
        assert!((0..10_000u64).all(|i| b.contains(mix64(i))));
        let fp = (10_000..110_000u64)
            .filter(|&i| b.contains(mix64(i)))
            .count();
        assert!(fp < 2_000, "false positives {fp}");
    }
}
