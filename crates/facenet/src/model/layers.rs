//! Building blocks shared by the architectures.
//!
//! Every layer constructor takes the shape of its input and returns the shape of its
//! output, and appends a row to a [`LayerTable`]. The table is how `summary()` counts
//! parameters and multiply-adds analytically, from layer shapes alone, the way the
//! FaceNet paper's Tables 1 and 2 do, without running a forward pass.

use super::init;
use tch::{nn, nn::Module, nn::ModuleT, Tensor};

/// Channels, height and width of one image's activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub c: i64,
    pub h: i64,
    pub w: i64,
}

impl Shape {
    pub fn new(c: i64, h: i64, w: i64) -> Self {
        Self { c, h, w }
    }

    pub fn numel(self) -> i64 {
        self.c * self.h * self.w
    }

    pub fn with_c(self, c: i64) -> Self {
        Self { c, ..self }
    }
}

/// One row of a model summary.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    /// The layer's variable path, e.g. `inception_3a.conv3x3` or `repeat_1.0.branch0`.
    pub name: String,
    /// What the layer is, e.g. `conv 3×3/2 + bn + relu`, `maxpool 3×3/2`, `linear`.
    pub kind: String,
    /// Output shape for one image: `[C, H, W]` for maps, `[D]` for vectors.
    pub output: Vec<i64>,
    /// Trainable parameters (batch-norm scale and shift included, running stats not).
    pub params: i64,
    /// Multiply-adds per image: convolutions and fully connected layers only, as the
    /// paper counts FLOPs.
    pub macs: i64,
}

pub type LayerTable = Vec<LayerRow>;

/// The dotted variable path of `path`, which is also the prefix of its tensors' names.
pub fn name_of(path: &nn::Path) -> String {
    path.components().collect::<Vec<_>>().join(".")
}

pub fn push_row(
    table: &mut LayerTable,
    name: String,
    kind: String,
    output: Vec<i64>,
    params: i64,
    macs: i64,
) {
    table.push(LayerRow {
        name,
        kind,
        output,
        params,
        macs,
    });
}

/// Output length of a convolution or pooling window along one axis (floor mode).
pub fn window_out(size: i64, kernel: i64, stride: i64, padding: i64) -> i64 {
    (size + 2 * padding - kernel) / stride + 1
}

/// Geometry of a convolution: kernel (h, w), stride, padding (h, w), bias.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    pub kernel: [i64; 2],
    pub stride: i64,
    pub padding: [i64; 2],
    pub bias: bool,
}

impl ConvGeometry {
    /// A k×k conv with "same" padding (k/2), no bias.
    pub fn same(kernel: i64, stride: i64) -> Self {
        Self {
            kernel: [kernel, kernel],
            stride,
            padding: [kernel / 2, kernel / 2],
            bias: false,
        }
    }

    /// A k×k conv without padding, no bias.
    pub fn valid(kernel: i64, stride: i64) -> Self {
        Self {
            kernel: [kernel, kernel],
            stride,
            padding: [0, 0],
            bias: false,
        }
    }

    pub fn with_bias(self) -> Self {
        Self { bias: true, ..self }
    }

    fn output(&self, input: Shape, c_out: i64) -> Shape {
        Shape::new(
            c_out,
            window_out(input.h, self.kernel[0], self.stride, self.padding[0]),
            window_out(input.w, self.kernel[1], self.stride, self.padding[1]),
        )
    }

    fn params(&self, c_in: i64, c_out: i64) -> i64 {
        c_in * c_out * self.kernel[0] * self.kernel[1] + if self.bias { c_out } else { 0 }
    }

    fn label(&self) -> String {
        let [kh, kw] = self.kernel;
        if self.stride == 1 {
            format!("conv {kh}×{kw}")
        } else {
            format!("conv {kh}×{kw}/{}", self.stride)
        }
    }
}

/// A bare convolution with Xavier weights, its variables directly under `path`
/// (`path.weight`, `path.bias`).
fn conv_vars(path: &nn::Path, c_in: i64, c_out: i64, geometry: ConvGeometry) -> nn::Conv2D {
    let receptive = geometry.kernel[0] * geometry.kernel[1];
    let config = nn::ConvConfigND::<[i64; 2]> {
        stride: [geometry.stride, geometry.stride],
        padding: geometry.padding,
        dilation: [1, 1],
        groups: 1,
        bias: geometry.bias,
        ws_init: init::xavier_uniform(c_in * receptive, c_out * receptive),
        bs_init: nn::Init::Const(0.0),
        padding_mode: nn::PaddingMode::Zeros,
    };
    nn::conv(path, c_in, c_out, geometry.kernel, config)
}

/// A plain convolution (no batch norm, no activation), e.g. the 1×1 up-projection of an
/// Inception-ResNet block. Its tensors are `path.weight` and `path.bias`.
#[derive(Debug)]
pub struct Conv {
    conv: nn::Conv2D,
}

impl Conv {
    pub fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        input: Shape,
        c_out: i64,
        geometry: ConvGeometry,
    ) -> (Self, Shape) {
        let output = geometry.output(input, c_out);
        let params = geometry.params(input.c, c_out);
        let macs = input.c * c_out * geometry.kernel[0] * geometry.kernel[1] * output.h * output.w;
        push_row(
            table,
            name_of(path),
            geometry.label(),
            vec![output.c, output.h, output.w],
            params,
            macs,
        );
        (
            Self {
                conv: conv_vars(path, input.c, c_out, geometry),
            },
            output,
        )
    }
}

impl Module for Conv {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.conv)
    }
}

/// Batch-norm settings of a [`ConvUnit`]; `None` in [`ConvUnit::new`] means no batch norm.
#[derive(Debug, Clone, Copy)]
pub struct BnSettings {
    pub eps: f64,
    pub momentum: f64,
}

impl Default for BnSettings {
    /// PyTorch's defaults.
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

pub fn bn_config(settings: BnSettings) -> nn::BatchNormConfig {
    nn::BatchNormConfig {
        eps: settings.eps,
        momentum: settings.momentum,
        ..Default::default()
    }
}

/// conv → (batch norm) → ReLU, with tensors `path.conv.*` and `path.bn.*` (the layout of
/// facenet-pytorch's `BasicConv2d`).
#[derive(Debug)]
pub struct ConvUnit {
    conv: nn::Conv2D,
    bn: Option<nn::BatchNorm>,
}

impl ConvUnit {
    pub fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        input: Shape,
        c_out: i64,
        geometry: ConvGeometry,
        bn: Option<BnSettings>,
    ) -> (Self, Shape) {
        let output = geometry.output(input, c_out);
        let bn_params = if bn.is_some() { 2 * c_out } else { 0 };
        let macs = input.c * c_out * geometry.kernel[0] * geometry.kernel[1] * output.h * output.w;
        let kind = format!(
            "{}{} + relu",
            geometry.label(),
            if bn.is_some() { " + bn" } else { "" }
        );
        push_row(
            table,
            name_of(path),
            kind,
            vec![output.c, output.h, output.w],
            geometry.params(input.c, c_out) + bn_params,
            macs,
        );
        let unit = Self {
            conv: conv_vars(&(path / "conv"), input.c, c_out, geometry),
            bn: bn.map(|settings| nn::batch_norm2d(path / "bn", c_out, bn_config(settings))),
        };
        (unit, output)
    }

    /// A batch-normalized "same" k×k conv with PyTorch's batch-norm defaults.
    pub fn same(
        path: &nn::Path,
        table: &mut LayerTable,
        input: Shape,
        c_out: i64,
        kernel: i64,
        stride: i64,
    ) -> (Self, Shape) {
        Self::new(
            path,
            table,
            input,
            c_out,
            ConvGeometry::same(kernel, stride),
            Some(BnSettings::default()),
        )
    }
}

impl ModuleT for ConvUnit {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = xs.apply(&self.conv);
        match &self.bn {
            Some(bn) => xs.apply_t(bn, train).relu(),
            None => xs.relu(),
        }
    }
}

/// A fully connected layer with Xavier weights, recorded in the table.
pub fn linear(
    path: &nn::Path,
    table: &mut LayerTable,
    d_in: i64,
    d_out: i64,
    bias: bool,
    kind: &str,
) -> nn::Linear {
    let params = d_in * d_out + if bias { d_out } else { 0 };
    push_row(
        table,
        name_of(path),
        kind.to_owned(),
        vec![d_out],
        params,
        d_in * d_out,
    );
    if bias {
        init::linear(path.clone(), d_in, d_out)
    } else {
        nn::linear(
            path,
            d_in,
            d_out,
            nn::LinearConfig {
                ws_init: init::xavier_uniform(d_in, d_out),
                bs_init: None,
                bias: false,
            },
        )
    }
}

/// Max pooling k×k with stride s and padding p (floor mode, as PyTorch's default).
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl Pool {
    pub const fn new(kernel: i64, stride: i64, padding: i64) -> Self {
        Self {
            kernel,
            stride,
            padding,
        }
    }

    pub fn output(self, input: Shape) -> Shape {
        Shape::new(
            input.c,
            window_out(input.h, self.kernel, self.stride, self.padding),
            window_out(input.w, self.kernel, self.stride, self.padding),
        )
    }

    /// Records a pooling row named `name` and returns the output shape.
    pub fn record(self, table: &mut LayerTable, name: String, what: &str, input: Shape) -> Shape {
        let output = self.output(input);
        let kind = if self.stride == 1 {
            format!("{what} {k}×{k}", k = self.kernel)
        } else {
            format!("{what} {k}×{k}/{}", self.stride, k = self.kernel)
        };
        push_row(table, name, kind, vec![output.c, output.h, output.w], 0, 0);
        output
    }

    pub fn max(self, xs: &Tensor) -> Tensor {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        xs.max_pool2d([k, k], [s, s], [p, p], [1, 1], false)
    }

    /// L2 pooling: the L2 norm of each window, sqrt(Σ x²). The sum counts padding as
    /// zeros, so every window is a full k×k window. A small epsilon inside the root keeps
    /// the gradient finite where a whole window is zero (common after ReLU).
    pub fn l2(self, xs: &Tensor) -> Tensor {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let sums = (xs * xs).avg_pool2d([k, k], [s, s], [p, p], false, true, Some(1));
        (sums.clamp_min(0.0) + L2_POOL_EPS).sqrt()
    }
}

const L2_POOL_EPS: f64 = 1e-10;

/// 3×3 max pooling with stride 2 and padding 1, which halves (rounding up) each side.
pub const MAX_POOL_3X3_S2: Pool = Pool::new(3, 2, 1);

/// Local response normalization across channels, as in AlexNet and the paper's
/// "rnorm"/"norm" layers: x / (k + α/n · Σ_{n neighbouring channels} x²)^β.
/// Settings are Krizhevsky et al.'s (n = 5, α = 1e-4, β = 0.75, k = 1 in PyTorch's form,
/// where α is divided by n); the FaceNet paper does not give its own.
pub fn local_response_norm(xs: &Tensor) -> Tensor {
    const SIZE: i64 = 5;
    const ALPHA: f64 = 1e-4;
    const BETA: f64 = 0.75;
    const K: f64 = 1.0;
    let squares = (xs * xs).unsqueeze(1);
    let div = squares
        .avg_pool3d(
            [SIZE, 1, 1],
            [1, 1, 1],
            [SIZE / 2, 0, 0],
            false,
            true,
            None::<i64>,
        )
        .squeeze_dim(1);
    xs / (div * ALPHA + K).pow_tensor_scalar(BETA)
}

/// Records a parameter-free row (normalization, activation, concat…).
pub fn record_free(table: &mut LayerTable, name: String, kind: &str, output: Vec<i64>) {
    push_row(table, name, kind.to_owned(), output, 0, 0);
}

/// Records the final L2 normalization of the embedding, which every arch ends with.
pub fn record_l2_normalization(table: &mut LayerTable, embedding_dim: i64) {
    record_free(
        table,
        "l2norm".into(),
        "L2 normalization",
        vec![embedding_dim],
    );
}

/// Maxout over groups of `pieces` adjacent channels: N×(C·pieces)×H×W → N×C×H×W.
pub fn channel_maxout(xs: &Tensor, pieces: i64) -> Tensor {
    let size = xs.size();
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    xs.view([n, c / pieces, pieces, h, w]).amax([2], false)
}

/// Maxout over groups of `pieces` adjacent features: N×(D·pieces) → N×D.
pub fn feature_maxout(xs: &Tensor, pieces: i64) -> Tensor {
    let size = xs.size();
    xs.view([size[0], size[1] / pieces, pieces])
        .amax([2], false)
}

/// Rows scaled to unit L2 norm; the epsilon keeps an all-zero row finite.
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    let norm = xs.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    xs / norm
}

/// Global average pooling: N×C×H×W → N×C.
pub fn global_avg_pool(xs: &Tensor) -> Tensor {
    xs.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
}
