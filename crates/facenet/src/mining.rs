//! Triplet mining: which (anchor, positive, negative) index triplets a batch trains on.
//!
//! Every miner runs under no-grad on the embeddings' device, with tensor ops only. The
//! semi-hard search avoids both the B×B×B mask of the usual formulation and a full sort
//! of each distance row: per anchor, the few thresholds d(a,p) and d(a,p) + α of its
//! positives are sorted, every negative is bucketed between them (a binary search in
//! 2·positives boundaries), and per-bucket counts, minima and random keys answer every
//! pair's question. That is O(N·log P) per anchor row, and memory O(rows × N).

mod scan;

use crate::distance::{check_embeddings, cross_distance, pairwise_distance, Distance};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// The paper's margin α.
pub const DEFAULT_MARGIN: f64 = 0.2;

/// Index triplets into the embeddings: 1-D Int64 tensors of equal length, on the
/// embeddings' device.
#[derive(Debug)]
pub struct Triplets {
    pub anchors: Tensor,
    pub positives: Tensor,
    pub negatives: Tensor,
}

impl Triplets {
    pub fn len(&self) -> i64 {
        self.anchors.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn empty(device: Device) -> Self {
        let e = || Tensor::zeros([0], (Kind::Int64, device));
        Triplets {
            anchors: e(),
            positives: e(),
            negatives: e(),
        }
    }
}

/// What one mining call saw and produced.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MiningStats {
    /// Ordered (anchor, positive) pairs of the same identity in the batch.
    pub anchor_positive_pairs: i64,
    pub triplets: i64,
    /// Fraction of the mined triplets with a positive hinge, d(a,p) − d(a,n) + α > 0.
    pub active_fraction: f64,
    /// Mean d(a,p) and d(a,n) over the mined triplets (0 when none).
    pub mean_ap: f64,
    pub mean_an: f64,
    /// Fraction of anchor-positive pairs with no negative in (d(a,p), d(a,p) + α).
    pub no_semi_hard_fraction: f64,
}

/// Which semi-hard negative to take when several qualify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    /// Uniformly at random (deterministic given the seed).
    #[default]
    Random,
    /// The one closest to the anchor.
    Hardest,
}

/// What to do with a pair that has no semi-hard negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// TensorFlow Addons' rule: the nearest negative farther than the positive, else the
    /// farthest negative.
    #[default]
    NearestFartherElseFarthest,
    /// The negative closest to the anchor.
    Hardest,
    /// Drop the pair.
    Skip,
}

/// A mining strategy. `margin` is α: it defines "semi-hard" and "positive loss", and it
/// is the margin the statistics' active fraction is measured with for every miner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Miner {
    /// Schroff et al. 2015: every anchor-positive pair with a semi-hard negative,
    /// d(a,p) < d(a,n) < d(a,p) + α.
    SemiHard {
        margin: f64,
        choice: Choice,
        fallback: Fallback,
    },
    /// Hermans et al. 2017: per anchor, the farthest positive and the nearest negative.
    BatchHard { margin: f64 },
    /// Every valid triplet with d(a,p) − d(a,n) + α > 0.
    BatchAll { margin: f64 },
    /// Every valid triplet with d(a,n) < d(a,p).
    Hard { margin: f64 },
    /// Every anchor-positive pair with a uniformly random negative.
    Random { margin: f64 },
}

impl Default for Miner {
    fn default() -> Self {
        Miner::SemiHard {
            margin: DEFAULT_MARGIN,
            choice: Choice::Random,
            fallback: Fallback::NearestFartherElseFarthest,
        }
    }
}

impl Miner {
    pub fn margin(&self) -> f64 {
        match *self {
            Miner::SemiHard { margin, .. }
            | Miner::BatchHard { margin }
            | Miner::BatchAll { margin }
            | Miner::Hard { margin }
            | Miner::Random { margin } => margin,
        }
    }
}

/// Rows of distance work per step, so that a chunk's temporaries stay near
/// `ELEMENT_BUDGET` elements.
const ELEMENT_BUDGET: i64 = 1 << 22;

fn check_margin(margin: f64) -> Result<()> {
    if margin.is_finite() && margin >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "margin must be a finite number ≥ 0, got {margin}"
        )))
    }
}

/// Checks shapes and returns the labels as Int64 on the embeddings' device.
fn check_inputs(embeddings: &Tensor, labels: &Tensor) -> Result<(i64, Tensor)> {
    let (n, _) = check_embeddings(embeddings)?;
    let ok_kind = matches!(
        labels.kind(),
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
    );
    if labels.size() != [n] || !ok_kind {
        return Err(Error::shape(format!(
            "labels must be a 1-D integer tensor with one label per embedding ({n}), got {:?} of {:?}",
            labels.size(),
            labels.kind()
        )));
    }
    Ok((
        n,
        labels
            .f_to_kind(Kind::Int64)?
            .f_to_device(embeddings.device())?,
    ))
}

/// Random keys that order each row's columns uniformly at random: a seeded permutation
/// of the columns, XOR-ed with a per-row mask. XOR with a constant is a bijection, so a
/// row's keys stay distinct, and since the permutation is uniform, the column holding the
/// smallest key among any fixed set is uniform over that set. One XOR pass per row.
struct RandomKeys {
    perm: Tensor,
    /// The same permutation on the host, for the CPU scan.
    perm_host: Vec<i64>,
    rng: SplitMix64,
    bits: u32,
}

impl RandomKeys {
    fn new(n: i64, seed: u64, device: Device) -> Result<Self> {
        let mut rng = SplitMix64::new(seed);
        let mut perm: Vec<i64> = (0..n).collect();
        for i in (1..perm.len()).rev() {
            perm.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let bits = 64 - (n.max(1) as u64).leading_zeros();
        Ok(RandomKeys {
            perm: Tensor::f_from_slice(&perm)?.f_to_device(device)?,
            perm_host: perm,
            rng,
            bits,
        })
    }

    /// The XOR masks of the next `rows` rows, in call order.
    fn next_masks(&mut self, rows: i64) -> Vec<i64> {
        let mask = (1u64 << self.bits) - 1;
        (0..rows)
            .map(|_| (self.rng.next_u64() & mask) as i64)
            .collect()
    }

    /// Keys for the next `rows` rows (rows×N), in call order.
    fn next(&mut self, rows: i64) -> Result<Tensor> {
        let masks = self.next_masks(rows);
        let masks = Tensor::f_from_slice(&masks)?.f_to_device(self.perm.device())?;
        Ok(self
            .perm
            .f_unsqueeze(0)?
            .f_bitwise_xor_tensor(&masks.f_unsqueeze(1)?)?)
    }
}

/// Semi-hard options shared by [`mine`] and [`mine_epoch_with`].
#[derive(Debug, Clone, Copy)]
struct SemiHardSpec {
    margin: f64,
    choice: Choice,
    fallback: Fallback,
}

/// Result of the semi-hard search over a block of anchor rows.
struct RowsResult {
    triplets: Triplets,
    d_ap: Tensor,
    d_an: Tensor,
    pairs: i64,
    no_semi_hard: i64,
}

fn scalar_i64(t: &Tensor) -> Result<i64> {
    Ok(t.f_int64_value(&[])?)
}

fn scalar_f64(t: &Tensor) -> Result<f64> {
    Ok(t.f_double_value(&[])?)
}

/// The semi-hard search for a block of anchors.
///
/// `dist`: rows×N distances from the anchors (global indices `rows`) to all N embeddings;
/// `same`: rows×N, true where the labels match (the anchor itself included). With
/// `keys == None` only the counts are computed (statistics for the other miners).
fn semi_hard_rows(
    dist: &Tensor,
    rows: &Tensor,
    same: &Tensor,
    spec: SemiHardSpec,
    keys: Option<&Tensor>,
) -> Result<RowsResult> {
    let device = dist.device();
    let (c, n) = (dist.size()[0], dist.size()[1]);
    let long = (Kind::Int64, device);
    let cols = Tensor::f_arange(n, long)?;
    let not_self = cols.f_unsqueeze(0)?.f_ne_tensor(&rows.f_unsqueeze(1)?)?;
    let pos = same.f_logical_and(&not_self)?;
    let neg = same.f_logical_not()?;
    let pair_idx = pos.f_nonzero()?; // P×2, row-major: (local row, column)
    let p = pair_idx.size()[0];
    let empty = || RowsResult {
        triplets: Triplets::empty(device),
        d_ap: Tensor::zeros([0], (dist.kind(), device)),
        d_an: Tensor::zeros([0], (dist.kind(), device)),
        pairs: 0,
        no_semi_hard: 0,
    };
    if p == 0 {
        return Ok(empty());
    }
    let pr = pair_idx.f_select(1, 0)?;
    let pc = pair_idx.f_select(1, 1)?;
    let t = dist.f_index(&[Some(&pr), Some(&pc)])?;
    let s = t.f_add_scalar(spec.margin)?;

    // Each pair's rank among its row's positives; nonzero() lists pairs row by row.
    let per_row = pos.f_sum_dim_intlist(1, false, Kind::Int64)?;
    let pmax = scalar_i64(&per_row.f_max()?)?;
    let first = per_row.f_cumsum(0, Kind::Int64)?.f_sub(&per_row)?;
    let rank = Tensor::f_arange(p, long)?.f_sub(&first.f_index_select(0, &pr)?)?;

    // Per row, 2·pmax boundaries: every t and t + α (padding +∞), sorted.
    let k = 2 * pmax;
    let bounds = Tensor::f_full([c, k], f64::INFINITY, (dist.kind(), device))?;
    let bounds = bounds
        .f_index_put(&[Some(&pr), Some(&rank)], &t, false)?
        .f_index_put(&[Some(&pr), Some(&rank.f_add_scalar(pmax)?)], &s, false)?;
    let (sorted, _) = bounds.f_sort(1, false)?;
    // key(x) = #{b < x} + #{b ≤ x}. It is monotone, and for a boundary b, x > b exactly
    // when key(x) > key(b), x < b exactly when key(x) < key(b): the strict inequalities of
    // the semi-hard window become integer comparisons, ties included.
    let key_of = |x: &Tensor| -> Result<Tensor> {
        let left = x.f_searchsorted(&sorted, false, false, "left", None::<Tensor>)?;
        let right = x.f_searchsorted(&sorted, false, true, "right", None::<Tensor>)?;
        Ok(left.f_add(&right)?)
    };
    let bound_keys = key_of(&bounds)?;
    let kt = bound_keys.f_index(&[Some(&pr), Some(&rank)])?;
    let ks = bound_keys.f_index(&[Some(&pr), Some(&rank.f_add_scalar(pmax)?)])?;
    // Buckets 0..=2k hold negatives; bucket 2k+1 collects everything else.
    let nb = 2 * k + 2;
    let dump = Tensor::f_full([c, n], nb - 1, long)?;
    let bucket = key_of(&dist.f_contiguous()?)?.f_where_self(&neg, &dump)?;

    let counts = Tensor::f_zeros([c, nb], long)?.f_scatter_add(
        1,
        &bucket,
        &Tensor::f_ones([c, n], long)?,
    )?;
    let cum = Tensor::f_cat(
        &[
            Tensor::f_zeros([c, 1], long)?,
            counts.f_cumsum(1, Kind::Int64)?,
        ],
        1,
    )?;
    let lo = kt.f_add_scalar(1)?;
    let in_window = cum
        .f_index(&[Some(&pr), Some(&ks)])?
        .f_sub(&cum.f_index(&[Some(&pr), Some(&lo)])?)?
        .f_clamp_min(0)?;
    let has_window = in_window.f_gt(0)?;
    let no_semi_hard = p - scalar_i64(&has_window.f_sum(Kind::Int64)?)?;
    let Some(keys) = keys else {
        return Ok(RowsResult {
            no_semi_hard,
            pairs: p,
            ..empty()
        });
    };

    let inf = f64::INFINITY;
    let row_ids = Tensor::f_arange(c, long)?
        .f_unsqueeze(1)?
        .f_expand([c, n], false)?;
    // The column holding each negative bucket's smallest `values` (lowest column among
    // ties), and that minimum (`init` and `n` where a bucket is empty). A stable sort by value, then a stable
    // sort by bucket, leaves every bucket's run in (value, column) order, so its first entry
    // is the answer; those entries have distinct (row, bucket) indices and are written with a
    // plain index_put. (index_reduce's "amin" would do it in one op, but libtorch prints an
    // "index_reduce() is in beta" warning on every run that uses it.)
    let bucket_argmin = |values: &Tensor, init: Tensor| -> Result<(Tensor, Tensor)> {
        let (_, by_value) = values.f_sort_stable(true, 1, false)?;
        let (run_bucket, by_bucket) = bucket
            .f_gather(1, &by_value, false)?
            .f_sort_stable(true, 1, false)?;
        let column = by_value.f_gather(1, &by_bucket, false)?;
        let starts_run = Tensor::f_cat(
            &[
                Tensor::f_ones([c, 1], (Kind::Bool, device))?,
                run_bucket
                    .f_narrow(1, 1, n - 1)?
                    .f_ne_tensor(&run_bucket.f_narrow(1, 0, n - 1)?)?,
            ],
            1,
        )?
        // The last bucket collects the non-negatives; it stays at `init` and `n`.
        .f_logical_and(&run_bucket.f_lt(nb - 1)?)?;
        let at_row = row_ids.f_masked_select(&starts_run)?;
        let at_bucket = run_bucket.f_masked_select(&starts_run)?;
        let first_column = column.f_masked_select(&starts_run)?;
        let first_value = values
            .f_gather(1, &column, false)?
            .f_masked_select(&starts_run)?;
        let mins = init.f_index_put(&[Some(&at_row), Some(&at_bucket)], &first_value, false)?;
        let arg = Tensor::f_full([c, nb], n, long)?.f_index_put(
            &[Some(&at_row), Some(&at_bucket)],
            &first_column,
            false,
        )?;
        Ok((mins, arg))
    };

    let neg_or =
        |fill: f64| -> Result<Tensor> { Ok(dist.f_masked_fill(&neg.f_logical_not()?, fill)?) };
    let has_negatives = neg.f_any_dim(1, false)?.f_index_select(0, &pr)?;

    // Nearest negative strictly farther than the positive: the first non-empty bucket
    // after key(t), by a suffix minimum over the buckets.
    let needs_nearest =
        spec.choice == Choice::Hardest || spec.fallback == Fallback::NearestFartherElseFarthest;
    let nearest = if needs_nearest {
        let (mins, arg) = bucket_argmin(
            &neg_or(inf)?,
            Tensor::f_full([c, nb], inf, (dist.kind(), device))?,
        )?;
        let real = mins.f_narrow(1, 0, nb - 1)?.f_flip([1])?;
        let (suffix, at) = real.f_cummin(1)?;
        let suffix = suffix.f_flip([1])?;
        let at = at.f_flip([1])?.f_neg()?.f_add_scalar(nb - 2)?;
        let value = suffix.f_index(&[Some(&pr), Some(&lo)])?;
        let which = at.f_index(&[Some(&pr), Some(&lo)])?;
        let column = arg.f_index(&[Some(&pr), Some(&which)])?;
        Some((value.f_lt(inf)?, column))
    } else {
        None
    };

    let semi = match spec.choice {
        Choice::Hardest => nearest.as_ref().map(|(_, col)| col.shallow_clone()),
        Choice::Random => {
            let big = i64::MAX;
            let masked = keys.f_masked_fill(&neg.f_logical_not()?, big)?;
            let (kmin, karg) = bucket_argmin(&masked, Tensor::f_full([c, nb], big, long)?)?;
            // Per pair, the bucket with the smallest key in [kt+1, ks): a range minimum,
            // done in slices so that pairs × buckets stays within budget.
            let slice = (ELEMENT_BUDGET / nb).max(1);
            let bucket_ids = Tensor::f_arange(nb, long)?.f_unsqueeze(0)?;
            let mut parts = Vec::new();
            let mut start = 0;
            while start < p {
                let len = slice.min(p - start);
                let r = pr.f_narrow(0, start, len)?;
                let l = lo.f_narrow(0, start, len)?.f_unsqueeze(1)?;
                let h = ks.f_narrow(0, start, len)?.f_unsqueeze(1)?;
                let inside = bucket_ids
                    .f_ge_tensor(&l)?
                    .f_logical_and(&bucket_ids.f_lt_tensor(&h)?)?;
                let row_keys = kmin
                    .f_index_select(0, &r)?
                    .f_masked_fill(&inside.f_logical_not()?, big)?;
                let best = row_keys.f_argmin(1, false)?;
                parts.push(karg.f_index(&[Some(&r), Some(&best)])?);
                start += len;
            }
            Some(Tensor::f_cat(&parts, 0)?)
        }
    };
    let semi = semi.ok_or_else(|| Error::invalid("internal: no semi-hard choice"))?;

    let none = Tensor::f_full([p], n, long)?;
    let fallback = match spec.fallback {
        Fallback::Skip => none.shallow_clone(),
        Fallback::Hardest => {
            let col = neg_or(inf)?.f_argmin(1, false)?.f_index_select(0, &pr)?;
            col.f_where_self(&has_negatives, &none)?
        }
        Fallback::NearestFartherElseFarthest => {
            let farthest = neg_or(-inf)?.f_argmax(1, false)?.f_index_select(0, &pr)?;
            let farthest = farthest.f_where_self(&has_negatives, &none)?;
            let (found, col) = nearest.as_ref().ok_or_else(|| Error::invalid("internal"))?;
            col.f_where_self(found, &farthest)?
        }
    };
    let chosen = semi.f_where_self(&has_window, &fallback)?;
    let keep = chosen.f_lt(n)?.f_nonzero()?.f_squeeze_dim(1)?;
    let anchors = rows.f_index_select(0, &pr.f_index_select(0, &keep)?)?;
    let positives = pc.f_index_select(0, &keep)?;
    let negatives = chosen.f_index_select(0, &keep)?;
    let local = pr.f_index_select(0, &keep)?;
    Ok(RowsResult {
        d_ap: t.f_index_select(0, &keep)?,
        d_an: dist.f_index(&[Some(&local), Some(&negatives)])?,
        triplets: Triplets {
            anchors,
            positives,
            negatives,
        },
        pairs: p,
        no_semi_hard,
    })
}

fn stats_of(
    d_ap: &Tensor,
    d_an: &Tensor,
    margin: f64,
    pairs: i64,
    no_semi_hard: i64,
) -> Result<MiningStats> {
    let triplets = d_ap.size()[0];
    let (active, mean_ap, mean_an) = if triplets == 0 {
        (0.0, 0.0, 0.0)
    } else {
        let active = d_ap.f_sub(d_an)?.f_add_scalar(margin)?.f_gt(0.0)?;
        (
            scalar_f64(&active.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?)?,
            scalar_f64(&d_ap.f_mean(Kind::Double)?)?,
            scalar_f64(&d_an.f_mean(Kind::Double)?)?,
        )
    };
    Ok(MiningStats {
        anchor_positive_pairs: pairs,
        triplets,
        active_fraction: active,
        mean_ap,
        mean_an,
        no_semi_hard_fraction: if pairs == 0 {
            0.0
        } else {
            no_semi_hard as f64 / pairs as f64
        },
    })
}

/// Runs `semi_hard_rows` over blocks of anchors, `dist_rows(start, len)` giving each
/// block's distance rows.
fn semi_hard_blocks(
    n: i64,
    labels: &Tensor,
    spec: SemiHardSpec,
    rows_per_block: i64,
    seed: u64,
    counts_only: bool,
    mut dist_rows: impl FnMut(i64, i64) -> Result<Tensor>,
) -> Result<(Triplets, Tensor, Tensor, i64, i64)> {
    let device = labels.device();
    let mut keys = if counts_only {
        None
    } else {
        Some(RandomKeys::new(n, seed, device)?)
    };
    let (mut a, mut p, mut ng, mut dap, mut dan) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut pairs, mut none) = (0, 0);
    let mut start = 0;
    while start < n {
        let len = rows_per_block.min(n - start);
        let rows = Tensor::f_arange_start(start, start + len, (Kind::Int64, device))?;
        let same = labels
            .f_narrow(0, start, len)?
            .f_unsqueeze(1)?
            .f_eq_tensor(&labels.f_unsqueeze(0)?)?;
        let dist = dist_rows(start, len)?;
        let block_keys = match keys.as_mut() {
            Some(k) => Some(k.next(len)?),
            None => None,
        };
        let out = semi_hard_rows(&dist, &rows, &same, spec, block_keys.as_ref())?;
        pairs += out.pairs;
        none += out.no_semi_hard;
        a.push(out.triplets.anchors);
        p.push(out.triplets.positives);
        ng.push(out.triplets.negatives);
        dap.push(out.d_ap);
        dan.push(out.d_an);
        start += len;
    }
    if a.is_empty() {
        return Ok((
            Triplets::empty(device),
            Tensor::f_zeros([0], (Kind::Float, device))?,
            Tensor::f_zeros([0], (Kind::Float, device))?,
            0,
            0,
        ));
    }
    Ok((
        Triplets {
            anchors: Tensor::f_cat(&a, 0)?,
            positives: Tensor::f_cat(&p, 0)?,
            negatives: Tensor::f_cat(&ng, 0)?,
        },
        Tensor::f_cat(&dap, 0)?,
        Tensor::f_cat(&dan, 0)?,
        pairs,
        none,
    ))
}

/// Mines one batch. `labels` holds one integer identity per embedding. Runs without
/// gradients; randomness (random choices, the random miner) depends only on `seed`.
pub fn mine(
    embeddings: &Tensor,
    labels: &Tensor,
    miner: &Miner,
    distance: Distance,
    seed: u64,
) -> Result<(Triplets, MiningStats)> {
    let _guard = tch::no_grad_guard();
    check_margin(miner.margin())?;
    let (n, labels) = check_inputs(embeddings, &labels.shallow_clone())?;
    if n == 0 {
        return Ok((Triplets::empty(embeddings.device()), MiningStats::default()));
    }
    let dist = pairwise_distance(&embeddings.f_detach()?, distance)?;
    let rows_per_block = (ELEMENT_BUDGET / n.max(1)).max(1);
    let block = |start: i64, len: i64| Ok(dist.f_narrow(0, start, len)?);
    let margin = miner.margin();
    let spec = |choice, fallback| SemiHardSpec {
        margin,
        choice,
        fallback,
    };
    if let Miner::SemiHard {
        choice, fallback, ..
    } = *miner
    {
        let (triplets, d_ap, d_an, pairs, none) = semi_hard_blocks(
            n,
            &labels,
            spec(choice, fallback),
            rows_per_block,
            seed,
            false,
            block,
        )?;
        let stats = stats_of(&d_ap, &d_an, margin, pairs, none)?;
        return Ok((triplets, stats));
    }
    let (_, _, _, pairs, none) = semi_hard_blocks(
        n,
        &labels,
        spec(Choice::Hardest, Fallback::Skip),
        rows_per_block,
        seed,
        true,
        block,
    )?;
    let triplets = match *miner {
        Miner::BatchHard { .. } => batch_hard(&dist, &labels)?,
        Miner::BatchAll { margin } => all_triplets(&dist, &labels, |ap, an| {
            ap.f_sub(an)?.f_add_scalar(margin)?.f_gt(0.0)
        })?,
        Miner::Hard { .. } => all_triplets(&dist, &labels, |ap, an| an.f_lt_tensor(ap))?,
        Miner::Random { .. } => random_negatives(&dist, &labels, seed)?,
        Miner::SemiHard { .. } => unreachable!("handled above"),
    };
    let d_ap = dist.f_index(&[Some(&triplets.anchors), Some(&triplets.positives)])?;
    let d_an = dist.f_index(&[Some(&triplets.anchors), Some(&triplets.negatives)])?;
    let stats = stats_of(&d_ap, &d_an, margin, pairs, none)?;
    Ok((triplets, stats))
}

fn masks(labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = labels.size()[0];
    let same = labels
        .f_unsqueeze(1)?
        .f_eq_tensor(&labels.f_unsqueeze(0)?)?;
    let eye = Tensor::f_eye(n, (Kind::Bool, labels.device()))?;
    let pos = same.f_logical_and(&eye.f_logical_not()?)?;
    Ok((pos, same.f_logical_not()?))
}

fn batch_hard(dist: &Tensor, labels: &Tensor) -> Result<Triplets> {
    let (pos, neg) = masks(labels)?;
    let hardest_pos = dist
        .f_masked_fill(&pos.f_logical_not()?, f64::NEG_INFINITY)?
        .f_argmax(1, false)?;
    let hardest_neg = dist
        .f_masked_fill(&neg.f_logical_not()?, f64::INFINITY)?
        .f_argmin(1, false)?;
    let ok = pos
        .f_any_dim(1, false)?
        .f_logical_and(&neg.f_any_dim(1, false)?)?;
    let anchors = ok.f_nonzero()?.f_squeeze_dim(1)?;
    Ok(Triplets {
        positives: hardest_pos.f_index_select(0, &anchors)?,
        negatives: hardest_neg.f_index_select(0, &anchors)?,
        anchors,
    })
}

/// Every valid triplet satisfying `keep(d_ap, d_an)`, in blocks of anchors so that the
/// rows×N×N mask stays within budget.
fn all_triplets(
    dist: &Tensor,
    labels: &Tensor,
    keep: impl Fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>,
) -> Result<Triplets> {
    let n = dist.size()[0];
    let (pos, neg) = masks(labels)?;
    let block = (ELEMENT_BUDGET * 4 / (n * n).max(1)).max(1);
    let (mut a, mut p, mut ng) = (vec![], vec![], vec![]);
    let mut start = 0;
    while start < n {
        let len = block.min(n - start);
        let d = dist.f_narrow(0, start, len)?;
        let ap = d.f_unsqueeze(2)?;
        let an = d.f_unsqueeze(1)?;
        let valid = pos
            .f_narrow(0, start, len)?
            .f_unsqueeze(2)?
            .f_logical_and(&neg.f_narrow(0, start, len)?.f_unsqueeze(1)?)?
            .f_logical_and(&keep(&ap, &an)?)?;
        let idx = valid.f_nonzero()?;
        a.push(idx.f_select(1, 0)?.f_add_scalar(start)?);
        p.push(idx.f_select(1, 1)?);
        ng.push(idx.f_select(1, 2)?);
        start += len;
    }
    if a.is_empty() {
        return Ok(Triplets::empty(dist.device()));
    }
    Ok(Triplets {
        anchors: Tensor::f_cat(&a, 0)?,
        positives: Tensor::f_cat(&p, 0)?,
        negatives: Tensor::f_cat(&ng, 0)?,
    })
}

/// Every anchor-positive pair with a negative drawn uniformly from the anchor's
/// negatives: the r-th negative of the row, found by a binary search in its running count.
fn random_negatives(dist: &Tensor, labels: &Tensor, seed: u64) -> Result<Triplets> {
    let device = dist.device();
    let (pos, neg) = masks(labels)?;
    let num_neg = neg.f_sum_dim_intlist(1, false, Kind::Int64)?;
    let ok = pos.f_logical_and(&num_neg.f_gt(0)?.f_unsqueeze(1)?)?;
    let idx = ok.f_nonzero()?;
    let p = idx.size()[0];
    if p == 0 {
        return Ok(Triplets::empty(device));
    }
    let (a, pc) = (idx.f_select(1, 0)?, idx.f_select(1, 1)?);
    let mut rng = SplitMix64::new(seed);
    let u: Vec<f64> = (0..p).map(|_| rng.next_f64()).collect();
    let count = num_neg.f_index_select(0, &a)?;
    let r = Tensor::f_from_slice(&u)?
        .f_to_device(device)?
        .f_mul(&count.f_to_kind(Kind::Double)?)?
        .f_floor()?
        .f_to_kind(Kind::Int64)?
        .f_minimum(&count.f_sub_scalar(1)?)?;
    let running = neg.f_cumsum(1, Kind::Int64)?;
    let query = Tensor::f_zeros_like(&running)?.f_index_put(
        &[Some(&a), Some(&pc)],
        &r.f_add_scalar(1)?,
        false,
    )?;
    let found = query.f_searchsorted(&running, false, false, "left", None::<Tensor>)?;
    Ok(Triplets {
        negatives: found.f_index(&[Some(&a), Some(&pc)])?,
        anchors: a,
        positives: pc,
    })
}

/// The notebook's per-epoch triplet list with the defaults: every anchor-positive pair of
/// the whole set, each with a random semi-hard negative (else the nearest farther, else
/// the farthest), squared L2. See [`mine_epoch_with`].
pub fn mine_epoch(
    embeddings: &Tensor,
    labels: &Tensor,
    margin: f64,
    chunk: i64,
    seed: u64,
) -> Result<(Triplets, MiningStats)> {
    mine_epoch_with(
        embeddings,
        labels,
        &Miner::SemiHard {
            margin,
            choice: Choice::Random,
            fallback: Fallback::NearestFartherElseFarthest,
        },
        Distance::SquaredL2,
        chunk,
        seed,
    )
}

/// Semi-hard mining over a whole set of N embeddings, `chunk` anchors at a time: memory
/// O(chunk × N), never N×N. Only `Miner::SemiHard` is accepted.
pub fn mine_epoch_with(
    embeddings: &Tensor,
    labels: &Tensor,
    miner: &Miner,
    distance: Distance,
    chunk: i64,
    seed: u64,
) -> Result<(Triplets, MiningStats)> {
    let _guard = tch::no_grad_guard();
    let Miner::SemiHard {
        margin,
        choice,
        fallback,
    } = *miner
    else {
        return Err(Error::invalid(
            "epoch mining supports only the semi-hard miner",
        ));
    };
    check_margin(margin)?;
    if chunk < 1 {
        return Err(Error::invalid(format!(
            "chunk must be at least 1, got {chunk}"
        )));
    }
    let (n, labels) = check_inputs(embeddings, labels)?;
    let e = embeddings.f_detach()?;
    let spec = SemiHardSpec {
        margin,
        choice,
        fallback,
    };
    if e.device() == Device::Cpu && e.kind() == Kind::Float {
        return mine_epoch_scan(&e, &labels, spec, distance, chunk, seed);
    }
    let (triplets, d_ap, d_an, pairs, none) =
        semi_hard_blocks(n, &labels, spec, chunk, seed, false, |start, len| {
            let d = cross_distance(&e.f_narrow(0, start, len)?, &e, distance)?;
            // The exact zero self-distance, as in pairwise_distance.
            let diag = d.f_narrow(1, start, len)?;
            let _ = diag.f_diagonal(0, 0, 1)?.f_fill_(0.0)?;
            Ok(d)
        })?;
    let stats = stats_of(&d_ap, &d_an, margin, pairs, none)?;
    Ok((triplets, stats))
}

/// The epoch miner on the CPU: Gram blocks from libtorch (the GEMM), then the fused row
/// scan of [`scan`] on libtorch's thread count. Same triplets as the tensor path.
fn mine_epoch_scan(
    e: &Tensor,
    labels: &Tensor,
    spec: SemiHardSpec,
    distance: Distance,
    chunk: i64,
    seed: u64,
) -> Result<(Triplets, MiningStats)> {
    let n = e.size()[0];
    // Dense identity ids, so that members are a Vec and labels are 4 bytes a row.
    let mut ids: HashMap<i64, u32> = HashMap::new();
    let mut members: Vec<Vec<u32>> = Vec::new();
    let mut dense = Vec::with_capacity(n as usize);
    for (i, label) in Vec::<i64>::try_from(&labels.f_to_device(Device::Cpu)?)?
        .into_iter()
        .enumerate()
    {
        let id = *ids.entry(label).or_insert_with(|| {
            members.push(Vec::new());
            (members.len() - 1) as u32
        });
        members[id as usize].push(i as u32);
        dense.push(id);
    }
    let mut keys = RandomKeys::new(n, seed, Device::Cpu)?;
    // Keys are below 2^bits ≤ 2n, which fits u32 for any N a CPU can mine.
    let perm: Vec<u32> = keys.perm_host.iter().map(|&k| k as u32).collect();
    let mut perm_inverse = vec![0u32; perm.len()];
    for (j, &k) in perm.iter().enumerate() {
        perm_inverse[k as usize] = j as u32;
    }
    let (rows_of, norms) = match distance {
        Distance::SquaredL2 => {
            let norms = e.f_square()?.f_sum_dim_intlist(1, false, None::<Kind>)?;
            (e.shallow_clone(), Vec::<f32>::try_from(&norms)?)
        }
        Distance::Cosine => (crate::distance::normalize_rows(e)?, Vec::new()),
    };
    let row_distance = match distance {
        Distance::SquaredL2 => scan::RowDistance::SquaredL2 { norms: &norms },
        Distance::Cosine => scan::RowDistance::Cosine,
    };
    let all_t = rows_of.f_tr()?;
    // A pipeline: this thread computes the Gram block of chunk i + 1 while the scanner
    // threads scan chunk i. Giving libtorch half the threads for the GEMM also stops its
    // idle OpenMP workers from spinning on the cores the scan needs.
    let threads = tch::get_num_threads().max(1);
    let gemm_threads = (threads / 2).max(1);
    let scan_threads = (threads - gemm_threads).max(1) as usize;
    tch::set_num_threads(gemm_threads);
    let result = std::thread::scope(|scope| -> Result<scan::ScanOut> {
        // One block in flight besides the one being computed: memory stays O(chunk × N).
        let (send, receive) = std::sync::mpsc::sync_channel::<(i64, Tensor, Vec<u32>)>(1);
        let (dense, members, perm, perm_inverse) = (&dense, &members, &perm, &perm_inverse);
        let scanner = scope.spawn(move || {
            let mut out = scan::ScanOut::default();
            for (start, gram, masks) in receive {
                let rows = masks.len();
                // SAFETY: `gram` is a contiguous CPU float tensor of rows × n elements, owned
                // here and unchanged while the slice is used.
                let slice = unsafe {
                    std::slice::from_raw_parts(gram.data_ptr() as *const f32, rows * n as usize)
                };
                let block = scan::Block {
                    start: start as usize,
                    labels: dense,
                    members,
                    spec,
                    distance: row_distance,
                    perm,
                    perm_inverse,
                    masks: &masks,
                };
                out.append(scan::scan_block(
                    slice,
                    rows,
                    n as usize,
                    &block,
                    scan_threads,
                ));
            }
            out
        });
        let mut start = 0;
        let mut produced = Ok(());
        while start < n {
            let len = chunk.min(n - start);
            let gram = match rows_of
                .f_narrow(0, start, len)
                .and_then(|rows| rows.f_mm(&all_t))
                .and_then(|g| g.f_contiguous())
            {
                Ok(gram) => gram,
                Err(error) => {
                    produced = Err(error.into());
                    break;
                }
            };
            let masks: Vec<u32> = keys.next_masks(len).into_iter().map(|m| m as u32).collect();
            if send.send((start, gram, masks)).is_err() {
                break;
            }
            start += len;
        }
        drop(send);
        let out = scanner
            .join()
            .map_err(|_| Error::invalid("internal: the epoch scan thread panicked"))?;
        produced.map(|()| out)
    });
    tch::set_num_threads(threads);
    let out = result?;
    let triplets = Triplets {
        anchors: Tensor::f_from_slice(&out.anchors)?,
        positives: Tensor::f_from_slice(&out.positives)?,
        negatives: Tensor::f_from_slice(&out.negatives)?,
    };
    let d_ap = Tensor::f_from_slice(&out.d_ap)?;
    let d_an = Tensor::f_from_slice(&out.d_an)?;
    let stats = stats_of(&d_ap, &d_an, spec.margin, out.pairs, out.no_semi_hard)?;
    Ok((triplets, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const CPU: Device = Device::Cpu;

    fn random_batch(n: usize, d: usize, ids: u64, seed: u64) -> (Tensor, Tensor, Vec<i64>) {
        let mut rng = SplitMix64::new(seed);
        let values: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let labels: Vec<i64> = (0..n).map(|_| rng.below(ids) as i64).collect();
        let e = Tensor::from_slice(&values).view([n as i64, d as i64]);
        let e = crate::distance::normalize_rows(&e).unwrap();
        (e, Tensor::from_slice(&labels), labels)
    }

    /// Points on a line at integer positions, so squared distances are exact integers and
    /// ties with d(a,p) and d(a,p) + α (α = 1) are everywhere.
    fn lattice_batch(n: usize, ids: u64, seed: u64) -> (Tensor, Tensor, Vec<i64>) {
        let mut rng = SplitMix64::new(seed);
        let values: Vec<f32> = (0..n).flat_map(|_| [rng.below(5) as f32, 0.0]).collect();
        let labels: Vec<i64> = (0..n).map(|_| rng.below(ids) as i64).collect();
        let e = Tensor::from_slice(&values).view([n as i64, 2]);
        (e, Tensor::from_slice(&labels), labels)
    }

    fn matrix(dist: &Tensor) -> Vec<Vec<f32>> {
        let n = dist.size()[0];
        (0..n)
            .map(|i| Vec::<f32>::try_from(dist.get(i)).unwrap())
            .collect()
    }

    fn triples(t: &Triplets) -> Vec<(i64, i64, i64)> {
        let a = Vec::<i64>::try_from(&t.anchors).unwrap();
        let p = Vec::<i64>::try_from(&t.positives).unwrap();
        let n = Vec::<i64>::try_from(&t.negatives).unwrap();
        assert_eq!((a.len(), p.len()), (n.len(), n.len()));
        a.into_iter()
            .zip(p)
            .zip(n)
            .map(|((a, p), n)| (a, p, n))
            .collect()
    }

    fn pairs(labels: &[i64]) -> Vec<(usize, usize)> {
        let n = labels.len();
        let mut out = vec![];
        for a in 0..n {
            for p in 0..n {
                if a != p && labels[a] == labels[p] {
                    out.push((a, p));
                }
            }
        }
        out
    }

    fn negatives(labels: &[i64], a: usize) -> Vec<usize> {
        (0..labels.len())
            .filter(|&n| labels[n] != labels[a])
            .collect()
    }

    /// Plain-loop reference of one semi-hard pair: (semi-hard distances, the expected
    /// fallback distance or None when the pair is dropped).
    fn reference_pair(
        d: &[Vec<f32>],
        labels: &[i64],
        a: usize,
        p: usize,
        margin: f64,
        fallback: Fallback,
    ) -> (Vec<f32>, Option<f32>) {
        let t = d[a][p];
        let s = t + margin as f32;
        let negs = negatives(labels, a);
        let semi: Vec<f32> = negs
            .iter()
            .map(|&n| d[a][n])
            .filter(|&x| t < x && x < s)
            .collect();
        let farther = negs
            .iter()
            .map(|&n| d[a][n])
            .filter(|&x| x > t)
            .fold(f32::INFINITY, f32::min);
        let nearest = negs.iter().map(|&n| d[a][n]).fold(f32::INFINITY, f32::min);
        let farthest = negs
            .iter()
            .map(|&n| d[a][n])
            .fold(f32::NEG_INFINITY, f32::max);
        let fb = match fallback {
            _ if negs.is_empty() => None,
            Fallback::Skip => None,
            Fallback::Hardest => Some(nearest),
            Fallback::NearestFartherElseFarthest => Some(if farther.is_finite() {
                farther
            } else {
                farthest
            }),
        };
        (semi, fb)
    }

    fn check_semi_hard(e: &Tensor, labels_t: &Tensor, labels: &[i64], margin: f64, seed: u64) {
        let dist = pairwise_distance(e, Distance::SquaredL2).unwrap();
        let d = matrix(&dist);
        for choice in [Choice::Random, Choice::Hardest] {
            for fallback in [
                Fallback::NearestFartherElseFarthest,
                Fallback::Hardest,
                Fallback::Skip,
            ] {
                let miner = Miner::SemiHard {
                    margin,
                    choice,
                    fallback,
                };
                let (t, stats) = mine(e, labels_t, &miner, Distance::SquaredL2, seed).unwrap();
                let got: BTreeMap<(i64, i64), i64> = triples(&t)
                    .into_iter()
                    .map(|(a, p, n)| ((a, p), n))
                    .collect();
                assert_eq!(got.len() as i64, t.len(), "one triplet per pair");
                let all = pairs(labels);
                let mut no_semi = 0;
                let mut kept = 0;
                for &(a, p) in &all {
                    let (semi, fb) = reference_pair(&d, labels, a, p, margin, fallback);
                    no_semi += semi.is_empty() as i64;
                    let chosen = got.get(&(a as i64, p as i64));
                    let ctx = format!("{choice:?} {fallback:?} pair ({a},{p})");
                    if semi.is_empty() && fb.is_none() {
                        assert!(chosen.is_none(), "{ctx}: should be dropped");
                        continue;
                    }
                    kept += 1;
                    let n = *chosen.unwrap_or_else(|| panic!("{ctx}: missing")) as usize;
                    assert_ne!(labels[n], labels[a], "{ctx}: not a negative");
                    let x = d[a][n];
                    if semi.is_empty() {
                        assert_eq!(Some(x), fb, "{ctx}: fallback");
                    } else if choice == Choice::Hardest {
                        let best = semi.iter().copied().fold(f32::INFINITY, f32::min);
                        assert_eq!(x, best, "{ctx}: hardest semi-hard");
                    } else {
                        assert!(semi.contains(&x), "{ctx}: {x} is not semi-hard");
                    }
                }
                assert_eq!(t.len(), kept);
                assert_eq!(stats.triplets, kept);
                assert_eq!(stats.anchor_positive_pairs, all.len() as i64);
                let frac = if all.is_empty() {
                    0.0
                } else {
                    no_semi as f64 / all.len() as f64
                };
                assert!((stats.no_semi_hard_fraction - frac).abs() < 1e-12);
                check_stats(&d, &triples(&t), margin, &stats);
            }
        }
    }

    fn check_stats(d: &[Vec<f32>], t: &[(i64, i64, i64)], margin: f64, stats: &MiningStats) {
        if t.is_empty() {
            assert_eq!(
                (stats.mean_ap, stats.mean_an, stats.active_fraction),
                (0.0, 0.0, 0.0)
            );
            return;
        }
        let k = t.len() as f64;
        let ap = |&(a, p, _): &(i64, i64, i64)| d[a as usize][p as usize] as f64;
        let an = |&(a, _, n): &(i64, i64, i64)| d[a as usize][n as usize] as f64;
        let mean_ap = t.iter().map(ap).sum::<f64>() / k;
        let mean_an = t.iter().map(an).sum::<f64>() / k;
        let active = t
            .iter()
            .filter(|x| {
                d[x.0 as usize][x.1 as usize] - d[x.0 as usize][x.2 as usize] + margin as f32 > 0.0
            })
            .count() as f64
            / k;
        assert!(
            (stats.mean_ap - mean_ap).abs() < 1e-5,
            "{stats:?} vs {mean_ap}"
        );
        assert!(
            (stats.mean_an - mean_an).abs() < 1e-5,
            "{stats:?} vs {mean_an}"
        );
        assert!(
            (stats.active_fraction - active).abs() < 1e-12,
            "{stats:?} vs {active}"
        );
    }

    #[test]
    fn semi_hard_matches_brute_force_on_random_batches() {
        for (seed, n, ids) in [(1, 40, 5), (2, 64, 12), (3, 33, 3), (4, 50, 25)] {
            let (e, lt, l) = random_batch(n, 8, ids, seed);
            check_semi_hard(&e, &lt, &l, 0.2, seed);
            check_semi_hard(&e, &lt, &l, 0.6, seed + 100);
        }
    }

    #[test]
    fn semi_hard_handles_exact_ties_at_both_window_ends() {
        for seed in 0..6 {
            let (e, lt, l) = lattice_batch(30, 4, seed);
            check_semi_hard(&e, &lt, &l, 1.0, seed);
            check_semi_hard(&e, &lt, &l, 0.0, seed);
        }
    }

    #[test]
    fn degenerate_batches() {
        let all = |margin| {
            [
                Miner::default(),
                Miner::SemiHard {
                    margin,
                    choice: Choice::Hardest,
                    fallback: Fallback::Hardest,
                },
                Miner::BatchHard { margin },
                Miner::BatchAll { margin },
                Miner::Hard { margin },
                Miner::Random { margin },
            ]
        };
        // One identity: pairs but no negatives, so nothing can be mined.
        let (e, _, _) = random_batch(6, 4, 1, 9);
        let one = Tensor::from_slice(&[7i64; 6]);
        for miner in all(0.2) {
            let (t, s) = mine(&e, &one, &miner, Distance::SquaredL2, 0).unwrap();
            assert_eq!((t.len(), s.anchor_positive_pairs), (0, 30), "{miner:?}");
            assert_eq!(s.no_semi_hard_fraction, 1.0);
        }
        // All singletons: no pairs at all.
        let singles = Tensor::arange(6, (Kind::Int64, CPU));
        for miner in all(0.2) {
            let (t, s) = mine(&e, &singles, &miner, Distance::SquaredL2, 0).unwrap();
            assert_eq!(
                (t.len(), s.anchor_positive_pairs, s.no_semi_hard_fraction),
                (0, 0, 0.0)
            );
        }
        // Identical embeddings: every distance is 0, so no negative is farther than a
        // positive; the TF-Addons fallback then takes the farthest (also at 0).
        let same = Tensor::ones([6, 4], (Kind::Float, CPU))
            .f_mul_scalar(0.5)
            .unwrap();
        let labels = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1]);
        let count = |miner: Miner| mine(&same, &labels, &miner, Distance::SquaredL2, 1).unwrap();
        let (t, s) = count(Miner::default());
        assert_eq!(
            (t.len(), s.no_semi_hard_fraction, s.active_fraction),
            (12, 1.0, 1.0)
        );
        let skip = Miner::SemiHard {
            margin: 0.2,
            choice: Choice::Random,
            fallback: Fallback::Skip,
        };
        assert_eq!(count(skip).0.len(), 0);
        assert_eq!(count(Miner::Hard { margin: 0.2 }).0.len(), 0);
        assert_eq!(count(Miner::BatchAll { margin: 0.2 }).0.len(), 12 * 3);
        assert_eq!(count(Miner::BatchHard { margin: 0.2 }).0.len(), 6);
        // An empty batch.
        let none = Tensor::zeros([0, 4], (Kind::Float, CPU));
        let nl = Tensor::zeros([0], (Kind::Int64, CPU));
        for miner in all(0.2) {
            assert_eq!(
                mine(&none, &nl, &miner, Distance::Cosine, 0)
                    .unwrap()
                    .0
                    .len(),
                0
            );
        }
    }

    #[test]
    fn batch_hard_matches_brute_force() {
        for seed in 0..4 {
            let (e, lt, l) = if seed % 2 == 0 {
                random_batch(45, 6, 6, seed)
            } else {
                lattice_batch(30, 4, seed)
            };
            let d = matrix(&pairwise_distance(&e, Distance::SquaredL2).unwrap());
            let (t, stats) = mine(
                &e,
                &lt,
                &Miner::BatchHard { margin: 0.2 },
                Distance::SquaredL2,
                0,
            )
            .unwrap();
            let got: BTreeMap<i64, (i64, i64)> = triples(&t)
                .into_iter()
                .map(|(a, p, n)| (a, (p, n)))
                .collect();
            let mut expected = 0;
            for a in 0..l.len() {
                let pos: Vec<usize> = (0..l.len()).filter(|&p| p != a && l[p] == l[a]).collect();
                let neg = negatives(&l, a);
                if pos.is_empty() || neg.is_empty() {
                    assert!(!got.contains_key(&(a as i64)));
                    continue;
                }
                expected += 1;
                let (p, n) = got[&(a as i64)];
                assert!(pos.contains(&(p as usize)) && neg.contains(&(n as usize)));
                let far = pos
                    .iter()
                    .map(|&p| d[a][p])
                    .fold(f32::NEG_INFINITY, f32::max);
                let near = neg.iter().map(|&n| d[a][n]).fold(f32::INFINITY, f32::min);
                assert_eq!((d[a][p as usize], d[a][n as usize]), (far, near));
            }
            assert_eq!(t.len(), expected);
            check_stats(&d, &triples(&t), 0.2, &stats);
        }
    }

    fn all_reference(
        l: &[i64],
        keep: impl Fn(usize, usize, usize) -> bool,
    ) -> BTreeSet<(i64, i64, i64)> {
        let mut out = BTreeSet::new();
        for (a, p) in pairs(l) {
            for n in negatives(l, a) {
                if keep(a, p, n) {
                    out.insert((a as i64, p as i64, n as i64));
                }
            }
        }
        out
    }

    #[test]
    fn batch_all_and_hard_match_brute_force() {
        for seed in 0..4 {
            let (e, lt, l) = if seed % 2 == 0 {
                random_batch(40, 6, 5, seed)
            } else {
                lattice_batch(30, 4, seed)
            };
            let d = matrix(&pairwise_distance(&e, Distance::SquaredL2).unwrap());
            let margin = 0.3;
            let (t, s) =
                mine(&e, &lt, &Miner::BatchAll { margin }, Distance::SquaredL2, 0).unwrap();
            let got: BTreeSet<_> = triples(&t).into_iter().collect();
            let want = all_reference(&l, |a, p, n| d[a][p] - d[a][n] + margin as f32 > 0.0);
            assert_eq!(got, want);
            assert_eq!(s.active_fraction, if want.is_empty() { 0.0 } else { 1.0 });
            let (t, s) = mine(&e, &lt, &Miner::Hard { margin }, Distance::SquaredL2, 0).unwrap();
            let got: BTreeSet<_> = triples(&t).into_iter().collect();
            assert_eq!(got, all_reference(&l, |a, p, n| d[a][n] < d[a][p]));
            check_stats(&d, &triples(&t), margin, &s);
        }
    }

    #[test]
    fn random_miner_is_valid_seeded_and_uniform() {
        let (e, lt, l) = random_batch(30, 4, 3, 5);
        let (t, _) = mine(
            &e,
            &lt,
            &Miner::Random { margin: 0.2 },
            Distance::SquaredL2,
            11,
        )
        .unwrap();
        let got = triples(&t);
        let want: Vec<(usize, usize)> = pairs(&l);
        assert_eq!(got.len(), want.len());
        for (&(a, p, n), &(ra, rp)) in got.iter().zip(&want) {
            assert_eq!((a as usize, p as usize), (ra, rp));
            assert_ne!(l[n as usize], l[a as usize]);
        }
        let again = triples(
            &mine(
                &e,
                &lt,
                &Miner::Random { margin: 0.2 },
                Distance::SquaredL2,
                11,
            )
            .unwrap()
            .0,
        );
        assert_eq!(got, again, "same seed, same triplets");
        let other = triples(
            &mine(
                &e,
                &lt,
                &Miner::Random { margin: 0.2 },
                Distance::SquaredL2,
                12,
            )
            .unwrap()
            .0,
        );
        assert_ne!(got, other);
        // One pair, four negatives: each should come up about a quarter of the time.
        let e4 = Tensor::randn([6, 3], (Kind::Float, CPU));
        let l4 = Tensor::from_slice(&[0i64, 0, 1, 2, 3, 4]);
        let mut seen = BTreeMap::new();
        for seed in 0..800 {
            let t = mine(
                &e4,
                &l4,
                &Miner::Random { margin: 0.2 },
                Distance::SquaredL2,
                seed,
            )
            .unwrap()
            .0;
            *seen.entry(t.negatives.int64_value(&[0])).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen.values().all(|&c| (140..=260).contains(&c)), "{seen:?}");
    }

    #[test]
    fn random_semi_hard_choice_is_seeded_and_uniform() {
        // Anchor 0 at the origin, positive at squared distance 1, four negatives inside
        // (1, 1.2) and one outside: every seed must pick one of the four, evenly.
        let xs = [0.0f32, 1.0, 1.02, 1.05, 1.1, 1.15, 2.0];
        let e = Tensor::from_slice(&xs.iter().flat_map(|&x| [x.sqrt(), 0.0]).collect::<Vec<_>>())
            .view([7, 2]);
        let l = Tensor::from_slice(&[0i64, 0, 1, 2, 3, 4, 5]);
        let mut seen = BTreeMap::new();
        for seed in 0..800 {
            let (t, _) = mine(&e, &l, &Miner::default(), Distance::SquaredL2, seed).unwrap();
            let first = triples(&t)[0];
            assert_eq!((first.0, first.1), (0, 1));
            *seen.entry(first.2).or_insert(0) += 1;
        }
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4, 5]);
        assert!(seen.values().all(|&c| (140..=260).contains(&c)), "{seen:?}");
    }

    #[test]
    fn epoch_scan_gives_the_tensor_search_triplets_bit_for_bit() {
        let combos = [
            (Choice::Random, Fallback::NearestFartherElseFarthest),
            (Choice::Random, Fallback::Hardest),
            (Choice::Random, Fallback::Skip),
            (Choice::Hardest, Fallback::NearestFartherElseFarthest),
            (Choice::Hardest, Fallback::Skip),
        ];
        // Random unit rows, and lattice points whose distances tie with d(a,p) and d(a,p) + α.
        let sets = [
            (random_batch(257, 8, 23, 3), 0.2),
            (random_batch(120, 4, 6, 4), 0.5),
            (lattice_batch(150, 11, 5), 1.0),
        ];
        for ((e, lt, _), margin) in sets {
            let n = e.size()[0];
            for (choice, fallback) in combos {
                let spec = SemiHardSpec {
                    margin,
                    choice,
                    fallback,
                };
                for (chunk, seed, distance) in [
                    (64, 7, Distance::SquaredL2),
                    (1000, 8, Distance::SquaredL2),
                    (50, 9, Distance::Cosine),
                ] {
                    let (reference, d_ap, _, pairs, none) =
                        semi_hard_blocks(n, &lt, spec, chunk, seed, false, |start, len| {
                            cross_distance(&e.narrow(0, start, len), &e, distance)
                        })
                        .unwrap();
                    let (scanned, stats) =
                        mine_epoch_scan(&e, &lt, spec, distance, chunk, seed).unwrap();
                    assert_eq!(
                        triples(&scanned),
                        triples(&reference),
                        "{spec:?} chunk {chunk} {distance:?}"
                    );
                    assert_eq!(stats.anchor_positive_pairs, pairs);
                    assert_eq!(stats.triplets, d_ap.size()[0]);
                    let expected_none = if pairs == 0 {
                        0.0
                    } else {
                        none as f64 / pairs as f64
                    };
                    assert_eq!(stats.no_semi_hard_fraction, expected_none);
                }
            }
        }
    }

    #[test]
    fn epoch_mining_matches_batch_mining_and_ignores_chunking() {
        let (e, lt, l) = random_batch(90, 8, 9, 21);
        let hardest = Miner::SemiHard {
            margin: 0.2,
            choice: Choice::Hardest,
            fallback: Fallback::NearestFartherElseFarthest,
        };
        let (whole, ws) = mine(&e, &lt, &hardest, Distance::SquaredL2, 0).unwrap();
        let d = matrix(&pairwise_distance(&e, Distance::SquaredL2).unwrap());
        let by_pair = |t: &Triplets| -> BTreeMap<(i64, i64), f32> {
            triples(t)
                .into_iter()
                .map(|(a, p, n)| ((a, p), d[a as usize][n as usize]))
                .collect()
        };
        for chunk in [1, 7, 90, 1000] {
            let (t, s) = mine_epoch_with(&e, &lt, &hardest, Distance::SquaredL2, chunk, 0).unwrap();
            let (a, b) = (by_pair(&t), by_pair(&whole));
            assert_eq!(a.len(), b.len());
            for (k, v) in a {
                assert!((v - b[&k]).abs() < 1e-5, "chunk {chunk} pair {k:?}");
            }
            assert_eq!(s.anchor_positive_pairs, ws.anchor_positive_pairs);
        }
        let (r1, s1) = mine_epoch(&e, &lt, 0.2, 1, 5).unwrap();
        let (r2, _) = mine_epoch(&e, &lt, 0.2, 64, 5).unwrap();
        assert_eq!(
            triples(&r1),
            triples(&r2),
            "random choice does not depend on chunking"
        );
        assert_eq!(s1.anchor_positive_pairs, pairs(&l).len() as i64);
        assert_eq!(
            s1.triplets, s1.anchor_positive_pairs,
            "every pair gets a negative"
        );
    }

    #[test]
    fn cosine_distance_mining_uses_cosine_distances() {
        let (e, lt, l) = random_batch(30, 5, 4, 8);
        let scaled = e.f_mul_scalar(3.0).unwrap();
        let d = matrix(&pairwise_distance(&e, Distance::Cosine).unwrap());
        let (t, _) = mine(
            &scaled,
            &lt,
            &Miner::Hard { margin: 0.2 },
            Distance::Cosine,
            0,
        )
        .unwrap();
        let got: BTreeSet<_> = triples(&t).into_iter().collect();
        let want = all_reference(&l, |a, p, n| d[a][n] < d[a][p]);
        // Scaling does not change cosine distances; allow rounding-level disagreement.
        let diff = got.symmetric_difference(&want).count();
        assert!(diff <= 2, "{diff} triplets differ");
    }

    #[test]
    fn rejects_bad_arguments() {
        let (e, lt, _) = random_batch(8, 4, 2, 1);
        let short = Tensor::from_slice(&[0i64, 1]);
        assert_eq!(
            mine(&e, &short, &Miner::default(), Distance::SquaredL2, 0)
                .unwrap_err()
                .code(),
            "ERR_SHAPE"
        );
        let float_labels = Tensor::zeros([8], (Kind::Float, CPU));
        assert_eq!(
            mine(&e, &float_labels, &Miner::default(), Distance::SquaredL2, 0)
                .unwrap_err()
                .code(),
            "ERR_SHAPE"
        );
        let bad = Miner::BatchAll { margin: -1.0 };
        assert_eq!(
            mine(&e, &lt, &bad, Distance::SquaredL2, 0)
                .unwrap_err()
                .code(),
            "ERR_INVALID_ARGUMENT"
        );
        assert_eq!(
            mine_epoch(&e, &lt, 0.2, 0, 0).unwrap_err().code(),
            "ERR_INVALID_ARGUMENT"
        );
        let hard = Miner::Hard { margin: 0.2 };
        assert_eq!(
            mine_epoch_with(&e, &lt, &hard, Distance::SquaredL2, 4, 0)
                .unwrap_err()
                .code(),
            "ERR_INVALID_ARGUMENT"
        );
    }
}
