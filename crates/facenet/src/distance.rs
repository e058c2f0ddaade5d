//! Pairwise distances between embeddings, computed with one matrix product so that the
//! memory is N×M, never N×M×d.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// How far apart two embeddings are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distance {
    /// ‖x − y‖², the paper's distance. On unit vectors it lies in [0, 4].
    #[default]
    SquaredL2,
    /// 1 − cos(x, y), in [0, 2].
    Cosine,
}

pub(crate) fn check_embeddings(embeddings: &Tensor) -> Result<(i64, i64)> {
    match (embeddings.size().as_slice(), embeddings.kind()) {
        (&[n, d], Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) => Ok((n, d)),
        (size, kind) => Err(Error::shape(format!(
            "embeddings must be a 2-D floating-point tensor (N×d), got {size:?} of {kind:?}"
        ))),
    }
}

/// Distances between every row of `x` (N×d) and every row of `y` (M×d): N×M, on their
/// device. Squared L2 is expanded as ‖x‖² + ‖y‖² − 2x·y and clamped at 0, since rounding
/// can push it slightly below.
pub fn cross_distance(x: &Tensor, y: &Tensor, distance: Distance) -> Result<Tensor> {
    let (_, dx) = check_embeddings(x)?;
    let (_, dy) = check_embeddings(y)?;
    if dx != dy {
        return Err(Error::shape(format!(
            "embeddings have different sizes: {dx} and {dy}"
        )));
    }
    match distance {
        Distance::SquaredL2 => {
            let xx = x.f_square()?.f_sum_dim_intlist(1, true, None::<Kind>)?;
            let yy = y.f_square()?.f_sum_dim_intlist(1, false, None::<Kind>)?;
            let xy = x.f_mm(&y.f_tr()?)?;
            Ok(xy
                .f_mul_scalar(-2.0)?
                .f_add_(&xx)?
                .f_add_(&yy.f_unsqueeze(0)?)?
                .f_clamp_min_(0.0)?)
        }
        Distance::Cosine => {
            let xn = normalize_rows(x)?;
            let yn = normalize_rows(y)?;
            Ok(xn.f_mm(&yn.f_tr()?)?.f_neg_()?.f_add_scalar_(1.0)?)
        }
    }
}

/// N×N distances between the rows of `embeddings`, with an exact zero diagonal.
pub fn pairwise_distance(embeddings: &Tensor, distance: Distance) -> Result<Tensor> {
    let mut d = cross_distance(embeddings, embeddings, distance)?;
    let _ = d.f_fill_diagonal_(0.0, false)?;
    Ok(d)
}

/// Distances between matched rows, `x[i]` and `y[i]`, differentiable: used by the loss,
/// where the direct difference is more accurate than the expanded form.
pub fn row_distance(x: &Tensor, y: &Tensor, distance: Distance) -> Result<Tensor> {
    match distance {
        Distance::SquaredL2 => {
            Ok(x.f_sub(y)?
                .f_square()?
                .f_sum_dim_intlist(1, false, None::<Kind>)?)
        }
        Distance::Cosine => {
            let cos = normalize_rows(x)?
                .f_mul(&normalize_rows(y)?)?
                .f_sum_dim_intlist(1, false, None::<Kind>)?;
            Ok(cos.f_neg()?.f_add_scalar(1.0)?)
        }
    }
}

/// Rows scaled to unit L2 norm; a zero row stays zero.
pub fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.f_norm_scalaropt_dim(2, [1], true)?.f_clamp_min(1e-12)?;
    Ok(x.f_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn brute(e: &[Vec<f64>], distance: Distance) -> Vec<Vec<f64>> {
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        e.iter()
            .map(|x| {
                e.iter()
                    .map(|y| match distance {
                        Distance::SquaredL2 => x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum(),
                        Distance::Cosine => {
                            1.0 - x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>()
                                / (norm(x) * norm(y))
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_plain_loops_for_both_distances() {
        tch::manual_seed(3);
        let e = Tensor::randn([17, 5], (Kind::Double, Device::Cpu));
        let rows: Vec<Vec<f64>> = (0..17)
            .map(|i| Vec::<f64>::try_from(e.get(i)).unwrap())
            .collect();
        for distance in [Distance::SquaredL2, Distance::Cosine] {
            let d = pairwise_distance(&e, distance).unwrap();
            let expected = brute(&rows, distance);
            for (i, row) in expected.iter().enumerate() {
                for (j, &value) in row.iter().enumerate() {
                    let got = d.double_value(&[i as i64, j as i64]);
                    let want = if i == j { 0.0 } else { value };
                    assert!(
                        (got - want).abs() < 1e-9,
                        "{distance:?} [{i},{j}] {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn identical_rows_are_at_distance_zero_never_negative() {
        let e = Tensor::ones([4, 3], (Kind::Float, Device::Cpu))
            .f_mul_scalar(0.3)
            .unwrap();
        let d = pairwise_distance(&e, Distance::SquaredL2).unwrap();
        assert_eq!(d.min().double_value(&[]), 0.0);
        assert!(d.abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn rejects_non_matrices() {
        let e = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        assert_eq!(
            pairwise_distance(&e, Distance::Cosine).unwrap_err().code(),
            "ERR_SHAPE"
        );
    }
}
