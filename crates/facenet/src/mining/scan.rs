//! The semi-hard search of [`super::semi_hard_rows`] as one fused pass over each distance
//! row, for the epoch miner on the CPU (the notebook's per-epoch list over the whole set).
//!
//! The tensor version materializes a dozen rows×N temporaries per block (distances, bucket
//! keys, masks, scatter and index-reduce passes) and is memory-bound. Here libtorch computes
//! only the Gram block (the GEMM); each distance row is then formed in a small buffer and
//! read once per group of up to [`LANES`] positives. Each lane holds one anchor-positive
//! pair's running answers: the smallest random key among negatives in its semi-hard window
//! t < d < t + α, and the nearest negative with d > t. Lanes are plain arrays updated with
//! selects, which the compiler turns into SIMD compares and blends: no branches, no
//! scattered writes. Same random keys, same strict inequalities, same tie rules (first
//! column) and same fallbacks as the tensor version give the same triplets, bit for bit
//! (a test checks it).

use super::{Choice, Fallback, SemiHardSpec};

/// Pairs answered per pass over a row: a few SIMD registers wide.
const LANES: usize = 16;

/// What the scan of a block of rows produces, in the tensor version's order (row by row,
/// then by positive column).
#[derive(Default)]
pub(super) struct ScanOut {
    pub anchors: Vec<i64>,
    pub positives: Vec<i64>,
    pub negatives: Vec<i64>,
    pub d_ap: Vec<f32>,
    pub d_an: Vec<f32>,
    pub pairs: i64,
    pub no_semi_hard: i64,
}

impl ScanOut {
    pub fn append(&mut self, other: ScanOut) {
        self.anchors.extend(other.anchors);
        self.positives.extend(other.positives);
        self.negatives.extend(other.negatives);
        self.d_ap.extend(other.d_ap);
        self.d_an.extend(other.d_an);
        self.pairs += other.pairs;
        self.no_semi_hard += other.no_semi_hard;
    }
}

/// How a Gram entry x·y becomes the distance, exactly as `cross_distance` computes it.
#[derive(Clone, Copy)]
pub(super) enum RowDistance<'a> {
    /// ((x·y)·(−2) + ‖x‖²) + ‖y‖², clamped at 0; `norms` holds ‖e_j‖² for every row j.
    SquaredL2 { norms: &'a [f32] },
    /// 1 − x̂·ŷ (the Gram block is of the normalized rows).
    Cosine,
}

/// Everything the scan needs besides the Gram block.
pub(super) struct Block<'a> {
    /// Global index of the block's first row.
    pub start: usize,
    /// Identity of every embedding, as dense ids.
    pub labels: &'a [u32],
    /// Members of each identity in ascending index order, by dense id.
    pub members: &'a [Vec<u32>],
    pub spec: SemiHardSpec,
    pub distance: RowDistance<'a>,
    /// The random-key permutation (key = perm[j] ^ mask of the row, see `RandomKeys`).
    pub perm: &'a [u32],
    /// Its inverse: the column of a key is `perm_inverse[key ^ mask]`.
    pub perm_inverse: &'a [u32],
    /// One key mask per row of the block.
    pub masks: &'a [u32],
}

/// One lane pass's inputs: a distance row, the anchor's identity, and per lane the window
/// t < d < s of one anchor-positive pair (padding lanes have t = s = +∞).
#[derive(Clone, Copy)]
struct LanePass<'a> {
    row: &'a [f32],
    label: u32,
    labels: &'a [u32],
    perm: &'a [u32],
    perm_inverse: &'a [u32],
    mask: u32,
    t: &'a [f32; LANES],
    s: &'a [f32; LANES],
}

/// One pass over `row` for up to LANES pairs of anchor `a`: per lane, (arg of the smallest
/// key in the window, arg of the nearest farther negative); `u32::MAX` when none. The
/// prebuilt addon targets baseline x86-64 (SSE2, no blend instruction); where the CPU has
/// AVX2 the same code runs compiled for it, about three times fewer instructions.
fn scan_lanes(q: &LanePass) -> ([u32; LANES], [u32; LANES]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { scan_lanes_avx512(q) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { scan_lanes_avx2(q) };
        }
    }
    scan_lanes_portable(q)
}

/// Independent running minima per lane array: each is a loop-carried chain of compare →
/// and → masked move (several cycles), so a single chain leaves the vector units idle.
/// Stream q takes the q-th quarter of the row; the streams are merged at the end, keys by
/// their minimum (a row's keys are distinct), nearest distances by (distance, column).
const STREAMS: usize = 4;

/// A column excluded from a row (the anchor's own identity) reads as NaN: every ordered
/// comparison with it is false, so it updates nothing.
#[inline(always)]
fn masked_distance(d: f32, l: u32, label: u32) -> f32 {
    if l == label {
        f32::NAN
    } else {
        d
    }
}

/// [`scan_lanes_portable`] with AVX-512: each lane array is one 16-wide register, the lane
/// conditions are mask registers, and [`STREAMS`] interleaved streams hide the latency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scan_lanes_avx512(q: &LanePass) -> ([u32; LANES], [u32; LANES]) {
    let (row, label, labels, perm, perm_inverse, mask) =
        (q.row, q.label, q.labels, q.perm, q.perm_inverse, q.mask);
    let (t, s) = (q.t, q.s);
    use std::arch::x86_64::*;
    const _: () = assert!(LANES == 16);
    let n = row.len();
    let tv = _mm512_loadu_ps(t.as_ptr());
    let sv = _mm512_loadu_ps(s.as_ptr());
    let mut key = [_mm512_set1_epi32(i32::MAX); STREAMS];
    let mut near = [_mm512_set1_ps(f32::INFINITY); STREAMS];
    let mut argn = [_mm512_set1_epi32(-1); STREAMS];
    let quarter = n / STREAMS;
    let mut step = |q: usize, j: usize| {
        let d = masked_distance(*row.get_unchecked(j), *labels.get_unchecked(j), label);
        let dv = _mm512_set1_ps(d);
        let kv = _mm512_set1_epi32((*perm.get_unchecked(j) ^ mask) as i32);
        let far = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(tv, dv);
        let window = _mm512_mask_cmp_ps_mask::<_CMP_LT_OQ>(far, dv, sv)
            & _mm512_cmplt_epi32_mask(kv, key[q]);
        key[q] = _mm512_mask_mov_epi32(key[q], window, kv);
        let nearer = _mm512_mask_cmp_ps_mask::<_CMP_LT_OQ>(far, dv, near[q]);
        near[q] = _mm512_mask_mov_ps(near[q], nearer, dv);
        argn[q] = _mm512_mask_mov_epi32(argn[q], nearer, _mm512_set1_epi32(j as i32));
    };
    for i in 0..quarter {
        for q in 0..STREAMS {
            step(q, q * quarter + i);
        }
    }
    for j in STREAMS * quarter..n {
        step(STREAMS - 1, j);
    }
    let mut keys = [[0u32; LANES]; STREAMS];
    let mut nears = [[0f32; LANES]; STREAMS];
    let mut args = [[0u32; LANES]; STREAMS];
    for q in 0..STREAMS {
        _mm512_storeu_epi32(keys[q].as_mut_ptr().cast(), key[q]);
        _mm512_storeu_ps(nears[q].as_mut_ptr(), near[q]);
        _mm512_storeu_epi32(args[q].as_mut_ptr().cast(), argn[q]);
    }
    merge_streams(&keys, &nears, &args, perm_inverse, mask)
}

/// Merges per-stream lane answers (see [`STREAMS`]).
fn merge_streams<const S: usize>(
    keys: &[[u32; LANES]; S],
    nears: &[[f32; LANES]; S],
    args: &[[u32; LANES]; S],
    perm_inverse: &[u32],
    mask: u32,
) -> ([u32; LANES], [u32; LANES]) {
    let min_key: [u32; LANES] =
        std::array::from_fn(|i| keys.iter().map(|k| k[i]).min().unwrap_or(u32::MAX));
    let arg_near: [u32; LANES] = std::array::from_fn(|i| {
        (0..S)
            .filter(|&q| args[q][i] != u32::MAX)
            .min_by(|&a, &b| {
                nears[a][i]
                    .total_cmp(&nears[b][i])
                    .then(args[a][i].cmp(&args[b][i]))
            })
            .map_or(u32::MAX, |q| args[q][i])
    });
    (lane_columns(min_key, perm_inverse, mask), arg_near)
}

/// A row's keys are a bijection of its columns: the smallest key names its column.
fn lane_columns(min_key: [u32; LANES], perm_inverse: &[u32], mask: u32) -> [u32; LANES] {
    min_key.map(|k| {
        if k == i32::MAX as u32 {
            u32::MAX
        } else {
            perm_inverse[(k ^ mask) as usize]
        }
    })
}

/// [`scan_lanes_portable`] in AVX2 registers: each lane array is two 8-wide vectors kept in
/// registers (the auto-vectorized loop spills them through masked stores, which stall).
/// Keys are below 2^31, so signed integer compares order them as unsigned ones would.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_lanes_avx2(q: &LanePass) -> ([u32; LANES], [u32; LANES]) {
    let (row, label, labels, perm, perm_inverse, mask) =
        (q.row, q.label, q.labels, q.perm, q.perm_inverse, q.mask);
    let (t, s) = (q.t, q.s);
    use std::arch::x86_64::*;
    const _: () = assert!(LANES == 16);
    let (t0, t1) = (
        _mm256_loadu_ps(t.as_ptr()),
        _mm256_loadu_ps(t.as_ptr().add(8)),
    );
    let (s0, s1) = (
        _mm256_loadu_ps(s.as_ptr()),
        _mm256_loadu_ps(s.as_ptr().add(8)),
    );
    let none = _mm256_set1_epi32(-1);
    let (mut key0, mut key1) = (_mm256_set1_epi32(i32::MAX), _mm256_set1_epi32(i32::MAX));
    let (mut near0, mut near1) = (_mm256_set1_ps(f32::INFINITY), _mm256_set1_ps(f32::INFINITY));
    let (mut argn0, mut argn1) = (none, none);
    for (j, ((&d, &l), &p)) in row.iter().zip(labels).zip(perm).enumerate() {
        if l == label {
            continue;
        }
        let dv = _mm256_set1_ps(d);
        let kv = _mm256_set1_epi32((p ^ mask) as i32);
        let jv = _mm256_set1_epi32(j as i32);
        let far0 = _mm256_cmp_ps::<_CMP_LT_OQ>(t0, dv);
        let far1 = _mm256_cmp_ps::<_CMP_LT_OQ>(t1, dv);
        let w0 = _mm256_and_ps(
            _mm256_and_ps(far0, _mm256_cmp_ps::<_CMP_LT_OQ>(dv, s0)),
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(key0, kv)),
        );
        let w1 = _mm256_and_ps(
            _mm256_and_ps(far1, _mm256_cmp_ps::<_CMP_LT_OQ>(dv, s1)),
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(key1, kv)),
        );
        key0 = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(key0),
            _mm256_castsi256_ps(kv),
            w0,
        ));
        key1 = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(key1),
            _mm256_castsi256_ps(kv),
            w1,
        ));
        let n0 = _mm256_and_ps(far0, _mm256_cmp_ps::<_CMP_LT_OQ>(dv, near0));
        let n1 = _mm256_and_ps(far1, _mm256_cmp_ps::<_CMP_LT_OQ>(dv, near1));
        near0 = _mm256_blendv_ps(near0, dv, n0);
        near1 = _mm256_blendv_ps(near1, dv, n1);
        argn0 = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(argn0),
            _mm256_castsi256_ps(jv),
            n0,
        ));
        argn1 = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(argn1),
            _mm256_castsi256_ps(jv),
            n1,
        ));
    }
    let mut min_key = [0u32; LANES];
    let mut arg_near = [0u32; LANES];
    _mm256_storeu_si256(min_key.as_mut_ptr().cast(), key0);
    _mm256_storeu_si256(min_key.as_mut_ptr().add(8).cast(), key1);
    let arg_key = lane_columns(min_key, perm_inverse, mask);
    _mm256_storeu_si256(arg_near.as_mut_ptr().cast(), argn0);
    _mm256_storeu_si256(arg_near.as_mut_ptr().add(8).cast(), argn1);
    (arg_key, arg_near)
}

#[inline(always)]
fn scan_lanes_portable(q: &LanePass) -> ([u32; LANES], [u32; LANES]) {
    let (row, label, labels, perm, mask, t, s) =
        (q.row, q.label, q.labels, q.perm, q.mask, q.t, q.s);
    let mut min_key = [u32::MAX; LANES];
    let mut arg_key = [u32::MAX; LANES];
    let mut near_d = [f32::INFINITY; LANES];
    let mut arg_near = [u32::MAX; LANES];
    for (j, ((&d, &l), &p)) in row.iter().zip(labels).zip(perm).enumerate() {
        if l == label {
            continue;
        }
        let key = p ^ mask;
        let j = j as u32;
        for i in 0..LANES {
            let farther = d > t[i];
            let window = farther & (d < s[i]) & (key < min_key[i]);
            min_key[i] = if window { key } else { min_key[i] };
            arg_key[i] = if window { j } else { arg_key[i] };
            // Strictly nearer only: among equal distances the first column stays.
            let nearer = farther & (d < near_d[i]);
            near_d[i] = if nearer { d } else { near_d[i] };
            arg_near[i] = if nearer { j } else { arg_near[i] };
        }
    }
    (arg_key, arg_near)
}

/// The first farthest and the first nearest negative of the row (argmax/argmin's ties).
fn extremes(row: &[f32], label: u32, labels: &[u32]) -> Option<(u32, u32)> {
    let (mut far, mut near) = (None::<(f32, u32)>, None::<(f32, u32)>);
    for (j, (&d, &l)) in row.iter().zip(labels).enumerate() {
        if l == label {
            continue;
        }
        if far.is_none_or(|(f, _)| d > f) {
            far = Some((d, j as u32));
        }
        if near.is_none_or(|(h, _)| d < h) {
            near = Some((d, j as u32));
        }
    }
    Some((far?.1, near?.1))
}

/// Scans one distance row (anchor `a`) and appends its triplets.
fn scan_row(row: &[f32], a: usize, mask: u32, block: &Block, out: &mut ScanOut) {
    let label = block.labels[a];
    let positives: Vec<u32> = block.members[label as usize]
        .iter()
        .copied()
        .filter(|&p| p as usize != a)
        .collect();
    if positives.is_empty() {
        return;
    }
    let spec = block.spec;
    let margin = spec.margin as f32;
    // The row's extremes are one more pass, paid only by a row with a pair that falls back.
    let mut row_extremes: Option<Option<(u32, u32)>> = None;
    let mut extremes = || *row_extremes.get_or_insert_with(|| extremes(row, label, block.labels));
    for group in positives.chunks(LANES) {
        // Padding lanes have an empty window (nothing is > +∞).
        let mut t = [f32::INFINITY; LANES];
        let mut s = [f32::INFINITY; LANES];
        for (i, &p) in group.iter().enumerate() {
            t[i] = row[p as usize];
            s[i] = t[i] + margin;
        }
        let (semi, nearest) = scan_lanes(&LanePass {
            row,
            label,
            labels: block.labels,
            perm: block.perm,
            perm_inverse: block.perm_inverse,
            mask,
            t: &t,
            s: &s,
        });
        for (i, &p) in group.iter().enumerate() {
            out.pairs += 1;
            let found = |j: u32| (j != u32::MAX).then_some(j);
            let chosen = if let Some(random) = found(semi[i]) {
                Some(match spec.choice {
                    Choice::Random => random,
                    // The nearest farther negative is in the window whenever the window is not empty.
                    Choice::Hardest => nearest[i],
                })
            } else {
                out.no_semi_hard += 1;
                match spec.fallback {
                    Fallback::Skip => None,
                    Fallback::Hardest => extremes().map(|(_, hardest)| hardest),
                    Fallback::NearestFartherElseFarthest => {
                        found(nearest[i]).or_else(|| extremes().map(|(farthest, _)| farthest))
                    }
                }
            };
            if let Some(n) = chosen {
                out.anchors.push(a as i64);
                out.positives.push(p as i64);
                out.negatives.push(n as i64);
                out.d_ap.push(t[i]);
                out.d_an.push(row[n as usize]);
            }
        }
    }
}

/// Scans a block of `rows` Gram rows (row-major, `n` columns each) on `threads` threads;
/// the result is in row order whatever the thread count.
pub(super) fn scan_block(
    gram: &[f32],
    rows: usize,
    n: usize,
    block: &Block,
    threads: usize,
) -> ScanOut {
    let threads = threads.clamp(1, rows.max(1));
    let per = rows.div_ceil(threads);
    let run = |range: std::ops::Range<usize>| {
        let mut out = ScanOut::default();
        let mut row = vec![0f32; n];
        for r in range {
            let a = block.start + r;
            let xy = &gram[r * n..(r + 1) * n];
            match block.distance {
                RowDistance::SquaredL2 { norms } => {
                    let xx = norms[a];
                    for ((d, &g), &yy) in row.iter_mut().zip(xy).zip(norms) {
                        *d = (g * -2.0 + xx + yy).max(0.0);
                    }
                }
                RowDistance::Cosine => {
                    for (d, &g) in row.iter_mut().zip(xy) {
                        *d = -g + 1.0;
                    }
                }
            }
            scan_row(&row, a, block.masks[r], block, &mut out);
        }
        out
    };
    let parts: Vec<ScanOut> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let range = (i * per).min(rows)..((i + 1) * per).min(rows);
                let run = &run;
                scope.spawn(move || run(range))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread panicked"))
            .collect()
    });
    let mut out = ScanOut::default();
    for part in parts {
        out.append(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every compiled variant of the lane pass gives the portable loop's answer, ties and
    /// excluded columns included.
    #[test]
    fn lane_pass_variants_agree() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in [1usize, 5, 37, 1000, 4099] {
            // Distances on a coarse grid so that ties with the thresholds are common.
            let row: Vec<f32> = (0..n).map(|_| (next() % 40) as f32 * 0.05).collect();
            let labels: Vec<u32> = (0..n).map(|_| (next() % 7) as u32).collect();
            let mut perm: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                perm.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            let mut perm_inverse = vec![0u32; n];
            for (j, &k) in perm.iter().enumerate() {
                perm_inverse[k as usize] = j as u32;
            }
            let bits = 64 - (n as u64).leading_zeros();
            let mask = (next() & ((1 << bits) - 1)) as u32;
            let mut t = [f32::INFINITY; LANES];
            let mut s = [f32::INFINITY; LANES];
            for i in 0..11 {
                t[i] = (next() % 40) as f32 * 0.05;
                s[i] = t[i] + 0.2;
            }
            let pass = LanePass {
                row: &row,
                label: 3,
                labels: &labels,
                perm: &perm,
                perm_inverse: &perm_inverse,
                mask,
                t: &t,
                s: &s,
            };
            let expected = scan_lanes_portable(&pass);
            assert!(expected.0.iter().chain(&expected.1).any(|&j| j != u32::MAX) || n < 40);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    assert_eq!(unsafe { scan_lanes_avx2(&pass) }, expected, "avx2, n {n}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    assert_eq!(
                        unsafe { scan_lanes_avx512(&pass) },
                        expected,
                        "avx512, n {n}"
                    );
                }
            }
        }
    }
}
