//! The paper's Inception family: NN2 (Table 2), NN3, NN4, NNS1 and NNS2.
//!
//! NN2 follows Table 2 layer by layer: conv1 7×7/2, max pool + LRN, the two-layer
//! "inception (2)" (1×1 reduce 64 → 3×3 192), LRN + max pool, then the modules 3a…5b with
//! the table's 1×1, 3×3-reduce/3×3, 5×5-reduce/5×5 widths and its pooling per module
//! (max or L2, 3×3, with a 1×1 projection; the stride-2 modules 3c and 4e pass the pooled
//! input through unprojected), then average pooling, a fully connected layer to the
//! embedding and L2 normalization.
//!
//! Choices where the paper is silent:
//! - Every conv is followed by batch norm, then ReLU (as OpenFace's nn4 does); Table 2's
//!   LRN layers are kept where the table has them. Batch norm adds 2 parameters per
//!   channel and no multiply-adds.
//! - Convs use "same" padding (k/2), pools 3×3 with padding 1, so a stride-2 layer
//!   halves each side, rounding up (224 → 112 → 56 → 28 → 14 → 7).
//! - Pooled windows include padding; L2 pooling is sqrt(Σ x²) over the 3×3 window.
//!
//! Resulting figures (embedding 128; `cargo test` checks them against the paper):
//! - NN2 (224×224): 7.46M parameters, 1.597G multiply-adds (paper: 7.5M, 1.6B).
//! - NN3 (160×160): same parameters, 0.815G multiply-adds (the paper gives none).
//! - NN4 (96×96): NN2 without the 5×5 branches of 5a and 5b, whose 3×3 input a 5×5
//!   kernel would mostly see as padding (the paper: "does not use 5×5 convolutions in the
//!   higher layers"). 6.95M parameters, 0.289G multiply-adds (paper: 285M).
//! - NNS1 (165×165, "mini Inception"): the paper gives only the totals (26M, 220M). Ours
//!   has a 16-channel conv1 and a 16 → 64 conv2, then NN2's modules at half width; the
//!   last 512×6×6 map is flattened into a 1280-unit fully connected ReLU layer (most of
//!   the parameters, as the totals imply), then the embedding layer: 25.57M parameters,
//!   0.228G multiply-adds.
//! - NNS2 (140×116, "tiny Inception", paper 4.3M and 20M): an 8-channel conv1, an 8 → 24
//!   conv2, then NN2's modules 3a, 3c, 4a, 4e and 5a at a quarter of the width; the last
//!   256×5×4 map is flattened into a 768-unit layer, then the embedding: 4.25M
//!   parameters, 20.9M multiply-adds.
//!
//! (Exact figures: see `summary()` or the tests in `model/mod.rs`.)

use super::layers::{
    global_avg_pool, l2_normalize, linear, local_response_norm, record_free,
    record_l2_normalization, ConvUnit, LayerTable, Pool, Shape, MAX_POOL_3X3_S2,
};
use super::InputSize;
use tch::{nn, nn::ModuleT, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    L2,
}

/// One row of Table 2. A width of 0 leaves that branch out.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSpec {
    pub name: &'static str,
    pub c1: i64,
    pub r3: i64,
    pub c3: i64,
    pub r5: i64,
    pub c5: i64,
    pub pool: PoolKind,
    /// 1×1 projection after the pool; 0 passes the pooled input through.
    pub proj: i64,
    pub stride: i64,
}

const fn m(
    name: &'static str,
    (c1, r3, c3, r5, c5): (i64, i64, i64, i64, i64),
    pool: PoolKind,
    proj: i64,
    stride: i64,
) -> ModuleSpec {
    ModuleSpec {
        name,
        c1,
        r3,
        c3,
        r5,
        c5,
        pool,
        proj,
        stride,
    }
}

use PoolKind::{Max, L2};

/// Table 2, inception (3a) to (5b).
pub const NN2_MODULES: [ModuleSpec; 10] = [
    m("inception_3a", (64, 96, 128, 16, 32), Max, 32, 1),
    m("inception_3b", (64, 96, 128, 32, 64), L2, 64, 1),
    m("inception_3c", (0, 128, 256, 32, 64), Max, 0, 2),
    m("inception_4a", (256, 96, 192, 32, 64), L2, 128, 1),
    m("inception_4b", (224, 112, 224, 32, 64), L2, 128, 1),
    m("inception_4c", (192, 128, 256, 32, 64), L2, 128, 1),
    m("inception_4d", (160, 144, 288, 32, 64), L2, 128, 1),
    m("inception_4e", (0, 160, 256, 64, 128), Max, 0, 2),
    m("inception_5a", (384, 192, 384, 48, 128), L2, 128, 1),
    m("inception_5b", (384, 192, 384, 48, 128), Max, 128, 1),
];

/// How the final feature map becomes the embedding.
#[derive(Debug, Clone, Copy)]
pub enum Head {
    /// Global average pooling, then one fully connected layer (NN2–NN4).
    AvgPool,
    /// Flatten the map, a fully connected ReLU layer of `hidden` units, then the
    /// embedding layer (NNS1, NNS2).
    Flatten { hidden: i64 },
}

#[derive(Debug, Clone)]
pub struct NetSpec {
    pub input: InputSize,
    pub conv1: i64,
    pub conv2_reduce: i64,
    pub conv2: i64,
    pub modules: Vec<ModuleSpec>,
    pub head: Head,
}

/// NNS2 keeps one module per stage of NN2, plus the two reductions.
const NNS2_MODULES: [&str; 5] = [
    "inception_3a",
    "inception_3c",
    "inception_4a",
    "inception_4e",
    "inception_5a",
];

fn scale(spec: ModuleSpec, divisor: i64) -> ModuleSpec {
    ModuleSpec {
        c1: spec.c1 / divisor,
        r3: spec.r3 / divisor,
        c3: spec.c3 / divisor,
        r5: spec.r5 / divisor,
        c5: spec.c5 / divisor,
        proj: spec.proj / divisor,
        ..spec
    }
}

pub fn nn2_spec(input: InputSize) -> NetSpec {
    NetSpec {
        input,
        conv1: 64,
        conv2_reduce: 64,
        conv2: 192,
        modules: NN2_MODULES.to_vec(),
        head: Head::AvgPool,
    }
}

pub fn nn4_spec(input: InputSize) -> NetSpec {
    let mut spec = nn2_spec(input);
    for module in &mut spec.modules {
        if module.name.starts_with("inception_5") {
            module.r5 = 0;
            module.c5 = 0;
        }
    }
    spec
}

pub fn nns1_spec(input: InputSize) -> NetSpec {
    NetSpec {
        input,
        conv1: 16,
        conv2_reduce: 16,
        conv2: 64,
        modules: NN2_MODULES.iter().map(|&s| scale(s, 2)).collect(),
        head: Head::Flatten { hidden: 1280 },
    }
}

pub fn nns2_spec(input: InputSize) -> NetSpec {
    NetSpec {
        input,
        conv1: 8,
        conv2_reduce: 8,
        conv2: 24,
        modules: NN2_MODULES
            .iter()
            .filter(|s| NNS2_MODULES.contains(&s.name))
            .map(|&s| scale(s, 4))
            .collect(),
        head: Head::Flatten { hidden: 768 },
    }
}

#[derive(Debug)]
struct Inception {
    c1: Option<ConvUnit>,
    b3: Option<(ConvUnit, ConvUnit)>,
    b5: Option<(ConvUnit, ConvUnit)>,
    pool: Pool,
    pool_kind: PoolKind,
    proj: Option<ConvUnit>,
}

impl Inception {
    fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        input: Shape,
        spec: &ModuleSpec,
    ) -> (Self, Shape) {
        let s = spec.stride;
        let mut out = None::<Shape>;
        let mut channels = 0;
        let mut take = |shape: Shape| {
            channels += shape.c;
            out = Some(shape);
        };
        let c1 = (spec.c1 > 0).then(|| {
            let (unit, shape) = ConvUnit::same(&(path / "conv1x1"), table, input, spec.c1, 1, s);
            take(shape);
            unit
        });
        let mut pair = |reduce_name: &str, name: &str, reduce: i64, c: i64, k: i64| {
            (c > 0).then(|| {
                let (r, mid) = ConvUnit::same(&(path / reduce_name), table, input, reduce, 1, 1);
                let (conv, shape) = ConvUnit::same(&(path / name), table, mid, c, k, s);
                take(shape);
                (r, conv)
            })
        };
        let b3 = pair("conv3x3_reduce", "conv3x3", spec.r3, spec.c3, 3);
        let b5 = pair("conv5x5_reduce", "conv5x5", spec.r5, spec.c5, 5);
        let pool = Pool::new(3, s, 1);
        let what = match spec.pool {
            PoolKind::Max => "maxpool",
            PoolKind::L2 => "l2pool",
        };
        let pooled = pool.record(table, format!("{}.pool", spec.name), what, input);
        let proj = (spec.proj > 0).then(|| {
            let (unit, shape) =
                ConvUnit::same(&(path / "pool_proj"), table, pooled, spec.proj, 1, 1);
            take(shape);
            unit
        });
        if spec.proj == 0 {
            take(pooled);
        }
        let last = out.expect("a module has at least its pool branch");
        let output = last.with_c(channels);
        record_free(
            table,
            format!("{}.concat", spec.name),
            "concat",
            vec![output.c, output.h, output.w],
        );
        let module = Self {
            c1,
            b3,
            b5,
            pool,
            pool_kind: spec.pool,
            proj,
        };
        (module, output)
    }
}

impl ModuleT for Inception {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut branches = Vec::with_capacity(4);
        if let Some(c1) = &self.c1 {
            branches.push(xs.apply_t(c1, train));
        }
        for (reduce, conv) in self.b3.iter().chain(self.b5.iter()) {
            branches.push(xs.apply_t(reduce, train).apply_t(conv, train));
        }
        let pooled = match self.pool_kind {
            PoolKind::Max => self.pool.max(xs),
            PoolKind::L2 => self.pool.l2(xs),
        };
        branches.push(match &self.proj {
            Some(proj) => pooled.apply_t(proj, train),
            None => pooled,
        });
        Tensor::cat(&branches, 1)
    }
}

#[derive(Debug)]
enum HeadLayers {
    AvgPool(nn::Linear),
    Flatten(nn::Linear, nn::Linear),
}

#[derive(Debug)]
pub struct InceptionNet {
    conv1: ConvUnit,
    conv2_reduce: ConvUnit,
    conv2: ConvUnit,
    modules: Vec<Inception>,
    head: HeadLayers,
}

impl InceptionNet {
    pub fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        spec: &NetSpec,
        embedding_dim: i64,
    ) -> Self {
        let input = Shape::new(3, spec.input.height, spec.input.width);
        let (conv1, shape) = ConvUnit::same(&(path / "conv1"), table, input, spec.conv1, 7, 2);
        let shape = MAX_POOL_3X3_S2.record(table, "pool1".into(), "maxpool", shape);
        record_free(
            table,
            "norm1".into(),
            "lrn",
            vec![shape.c, shape.h, shape.w],
        );
        let (conv2_reduce, shape) = ConvUnit::same(
            &(path / "conv2_reduce"),
            table,
            shape,
            spec.conv2_reduce,
            1,
            1,
        );
        let (conv2, shape) = ConvUnit::same(&(path / "conv2"), table, shape, spec.conv2, 3, 1);
        record_free(
            table,
            "norm2".into(),
            "lrn",
            vec![shape.c, shape.h, shape.w],
        );
        let mut shape = MAX_POOL_3X3_S2.record(table, "pool2".into(), "maxpool", shape);
        let mut modules = Vec::with_capacity(spec.modules.len());
        for module_spec in &spec.modules {
            let (module, out) =
                Inception::new(&(path / module_spec.name), table, shape, module_spec);
            modules.push(module);
            shape = out;
        }
        let head = match spec.head {
            Head::AvgPool => {
                record_free(table, "avgpool".into(), "global avgpool", vec![shape.c]);
                HeadLayers::AvgPool(linear(
                    &(path / "fc"),
                    table,
                    shape.c,
                    embedding_dim,
                    true,
                    "linear",
                ))
            }
            Head::Flatten { hidden } => {
                record_free(table, "flatten".into(), "flatten", vec![shape.numel()]);
                let fc1 = linear(
                    &(path / "fc1"),
                    table,
                    shape.numel(),
                    hidden,
                    true,
                    "linear + relu",
                );
                let fc2 = linear(
                    &(path / "fc2"),
                    table,
                    hidden,
                    embedding_dim,
                    true,
                    "linear",
                );
                HeadLayers::Flatten(fc1, fc2)
            }
        };
        record_l2_normalization(table, embedding_dim);
        Self {
            conv1,
            conv2_reduce,
            conv2,
            modules,
            head,
        }
    }
}

impl ModuleT for InceptionNet {
    /// N×3×H×W → N×embedding_dim, rows of unit norm.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = xs.apply_t(&self.conv1, train);
        let xs = local_response_norm(&MAX_POOL_3X3_S2.max(&xs));
        let xs = xs
            .apply_t(&self.conv2_reduce, train)
            .apply_t(&self.conv2, train);
        let mut xs = MAX_POOL_3X3_S2.max(&local_response_norm(&xs));
        for module in &self.modules {
            xs = xs.apply_t(module, train);
        }
        let embedding = match &self.head {
            HeadLayers::AvgPool(fc) => global_avg_pool(&xs).apply(fc),
            HeadLayers::Flatten(fc1, fc2) => xs.flatten(1, -1).apply(fc1).relu().apply(fc2),
        };
        l2_normalize(&embedding)
    }
}
