//! dlib's `.dat` files of DNN metric networks (`loss_metric` over the ResNet templates of
//! dlib's `dnn_face_recognition_ex` and `dnn_metric_learning_on_images_ex`), read into a
//! [`DlibLayout`] and float32 tensors under this crate's variable names.
//!
//! The format (dlib's `serialize.h`, `dnn/core.h`, `layers.h`, `input.h`, `loss.h`):
//! - an integer is a control byte (low 4 bits: 1–8 magnitude bytes; 0x80: negative), then
//!   the magnitude, little-endian; a float is an integer mantissa then an integer exponent
//!   (m·2^e; exponents 32000–32002 are +inf, −inf and NaN); a string is a length then its
//!   bytes; a bool is ASCII '1' or '0'; a tensor is version 2, four dimensions, then raw
//!   little-endian float32.
//! - Layers nest from the loss inwards: each wrapper writes its version, then its whole
//!   sub-network, and only then its own layer. So the file holds every wrapper's version
//!   outer → inner, then the input layer, then the layers input → output.
//! - Tag and skip wrappers (`tag1`, `skip1`) write a version and nothing else, and
//!   `add_prev` does not write which tag it adds. The topology is in dlib's C++ types, not in
//!   the file; this reader therefore accepts exactly the sequences the `residual` and
//!   `residual_down` templates produce, with any depth and widths, and refuses the rest.
//!
//! Every read is bounds-checked against the file before anything is allocated, and every
//! refusal is an [`Error::Weights`] naming the file and the byte offset.

use crate::error::{Error, Result};
use crate::model::{DlibLayout, DlibUnit, InputSize, DLIB_MEANS};
use std::path::Path;

/// What a dlib metric network file holds.
#[derive(Debug)]
pub struct DlibNet {
    pub layout: DlibLayout,
    pub embedding_dim: i64,
    /// `loss_metric`'s training margin.
    pub margin: f64,
    /// `loss_metric`'s distance threshold: two faces match below this Euclidean distance.
    pub distance_threshold: f64,
    /// Every parameter, input → output, under this crate's names (see `DlibResNet`).
    pub tensors: Vec<NamedTensor>,
}

#[derive(Debug)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

/// Wrappers (layers, tags, skips) a file may nest: far more than any ResNet has, and a
/// bound on the version list the reader keeps.
const MAX_WRAPPERS: usize = 100_000;
/// Layer and input names are short identifiers; a longer "string" is not a name.
const MAX_NAME: usize = 64;

/// The position of a tensor's values in the file and its dimensions (samples, k, rows,
/// columns).
#[derive(Debug, Clone, Copy)]
struct Stored {
    dims: [i64; 4],
    offset: usize,
}

impl Stored {
    fn numel(&self) -> i64 {
        self.dims.iter().product()
    }
}

struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fail(&self, at: usize, message: impl std::fmt::Display) -> Error {
        Error::Weights(format!("{}: at byte {at}: {message}", self.path.display()))
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| {
            self.fail(
                self.pos,
                format!("the file ends before {what} (truncated?)"),
            )
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| {
            self.fail(
                self.pos,
                format!(
                    "{what} needs {len} bytes but only {} are left (truncated, or a length that lies)",
                    self.bytes.len() - self.pos
                ),
            )
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn int(&mut self, what: &str) -> Result<i64> {
        let at = self.pos;
        let control = self.byte(what)?;
        let size = (control & 0x0f) as usize;
        if control & 0x70 != 0 || !(1..=8).contains(&size) {
            return Err(self.fail(
                at,
                format!("expected {what} (a dlib integer), found byte 0x{control:02x}"),
            ));
        }
        let magnitude = self
            .take(size, what)?
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64);
        let value = i64::try_from(magnitude)
            .map_err(|_| self.fail(at, format!("{what} is out of range")))?;
        Ok(if control & 0x80 != 0 { -value } else { value })
    }

    /// A dimension, count or size: a non-negative integer at most `max`.
    fn count(&mut self, what: &str, max: i64) -> Result<i64> {
        let at = self.pos;
        let value = self.int(what)?;
        if !(0..=max).contains(&value) {
            return Err(self.fail(at, format!("{what} is {value}, outside 0..={max}")));
        }
        Ok(value)
    }

    fn float(&mut self, what: &str) -> Result<f64> {
        let at = self.pos;
        let mantissa = self.int(what)?;
        let exponent = self.int(what)?;
        match exponent {
            32000 => Ok(f64::INFINITY),
            32001 => Ok(f64::NEG_INFINITY),
            32002 => Ok(f64::NAN),
            e if (-32768..32000).contains(&e) => Ok(ldexp(mantissa as f64, e as i32)),
            e => Err(self.fail(at, format!("{what} has exponent {e}, not a 16-bit one"))),
        }
    }

    fn boolean(&mut self, what: &str) -> Result<bool> {
        let at = self.pos;
        match self.byte(what)? {
            b'1' => Ok(true),
            b'0' => Ok(false),
            other => Err(self.fail(
                at,
                format!("expected {what} ('0' or '1'), found byte 0x{other:02x}"),
            )),
        }
    }

    fn name(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.count(what, MAX_NAME as i64)? as usize;
        let bytes = self.take(len, what)?;
        if !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            return Err(self.fail(
                at,
                format!("expected {what}, found bytes that are not a name"),
            ));
        }
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    /// The name at the cursor, if the next bytes are a length and a name, without moving.
    fn peek_name(&self) -> Option<String> {
        let mut probe = Reader {
            path: self.path,
            bytes: self.bytes,
            pos: self.pos,
        };
        probe.name("").ok().filter(|n| !n.is_empty())
    }

    fn version(&mut self, what: &str, expected: i64) -> Result<()> {
        let at = self.pos;
        let v = self.int(what)?;
        if v != expected {
            return Err(self.fail(at, format!("{what} has version {v}, expected {expected}")));
        }
        Ok(())
    }

    fn dims(&mut self, what: &str) -> Result<[i64; 4]> {
        let mut dims = [0i64; 4];
        for d in &mut dims {
            *d = self.count(what, i64::from(u32::MAX))?;
        }
        Ok(dims)
    }

    /// A `resizable_tensor`: its values are skipped, not read, until a layer needs them.
    fn tensor(&mut self, what: &str) -> Result<Stored> {
        let at = self.pos;
        self.version(what, 2)?;
        let dims = self.dims(what)?;
        let bytes = dims
            .iter()
            .try_fold(4i64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.fail(at, format!("{what} has dimensions {dims:?}, too large")))?;
        let offset = self.pos;
        self.take(bytes, what)?;
        Ok(Stored { dims, offset })
    }

    /// An `alias_tensor`: a shape only.
    fn alias(&mut self, what: &str) -> Result<[i64; 4]> {
        self.version(what, 1)?;
        self.dims(what)
    }

    fn values(&self, stored: Stored) -> Vec<f32> {
        let len = stored.numel() as usize * 4;
        self.bytes[stored.offset..stored.offset + len]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// x·2^e without the intermediate 2^e under- or overflowing where the product does not.
fn ldexp(mut x: f64, mut e: i32) -> f64 {
    while e != 0 && x != 0.0 && x.is_finite() {
        let step = e.clamp(-1000, 1000);
        x *= 2f64.powi(step);
        e -= step;
    }
    x
}

/// One layer as the file describes it, with the offset of its name.
#[derive(Debug)]
enum Layer {
    Con {
        at: usize,
        filters: [i64; 4],
        stride: [i64; 2],
        padding: [i64; 2],
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
        fused_relu: bool,
    },
    /// `affine_` (or a `bn_con` folded into one); `None` when dlib disabled it (folded into
    /// the conv before it).
    Affine {
        at: usize,
        scale_shift: Option<(Vec<f32>, Vec<f32>)>,
    },
    Relu {
        at: usize,
        disabled: bool,
    },
    MaxPool {
        at: usize,
        window: [i64; 6],
    },
    AvgPool {
        at: usize,
        window: [i64; 6],
    },
    AddPrev {
        at: usize,
    },
    Fc {
        at: usize,
        inputs: i64,
        outputs: i64,
        /// dlib's layout: inputs × outputs.
        weights: Vec<f32>,
    },
    /// A `tag` or `skip` wrapper: both write only a version.
    Marker {
        at: usize,
    },
}

impl Layer {
    fn at(&self) -> usize {
        match self {
            Layer::Con { at, .. }
            | Layer::Affine { at, .. }
            | Layer::Relu { at, .. }
            | Layer::MaxPool { at, .. }
            | Layer::AvgPool { at, .. }
            | Layer::AddPrev { at }
            | Layer::Fc { at, .. }
            | Layer::Marker { at } => *at,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Layer::Con { .. } => "con",
            Layer::Affine { .. } => "affine",
            Layer::Relu { .. } => "relu",
            Layer::MaxPool { .. } => "max_pool",
            Layer::AvgPool { .. } => "avg_pool",
            Layer::AddPrev { .. } => "add_prev",
            Layer::Fc { .. } => "fc",
            Layer::Marker { .. } => "a tag or skip",
        }
    }
}

/// The layers this reader knows, by the names dlib writes for them.
const SUPPORTED: &str = "con_4/5/6, affine_/affine_2, bn_con2, relu_/relu_2, max_pool_2, avg_pool_2, add_prev_, fc_2/fc_3";

fn pool_window(r: &mut Reader<'_>, what: &str) -> Result<[i64; 6]> {
    let mut w = [0i64; 6];
    for v in &mut w {
        *v = r.count(what, 4096)?;
    }
    Ok(w)
}

fn multipliers(r: &mut Reader<'_>, what: &str) -> Result<()> {
    for _ in 0..4 {
        r.float(what)?;
    }
    Ok(())
}

fn con(r: &mut Reader<'_>, at: usize, version: &str) -> Result<Layer> {
    let params = r.tensor("con params")?;
    let num_filters = r.count("con num_filters", 1 << 20)?;
    let nr = r.count("con nr", 4096)?;
    let nc = r.count("con nc", 4096)?;
    let stride = [
        r.count("con stride_y", 4096)?,
        r.count("con stride_x", 4096)?,
    ];
    let padding = [
        r.count("con padding_y", 4096)?,
        r.count("con padding_x", 4096)?,
    ];
    let filters = r.alias("con filters")?;
    let biases = r.alias("con biases")?;
    multipliers(r, "con multiplier")?;
    let use_bias = if version != "con_4" {
        r.boolean("con use_bias")?
    } else {
        true
    };
    let fused_relu = version == "con_6" && r.boolean("con use_relu")?;
    let weight_count: i64 = filters.iter().product();
    let bias_count: i64 = biases.iter().product();
    if filters[0] != num_filters
        || filters[2] != nr
        || filters[3] != nc
        || bias_count != num_filters
    {
        return Err(r.fail(
            at,
            format!("con has {num_filters} {nr}×{nc} filters but stores filters {filters:?} and biases {biases:?}"),
        ));
    }
    let has_bias = params.numel() == weight_count + bias_count;
    if !has_bias && params.numel() != weight_count {
        return Err(r.fail(
            at,
            format!(
                "con params hold {} values, not the {weight_count} weights (+ {bias_count} biases) its filters need",
                params.numel()
            ),
        ));
    }
    let values = r.values(params);
    let (weights, bias) = values.split_at(weight_count as usize);
    Ok(Layer::Con {
        at,
        filters,
        stride,
        padding,
        weights: weights.to_vec(),
        // dlib ignores stored biases once `use_bias` is off.
        bias: (has_bias && use_bias).then(|| bias.to_vec()),
        fused_relu,
    })
}

fn affine(r: &mut Reader<'_>, at: usize, version: &str) -> Result<Layer> {
    let params = r.tensor("affine params")?;
    let gamma = r.alias("affine gamma")?;
    let _beta = r.alias("affine beta")?;
    let mode_at = r.pos;
    let mode = r.int("affine mode")?;
    let disabled = version == "affine_2" && r.boolean("affine disabled")?;
    if disabled {
        return Ok(Layer::Affine {
            at,
            scale_shift: None,
        });
    }
    if mode != 0 {
        return Err(r.fail(
            mode_at,
            "an affine layer in fc mode is not part of a ResNet metric network",
        ));
    }
    let channels = gamma[1];
    if params.numel() != 2 * channels || gamma[0] != 1 || gamma[2] * gamma[3] > 1 {
        return Err(r.fail(
            at,
            format!(
                "affine params hold {} values for gamma {gamma:?}",
                params.numel()
            ),
        ));
    }
    let values = r.values(params);
    let (scale, shift) = values.split_at(channels as usize);
    Ok(Layer::Affine {
        at,
        scale_shift: Some((scale.to_vec(), shift.to_vec())),
    })
}

/// A `bn_con` (what a training network holds) folded into the `affine_` dlib builds from
/// it: scale = γ / √(var + ε), shift = β − scale · mean.
fn batch_norm(r: &mut Reader<'_>, at: usize) -> Result<Layer> {
    let params = r.tensor("bn params")?;
    let gamma = r.alias("bn gamma")?;
    let _beta = r.alias("bn beta")?;
    let _means = r.tensor("bn means")?;
    let _invstds = r.tensor("bn invstds")?;
    let running_means = r.tensor("bn running_means")?;
    let running_variances = r.tensor("bn running_variances")?;
    r.count("bn num_updates", i64::MAX)?;
    r.count("bn running_stats_window_size", i64::MAX)?;
    multipliers(r, "bn multiplier")?;
    let eps = r.float("bn eps")?;
    let channels = gamma[1];
    if params.numel() != 2 * channels
        || running_means.numel() != channels
        || running_variances.numel() != channels
        || !(eps.is_finite() && eps >= 0.0)
    {
        return Err(r.fail(
            at,
            format!("bn_con2 holds inconsistent statistics for {channels} channels"),
        ));
    }
    let values = r.values(params);
    let (g, b) = values.split_at(channels as usize);
    let (means, variances) = (r.values(running_means), r.values(running_variances));
    let scale: Vec<f32> = g
        .iter()
        .zip(&variances)
        .map(|(g, v)| g / (v + eps as f32).sqrt())
        .collect();
    let shift = b
        .iter()
        .zip(&scale)
        .zip(&means)
        .map(|((b, s), m)| b - s * m)
        .collect();
    Ok(Layer::Affine {
        at,
        scale_shift: Some((scale, shift)),
    })
}

fn fc(r: &mut Reader<'_>, at: usize, version: &str) -> Result<Layer> {
    let outputs = r.count("fc num_outputs", 1 << 20)?;
    let inputs = r.count("fc num_inputs", 1 << 20)?;
    let params = r.tensor("fc params")?;
    let _weights = r.alias("fc weights")?;
    let _biases = r.alias("fc biases")?;
    let mode_at = r.pos;
    let bias_mode = r.int("fc bias mode")?;
    multipliers(r, "fc multiplier")?;
    if version == "fc_3" {
        r.boolean("fc use_bias")?;
    }
    if bias_mode != 1 {
        return Err(r.fail(
            mode_at,
            "an fc layer with a bias: a metric network ends in fc_no_bias",
        ));
    }
    if params.numel() != inputs * outputs {
        return Err(r.fail(
            at,
            format!(
                "fc params hold {} values, not {inputs}×{outputs}",
                params.numel()
            ),
        ));
    }
    Ok(Layer::Fc {
        at,
        inputs,
        outputs,
        weights: r.values(params),
    })
}

/// A layer's own part: its name, then what that version of it writes.
fn layer(r: &mut Reader<'_>) -> Result<Layer> {
    let at = r.pos;
    let name = r.name("a layer name")?;
    let layer = match name.as_str() {
        "con_4" | "con_5" | "con_6" => con(r, at, &name)?,
        "affine_" | "affine_2" => affine(r, at, &name)?,
        "bn_con2" => batch_norm(r, at)?,
        "relu_" => Layer::Relu {
            at,
            disabled: false,
        },
        "relu_2" => Layer::Relu {
            at,
            disabled: r.boolean("relu disabled")?,
        },
        "max_pool_2" => Layer::MaxPool {
            at,
            window: pool_window(r, "max_pool window")?,
        },
        "avg_pool_2" => Layer::AvgPool {
            at,
            window: pool_window(r, "avg_pool window")?,
        },
        "add_prev_" => Layer::AddPrev { at },
        "fc_2" | "fc_3" => fc(r, at, &name)?,
        other => {
            return Err(r.fail(
                at,
                format!("unsupported layer '{other}' (this reader knows {SUPPORTED})"),
            ))
        }
    };
    Ok(layer)
}

/// What `add_layer` writes after its layer: three flags and its cached tensors (empty in a
/// cleaned network, skipped either way).
fn add_layer_trailer(r: &mut Reader<'_>, version: i64, over_input: bool) -> Result<()> {
    r.boolean("this_layer_setup_called")?;
    r.boolean("gradient_input_is_stale")?;
    r.boolean("get_output_and_gradient_input_disabled")?;
    r.tensor("x_grad")?;
    r.tensor("cached_output")?;
    if over_input {
        r.tensor("grad_final")?;
        if version >= 3 {
            r.int("_sample_expansion_factor")?;
        }
    } else if version == 2 {
        r.tensor("params_grad")?;
    }
    Ok(())
}

fn input_layer(r: &mut Reader<'_>) -> Result<(usize, InputSize)> {
    let at = r.pos;
    let name = r.name("the input layer")?;
    let sized = match name.as_str() {
        "input_rgb_image_sized" => true,
        "input_rgb_image" => false,
        other => {
            return Err(r.fail(
                at,
                format!("unsupported input layer '{other}' (a metric network takes input_rgb_image or input_rgb_image_sized)"),
            ))
        }
    };
    let means_at = r.pos;
    let means = [
        r.float("avg_red")?,
        r.float("avg_green")?,
        r.float("avg_blue")?,
    ];
    let dlib_means = DLIB_MEANS.map(|m| m as f32 as f64);
    if means != dlib_means {
        return Err(r.fail(
            means_at,
            format!(
                "the input means are {means:?}; only dlib's defaults {DLIB_MEANS:?} are supported"
            ),
        ));
    }
    // An unsized input takes chips of any size; dlib's face chips are 150×150.
    let mut input = InputSize {
        height: 150,
        width: 150,
    };
    if sized {
        input.height = r.count("input rows", 1024)?;
        input.width = r.count("input columns", 1024)?;
    }
    Ok((at, input))
}

/// Whether `bytes` start as a dlib serialized object (version 1 of a loss layer or of a
/// shape predictor) rather than as safetensors (an 8-byte header length, then `{`).
pub fn looks_like_dlib(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x01, 0x01]) && bytes.get(8) != Some(&b'{')
}

/// Reads a dlib metric network from the bytes of `path`.
pub fn read(path: &Path, bytes: &[u8]) -> Result<DlibNet> {
    let mut r = Reader {
        path,
        bytes,
        pos: 0,
    };
    let not_metric = |r: &Reader<'_>, at: usize, found: String| {
        r.fail(
            at,
            format!("not a dlib metric network (.dat of loss_metric): {found}"),
        )
    };
    let version_at = r.pos;
    if r.int("add_loss_layer's version").ok() != Some(1) {
        return Err(not_metric(
            &r,
            version_at,
            "it does not start with a loss layer".into(),
        ));
    }
    let loss_at = r.pos;
    let loss = r
        .name("the loss layer")
        .map_err(|_| not_metric(&r, loss_at, "no loss layer name follows".into()))?;
    let (margin, distance_threshold) = match loss.as_str() {
        // The first version hard-coded these.
        "loss_metric_" => (0.1, 0.75),
        "loss_metric_2" => (r.float("margin")?, r.float("dist_thresh")?),
        other => return Err(not_metric(&r, loss_at, format!("its loss is '{other}'"))),
    };
    let mut wrappers: Vec<(usize, i64)> = Vec::new();
    while !r.peek_name().is_some_and(|n| n.starts_with("input")) {
        let at = r.pos;
        let version = r.int("a layer's version")?;
        if !(1..=3).contains(&version) {
            // A name's length whose name the file is too short to hold: a cut, not a lie.
            if version > (r.bytes.len() - r.pos) as i64 {
                return Err(r.fail(
                    at,
                    format!("the file ends inside a name of {version} bytes (truncated?)"),
                ));
            }
            return Err(r.fail(
                at,
                format!("expected a layer's version (1 to 3), found {version}"),
            ));
        }
        if wrappers.len() == MAX_WRAPPERS {
            return Err(r.fail(at, format!("more than {MAX_WRAPPERS} nested layers")));
        }
        wrappers.push((at, version));
    }
    let (input_at, input) = input_layer(&mut r)?;
    let mut layers = Vec::with_capacity(wrappers.len());
    // The innermost wrapper is the add_layer over the input, which writes its own version.
    match wrappers.pop() {
        Some((_, version)) if version >= 2 => {
            layers.push(layer(&mut r)?);
            add_layer_trailer(&mut r, version, true)?;
        }
        _ => return Err(r.fail(input_at, "the input layer is not under a layer")),
    }
    while let Some((at, version)) = wrappers.pop() {
        match version {
            1 => layers.push(Layer::Marker { at }),
            2 => {
                layers.push(layer(&mut r)?);
                add_layer_trailer(&mut r, version, false)?;
            }
            v => {
                return Err(r.fail(
                    at,
                    format!("a layer's version is {v}; only the input's layer has 3"),
                ))
            }
        }
    }
    Structure::new(&r, input, layers).parse(margin, distance_threshold)
}

/// Matches the layer list against the ResNet templates and collects the tensors.
struct Structure<'r, 'a> {
    r: &'r Reader<'a>,
    input: InputSize,
    layers: std::vec::IntoIter<Layer>,
    end: usize,
    tensors: Vec<NamedTensor>,
}

impl<'r, 'a> Structure<'r, 'a> {
    fn new(r: &'r Reader<'a>, input: InputSize, layers: Vec<Layer>) -> Self {
        Self {
            r,
            input,
            layers: layers.into_iter(),
            end: r.pos,
            tensors: Vec::new(),
        }
    }

    fn unexpected(&self, layer: Option<&Layer>, expected: &str) -> Error {
        match layer {
            Some(l) => self.r.fail(
                l.at(),
                format!("found {} where a ResNet metric network has {expected} (the layers do not follow dlib's residual templates)", l.what()),
            ),
            None => self.r.fail(self.end, format!("the network ends where it needs {expected}")),
        }
    }

    fn next(&mut self, expected: &str) -> Result<Layer> {
        let layer = self.layers.next();
        match layer {
            Some(l) => Ok(l),
            None => Err(self.unexpected(None, expected)),
        }
    }

    fn push(&mut self, name: String, shape: Vec<i64>, values: Vec<f32>) {
        self.tensors.push(NamedTensor {
            name,
            shape,
            values,
        });
    }

    /// A conv of `kernel`×`kernel` at `stride` with dlib's default padding, taking
    /// `c_in` channels, then its affine and, when `relu`, its relu. Returns its filters.
    fn conv_block(
        &mut self,
        [prefix, conv, affine]: [&str; 3],
        c_in: i64,
        (kernel, stride): (i64, Option<i64>),
        relu: bool,
    ) -> Result<(i64, i64)> {
        let what = format!("a {kernel}×{kernel} con");
        let layer = self.next(&what)?;
        let Layer::Con {
            at,
            filters,
            stride: s,
            padding,
            weights,
            bias,
            fused_relu,
        } = layer
        else {
            return Err(self.unexpected(Some(&layer), &what));
        };
        let s = s[0];
        let expected_pad = if s == 1 { kernel / 2 } else { 0 };
        let stride_ok = stride.map_or(s == 1 || s == 2, |want| want == s);
        if filters[1] != c_in
            || filters[2] != kernel
            || filters[3] != kernel
            || !stride_ok
            || padding != [expected_pad; 2]
        {
            return Err(self.r.fail(
                at,
                format!("con {filters:?} stride {s} padding {padding:?} does not fit here: a {kernel}×{kernel} con over {c_in} channels with dlib's default padding"),
            ));
        }
        let k = filters[0];
        self.push(format!("{prefix}.{conv}.weight"), filters.to_vec(), weights);
        self.push(
            format!("{prefix}.{conv}.bias"),
            vec![k],
            bias.unwrap_or_else(|| vec![0.0; k as usize]),
        );
        let layer = self.next("an affine")?;
        let Layer::Affine { scale_shift, .. } = layer else {
            return Err(self.unexpected(Some(&layer), "an affine"));
        };
        // A fused relu is right only where the affine between is folded away too.
        if fused_relu && (!relu || scale_shift.is_some()) {
            return Err(self.r.fail(
                at,
                "a con with a fused relu where the network has an affine or no relu",
            ));
        }
        let (scale, shift) =
            scale_shift.unwrap_or_else(|| (vec![1.0; k as usize], vec![0.0; k as usize]));
        if scale.len() != k as usize {
            return Err(self.r.fail(
                at,
                format!("an affine of {} channels after a con of {k}", scale.len()),
            ));
        }
        self.push(format!("{prefix}.{affine}.scale"), vec![k], scale);
        self.push(format!("{prefix}.{affine}.shift"), vec![k], shift);
        if relu {
            self.relu(fused_relu)?;
        }
        Ok((k, s))
    }

    fn relu(&mut self, fused: bool) -> Result<()> {
        let layer = self.next("a relu")?;
        match layer {
            Layer::Relu { disabled, at } => {
                if disabled && !fused {
                    return Err(self
                        .r
                        .fail(at, "a disabled relu whose con does not apply it"));
                }
                Ok(())
            }
            other => Err(self.unexpected(Some(&other), "a relu")),
        }
    }

    fn pool(&mut self, max: bool, window: [i64; 6]) -> Result<()> {
        let what = format!(
            "{} pool {window:?}",
            if max { "a max" } else { "an average" }
        );
        let layer = self.next(&what)?;
        let found = match &layer {
            Layer::MaxPool { window, .. } if max => *window,
            Layer::AvgPool { window, .. } if !max => *window,
            _ => return Err(self.unexpected(Some(&layer), &what)),
        };
        if found != window {
            return Err(self.r.fail(layer.at(), format!("found a pool {found:?} (rows, columns, strides, paddings) where the network has {window:?}")));
        }
        Ok(())
    }

    fn expect(&mut self, marker: bool, what: &str) -> Result<()> {
        let layer = self.next(what)?;
        match (&layer, marker) {
            (Layer::Marker { .. }, true) | (Layer::AddPrev { .. }, false) => Ok(()),
            _ => Err(self.unexpected(Some(&layer), what)),
        }
    }

    fn parse(mut self, margin: f64, distance_threshold: f64) -> Result<DlibNet> {
        let (stem, _) = self.conv_block(["stem", "conv", "affine"], 3, (7, Some(2)), true)?;
        self.pool(true, [3, 3, 2, 2, 0, 0])?;
        let mut channels = stem;
        let mut units = Vec::new();
        while let Some(Layer::Marker { .. }) = self.layers.as_slice().first() {
            self.expect(true, "a tag")?;
            let prefix = format!("units.{}", units.len());
            let (filters, stride) =
                self.conv_block([&prefix, "conv1", "affine1"], channels, (3, None), true)?;
            self.conv_block([&prefix, "conv2", "affine2"], filters, (3, Some(1)), false)?;
            let down = stride == 2;
            if down {
                self.expect(true, "a tag")?;
                self.expect(true, "a skip")?;
                self.pool(false, [2, 2, 2, 2, 0, 0])?;
            }
            self.expect(false, "an add_prev")?;
            self.relu(false)?;
            channels = channels.max(filters);
            units.push(DlibUnit { filters, down });
        }
        self.pool(false, [0, 0, 1, 1, 0, 0])?;
        let layer = self.next("an fc_no_bias")?;
        let Layer::Fc {
            at,
            inputs,
            outputs,
            weights,
        } = layer
        else {
            return Err(self.unexpected(Some(&layer), "an fc_no_bias"));
        };
        if inputs != channels {
            return Err(self.r.fail(
                at,
                format!("fc takes {inputs} inputs, the network gives {channels}"),
            ));
        }
        // dlib stores inputs × outputs; a torch Linear's weight is outputs × inputs.
        let transposed = (0..outputs as usize)
            .flat_map(|o| (0..inputs as usize).map(move |i| (i, o)))
            .map(|(i, o)| weights[i * outputs as usize + o])
            .collect();
        self.push("fc.weight".into(), vec![outputs, inputs], transposed);
        if let Some(extra) = self.layers.next() {
            return Err(self.unexpected(Some(&extra), "nothing after the fc layer"));
        }
        let layout = DlibLayout {
            input: self.input,
            stem,
            units,
        };
        layout.check().map_err(|e| {
            self.r
                .fail(0, format!("the network's layout is unusable: {e}"))
        })?;
        if !(1..=4096).contains(&outputs) {
            return Err(self.r.fail(at, format!("an embedding of {outputs} values")));
        }
        Ok(DlibNet {
            layout,
            embedding_dim: outputs,
            margin,
            distance_threshold,
            tensors: self.tensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// dlib's models as `npm install` caches them (scripts/setup-libtorch.sh).
    fn cached(name: &str) -> Option<(PathBuf, Vec<u8>)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.libtorch/dlib-models")
            .join(name);
        std::fs::read(&path).ok().map(|bytes| (path, bytes))
    }

    fn face_model() -> (PathBuf, Vec<u8>) {
        cached("dlib_face_recognition_resnet_model_v1.dat")
            .expect("dlib's model is cached by `npm install` (scripts/setup-libtorch.sh)")
    }

    #[test]
    fn the_face_model_reads_as_the_default_layout() {
        let (path, bytes) = face_model();
        let net = read(&path, &bytes).unwrap();
        assert_eq!(net.layout, DlibLayout::default());
        assert_eq!(net.embedding_dim, 128);
        assert_eq!(net.margin as f32, 0.04);
        assert_eq!(net.distance_threshold as f32, 0.6);
        let floats: usize = net.tensors.iter().map(|t| t.values.len()).sum();
        assert_eq!(floats, 5_614_592);
        // 29 convs (weight and bias), 29 affines (scale and shift), one fc.
        assert_eq!(net.tensors.len(), 29 * 2 + 29 * 2 + 1);
    }

    #[test]
    fn every_truncation_of_the_face_model_is_a_weights_error_with_an_offset() {
        let (path, bytes) = face_model();
        // Every cut in the structure part (the first tensors start after a few hundred
        // bytes), then cuts spread over the rest.
        let cuts = (0..2_000).chain((2_000..bytes.len()).step_by(104_729));
        for cut in cuts {
            let err = read(&path, &bytes[..cut]).unwrap_err();
            assert_eq!(err.code(), "ERR_WEIGHTS", "cut {cut}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("dlib_face_recognition_resnet_model_v1.dat: at byte "),
                "cut {cut}: {text}"
            );
        }
    }

    #[test]
    fn other_dlib_networks_are_refused_by_name() {
        for (name, expected) in [
            ("mmod_human_face_detector.dat", "its loss is 'loss_mmod_'"),
            (
                "shape_predictor_5_face_landmarks.dat",
                "not a dlib metric network",
            ),
        ] {
            let Some((path, bytes)) = cached(name) else {
                panic!("{name} is cached by `npm install`");
            };
            assert!(looks_like_dlib(&bytes), "{name}");
            let err = read(&path, &bytes).unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains(name),
                "{name}: {err}"
            );
        }
    }

    /// Flips each byte of the structure part of the face model in turn: every result is
    /// either a network or a coded error, never a panic.
    #[test]
    fn corrupted_headers_never_panic() {
        let (path, bytes) = face_model();
        let mut copy = bytes.clone();
        for at in 0..400 {
            for value in [0x00u8, 0x08, 0x88, 0xff] {
                let original = copy[at];
                copy[at] = value;
                if let Err(err) = read(&path, &copy) {
                    assert_eq!(err.code(), "ERR_WEIGHTS", "byte {at} = {value:#x}: {err}");
                }
                copy[at] = original;
            }
        }
    }

    /// A dlib integer as dlib writes it.
    fn int(out: &mut Vec<u8>, v: i64) {
        let mut m = v.unsigned_abs();
        let mut buf = Vec::new();
        loop {
            buf.push((m & 0xff) as u8);
            m >>= 8;
            if m == 0 {
                break;
            }
        }
        out.push(buf.len() as u8 | if v < 0 { 0x80 } else { 0 });
        out.extend(buf);
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        int(out, s.len() as i64);
        out.extend(s.as_bytes());
    }

    #[test]
    fn a_lying_tensor_length_is_refused_before_any_allocation() {
        // loss, one wrapper, the input, then a con whose params claim 2^36 values (256 GiB).
        let mut file = Vec::new();
        int(&mut file, 1);
        string(&mut file, "loss_metric_");
        int(&mut file, 2);
        string(&mut file, "input_rgb_image");
        for m in DLIB_MEANS {
            // (m as f32) = mantissa · 2^exponent with a 24-bit mantissa.
            let v = m as f32;
            let exp = v.log2().floor() as i32 - 23;
            int(&mut file, (v as f64 / 2f64.powi(exp)) as i64);
            int(&mut file, exp as i64);
        }
        string(&mut file, "con_6");
        int(&mut file, 2);
        for d in [65_536, 65_536, 16, 1] {
            int(&mut file, d);
        }
        let err = read(Path::new("lie.dat"), &file).unwrap_err().to_string();
        assert!(err.starts_with("lie.dat: at byte "), "{err}");
        assert!(
            err.contains("con params needs") && err.contains("a length that lies"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_layer_is_named_with_its_offset() {
        let mut file = Vec::new();
        int(&mut file, 1);
        string(&mut file, "loss_metric_");
        int(&mut file, 2);
        string(&mut file, "input_rgb_image");
        for m in DLIB_MEANS {
            let v = m as f32;
            let exp = v.log2().floor() as i32 - 23;
            int(&mut file, (v as f64 / 2f64.powi(exp)) as i64);
            int(&mut file, exp as i64);
        }
        let at = file.len();
        string(&mut file, "gelu_");
        let err = read(Path::new("x.dat"), &file).unwrap_err().to_string();
        assert!(
            err.contains(&format!("at byte {at}: unsupported layer 'gelu_'")),
            "{err}"
        );
    }
}
