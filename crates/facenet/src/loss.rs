//! The triplet loss of FaceNet: a hinge per triplet, max(0, d(a,p) − d(a,n) + α).
//!
//! The original notebook summed the distances over the batch before applying the hinge,
//! which lets easy triplets cancel hard ones; here the hinge is applied to each triplet.

pub mod margin;
pub mod objective;

use crate::distance::{check_embeddings, normalize_rows, row_distance, Distance};
use crate::error::{Error, Result};
use crate::mining::{Triplets, DEFAULT_MARGIN};
use tch::{Kind, Tensor};

/// How the per-triplet hinges become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reducer {
    /// Mean over all triplets.
    #[default]
    Mean,
    /// Mean over the triplets with a positive hinge (0 when none is active), so that the
    /// loss does not shrink as easy triplets accumulate.
    MeanActive,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TripletLoss {
    /// α, 0.2 in the paper.
    pub margin: f64,
    pub reducer: Reducer,
    /// L2-normalize the embeddings first (the paper's ‖f(x)‖ = 1). The notebook did not.
    pub normalize: bool,
    pub distance: Distance,
}

impl Default for TripletLoss {
    fn default() -> Self {
        TripletLoss {
            margin: DEFAULT_MARGIN,
            reducer: Reducer::Mean,
            normalize: true,
            distance: Distance::SquaredL2,
        }
    }
}

/// The loss and how many triplets were active.
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar, differentiable with respect to the embeddings.
    pub loss: Tensor,
    pub active: i64,
}

/// The reduced triplet loss of `triplets` over `embeddings` (N×d): a scalar that carries
/// gradients. With no triplets it is a differentiable 0.
pub fn triplet_loss(
    embeddings: &Tensor,
    triplets: &Triplets,
    config: &TripletLoss,
) -> Result<Tensor> {
    Ok(triplet_loss_with_count(embeddings, triplets, config)?.loss)
}

pub fn triplet_loss_with_count(
    embeddings: &Tensor,
    triplets: &Triplets,
    config: &TripletLoss,
) -> Result<LossOutput> {
    let (n, _) = check_embeddings(embeddings)?;
    if !(config.margin.is_finite() && config.margin >= 0.0) {
        return Err(Error::invalid(format!(
            "margin must be a finite number ≥ 0, got {}",
            config.margin
        )));
    }
    let t = triplets.len();
    for (name, idx) in [
        ("anchors", &triplets.anchors),
        ("positives", &triplets.positives),
        ("negatives", &triplets.negatives),
    ] {
        if idx.size() != [t] || idx.kind() != Kind::Int64 {
            return Err(Error::shape(format!(
                "triplet {name} must be a 1-D Int64 tensor of length {t}, got {:?} of {:?}",
                idx.size(),
                idx.kind()
            )));
        }
        if t > 0 {
            let lo = idx.f_min()?.f_int64_value(&[])?;
            let hi = idx.f_max()?.f_int64_value(&[])?;
            if lo < 0 || hi >= n {
                return Err(Error::invalid(format!(
                    "triplet {name} must index the {n} embeddings, got values from {lo} to {hi}"
                )));
            }
        }
    }
    if t == 0 {
        return Ok(LossOutput {
            loss: embeddings.f_sum(embeddings.kind())?.f_mul_scalar(0.0)?,
            active: 0,
        });
    }
    let e = if config.normalize {
        normalize_rows(embeddings)?
    } else {
        embeddings.shallow_clone()
    };
    let device = e.device();
    let pick =
        |idx: &Tensor| -> Result<Tensor> { Ok(e.f_index_select(0, &idx.f_to_device(device)?)?) };
    let a = pick(&triplets.anchors)?;
    let d_ap = row_distance(&a, &pick(&triplets.positives)?, config.distance)?;
    let d_an = row_distance(&a, &pick(&triplets.negatives)?, config.distance)?;
    let hinge = d_ap
        .f_sub(&d_an)?
        .f_add_scalar(config.margin)?
        .f_clamp_min(0.0)?;
    let active = hinge.f_gt(0.0)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    let sum = hinge.f_sum(hinge.kind())?;
    let loss = match config.reducer {
        Reducer::Mean => sum.f_div_scalar(t as f64)?,
        Reducer::MeanActive => sum.f_div_scalar(active.max(1) as f64)?,
    };
    Ok(LossOutput { loss, active })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn triplets(a: &[i64], p: &[i64], n: &[i64]) -> Triplets {
        Triplets {
            anchors: Tensor::from_slice(a),
            positives: Tensor::from_slice(p),
            negatives: Tensor::from_slice(n),
        }
    }

    #[test]
    fn worked_example_by_hand() {
        // a = (0,0), p = (1,0), n1 = (0,2), n2 = (0.5,0); α = 0.2, not normalized.
        // d(a,p) = 1, d(a,n1) = 4, d(a,n2) = 0.25.
        // (a,p,n1): max(0, 1 − 4 + 0.2) = max(0, −2.8) = 0
        // (a,p,n2): max(0, 1 − 0.25 + 0.2) = 0.95
        // Mean = 0.95 / 2 = 0.475; mean over active = 0.95 / 1 = 0.95.
        // The notebook's sum-before-hinge would give max(0, 2 − 4.25 + 0.4) = 0.
        let e = Tensor::from_slice(&[0.0f64, 0.0, 1.0, 0.0, 0.0, 2.0, 0.5, 0.0]).view([4, 2]);
        let t = triplets(&[0, 0], &[1, 1], &[2, 3]);
        let mut config = TripletLoss {
            normalize: false,
            ..TripletLoss::default()
        };
        let out = triplet_loss_with_count(&e, &t, &config).unwrap();
        assert!((out.loss.double_value(&[]) - 0.475).abs() < 1e-12);
        assert_eq!(out.active, 1);
        config.reducer = Reducer::MeanActive;
        assert!((triplet_loss(&e, &t, &config).unwrap().double_value(&[]) - 0.95).abs() < 1e-12);

        // Normalized: a = (1,0), p = 3·(0,1) → (0,1), n = (1,1) → (1/√2, 1/√2).
        // d(a,p) = 2; d(a,n) = (1 − 1/√2)² + 1/2 = 2 − √2 ≈ 0.585786.
        // Loss = 2 − (2 − √2) + 0.2 = √2 + 0.2 ≈ 1.614214.
        let e = Tensor::from_slice(&[1.0f64, 0.0, 0.0, 3.0, 1.0, 1.0]).view([3, 2]);
        let t = triplets(&[0], &[1], &[2]);
        let loss = triplet_loss(&e, &t, &TripletLoss::default()).unwrap();
        assert!((loss.double_value(&[]) - (2f64.sqrt() + 0.2)).abs() < 1e-12);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        tch::manual_seed(17);
        let base = Tensor::randn([6, 4], (Kind::Double, Device::Cpu));
        let t = triplets(&[0, 1, 2, 3, 4], &[1, 0, 3, 2, 5], &[2, 4, 5, 0, 1]);
        for distance in [Distance::SquaredL2, Distance::Cosine] {
            for normalize in [true, false] {
                let config = TripletLoss {
                    margin: 1.5,
                    normalize,
                    distance,
                    reducer: Reducer::Mean,
                };
                let x = base.detach().set_requires_grad(true);
                let loss = triplet_loss(&x, &t, &config).unwrap();
                loss.backward();
                let grad = Vec::<f64>::try_from(x.grad().flatten(0, -1)).unwrap();
                let flat = Vec::<f64>::try_from(base.flatten(0, -1)).unwrap();
                let f = |v: &[f64]| {
                    let e = Tensor::from_slice(v).view([6, 4]);
                    triplet_loss(&e, &t, &config).unwrap().double_value(&[])
                };
                let h = 1e-6;
                for i in 0..flat.len() {
                    let (mut up, mut down) = (flat.clone(), flat.clone());
                    up[i] += h;
                    down[i] -= h;
                    let numeric = (f(&up) - f(&down)) / (2.0 * h);
                    assert!(
                        (numeric - grad[i]).abs() < 1e-6,
                        "{distance:?} normalize={normalize} [{i}]: {numeric} vs {}",
                        grad[i]
                    );
                }
            }
        }
    }

    #[test]
    fn no_triplets_is_a_differentiable_zero() {
        let e = Tensor::ones([3, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let t = triplets(&[], &[], &[]);
        let loss = triplet_loss(&e, &t, &TripletLoss::default()).unwrap();
        assert_eq!(loss.double_value(&[]), 0.0);
        loss.backward();
        assert_eq!(e.grad().abs().sum(Kind::Double).double_value(&[]), 0.0);
    }

    #[test]
    fn rejects_out_of_range_triplets() {
        let e = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        let t = triplets(&[0], &[1], &[3]);
        let err = triplet_loss(&e, &t, &TripletLoss::default()).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARGUMENT");
        let bad = TripletLoss {
            margin: f64::NAN,
            ..TripletLoss::default()
        };
        let t = triplets(&[0], &[1], &[2]);
        assert_eq!(
            triplet_loss(&e, &t, &bad).unwrap_err().code(),
            "ERR_INVALID_ARGUMENT"
        );
    }
}
