//! Model weights as safetensors files: every variable of the model (batch-norm running
//! statistics included) as little-endian F32, plus string metadata in the header that
//! says how to rebuild the network (arch, embeddingDim, input size, normalization) and
//! which library wrote it. PyTorch's own `torch.save` files (a state_dict in `.pt`/`.pth`)
//! are read too, through [`crate::torch_file`]'s restricted unpickler, which builds only
//! tensors and plain containers: nothing in a file is executed or imported.
//!
//! Writes are atomic: the file is written under a temporary name in the same directory,
//! flushed to disk, then renamed over the destination, so a crash never leaves a
//! half-written file under the real name.

use crate::error::{Error, Result};
use crate::model::{Arch, DlibLayout, FaceNet, InputSize, ModelConfig, TinyConfig};
use crate::preprocess::Normalization;
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Tensors of a training checkpoint that hold optimizer state, not weights.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Value of the `format` metadata key of the files this library writes.
pub const FORMAT: &str = "facenet-torch";

/// What the header of a weights file says about the model in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsInfo {
    pub arch: Arch,
    pub embedding_dim: i64,
    pub input: InputSize,
    pub normalization: Normalization,
    /// `tiny`'s widths and input size (the default for other archs).
    pub tiny: TinyConfig,
    /// `dlib-resnet-v1`'s units and input size (the default for other archs).
    pub dlib: DlibLayout,
    /// The library version that wrote the file.
    pub version: String,
}

fn err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Weights(format!("{}: {message}", path.display()))
}

/// One tensor's bytes, ready for the safetensors serializer.
struct Raw {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn to_raw(name: &str, tensor: &Tensor) -> Result<Raw> {
    if tensor.kind() != Kind::Float {
        return Err(Error::invalid(format!(
            "tensor '{name}' is {:?}; only float32 models can be saved",
            tensor.kind()
        )));
    }
    let values = Vec::<f32>::try_from(
        tensor
            .f_detach()?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?
            .f_flatten(0, -1)?,
    )?;
    Ok(Raw {
        shape: tensor.size().iter().map(|&d| d as usize).collect(),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

/// The metadata written into a file's header for `model`.
pub fn metadata(model: &FaceNet) -> HashMap<String, String> {
    let config = model.config();
    let input = model.input_size();
    let mut meta = HashMap::from([
        ("format".to_owned(), FORMAT.to_owned()),
        ("arch".to_owned(), config.arch.name().to_owned()),
        ("embeddingDim".to_owned(), config.embedding_dim.to_string()),
        ("inputHeight".to_owned(), input.height.to_string()),
        ("inputWidth".to_owned(), input.width.to_string()),
        (
            "normalization".to_owned(),
            config.normalization.name().to_owned(),
        ),
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("libtorch".to_owned(), crate::LIBTORCH_VERSION.to_owned()),
    ]);
    if config.arch == Arch::Tiny {
        let widths: Vec<String> = config.tiny.widths.iter().map(i64::to_string).collect();
        meta.insert("tinyWidths".to_owned(), widths.join(","));
    }
    if config.arch == Arch::DlibResnetV1 {
        meta.insert("dlibLayout".to_owned(), config.dlib.to_text());
    }
    meta
}

/// SHA-256 of every variable of `model` (name, shape and little-endian f32 values, in name
/// order): equal for two models exactly when their weights are bit-identical, on any device,
/// and unchanged by a save and load. Metadata is left out, so a file re-saved with other
/// metadata keeps its digest.
pub fn digest(model: &FaceNet) -> Result<String> {
    use sha2::{Digest, Sha256};
    let variables = model.var_store().variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        let raw = to_raw(name, &variables[name])?;
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((raw.shape.len() as u64).to_le_bytes());
        for &d in &raw.shape {
            hasher.update((d as u64).to_le_bytes());
        }
        hasher.update(&raw.bytes);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes every variable of `model` to `path` as safetensors, atomically.
pub fn save(model: &FaceNet, path: &Path) -> Result<()> {
    save_with(model, &[], HashMap::new(), path)
}

/// [`save`] plus `extra` tensors (names must not clash with the model's) and metadata:
/// how a training checkpoint stores optimizer state beside the weights, so that a
/// checkpoint is also a weights file.
pub fn save_with(
    model: &FaceNet,
    extra: &[(String, Tensor)],
    extra_metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let variables = model.var_store().variables();
    let mut raws = Vec::with_capacity(variables.len() + extra.len());
    for (name, tensor) in variables.iter().chain(extra.iter().map(|(n, t)| (n, t))) {
        raws.push((name.clone(), to_raw(name, tensor)?));
    }
    raws.sort_by(|a, b| a.0.cmp(&b.0));
    let data = raws.iter().map(|(name, raw)| (name.as_str(), raw));
    let mut meta = metadata(model);
    meta.extend(extra_metadata);
    let bytes = safetensors::serialize(data, &Some(meta))
        .map_err(|e| err(path, format!("could not serialize the weights: {e}")))?;
    let bytes = sorted_header(&bytes).map_err(|e| err(path, e))?;
    write_atomically(path, &bytes)
}

/// `bytes` (a serialized safetensors file) with its JSON header's keys sorted. The
/// serializer writes metadata in a hash map's order, which differs from run to run; a
/// shipped or checksummed file must not. The header stays padded to 8 bytes with spaces,
/// as the format's writers pad it.
fn sorted_header(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .filter(|&n| n <= bytes.len() - 8)
        .ok_or("the serializer wrote no header")?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len])
        .map_err(|e| format!("the serializer wrote a header that is not JSON: {e}"))?;
    // serde_json's maps are BTreeMaps (no preserve_order feature): keys come out sorted.
    let mut json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

fn temp_path(path: &Path) -> Result<PathBuf> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("'{}' is not a file path", path.display())))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut temp = std::ffi::OsString::from(".");
    temp.push(file_name);
    temp.push(format!(".tmp-{}-{nanos}", std::process::id()));
    Ok(path.with_file_name(temp))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_path(path)?;
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        // The rename itself is durable only once the directory is synced; not every
        // platform lets a directory be opened, so this part is best effort.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        err(path, format!("could not write the weights file: {e}"))
    })
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        err(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e:?}"),
        )
    })
}

fn info_from_metadata(path: &Path, meta: &HashMap<String, String>) -> Result<WeightsInfo> {
    let get = |key: &str| {
        meta.get(key)
            .map(String::as_str)
            .ok_or_else(|| err(path, format!("the header has no '{key}' metadata")))
    };
    let int = |key: &str| -> Result<i64> {
        let text = get(key)?;
        text.parse::<i64>().map_err(|_| {
            err(
                path,
                format!("metadata '{key}' is not an integer: '{text}'"),
            )
        })
    };
    let arch = Arch::from_name(get("arch")?)?;
    let embedding_dim = int("embeddingDim")?;
    let input = InputSize {
        height: int("inputHeight")?,
        width: int("inputWidth")?,
    };
    let mut tiny = TinyConfig::default();
    if arch == Arch::Tiny {
        // Files from before the widths were configurable have none: the defaults.
        if let Some(text) = meta.get("tinyWidths") {
            tiny.widths = text
                .split(',')
                .map(|w| w.trim().parse::<i64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| {
                    err(
                        path,
                        format!("metadata 'tinyWidths' is not a list of integers: '{text}'"),
                    )
                })?;
        }
        tiny.input = input;
        tiny.check().map_err(|e| err(path, e))?;
    }
    let mut dlib = DlibLayout::default();
    if arch == Arch::DlibResnetV1 {
        dlib = match meta.get("dlibLayout") {
            Some(text) => DlibLayout::from_text(text, input).map_err(|e| err(path, e))?,
            None => DlibLayout { input, ..dlib },
        };
        dlib.check().map_err(|e| err(path, e))?;
    } else if arch != Arch::Tiny && input != arch.input_size() {
        return Err(err(
            path,
            format!(
                "the file says input {}×{} but arch '{}' takes {}×{}",
                input.height,
                input.width,
                arch.name(),
                arch.input_size().height,
                arch.input_size().width
            ),
        ));
    }
    let normalization = Normalization::from_name(get("normalization")?)?;
    Ok(WeightsInfo {
        arch,
        embedding_dim,
        input,
        normalization,
        tiny,
        dlib,
        version: meta.get("version").cloned().unwrap_or_default(),
    })
}

/// Loads the weights of a safetensors file's `bytes` (read from `path`) into an existing
/// model of the same arch and shape, and returns the file's metadata.
pub fn load_into(model: &FaceNet, path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let tensors = parse(path, bytes)?;
    let meta = file_metadata(path, bytes)?;
    let info = info_from_metadata(path, &meta)?;
    let config = model.config();
    if info.arch == Arch::Tiny && info.tiny != config.tiny {
        return Err(err(
            path,
            format!(
                "the file holds a 'tiny' model with widths {:?} at {}×{}, this model has {:?} at {}×{}",
                info.tiny.widths,
                info.tiny.input.height,
                info.tiny.input.width,
                config.tiny.widths,
                config.tiny.input.height,
                config.tiny.input.width
            ),
        ));
    }
    if info.arch == Arch::DlibResnetV1 && info.dlib != config.dlib {
        return Err(err(
            path,
            format!(
                "the file holds a dlib ResNet '{}', this model is '{}'",
                info.dlib.to_text(),
                config.dlib.to_text()
            ),
        ));
    }
    if info.arch != config.arch || info.embedding_dim != config.embedding_dim {
        return Err(err(
            path,
            format!(
                "the file holds a '{}' model with embeddingDim {}, this model is '{}' with {}",
                info.arch.name(),
                info.embedding_dim,
                config.arch.name(),
                config.embedding_dim
            ),
        ));
    }
    copy_into(model, &tensors, path, &info)?;
    Ok(meta)
}

/// The string metadata of a safetensors file's header.
pub fn file_metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| err(path, format!("not a valid safetensors file: {e:?}")))?;
    header.metadata().clone().ok_or_else(|| {
        err(
            path,
            "the header has no metadata; was it written by facenet-torch?",
        )
    })
}

/// A stored F32 tensor as a CPU tensor of its shape.
fn view_tensor(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Tensor> {
    if view.dtype() != Dtype::F32 {
        return Err(err(
            path,
            format!(
                "tensor '{name}' is {:?}; only F32 is supported",
                view.dtype()
            ),
        ));
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // A NaN or infinite weight makes every embedding NaN, which then reads as a distance
    // ("NaN") rather than an error; refuse the file while the tensor can still be named.
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        return Err(err(
            path,
            format!(
                "tensor '{name}' holds {} at element {at}; weights must be finite",
                values[at]
            ),
        ));
    }
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_slice(&values)?.f_view(shape.as_slice())?)
}

/// The bytes of a file, with an error naming it. Every weights, checkpoint and detector
/// file is read here: a FIFO would block the worker for ever and a device such as
/// `/dev/zero` would be read until memory runs out, so anything but a regular file is
/// refused from its metadata, before it is opened.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let meta =
        fs::metadata(path).map_err(|e| err(path, format!("could not read the file: {e}")))?;
    if !meta.is_file() {
        return Err(err(
            path,
            format!("is not a regular file ({})", file_kind(&meta.file_type())),
        ));
    }
    fs::read(path).map_err(|e| err(path, format!("could not read the file: {e}")))
}

/// What a non-regular file is, in words, for messages.
fn file_kind(kind: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a plain file"
    }
}

/// Every tensor of a safetensors file whose name starts with `prefix`, as CPU float
/// tensors keyed by the rest of the name.
pub fn read_prefixed(path: &Path, bytes: &[u8], prefix: &str) -> Result<HashMap<String, Tensor>> {
    let tensors = parse(path, bytes)?;
    let mut out = HashMap::new();
    for (name, view) in tensors.tensors() {
        if let Some(rest) = name.strip_prefix(prefix) {
            out.insert(rest.to_owned(), view_tensor(path, &name, &view)?);
        }
    }
    Ok(out)
}

/// Reads only the header of a weights file.
pub fn read_info(path: &Path) -> Result<WeightsInfo> {
    let bytes = read_file(path)?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(path, format!("not a valid safetensors file: {e:?}")))?;
    let meta = metadata.metadata().clone().ok_or_else(|| {
        err(
            path,
            "the header has no metadata; was it written by facenet-torch?",
        )
    })?;
    info_from_metadata(path, &meta)
}

/// The tensor whose first dimension is the embedding size, per arch.
fn embedding_tensor(arch: Arch) -> &'static str {
    match arch {
        Arch::Tiny | Arch::Nn2 | Arch::Nn3 | Arch::Nn4 => "fc.weight",
        Arch::Iresnet18 | Arch::Iresnet34 | Arch::Iresnet50 => "fc.weight",
        Arch::Nn1 | Arch::Nns1 | Arch::Nns2 => "fc2.weight",
        Arch::Nn1Paper => "fc7128.weight",
        Arch::InceptionResnetV1 => "last_linear.weight",
        Arch::DlibResnetV1 => "fc.weight",
    }
}

/// A file without facenet-torch metadata, e.g. facenet-pytorch's `InceptionResnetV1`
/// state_dict saved with `safetensors.torch.save_file`: the caller names the arch, the
/// embedding size comes from the last layer's shape, and the normalization is `fixed`
/// ((x − 127.5) / 128, facenet-pytorch's `fixed_image_standardization`) unless the
/// header says otherwise.
fn plain_state_dict_info(
    path: &Path,
    tensors: &SafeTensors<'_>,
    arch: Arch,
    meta: Option<&HashMap<String, String>>,
) -> Result<WeightsInfo> {
    let name = embedding_tensor(arch);
    let view = tensors.tensor(name).map_err(|_| {
        err(
            path,
            format!(
                "tensor '{name}' of a '{}' model is missing (the file does not name its arch: \
                 is it a state_dict of that arch?)",
                arch.name()
            ),
        )
    })?;
    let normalization = match meta.and_then(|m| m.get("normalization")) {
        Some(name) => Normalization::from_name(name)?,
        None => arch.default_normalization(),
    };
    Ok(WeightsInfo {
        arch,
        embedding_dim: view.shape().first().copied().unwrap_or(0) as i64,
        input: arch.input_size(),
        normalization,
        tiny: TinyConfig::default(),
        dlib: DlibLayout::default(),
        version: String::new(),
    })
}

/// Tensors a state_dict may carry that are not part of the embedding network:
/// PyTorch's batch-norm step counters and facenet-pytorch's optional classifier.
fn ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
        || name.starts_with("logits.")
        || name.starts_with(OPTIMIZER_PREFIX)
        || name.starts_with(crate::loss::objective::CLASS_HEAD_PREFIX)
}

/// Loads a model from a weights file onto `device`. `expected_arch`, when given, must
/// match the file's; a file whose header names no arch (a plain state_dict, e.g. a `.pt`)
/// needs it unless its tensor names say it. Every variable must be in the file with the
/// same shape; tensors the
/// model does not have are refused, except [`ignorable`] ones.
pub fn load(path: &Path, device: Device, expected_arch: Option<Arch>) -> Result<FaceNet> {
    load_with_metadata(path, device, expected_arch).map(|(model, _)| model)
}

/// [`load`], also returning the header's metadata minus the keys [`metadata`] writes:
/// what the caller stored with [`save_with`] (e.g. a calibrated threshold).
pub fn load_with_metadata(
    path: &Path,
    device: Device,
    expected_arch: Option<Arch>,
) -> Result<(FaceNet, HashMap<String, String>)> {
    let bytes = read_file(path)?;
    if crate::dlib::looks_like_dlib(&bytes) {
        return load_dlib(path, &bytes, device, expected_arch);
    }
    // A `.pt` that is neither (not even safetensors under another name) is reported as a
    // bad torch file, which is what its user meant it to be.
    let misnamed = || is_torch_extension(path) && SafeTensors::read_metadata(&bytes).is_err();
    if crate::torch_file::looks_like_torch(&bytes) || misnamed() {
        let converted = torch_as_safetensors(path, &bytes)?;
        return load_safetensors(path, &converted, device, expected_arch);
    }
    load_safetensors(path, &bytes, device, expected_arch)
}

/// The extensions `torch.save` files usually carry: such a file that is not safetensors
/// either is reported as a bad torch file rather than as a bad safetensors file.
fn is_torch_extension(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pt" | "pth")
    )
}

/// The state_dict of a `torch.save` file as an in-memory safetensors file (F32, no
/// metadata), so that it loads exactly as a plain state_dict exported with safetensors
/// does. Tensors the model never takes ([`ignorable`], e.g. int64 batch-norm counters)
/// are dropped; float16/bfloat16/float64 weights become float32.
pub fn torch_as_safetensors(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let tensors = crate::torch_file::read_state_dict(path, bytes)?;
    let mut raws = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        if ignorable(&tensor.name) {
            continue;
        }
        if !tensor.dtype.is_float() {
            return Err(err(
                path,
                format!(
                    "tensor '{}' is {}; weights must be floating point",
                    tensor.name,
                    tensor.dtype.name()
                ),
            ));
        }
        let raw = Raw {
            shape: tensor.shape.iter().map(|&d| d as usize).collect(),
            bytes: tensor.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        raws.push((tensor.name, raw));
    }
    let data = raws.iter().map(|(name, raw)| (name.as_str(), raw));
    safetensors::serialize(data, &None)
        .map_err(|e| err(path, format!("could not convert the state_dict: {e}")))
}

/// The arch of a plain state_dict whose tensor names say it unambiguously: facenet-pytorch's
/// `InceptionResnetV1` (its stem and its 512-d `last_linear`).
fn recognised_arch(tensors: &SafeTensors<'_>) -> Option<Arch> {
    let names = tensors.names();
    let has = |n: &str| names.iter().any(|name| name.as_str() == n);
    (has("conv2d_1a.conv.weight")
        && has("repeat_1.0.branch0.conv.weight")
        && has("last_linear.weight"))
    .then_some(Arch::InceptionResnetV1)
}

/// [`load_with_metadata`] for the bytes of a safetensors file.
fn load_safetensors(
    path: &Path,
    bytes: &[u8],
    device: Device,
    expected_arch: Option<Arch>,
) -> Result<(FaceNet, HashMap<String, String>)> {
    let tensors = parse(path, bytes)?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| err(path, format!("not a valid safetensors file: {e:?}")))?;
    let recognised = recognised_arch(&tensors);
    let has_arch = header
        .metadata()
        .as_ref()
        .is_some_and(|m| m.contains_key("arch"));
    if let (false, Some(expected), Some(found)) = (has_arch, expected_arch, recognised) {
        if expected != found {
            return Err(err(
                path,
                format!(
                    "the tensor names are those of a '{}' model, not '{}'",
                    found.name(),
                    expected.name()
                ),
            ));
        }
    }
    let info = match (header.metadata(), expected_arch.or(recognised)) {
        (Some(meta), _) if meta.contains_key("arch") => info_from_metadata(path, meta)?,
        (meta, Some(arch)) => plain_state_dict_info(path, &tensors, arch, meta.as_ref())?,
        (_, None) => {
            return Err(err(
                path,
                "the file does not name an arch (a plain state_dict, not written by \
                 facenet-torch?); pass the arch to load it",
            ))
        }
    };
    if let Some(expected) = expected_arch {
        if expected != info.arch {
            return Err(err(
                path,
                format!(
                    "the file holds a '{}' model, not '{}'",
                    info.arch.name(),
                    expected.name()
                ),
            ));
        }
    }
    let model = FaceNet::new(ModelConfig {
        arch: info.arch,
        embedding_dim: info.embedding_dim,
        seed: 0,
        device,
        normalization: info.normalization,
        tiny: info.tiny.clone(),
        dlib: info.dlib.clone(),
    })?;
    copy_into(&model, &tensors, path, &info)?;
    let own = metadata(&model);
    let extra = header
        .metadata()
        .iter()
        .flatten()
        .filter(|(key, _)| !own.contains_key(key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok((model, extra))
}

/// Metadata keys (the CLI's) of the verification threshold a model carries: a squared-L2
/// distance, how it was chosen and from what.
pub const THRESHOLD_KEY: &str = "threshold";
pub const THRESHOLD_METRIC_KEY: &str = "thresholdMetric";
pub const THRESHOLD_FROM_KEY: &str = "thresholdFrom";

/// A dlib metric network (`.dat`) as a `dlib-resnet-v1` model. Its tensors are copied bit
/// for bit; its loss's distance threshold becomes the model's (squared, as every threshold
/// here is a squared-L2 distance).
fn load_dlib(
    path: &Path,
    bytes: &[u8],
    device: Device,
    expected_arch: Option<Arch>,
) -> Result<(FaceNet, HashMap<String, String>)> {
    if let Some(arch) = expected_arch.filter(|&a| a != Arch::DlibResnetV1) {
        return Err(err(
            path,
            format!(
                "the file is a dlib network ('dlib-resnet-v1'), not '{}'",
                arch.name()
            ),
        ));
    }
    let net = crate::dlib::read(path, bytes)?;
    let model = FaceNet::new(ModelConfig {
        embedding_dim: net.embedding_dim,
        device,
        dlib: net.layout.clone(),
        ..ModelConfig::new(Arch::DlibResnetV1)
    })?;
    let variables = model.var_store().variables();
    let _no_grad = tch::no_grad_guard();
    if variables.len() != net.tensors.len() {
        return Err(err(
            path,
            format!(
                "the file holds {} tensors, the network it describes has {}",
                net.tensors.len(),
                variables.len()
            ),
        ));
    }
    for tensor in &net.tensors {
        let target = variables
            .get(&tensor.name)
            .filter(|t| t.size() == tensor.shape);
        let Some(target) = target else {
            return Err(err(
                path,
                format!(
                    "tensor '{}' {:?} has no place in the network",
                    tensor.name, tensor.shape
                ),
            ));
        };
        if let Some(at) = tensor.values.iter().position(|v| !v.is_finite()) {
            return Err(err(
                path,
                format!(
                    "tensor '{}' holds {} at element {at}; weights must be finite",
                    tensor.name, tensor.values[at]
                ),
            ));
        }
        let source = Tensor::f_from_slice(&tensor.values)?.f_view(tensor.shape.as_slice())?;
        target.shallow_clone().f_copy_(&source)?;
    }
    let threshold = net.distance_threshold;
    let metadata = HashMap::from([
        (THRESHOLD_KEY.to_owned(), squared_text(threshold)),
        (THRESHOLD_METRIC_KEY.to_owned(), "dlib".to_owned()),
        (
            THRESHOLD_FROM_KEY.to_owned(),
            format!(
                "dlib's loss_metric distance threshold {} (Euclidean), squared",
                threshold as f32
            ),
        ),
    ]);
    Ok((model, metadata))
}

/// d² to six decimals without trailing zeros: dlib's 0.6f is 0.6000000238…, whose square
/// should read 0.36.
fn squared_text(d: f64) -> String {
    let text = format!("{:.6}", d * d);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Copies every variable of `model` from `tensors`, refusing missing, foreign (except
/// [`ignorable`]) and mis-shaped tensors.
fn copy_into(
    model: &FaceNet,
    tensors: &SafeTensors,
    path: &Path,
    info: &WeightsInfo,
) -> Result<()> {
    let variables = model.var_store().variables();
    for name in tensors.names() {
        if !variables.contains_key(name.as_str()) && !ignorable(name) {
            return Err(err(
                path,
                format!(
                    "tensor '{name}' is not a variable of a '{}' model",
                    info.arch.name()
                ),
            ));
        }
    }
    let _no_grad = tch::no_grad_guard();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    for name in names {
        let target = &variables[name];
        let view = tensors.tensor(name).map_err(|_| {
            err(
                path,
                format!(
                    "tensor '{name}' of a '{}' model is missing",
                    info.arch.name()
                ),
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if shape != target.size() {
            return Err(Error::Shape(format!(
                "{}: tensor '{name}' has shape {shape:?} but the model needs {:?}",
                path.display(),
                target.size()
            )));
        }
        let source = view_tensor(path, name, &view)?;
        let mut target = target.shallow_clone();
        target.f_copy_(&source)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn read_file_refuses_devices_and_directories_before_reading() {
        let zero = read_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(
            zero.contains("/dev/zero: is not a regular file (a character device)"),
            "{zero}"
        );
        let dir = read_file(Path::new("/")).unwrap_err().to_string();
        assert!(dir.contains("is not a regular file (a directory)"), "{dir}");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "facenet-weights-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_tiny_file_loads_only_into_a_tiny_of_its_shape() {
        let shaped = TinyConfig {
            widths: vec![8, 16, 24],
            input: InputSize {
                height: 48,
                width: 40,
            },
        };
        let model = FaceNet::new(ModelConfig {
            embedding_dim: 16,
            tiny: shaped.clone(),
            ..ModelConfig::new(Arch::Tiny)
        })
        .unwrap();
        let path = temp_dir("tiny").join("tiny.safetensors");
        save(&model, &path).unwrap();
        let loaded = load(&path, Device::Cpu, None).unwrap();
        assert_eq!(loaded.config().tiny, shaped);
        assert_eq!(loaded.input_size(), shaped.input);
        let other = FaceNet::new(ModelConfig {
            embedding_dim: 16,
            ..ModelConfig::new(Arch::Tiny)
        })
        .unwrap();
        let err = load_into(&other, &path, &fs::read(&path).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("widths [8, 16, 24] at 48×40"),
            "{err}"
        );
    }

    fn images(n: i64, size: InputSize) -> Tensor {
        let len = n * size.height * size.width * 3;
        Tensor::arange(len, (Kind::Int64, Device::Cpu))
            .remainder(251)
            .to_kind(Kind::Uint8)
            .view([n, size.height, size.width, 3])
    }

    fn tiny(seed: u64) -> FaceNet {
        FaceNet::new(ModelConfig {
            seed,
            embedding_dim: 64,
            normalization: Normalization::Prewhiten,
            ..ModelConfig::new(Arch::Tiny)
        })
        .unwrap()
    }

    #[test]
    fn digest_follows_the_weights_not_the_metadata() {
        let dir = temp_dir("digest");
        let model = tiny(3);
        let digest = super::digest(&model).unwrap();
        assert_eq!(digest.len(), 64);
        assert_eq!(digest, super::digest(&tiny(3)).unwrap());
        assert_ne!(digest, super::digest(&tiny(4)).unwrap());
        let path = dir.join("tagged.safetensors");
        let tag = HashMap::from([("note".to_owned(), "re-saved".to_owned())]);
        save_with(&model, &[], tag, &path).unwrap();
        let loaded = load(&path, Device::Cpu, None).unwrap();
        assert_eq!(super::digest(&loaded).unwrap(), digest);
        // One running statistic moved is another model.
        let mut mean =
            model.var_store().variables()["stage0.conv1.bn.running_mean"].shallow_clone();
        let _ = tch::no_grad(|| mean.f_add_(&Tensor::from(1e-3f32)));
        assert_ne!(super::digest(&model).unwrap(), digest);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn round_trip_is_bit_identical_and_keeps_running_stats() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("tiny.safetensors");
        let model = tiny(3);
        // Give the batch norms non-default running statistics.
        let batch = crate::preprocess::to_network_input(
            &images(4, model.input_size()),
            Device::Cpu,
            Normalization::Fixed,
        )
        .unwrap();
        let _ = tch::no_grad(|| model.forward_t(&batch, true));
        save(&model, &path).unwrap();
        let loaded = load(&path, Device::Cpu, Some(Arch::Tiny)).unwrap();
        assert_eq!(loaded.config().embedding_dim, 64);
        assert_eq!(loaded.config().normalization, Normalization::Prewhiten);
        let a = model.embed(&images(3, model.input_size())).unwrap();
        let b = loaded.embed(&images(3, model.input_size())).unwrap();
        assert!(a.equal(&b));
        let vars = model.var_store().variables();
        let mean = &vars["stage0.conv1.bn.running_mean"];
        assert!(mean.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert!(mean.equal(&loaded.var_store().variables()["stage0.conv1.bn.running_mean"]));
        let info = read_info(&path).unwrap();
        assert_eq!(info.arch, Arch::Tiny);
        assert_eq!(info.input, model.input_size());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn extra_metadata_comes_back_without_the_library_keys() {
        let dir = temp_dir("extra-meta");
        let path = dir.join("tiny.safetensors");
        let model = tiny(2);
        let extra = HashMap::from([("threshold".to_owned(), "1.25".to_owned())]);
        save_with(&model, &[], extra.clone(), &path).unwrap();
        let (_, meta) = load_with_metadata(&path, Device::Cpu, None).unwrap();
        assert_eq!(meta, extra);
        save(&model, &path).unwrap();
        let (_, meta) = load_with_metadata(&path, Device::Cpu, None).unwrap();
        assert!(meta.is_empty(), "{meta:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn truncated_garbage_and_missing_files_are_weights_errors_naming_the_file() {
        let dir = temp_dir("bad");
        let path = dir.join("tiny.safetensors");
        save(&tiny(1), &path).unwrap();
        let bytes = fs::read(&path).unwrap();
        let cut = dir.join("cut.safetensors");
        fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        let garbage = dir.join("garbage.safetensors");
        fs::write(&garbage, b"this is not a weights file at all").unwrap();
        for bad in [cut, garbage, dir.join("absent.safetensors")] {
            let e = load(&bad, Device::Cpu, None).unwrap_err();
            assert_eq!(e.code(), "ERR_WEIGHTS", "{e}");
            assert!(e.to_string().contains(&*bad.to_string_lossy()), "{e}");
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_pt_name_reads_safetensors_content_and_reports_other_bytes_as_not_torch() {
        let dir = temp_dir("pt-name");
        let misnamed = dir.join("tiny.pt");
        save(&tiny(4), &misnamed).unwrap();
        assert_eq!(
            load(&misnamed, Device::Cpu, None).unwrap().config().arch,
            Arch::Tiny
        );
        let garbage = dir.join("garbage.pth");
        fs::write(&garbage, b"neither zip nor pickle").unwrap();
        let e = load(&garbage, Device::Cpu, None).unwrap_err();
        assert_eq!(e.code(), "ERR_WEIGHTS");
        assert!(
            e.to_string().contains("garbage.pth: not a torch.save file"),
            "{e}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_arch_and_mismatched_shapes_are_refused_naming_the_tensor() {
        let dir = temp_dir("mismatch");
        let path = dir.join("tiny.safetensors");
        let model = tiny(1);
        save(&model, &path).unwrap();
        let e = load(&path, Device::Cpu, Some(Arch::Nn4)).unwrap_err();
        assert_eq!(e.code(), "ERR_WEIGHTS");
        assert!(e.to_string().contains("'tiny'"), "{e}");

        // Same tensors, header claiming another embedding size.
        let variables = model.var_store().variables();
        let raws: Vec<(String, Raw)> = variables
            .iter()
            .map(|(n, t)| (n.clone(), to_raw(n, t).unwrap()))
            .collect();
        let mut meta = metadata(&model);
        meta.insert("embeddingDim".into(), "32".into());
        let lying = dir.join("lying.safetensors");
        let data = raws.iter().map(|(n, r)| (n.as_str(), r));
        fs::write(&lying, safetensors::serialize(data, &Some(meta)).unwrap()).unwrap();
        let e = load(&lying, Device::Cpu, None).unwrap_err();
        assert_eq!(e.code(), "ERR_SHAPE");
        assert!(
            e.to_string()
                .contains("tensor 'bn.bias' has shape [64] but the model needs [32]"),
            "{e}"
        );

        // Header claiming another arch: its tensors are missing.
        let mut meta = metadata(&model);
        meta.insert("arch".into(), "nns2".into());
        meta.insert("inputHeight".into(), "140".into());
        meta.insert("inputWidth".into(), "116".into());
        let other = dir.join("other.safetensors");
        let data = raws.iter().map(|(n, r)| (n.as_str(), r));
        fs::write(&other, safetensors::serialize(data, &Some(meta)).unwrap()).unwrap();
        let e = load(&other, Device::Cpu, None).unwrap_err();
        assert_eq!(e.code(), "ERR_WEIGHTS");
        assert!(
            e.to_string()
                .contains("is not a variable of a 'nns2' model"),
            "{e}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
