//! `dlib-resnet-v1`: dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`,
//! the network of dlib's `dnn_face_recognition_ex` and Python's `face_recognition`), built
//! from dlib's `residual`/`residual_down` templates.
//!
//! ```text
//! 3×150×150 → conv 7×7/2 (no padding) → affine → relu → maxpool 3×3/2 (no padding)
//!   → units: [conv 3×3/s → affine → relu → conv 3×3 → affine] + shortcut → relu
//!            (a down unit: s = 2, unpadded; shortcut = 2×2/2 average pool)
//!   → global average pool → fc (no bias) → 128-d, not normalized
//! ```
//!
//! Three things differ from a textbook ResNet, each on purpose, to match dlib:
//! - `affine` is batch norm folded into a per-channel scale and shift; here both train.
//! - dlib's `add_prev` of tensors of unequal shapes zero-pads the smaller at the high end, in
//!   channels and in space: a down unit's 32→64 channels, and its 3×3 main path against a
//!   4×4 pooled shortcut where the input side is even ([`padded_add`]).
//! - The embedding is dlib's raw descriptor (norms about 1.4–1.5): dlib's threshold of 0.6
//!   applies to the Euclidean distance of these, and a gallery embedded by dlib or
//!   `face_recognition` stays comparable.

use super::layers::{push_row, record_free, Conv, ConvGeometry, LayerTable, Pool, Shape};
use super::{init, InputSize};
use crate::error::{Error, Result};
use tch::{nn, nn::Module, nn::ModuleT, Tensor};

/// One residual unit: `filters` channels out; `down` halves the side with a stride-2 conv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlibUnit {
    pub filters: i64,
    pub down: bool,
}

/// The shape of a dlib ResNet metric network: what a `.dat` file or the `dlibLayout`
/// metadata of a converted file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlibLayout {
    pub input: InputSize,
    /// Filters of the 7×7/2 stem convolution.
    pub stem: i64,
    /// The residual units, input to output.
    pub units: Vec<DlibUnit>,
}

/// dlib's per-channel input means (R, G, B) of `input_rgb_image`; inputs are
/// (x − mean) / 256.
pub const DLIB_MEANS: [f64; 3] = [122.782, 117.001, 104.298];

fn unit(filters: i64, down: bool) -> DlibUnit {
    DlibUnit { filters, down }
}

impl Default for DlibLayout {
    /// `dlib_face_recognition_resnet_model_v1`: levels of 3×32, 4×64, 3×128, 3×256 and one
    /// 256 down unit, 150×150 input.
    fn default() -> Self {
        let mut units = vec![unit(32, false); 3];
        units.push(unit(64, true));
        units.extend([unit(64, false); 3]);
        units.push(unit(128, true));
        units.extend([unit(128, false); 2]);
        units.push(unit(256, true));
        units.extend([unit(256, false); 2]);
        units.push(unit(256, true));
        Self {
            input: InputSize {
                height: 150,
                width: 150,
            },
            stem: 32,
            units,
        }
    }
}

const STEM: ConvGeometry = ConvGeometry {
    kernel: [7, 7],
    stride: 2,
    padding: [0, 0],
    bias: true,
};
const STEM_POOL: Pool = Pool::new(3, 2, 0);
const SHORTCUT_POOL: [i64; 2] = [2, 2];

/// dlib pads a conv by k/2 at stride 1 and not at all otherwise.
fn conv3x3(stride: i64) -> ConvGeometry {
    let padding = if stride == 1 { 1 } else { 0 };
    ConvGeometry {
        kernel: [3, 3],
        stride,
        padding: [padding, padding],
        bias: true,
    }
}

impl DlibLayout {
    /// The metadata form: `stem=32;units=32,32,32,64/2,…` (`/2`: a down unit).
    pub fn to_text(&self) -> String {
        let units: Vec<String> = self
            .units
            .iter()
            .map(|u| {
                if u.down {
                    format!("{}/2", u.filters)
                } else {
                    u.filters.to_string()
                }
            })
            .collect();
        format!("stem={};units={}", self.stem, units.join(","))
    }

    /// Parses [`DlibLayout::to_text`] for an `input`-sized network, and checks it.
    pub fn from_text(text: &str, input: InputSize) -> Result<Self> {
        let bad = || {
            let shown: String = text.chars().take(80).collect();
            Error::invalid(format!(
                "dlib layout '{shown}' is not of the form 'stem=32;units=32,64/2,…'"
            ))
        };
        let (stem, units) = text.split_once(';').ok_or_else(bad)?;
        let stem = stem
            .strip_prefix("stem=")
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(bad)?;
        let units = units
            .strip_prefix("units=")
            .ok_or_else(bad)?
            .split(',')
            .map(|u| {
                let (filters, down) = match u.strip_suffix("/2") {
                    Some(f) => (f, true),
                    None => (u, false),
                };
                filters
                    .parse::<i64>()
                    .map(|f| unit(f, down))
                    .map_err(|_| bad())
            })
            .collect::<Result<Vec<_>>>()?;
        let layout = Self { input, stem, units };
        layout.check()?;
        Ok(layout)
    }

    /// Widths in 1..=4096, 1–256 units, and an input that keeps at least one pixel to
    /// the last unit.
    pub fn check(&self) -> Result<()> {
        let widths_ok = std::iter::once(self.stem)
            .chain(self.units.iter().map(|u| u.filters))
            .all(|w| (1..=4096).contains(&w));
        if !widths_ok || self.units.is_empty() || self.units.len() > 256 {
            return Err(Error::invalid(format!(
                "a dlib ResNet needs 1 to 256 units of 1 to 4096 filters, got stem {} and {} units",
                self.stem,
                self.units.len()
            )));
        }
        let InputSize { height, width } = self.input;
        if !(1..=1024).contains(&height) || !(1..=1024).contains(&width) {
            return Err(Error::invalid(format!(
                "a dlib ResNet takes inputs of 1 to 1024 pixels a side, got {height}×{width}"
            )));
        }
        let last = self.shapes().last().copied().unwrap_or(Shape::new(0, 0, 0));
        if last.h < 1 || last.w < 1 {
            return Err(Error::invalid(format!(
                "a {height}×{width} input is too small for this dlib ResNet's {} down units",
                self.units.iter().filter(|u| u.down).count()
            )));
        }
        Ok(())
    }

    /// The output shape after the stem's pool and after each unit.
    fn shapes(&self) -> Vec<Shape> {
        let side = |s: i64, k: i64, stride: i64, p: i64| (s + 2 * p - k).div_euclid(stride) + 1;
        let mut shape = Shape::new(self.stem, self.input.height, self.input.width);
        shape.h = side(side(shape.h, 7, 2, 0), 3, 2, 0);
        shape.w = side(side(shape.w, 7, 2, 0), 3, 2, 0);
        let mut out = vec![shape];
        for u in &self.units {
            shape = if u.down {
                // The larger of the main path (3×3/2) and the pooled shortcut (2×2/2).
                let h = side(shape.h, 3, 2, 0).max(side(shape.h, 2, 2, 0));
                let w = side(shape.w, 3, 2, 0).max(side(shape.w, 2, 2, 0));
                Shape::new(u.filters.max(shape.c), h, w)
            } else {
                shape.with_c(u.filters.max(shape.c))
            };
            out.push(shape);
        }
        out
    }
}

/// dlib's `affine_` in conv mode: x · scale_c + shift_c.
#[derive(Debug)]
struct Affine {
    scale: Tensor,
    shift: Tensor,
}

impl Affine {
    fn new(path: &nn::Path, table: &mut LayerTable, shape: Shape) -> Self {
        push_row(
            table,
            super::layers::name_of(path),
            "affine (folded batch norm)".into(),
            vec![shape.c, shape.h, shape.w],
            2 * shape.c,
            0,
        );
        Self {
            scale: path.var("scale", &[shape.c], nn::Init::Const(1.0)),
            shift: path.var("shift", &[shape.c], nn::Init::Const(0.0)),
        }
    }
}

impl Module for Affine {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let c = self.scale.size()[0];
        xs * self.scale.view([1, c, 1, 1]) + self.shift.view([1, c, 1, 1])
    }
}

#[derive(Debug)]
struct Unit {
    conv1: Conv,
    affine1: Affine,
    conv2: Conv,
    affine2: Affine,
    down: bool,
}

/// `a + b` as dlib's `add_prev` computes it: the result has the larger of each dimension
/// and the smaller operand counts as zero where it has no value (its high end).
pub fn padded_add(a: &Tensor, b: &Tensor) -> Tensor {
    let (sa, sb) = (a.size(), b.size());
    if sa == sb {
        return a + b;
    }
    let pad = |s: &[i64]| -> Vec<i64> {
        // constant_pad_nd takes (left, right) pairs from the last dimension backwards.
        let target = [sa[1].max(sb[1]), sa[2].max(sb[2]), sa[3].max(sb[3])];
        vec![
            0,
            target[2] - s[3],
            0,
            target[1] - s[2],
            0,
            target[0] - s[1],
        ]
    };
    a.constant_pad_nd(pad(&sa)) + b.constant_pad_nd(pad(&sb))
}

#[derive(Debug)]
pub struct DlibResNet {
    stem: Conv,
    stem_affine: Affine,
    units: Vec<Unit>,
    fc: nn::Linear,
}

impl DlibResNet {
    pub fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        layout: &DlibLayout,
        embedding_dim: i64,
    ) -> Self {
        let input = Shape::new(3, layout.input.height, layout.input.width);
        let (stem, mut shape) =
            Conv::new(&(path / "stem" / "conv"), table, input, layout.stem, STEM);
        let stem_affine = Affine::new(&(path / "stem" / "affine"), table, shape);
        record_free(
            table,
            "stem.relu".into(),
            "relu",
            vec![shape.c, shape.h, shape.w],
        );
        shape = STEM_POOL.record(table, "stem.pool".into(), "maxpool", shape);
        let mut units = Vec::with_capacity(layout.units.len());
        let shapes = layout.shapes();
        for (i, u) in layout.units.iter().enumerate() {
            let p = path / "units" / i;
            let stride = if u.down { 2 } else { 1 };
            let (conv1, mid) = Conv::new(&(&p / "conv1"), table, shape, u.filters, conv3x3(stride));
            let affine1 = Affine::new(&(&p / "affine1"), table, mid);
            let (conv2, main) = Conv::new(&(&p / "conv2"), table, mid, u.filters, conv3x3(1));
            let affine2 = Affine::new(&(&p / "affine2"), table, main);
            shape = shapes[i + 1];
            let kind = if u.down {
                "add (avgpool 2×2/2 shortcut, zero-padded) + relu"
            } else {
                "add (identity shortcut) + relu"
            };
            record_free(
                table,
                format!("units.{i}.add"),
                kind,
                vec![shape.c, shape.h, shape.w],
            );
            units.push(Unit {
                conv1,
                affine1,
                conv2,
                affine2,
                down: u.down,
            });
        }
        record_free(table, "avgpool".into(), "global avgpool", vec![shape.c]);
        push_row(
            table,
            "fc".into(),
            "linear (no bias), not normalized".into(),
            vec![embedding_dim],
            shape.c * embedding_dim,
            shape.c * embedding_dim,
        );
        let fc = nn::linear(
            path / "fc",
            shape.c,
            embedding_dim,
            nn::LinearConfig {
                ws_init: init::xavier_uniform(shape.c, embedding_dim),
                bs_init: None,
                bias: false,
            },
        );
        Self {
            stem,
            stem_affine,
            units,
            fc,
        }
    }
}

impl ModuleT for DlibResNet {
    /// N×3×H×W, (x − mean) / 256 → N×embedding_dim dlib descriptors (not normalized).
    /// `train` changes nothing: the network has no batch norm or dropout.
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let mut xs = xs.apply(&self.stem).apply(&self.stem_affine).relu();
        xs = xs.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        for u in &self.units {
            let main = xs
                .apply(&u.conv1)
                .apply(&u.affine1)
                .relu()
                .apply(&u.conv2)
                .apply(&u.affine2);
            let shortcut = if u.down {
                xs.avg_pool2d(
                    SHORTCUT_POOL,
                    SHORTCUT_POOL,
                    [0, 0],
                    false,
                    true,
                    None::<i64>,
                )
            } else {
                xs
            };
            xs = padded_add(&main, &shortcut).relu();
        }
        xs.mean_dim([2i64, 3].as_slice(), false, tch::Kind::Float)
            .apply(&self.fc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_default_layout_has_the_files_parameter_count() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut table = Vec::new();
        let _net = DlibResNet::new(&vs.root(), &mut table, &DlibLayout::default(), 128);
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(params, 5_614_592);
        assert_eq!(table.iter().map(|r| r.params).sum::<i64>(), params);
    }

    #[test]
    fn padded_add_zero_pads_the_smaller_operand_at_the_high_end() {
        let a = Tensor::ones([1, 2, 2, 2], (Kind::Float, Device::Cpu));
        let b = Tensor::ones([1, 1, 3, 3], (Kind::Float, Device::Cpu)) * 10.0;
        let sum = padded_add(&a, &b);
        assert_eq!(sum.size(), [1, 2, 3, 3]);
        let v = |c: i64, y: i64, x: i64| sum.double_value(&[0, c, y, x]);
        assert_eq!(v(0, 0, 0), 11.0);
        assert_eq!(v(0, 2, 2), 10.0);
        assert_eq!(v(1, 1, 1), 1.0);
        assert_eq!(v(1, 2, 0), 0.0);
    }

    #[test]
    fn layouts_round_trip_through_their_text() {
        let layout = DlibLayout::default();
        let text = layout.to_text();
        assert!(text.starts_with("stem=32;units=32,32,32,64/2,"), "{text}");
        assert_eq!(DlibLayout::from_text(&text, layout.input).unwrap(), layout);
        for bad in [
            "",
            "stem=32",
            "stem=x;units=1",
            "stem=32;units=",
            "stem=32;units=0",
        ] {
            assert!(DlibLayout::from_text(bad, layout.input).is_err(), "{bad}");
        }
    }
}
