//! Building blocks shared by the architectures.

use super::init;
use tch::{nn, nn::ModuleT, Tensor};

/// conv → batch norm → ReLU, the unit every FaceNet conv layer uses here.
#[derive(Debug)]
pub struct ConvBnRelu {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBnRelu {
    /// A "same"-padded k×k conv (padding k/2).
    pub fn new(path: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64) -> Self {
        Self {
            conv: init::conv2d(path / "conv", c_in, c_out, kernel, stride, kernel / 2),
            bn: nn::batch_norm2d(path / "bn", c_out, Default::default()),
        }
    }
}

impl ModuleT for ConvBnRelu {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train).relu()
    }
}

/// 3×3 max pooling with stride 2 and padding 1, which halves (rounding up) each side.
pub fn max_pool_3x3_s2(xs: &Tensor) -> Tensor {
    xs.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
}

/// Maxout over groups of `pieces` adjacent channels: N×(C·pieces)×H×W → N×C×H×W.
pub fn channel_maxout(xs: &Tensor, pieces: i64) -> Tensor {
    let size = xs.size();
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    xs.view([n, c / pieces, pieces, h, w]).amax([2], false)
}

/// Rows scaled to unit L2 norm; the epsilon keeps an all-zero row finite.
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    let norm = xs.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    xs / norm
}
