//! Inception-ResNet-v1 (Szegedy et al., 2016) at 160×160, the network of the most used
//! open FaceNet implementations. Its tensor names and shapes are those of
//! facenet-pytorch's `InceptionResnetV1` state_dict (`conv2d_1a.conv.weight`,
//! `repeat_1.0.branch1.1.bn.running_var`, `last_bn.weight`, …), so published weights
//! converted to safetensors load without renaming. The state_dict's
//! `*.num_batches_tracked` counters and the optional `logits.*` classifier are not part of
//! the embedding network; the loader skips them.
//!
//! ```text
//! 3×160×160 → conv2d_1a 3×3/2 32 (79) → conv2d_2a 3×3 32 (77) → conv2d_2b 3×3 pad 1 64
//! → maxpool_3a 3×3/2 (38) → conv2d_3b 1×1 80 → conv2d_4a 3×3 192 (36)
//! → conv2d_4b 3×3/2 256 (17) → repeat_1: 5 × Block35 (scale 0.17)
//! → mixed_6a (896×8×8) → repeat_2: 10 × Block17 (scale 0.10)
//! → mixed_7a (1792×3×3) → repeat_3: 5 × Block8 (scale 0.20) → block8 (no ReLU)
//! → avgpool_1a → dropout (0.6) → last_linear (no bias) → last_bn → L2 normalization
//! ```
//!
//! Every `BasicConv2d` is conv (no bias) + batch norm (eps 0.001, momentum 0.1) + ReLU.
//! With a 512-d embedding: 23.5M parameters (facenet-pytorch's count without `logits`).

use super::layers::{
    bn_config, global_avg_pool, l2_normalize, linear, push_row, record_free,
    record_l2_normalization, BnSettings, Conv, ConvGeometry, ConvUnit, LayerTable, Pool, Shape,
};
use super::InputSize;
use tch::{nn, nn::ModuleT, Tensor};

pub const INPUT: InputSize = InputSize {
    height: 160,
    width: 160,
};

const BN: BnSettings = BnSettings {
    eps: 1e-3,
    momentum: 0.1,
};
const DROPOUT: f64 = 0.6;
const POOL: Pool = Pool::new(3, 2, 0);

fn basic(
    path: &nn::Path,
    table: &mut LayerTable,
    input: Shape,
    c_out: i64,
    geometry: ConvGeometry,
) -> (ConvUnit, Shape) {
    ConvUnit::new(path, table, input, c_out, geometry, Some(BN))
}

fn k(kh: i64, kw: i64) -> ConvGeometry {
    ConvGeometry {
        kernel: [kh, kw],
        stride: 1,
        padding: [kh / 2, kw / 2],
        bias: false,
    }
}

/// A sequence of BasicConv2d named `0`, `1`, … under `path`.
fn chain(
    path: &nn::Path,
    table: &mut LayerTable,
    input: Shape,
    layers: &[(i64, ConvGeometry)],
) -> (Vec<ConvUnit>, Shape) {
    let mut shape = input;
    let mut units = Vec::with_capacity(layers.len());
    for (i, &(c_out, geometry)) in layers.iter().enumerate() {
        let (unit, out) = basic(&(path / i), table, shape, c_out, geometry);
        units.push(unit);
        shape = out;
    }
    (units, shape)
}

fn run_chain(units: &[ConvUnit], xs: &Tensor, train: bool) -> Tensor {
    units
        .iter()
        .fold(xs.shallow_clone(), |xs, unit| xs.apply_t(unit, train))
}

/// Builds `branch{i}` for each layer list: a one-layer branch is a bare BasicConv2d
/// (`branch0.conv.weight`), a longer one a Sequential (`branch1.0.…`). Returns the
/// branches, their summed output channels and the last branch's output shape.
fn build_branches(
    path: &nn::Path,
    table: &mut LayerTable,
    input: Shape,
    branches: &[&[(i64, ConvGeometry)]],
) -> (Vec<Vec<ConvUnit>>, i64, Shape) {
    let mut channels = 0;
    let mut spatial = input;
    let mut units = Vec::with_capacity(branches.len());
    for (i, layers) in branches.iter().enumerate() {
        let branch_path = path / format!("branch{i}");
        let (chain_units, out) = if layers.len() == 1 {
            let (unit, out) = basic(&branch_path, table, input, layers[0].0, layers[0].1);
            (vec![unit], out)
        } else {
            chain(&branch_path, table, input, layers)
        };
        channels += out.c;
        spatial = out;
        units.push(chain_units);
    }
    (units, channels, spatial)
}

/// Block35, Block17 and Block8: parallel branches, concatenated, projected back by a 1×1
/// conv with bias (`conv2d`), scaled and added to the input, then ReLU (except the last
/// Block8).
#[derive(Debug)]
struct ResidualBlock {
    branches: Vec<Vec<ConvUnit>>,
    up: Conv,
    scale: f64,
    relu: bool,
}

impl ResidualBlock {
    /// `branches[i]` is the layer list of `branch{i}`; a one-layer branch is a bare
    /// BasicConv2d (`branch0.conv.weight`), a longer one a Sequential (`branch1.0.…`).
    fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        input: Shape,
        branches: &[&[(i64, ConvGeometry)]],
        scale: f64,
        relu: bool,
    ) -> Self {
        let (units, channels, _) = build_branches(path, table, input, branches);
        let (up, out) = Conv::new(
            &(path / "conv2d"),
            table,
            input.with_c(channels),
            input.c,
            ConvGeometry::valid(1, 1).with_bias(),
        );
        record_free(
            table,
            format!("{}.residual", super::layers::name_of(path)),
            if relu {
                "scaled residual add + relu"
            } else {
                "scaled residual add"
            },
            vec![out.c, out.h, out.w],
        );
        Self {
            branches: units,
            up,
            scale,
            relu,
        }
    }
}

impl ModuleT for ResidualBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let outs: Vec<Tensor> = self
            .branches
            .iter()
            .map(|units| run_chain(units, xs, train))
            .collect();
        let mixed = Tensor::cat(&outs, 1).apply(&self.up);
        let sum = mixed * self.scale + xs;
        if self.relu {
            sum.relu()
        } else {
            sum
        }
    }
}

fn block35(path: &nn::Path, table: &mut LayerTable, input: Shape, scale: f64) -> ResidualBlock {
    ResidualBlock::new(
        path,
        table,
        input,
        &[
            &[(32, k(1, 1))],
            &[(32, k(1, 1)), (32, k(3, 3))],
            &[(32, k(1, 1)), (32, k(3, 3)), (32, k(3, 3))],
        ],
        scale,
        true,
    )
}

fn block17(path: &nn::Path, table: &mut LayerTable, input: Shape, scale: f64) -> ResidualBlock {
    ResidualBlock::new(
        path,
        table,
        input,
        &[
            &[(128, k(1, 1))],
            &[(128, k(1, 1)), (128, k(1, 7)), (128, k(7, 1))],
        ],
        scale,
        true,
    )
}

fn block8(
    path: &nn::Path,
    table: &mut LayerTable,
    input: Shape,
    scale: f64,
    relu: bool,
) -> ResidualBlock {
    ResidualBlock::new(
        path,
        table,
        input,
        &[
            &[(192, k(1, 1))],
            &[(192, k(1, 1)), (192, k(1, 3)), (192, k(3, 1))],
        ],
        scale,
        relu,
    )
}

/// Mixed_6a and Mixed_7a: stride-2 branches plus a 3×3/2 max pool, concatenated.
#[derive(Debug)]
struct Reduction {
    branches: Vec<Vec<ConvUnit>>,
}

impl Reduction {
    fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        input: Shape,
        branches: &[&[(i64, ConvGeometry)]],
    ) -> (Self, Shape) {
        let (units, channels, spatial) = build_branches(path, table, input, branches);
        let name = super::layers::name_of(path);
        let pooled = POOL.record(
            table,
            format!("{name}.branch{}", branches.len()),
            "maxpool",
            input,
        );
        debug_assert_eq!((pooled.h, pooled.w), (spatial.h, spatial.w));
        let output = pooled.with_c(channels + input.c);
        record_free(
            table,
            format!("{name}.concat"),
            "concat",
            vec![output.c, output.h, output.w],
        );
        (Self { branches: units }, output)
    }
}

impl ModuleT for Reduction {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut outs: Vec<Tensor> = self
            .branches
            .iter()
            .map(|units| run_chain(units, xs, train))
            .collect();
        outs.push(POOL.max(xs));
        Tensor::cat(&outs, 1)
    }
}

#[derive(Debug)]
pub struct InceptionResnetV1 {
    stem: Vec<(ConvUnit, bool)>,
    repeat_1: Vec<ResidualBlock>,
    mixed_6a: Reduction,
    repeat_2: Vec<ResidualBlock>,
    mixed_7a: Reduction,
    repeat_3: Vec<ResidualBlock>,
    block8: ResidualBlock,
    last_linear: nn::Linear,
    last_bn: nn::BatchNorm,
}

impl InceptionResnetV1 {
    pub fn new(path: &nn::Path, table: &mut LayerTable, embedding_dim: i64) -> Self {
        let mut shape = Shape::new(3, INPUT.height, INPUT.width);
        let s2 = |g: ConvGeometry| ConvGeometry { stride: 2, ..g };
        // (name, channels, geometry, max pool after it)
        let stem_spec = [
            ("conv2d_1a", 32, s2(ConvGeometry::valid(3, 1)), false),
            ("conv2d_2a", 32, ConvGeometry::valid(3, 1), false),
            ("conv2d_2b", 64, ConvGeometry::same(3, 1), true),
            ("conv2d_3b", 80, ConvGeometry::valid(1, 1), false),
            ("conv2d_4a", 192, ConvGeometry::valid(3, 1), false),
            ("conv2d_4b", 256, s2(ConvGeometry::valid(3, 1)), false),
        ];
        let mut stem = Vec::with_capacity(stem_spec.len());
        for (name, c_out, geometry, pool) in stem_spec {
            let (unit, out) = basic(&(path / name), table, shape, c_out, geometry);
            shape = out;
            if pool {
                shape = POOL.record(table, "maxpool_3a".into(), "maxpool", shape);
            }
            stem.push((unit, pool));
        }
        let repeat_1 = (0..5)
            .map(|i| block35(&(path / "repeat_1" / i), table, shape, 0.17))
            .collect();
        let v2 = |c: i64| (c, s2(ConvGeometry::valid(3, 1)));
        let (mixed_6a, out) = Reduction::new(
            &(path / "mixed_6a"),
            table,
            shape,
            &[&[v2(384)], &[(192, k(1, 1)), (192, k(3, 3)), v2(256)]],
        );
        shape = out;
        let repeat_2 = (0..10)
            .map(|i| block17(&(path / "repeat_2" / i), table, shape, 0.10))
            .collect();
        let (mixed_7a, out) = Reduction::new(
            &(path / "mixed_7a"),
            table,
            shape,
            &[
                &[(256, k(1, 1)), v2(384)],
                &[(256, k(1, 1)), v2(256)],
                &[(256, k(1, 1)), (256, k(3, 3)), v2(256)],
            ],
        );
        shape = out;
        let repeat_3 = (0..5)
            .map(|i| block8(&(path / "repeat_3" / i), table, shape, 0.20, true))
            .collect();
        let block8 = block8(&(path / "block8"), table, shape, 1.0, false);
        record_free(table, "avgpool_1a".into(), "global avgpool", vec![shape.c]);
        record_free(table, "dropout".into(), "dropout 0.6", vec![shape.c]);
        let last_linear = linear(
            &(path / "last_linear"),
            table,
            shape.c,
            embedding_dim,
            false,
            "linear",
        );
        let last_bn = nn::batch_norm1d(path / "last_bn", embedding_dim, bn_config(BN));
        push_row(
            table,
            "last_bn".into(),
            "batchnorm".into(),
            vec![embedding_dim],
            2 * embedding_dim,
            0,
        );
        record_l2_normalization(table, embedding_dim);
        Self {
            stem,
            repeat_1,
            mixed_6a,
            repeat_2,
            mixed_7a,
            repeat_3,
            block8,
            last_linear,
            last_bn,
        }
    }
}

impl ModuleT for InceptionResnetV1 {
    /// N×3×160×160 → N×embedding_dim, rows of unit norm.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs.shallow_clone();
        for (unit, pool) in &self.stem {
            xs = xs.apply_t(unit, train);
            if *pool {
                xs = POOL.max(&xs);
            }
        }
        let blocks = |xs: Tensor, blocks: &[ResidualBlock]| {
            blocks.iter().fold(xs, |xs, block| xs.apply_t(block, train))
        };
        let xs = blocks(xs, &self.repeat_1).apply_t(&self.mixed_6a, train);
        let xs = blocks(xs, &self.repeat_2).apply_t(&self.mixed_7a, train);
        let xs = blocks(xs, &self.repeat_3).apply_t(&self.block8, train);
        let xs = global_avg_pool(&xs)
            .dropout(DROPOUT, train)
            .apply(&self.last_linear)
            .apply_t(&self.last_bn, train);
        l2_normalize(&xs)
    }
}
