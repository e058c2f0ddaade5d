//! Classification losses over a class-weight matrix (classes × d), the losses face recognition
//! trains with today: ArcFace (Deng et al. 2019), CosFace (Wang et al. 2018) and softmax with
//! a centre loss (Wen et al. 2016). The weights train with the network but are not part of
//! the embedding model: at test time only the embeddings are used.

use crate::error::{Error, Result};
use tch::{Kind, Reduction, Tensor};

/// insightface's defaults: ArcFace m = 0.5, CosFace m = 0.4, both with s = 64.
pub const ARCFACE_MARGIN: f64 = 0.5;
pub const COSFACE_MARGIN: f64 = 0.4;
pub const MARGIN_SCALE: f64 = 64.0;
/// λ of the centre loss beside the softmax (davidsandberg/facenet's `center_loss_factor`
/// is of this order).
pub const CENTER_WEIGHT: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MarginLoss {
    /// s·cos(θ_y + m) for the true class, s·cos θ_j for the others.
    ArcFace {
        margin: f64,
        scale: f64,
        /// Where θ_y + m passes π, cos(θ_y + m) would rise again and reward a worse angle.
        /// `false` (insightface's default): use cos θ_y − m·sin m there (θ_y > π − m), which
        /// keeps the target logit decreasing in θ_y. `true`: apply the margin only where
        /// cos θ_y > 0, plain cos θ_y elsewhere.
        easy_margin: bool,
    },
    /// s·(cos θ_y − m) for the true class, s·cos θ_j for the others.
    CosFace { margin: f64, scale: f64 },
    /// Softmax cross-entropy over the unnormalized logits x·Wᵀ, plus
    /// λ·½·mean‖x − c_y‖² to a second matrix of class centres.
    SoftmaxCenter { center_weight: f64 },
}

impl MarginLoss {
    pub fn arcface() -> Self {
        MarginLoss::ArcFace {
            margin: ARCFACE_MARGIN,
            scale: MARGIN_SCALE,
            easy_margin: false,
        }
    }

    pub fn cosface() -> Self {
        MarginLoss::CosFace {
            margin: COSFACE_MARGIN,
            scale: MARGIN_SCALE,
        }
    }

    pub fn softmax_center() -> Self {
        MarginLoss::SoftmaxCenter {
            center_weight: CENTER_WEIGHT,
        }
    }

    /// How many classes × d matrices the loss trains: the class weights, and for the
    /// centre loss the centres too.
    pub fn matrices(&self) -> usize {
        match self {
            MarginLoss::SoftmaxCenter { .. } => 2,
            _ => 1,
        }
    }

    /// Refuses margins and scales the loss cannot use.
    pub fn check(&self) -> Result<()> {
        let finite = |name: &str, v: f64, min: f64| {
            if v.is_finite() && v >= min {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} must be a finite number ≥ {min}, got {v}"
                )))
            }
        };
        match *self {
            MarginLoss::ArcFace { margin, scale, .. } => {
                finite("margin", margin, 0.0)?;
                if margin >= std::f64::consts::FRAC_PI_2 {
                    return Err(Error::invalid(format!(
                        "an ArcFace margin must be below π/2 (an angle in radians), got {margin}"
                    )));
                }
                finite("scale", scale, f64::MIN_POSITIVE)
            }
            MarginLoss::CosFace { margin, scale } => {
                finite("margin", margin, 0.0)?;
                finite("scale", scale, f64::MIN_POSITIVE)
            }
            MarginLoss::SoftmaxCenter { center_weight } => {
                finite("the centre-loss weight", center_weight, 0.0)
            }
        }
    }
}

/// Row-wise L2 normalization with PyTorch's `F.normalize` guard (norm clamped at 1e-12).
fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    Ok(x.f_div(&norm)?)
}

/// The mean loss of `embeddings` (B×d) with `labels` (B, int64 in 0..classes) against the
/// class `weights` (classes×d), and for [`MarginLoss::SoftmaxCenter`] the `centers`
/// (classes×d). Differentiable with respect to all of them.
pub fn margin_loss(
    loss: &MarginLoss,
    embeddings: &Tensor,
    labels: &Tensor,
    weights: &Tensor,
    centers: Option<&Tensor>,
) -> Result<Tensor> {
    check_shapes(embeddings, labels, weights)?;
    check_labels(labels, weights.size()[0])?;
    margin_loss_in_range(loss, embeddings, labels, weights, centers)
}

/// Refuses labels outside 0..classes. It reads the labels' range on the host, so a training
/// step checks its CPU labels once, before they move to the device, and then calls
/// [`margin_loss_in_range`] without a device sync.
pub fn check_labels(labels: &Tensor, classes: i64) -> Result<()> {
    if labels.numel() == 0 {
        return Ok(());
    }
    let (lo, hi) = (
        labels.f_min()?.f_int64_value(&[])?,
        labels.f_max()?.f_int64_value(&[])?,
    );
    if lo < 0 || hi >= classes {
        return Err(Error::invalid(format!(
            "labels must lie in 0..{classes} (the class-weight rows), got {lo}..={hi}"
        )));
    }
    Ok(())
}

fn check_shapes(embeddings: &Tensor, labels: &Tensor, weights: &Tensor) -> Result<()> {
    let e = embeddings.size();
    let w = weights.size();
    if e.len() != 2 || w.len() != 2 || e[1] != w[1] || e[0] == 0 {
        return Err(Error::shape(format!(
            "a margin loss needs B×d embeddings (B > 0) and classes×d weights of the same d; got {e:?} and {w:?}"
        )));
    }
    if labels.size() != [e[0]] {
        return Err(Error::shape(format!(
            "labels must hold one class per embedding ({}), got shape {:?}",
            e[0],
            labels.size()
        )));
    }
    Ok(())
}

/// [`margin_loss`] for labels already checked with [`check_labels`].
pub fn margin_loss_in_range(
    loss: &MarginLoss,
    embeddings: &Tensor,
    labels: &Tensor,
    weights: &Tensor,
    centers: Option<&Tensor>,
) -> Result<Tensor> {
    loss.check()?;
    check_shapes(embeddings, labels, weights)?;
    let w = weights.size();
    let classes = w[0];
    let labels = labels.f_to_kind(Kind::Int64)?;
    let one_hot = labels.f_one_hot(classes)?.f_to_kind(embeddings.kind())?;
    let logits = match *loss {
        MarginLoss::ArcFace {
            margin,
            scale,
            easy_margin,
        } => {
            let cos = unit_rows(embeddings)?.f_mm(&unit_rows(weights)?.f_tr()?)?;
            let target = cos.f_mul(&one_hot)?.f_sum_dim_intlist(
                [1i64].as_slice(),
                true,
                embeddings.kind(),
            )?;
            let sin = target
                .f_mul(&target)?
                .f_neg()?
                .f_add_scalar(1.0)?
                .f_clamp(0.0, 1.0)?
                .f_sqrt()?;
            let with_margin = target
                .f_mul_scalar(margin.cos())?
                .f_sub(&sin.f_mul_scalar(margin.sin())?)?;
            let shifted = if easy_margin {
                with_margin.f_where_self(&target.f_gt(0.0)?, &target)?
            } else {
                let threshold = (std::f64::consts::PI - margin).cos();
                let fallback =
                    target.f_sub_scalar((std::f64::consts::PI - margin).sin() * margin)?;
                with_margin.f_where_self(&target.f_gt(threshold)?, &fallback)?
            };
            mix_target(&cos, &one_hot, &shifted)?.f_mul_scalar(scale)?
        }
        MarginLoss::CosFace { margin, scale } => {
            let cos = unit_rows(embeddings)?.f_mm(&unit_rows(weights)?.f_tr()?)?;
            cos.f_sub(&one_hot.f_mul_scalar(margin)?)?
                .f_mul_scalar(scale)?
        }
        MarginLoss::SoftmaxCenter { .. } => embeddings.f_mm(&weights.f_tr()?)?,
    };
    let ce = logits.f_cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, -100, 0.0)?;
    match *loss {
        MarginLoss::SoftmaxCenter { center_weight } => {
            let centers = centers.ok_or_else(|| {
                Error::invalid("the softmax-centre loss needs its class-centre matrix")
            })?;
            if centers.size() != w {
                return Err(Error::shape(format!(
                    "class centres must have the weights' shape {w:?}, got {:?}",
                    centers.size()
                )));
            }
            let own = centers.f_index_select(0, &labels)?;
            let center = embeddings
                .f_sub(&own)?
                .f_square()?
                .f_sum_dim_intlist([1i64].as_slice(), false, embeddings.kind())?
                .f_mean(embeddings.kind())?
                .f_mul_scalar(0.5 * center_weight)?;
            Ok(ce.f_add(&center)?)
        }
        _ => Ok(ce),
    }
}

/// The cosine matrix with each row's true-class entry replaced by `target` (B×1).
fn mix_target(cos: &Tensor, one_hot: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok(cos
        .f_mul(&one_hot.f_neg()?.f_add_scalar(1.0)?)?
        .f_add(&one_hot.f_mul(target)?)?)
}
