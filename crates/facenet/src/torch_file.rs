//! A restricted reader of PyTorch's `torch.save` files (`.pt`, `.pth`), so that a
//! state_dict saved by Python can be used without Python.
//!
//! Both formats are read: the zip archive (`<name>/data.pkl` plus one raw entry per
//! storage, `<name>/data/<key>`) and the legacy stream (magic number, protocol version and
//! system-info pickles, the object pickle, the storage-key list, then each storage as an
//! 8-byte element count and its bytes).
//!
//! The pickle is run by a small virtual machine that, like `torch.load(weights_only=True)`,
//! builds nothing but plain values (None, bools, ints, floats, strings, tuples, lists,
//! dicts and `OrderedDict`s), storages (persistent ids of kind `'storage'`) and tensors
//! (`torch._utils._rebuild_tensor_v2` and `_rebuild_parameter`). Nothing is imported or
//! called: a `GLOBAL` outside that list, a `REDUCE` of anything else, object-building
//! opcodes, an unknown persistent id, a view beyond its storage, a length past the end of
//! the file, or misuse of the stack or memo are each a [`Error::Weights`] naming the file,
//! the byte offset and what was refused. No allocation is sized by a field of the file
//! before the bytes it describes are known to be there.

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::rc::Rc;

/// The element types a storage can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    /// The dtype of a `torch.<Name>Storage` class, as `torch.save` names storages.
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::Bf16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::Bf16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// PyTorch's name of the dtype, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
            Self::I64 => "int64",
            Self::I32 => "int32",
            Self::I16 => "int16",
            Self::I8 => "int8",
            Self::U8 => "uint8",
            Self::Bool => "bool",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64 | Self::F16 | Self::Bf16)
    }

    /// One little-endian element as f32 (exact for every float type but float64, which
    /// rounds to nearest as `tensor.float()` does).
    fn read(self, b: &[u8]) -> f32 {
        match self {
            Self::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Self::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            Self::F16 => half_to_f32(u16::from_le_bytes([b[0], b[1]])),
            Self::Bf16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16),
            Self::I64 => {
                i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            Self::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Self::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            Self::I8 => b[0] as i8 as f32,
            Self::U8 => b[0] as f32,
            Self::Bool => (b[0] != 0) as u8 as f32,
        }
    }
}

/// IEEE binary16 to f32, subnormals, infinities and NaN included.
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = mant · 2^-24.
            let value = mant as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -value } else { value };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// One tensor of a state_dict: its shape and its elements in row-major order, as f32,
/// with the dtype it was stored as.
#[derive(Debug, Clone)]
pub struct TorchTensor {
    pub name: String,
    pub dtype: StorageDtype,
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

/// Whether `bytes` look like a `torch.save` file: a zip archive, or the legacy format's
/// first pickle (protocol 2, the magic number as a 10-byte LONG1).
pub fn looks_like_torch(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(LEGACY_MAGIC_PICKLE)
}

/// `pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)` without its STOP: how every legacy
/// file begins.
const LEGACY_MAGIC_PICKLE: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

fn err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Weights(format!("{}: {message}", path.display()))
}

/// Reads the state_dict of a `torch.save` file: the top-level dict when every value is a
/// tensor, else the dict under its `'state_dict'` or `'model'` key (how training scripts
/// usually wrap one). Tensors come in the file's order.
pub fn read_state_dict(path: &Path, bytes: &[u8]) -> Result<Vec<TorchTensor>> {
    let (root, storages) = if bytes.starts_with(b"PK\x03\x04") {
        // The zip crate is third-party code fed hostile bytes: should it ever panic, that
        // is this file's error, not the caller's crash.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_zip(path, bytes)))
            .unwrap_or_else(|_| Err(err(path, "the zip archive is corrupt (its reader failed)")))?
    } else if bytes.starts_with(LEGACY_MAGIC_PICKLE) {
        read_legacy(path, bytes)?
    } else {
        return Err(err(
            path,
            "not a torch.save file (neither a zip archive nor a legacy PyTorch pickle)",
        ));
    };
    let dict = state_dict_of(path, &root)?;
    let dict = dict.borrow();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let Value::Str(name) = key else {
            return Err(err(
                path,
                format!(
                    "the state_dict has a {} key; keys must be strings",
                    key.kind()
                ),
            ));
        };
        let Value::Tensor(view) = value else {
            return Err(err(
                path,
                format!(
                    "state_dict entry '{name}' is a {}, not a tensor",
                    value.kind()
                ),
            ));
        };
        if !seen.insert(name.to_string()) {
            return Err(err(
                path,
                format!("state_dict entry '{name}' appears twice"),
            ));
        }
        let data = storages.get(&view.storage.key).ok_or_else(|| {
            err(
                path,
                format!("tensor '{name}': storage '{}' is missing", view.storage.key),
            )
        })?;
        out.push(TorchTensor {
            name: name.to_string(),
            dtype: view.storage.dtype,
            shape: view.size.clone(),
            values: view.gather(data),
        });
    }
    Ok(out)
}

fn state_dict_of(path: &Path, root: &Value) -> Result<DictRef> {
    let Value::Dict(dict) = root else {
        return Err(err(
            path,
            format!(
                "the file holds a {}, not a state_dict (a dict of tensors)",
                root.kind()
            ),
        ));
    };
    let entries = dict.borrow();
    if entries.iter().all(|(_, v)| matches!(v, Value::Tensor(_))) {
        return Ok(dict.clone());
    }
    for wrapper in ["state_dict", "model"] {
        let inner = entries
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == wrapper))
            .map(|(_, v)| v);
        if let Some(Value::Dict(inner)) = inner {
            return Ok(inner.clone());
        }
    }
    let keys: Vec<String> = entries
        .iter()
        .take(8)
        .map(|(k, v)| match k {
            Value::Str(s) => format!("'{s}' ({})", v.kind()),
            other => other.kind().to_owned(),
        })
        .collect();
    Err(err(
        path,
        format!(
            "the dict holds non-tensor values and no 'state_dict' or 'model' dict: {}",
            keys.join(", ")
        ),
    ))
}

/// Storage bytes by key, checked against the length their persistent ids claim.
type Storages = HashMap<String, Vec<u8>>;

fn read_zip(path: &Path, bytes: &[u8]) -> Result<(Value, Storages)> {
    let zip_err = |e: zip::result::ZipError| {
        err(
            path,
            format!("not a readable torch.save zip archive (truncated or corrupt?): {e}"),
        )
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
    // The archive's one top-level folder is named after the file torch saved to.
    let pickle_name = archive
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_owned)
        .ok_or_else(|| {
            err(
                path,
                "the zip archive has no <name>/data.pkl: not a torch.save file",
            )
        })?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_owned();
    let read_entry = |archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
                      name: &str,
                      expected: Option<usize>| {
        let entry = archive.by_name(name).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => err(
                path,
                format!("'{name}' is missing from the archive (truncated?)"),
            ),
            other => zip_err(other),
        })?;
        let declared = entry.size();
        if let Some(expected) = expected {
            if declared != expected as u64 {
                return Err(err(
                    path,
                    format!("storage '{name}' holds {declared} bytes, its tensors need {expected}"),
                ));
            }
        }
        // Read at most the declared size (which may lie): memory follows the bytes that
        // are actually there, never the header.
        let mut out = Vec::new();
        entry.take(declared).read_to_end(&mut out).map_err(|e| {
            err(
                path,
                format!("could not read '{name}' (truncated or corrupt?): {e}"),
            )
        })?;
        if out.len() as u64 != declared {
            return Err(err(path, format!("'{name}' is truncated")));
        }
        Ok(out)
    };
    if let Ok(order) = read_entry(&mut archive, &format!("{prefix}byteorder"), None) {
        if order != b"little" {
            return Err(err(
                path,
                format!(
                    "the storages are '{}'-endian; only little-endian files are read",
                    String::from_utf8_lossy(&order)
                ),
            ));
        }
    }
    let pickle = read_entry(&mut archive, &pickle_name, None)?;
    let mut vm = Machine::new(path, &pickle);
    let root = vm.run()?;
    let mut storages = Storages::new();
    for storage in vm.storages.values() {
        let name = format!("{prefix}data/{}", storage.key);
        let data = read_entry(&mut archive, &name, Some(storage.byte_len))?;
        storages.insert(storage.key.clone(), data);
    }
    Ok((root, storages))
}

fn read_legacy(path: &Path, bytes: &[u8]) -> Result<(Value, Storages)> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Value> {
        let mut vm = Machine::new(path, &bytes[pos..]);
        vm.base = pos;
        let value = vm.run().map_err(|e| match e {
            Error::Weights(m) => Error::Weights(format!("{m} (in the {what})")),
            other => other,
        })?;
        pos += vm.pos;
        Ok(value)
    };
    // The magic number itself was matched by looks_like_torch.
    next("magic number")?;
    let version = next("protocol version")?;
    if !matches!(version, Value::Int(1001)) {
        return Err(err(
            path,
            format!("legacy protocol version {version:?}; only 1001 is read"),
        ));
    }
    let info = next("system info")?;
    if let Value::Dict(info) = &info {
        let little = info.borrow().iter().find_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Bool(b)) if &**k == "little_endian" => Some(*b),
            _ => None,
        });
        if little == Some(false) {
            return Err(err(
                path,
                "the file is big-endian; only little-endian files are read",
            ));
        }
    }
    let mut vm = Machine::new(path, &bytes[pos..]);
    vm.base = pos;
    let root = vm.run()?;
    pos += vm.pos;
    let claimed = std::mem::take(&mut vm.storages);
    let mut keys_vm = Machine::new(path, &bytes[pos..]);
    keys_vm.base = pos;
    let keys = keys_vm.run()?;
    pos += keys_vm.pos;
    let Value::List(keys) = keys else {
        return Err(err(
            path,
            format!("byte {pos}: the storage-key list is a {}", keys.kind()),
        ));
    };
    let mut storages = Storages::new();
    for key in keys.borrow().iter() {
        let Value::Str(key) = key else {
            return Err(err(
                path,
                format!("byte {pos}: a storage key is a {}", key.kind()),
            ));
        };
        let storage = claimed.get(&**key).ok_or_else(|| {
            err(
                path,
                format!("byte {pos}: storage '{key}' is used by no tensor"),
            )
        })?;
        let count = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .ok_or_else(|| {
                err(
                    path,
                    format!("byte {pos}: the file ends before storage '{key}'"),
                )
            })?;
        if count != storage.numel as u64 {
            return Err(err(
                path,
                format!(
                    "byte {pos}: storage '{key}' holds {count} elements, its id says {}",
                    storage.numel
                ),
            ));
        }
        pos += 8;
        let data = bytes.get(pos..pos + storage.byte_len).ok_or_else(|| {
            err(
                path,
                format!(
                    "byte {pos}: storage '{key}' needs {} bytes, the file is truncated",
                    storage.byte_len
                ),
            )
        })?;
        storages.insert(key.to_string(), data.to_vec());
        pos += storage.byte_len;
    }
    for key in claimed.keys() {
        if !storages.contains_key(key) {
            return Err(err(
                path,
                format!("storage '{key}' is not in the file (truncated?)"),
            ));
        }
    }
    Ok((root, storages))
}

/// A storage as a persistent id names it; its bytes are read after the pickle.
#[derive(Debug)]
struct StorageRef {
    key: String,
    dtype: StorageDtype,
    numel: usize,
    byte_len: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage, already
/// checked to stay inside it.
#[derive(Debug)]
struct TensorView {
    storage: Rc<StorageRef>,
    offset: usize,
    size: Vec<i64>,
    stride: Vec<i64>,
}

impl TensorView {
    /// The view's elements in row-major order. `data` holds `storage.byte_len` bytes and
    /// every index was bounds-checked when the view was built.
    fn gather(&self, data: &[u8]) -> Vec<f32> {
        let dtype = self.storage.dtype;
        let width = dtype.size();
        let count: usize = self.size.iter().map(|&d| d as usize).product();
        let mut out = Vec::with_capacity(count);
        let mut index = vec![0i64; self.size.len()];
        for _ in 0..count {
            let at = self.offset
                + index
                    .iter()
                    .zip(&self.stride)
                    .map(|(&i, &s)| (i * s) as usize)
                    .sum::<usize>();
            out.push(dtype.read(&data[at * width..(at + 1) * width]));
            for dim in (0..index.len()).rev() {
                index[dim] += 1;
                if index[dim] < self.size[dim] {
                    break;
                }
                index[dim] = 0;
            }
        }
        out
    }
}

/// The only callables a file may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageClass(StorageDtype),
}

impl Global {
    /// Python's name of it, for messages.
    fn name(self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".to_owned(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".to_owned(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".to_owned(),
            Global::StorageClass(dtype) => format!("the {} storage class", dtype.name()),
        }
    }
}

/// A dict's entries, shared (the memo and the stack may hold the same dict).
type DictRef = Rc<RefCell<Vec<(Value, Value)>>>;

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    // Floats and bytes are never part of a state_dict's tensors; only their kind is kept.
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<[Value]>),
    List(Rc<RefCell<Vec<Value>>>),
    // dict and OrderedDict alike, in insertion order (duplicates are refused where read).
    Dict(DictRef),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorView>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// The pickle virtual machine, restricted as the module documentation says.
struct Machine<'a> {
    path: &'a Path,
    data: &'a [u8],
    /// Offset of `data` in the file, for messages.
    base: usize,
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<Vec<Value>>,
    memo: HashMap<u32, Value>,
    storages: HashMap<String, Rc<StorageRef>>,
}

impl<'a> Machine<'a> {
    fn new(path: &'a Path, data: &'a [u8]) -> Self {
        Machine {
            path,
            data,
            base: 0,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: HashMap::new(),
        }
    }

    fn fail(&self, at: usize, message: impl std::fmt::Display) -> Error {
        err(
            self.path,
            format!("pickle byte {}: {message}", self.base + at),
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                self.fail(
                    start,
                    format!("needs {n} more bytes but the pickle ends (truncated?)"),
                )
            })?;
        self.pos = end;
        Ok(&self.data[start..end])
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn len(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n)
            .map_err(|_| self.fail(self.pos, format!("length {n} is too large")))?;
        self.take(n)
    }
    fn line(&mut self) -> Result<&'a str> {
        let start = self.pos;
        let rest = &self.data[start..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.fail(start, "a text argument has no end of line (truncated?)"))?;
        self.pos = start + end + 1;
        std::str::from_utf8(&rest[..end])
            .map_err(|_| self.fail(start, "a text argument is not UTF-8"))
    }
    fn text(&self, at: usize, bytes: &[u8]) -> Result<Rc<str>> {
        std::str::from_utf8(bytes)
            .map(Rc::from)
            .map_err(|_| self.fail(at, "a string is not valid UTF-8"))
    }

    fn pop(&mut self, at: usize) -> Result<Value> {
        self.stack
            .pop()
            .ok_or_else(|| self.fail(at, "the stack is empty (malformed pickle)"))
    }
    fn top(&mut self, at: usize) -> Result<&mut Value> {
        match self.stack.last_mut() {
            Some(v) => Ok(v),
            None => Err(err(
                self.path,
                format!(
                    "pickle byte {}: the stack is empty (malformed pickle)",
                    self.base + at
                ),
            )),
        }
    }
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>> {
        let below = self
            .marks
            .pop()
            .ok_or_else(|| self.fail(at, "no MARK to pop to (malformed pickle)"))?;
        Ok(std::mem::replace(&mut self.stack, below))
    }
    fn memo_get(&self, at: usize, key: u32) -> Result<Value> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.fail(at, format!("memo entry {key} was never stored")))
    }
    fn memo_put(&mut self, at: usize, key: u32) -> Result<()> {
        let value = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.fail(at, "the stack is empty (malformed pickle)"))?;
        self.memo.insert(key, value);
        Ok(())
    }

    fn global(&self, at: usize, module: &str, name: &str) -> Result<Value> {
        let global = match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", class) => match StorageDtype::from_storage_class(class) {
                Some(dtype) => Global::StorageClass(dtype),
                None => return Err(self.refused(at, module, name)),
            },
            _ => return Err(self.refused(at, module, name)),
        };
        Ok(Value::Global(global))
    }

    fn refused(&self, at: usize, module: &str, name: &str) -> Error {
        let hint = if module.starts_with("torch.nn") || module.contains("models") {
            " (a whole model object was saved: save model.state_dict() instead)"
        } else {
            ""
        };
        self.fail(
            at,
            format!(
                "refused global '{module}.{name}': only tensors, storages and plain containers \
                 are read, as torch.load(weights_only=True) does; nothing is imported{hint}"
            ),
        )
    }

    fn persistent_load(&mut self, at: usize, pid: Value) -> Result<Value> {
        let Value::Tuple(items) = &pid else {
            return Err(self.fail(
                at,
                format!("persistent id is a {}, not a tuple", pid.kind()),
            ));
        };
        match items.first() {
            Some(Value::Str(kind)) if &**kind == "storage" => {}
            Some(Value::Str(kind)) => {
                return Err(self.fail(
                    at,
                    format!("persistent id of unknown kind '{kind}'; only 'storage' is read"),
                ))
            }
            _ => return Err(self.fail(at, "persistent id has no kind")),
        }
        let (dtype, key, numel) = match &items[1..] {
            [Value::Global(Global::StorageClass(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel), rest @ ..]
                if rest.len() <= 1 =>
            {
                (*dtype, key.clone(), *numel)
            }
            _ => return Err(self.fail(
                at,
                "storage persistent id is not ('storage', <torch.*Storage>, key, location, numel)",
            )),
        };
        if let [.., view] = &items[1..] {
            if items.len() == 6 && !matches!(view, Value::None) {
                return Err(self.fail(at, format!("storage '{key}' is a view of another storage (legacy view metadata is not read)")));
            }
        }
        let numel = usize::try_from(numel)
            .map_err(|_| self.fail(at, format!("storage '{key}' has {numel} elements")))?;
        let byte_len = numel.checked_mul(dtype.size()).ok_or_else(|| {
            self.fail(
                at,
                format!("storage '{key}' claims {numel} elements, too many"),
            )
        })?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(self.fail(at, format!("storage key '{key}' is not a plain name")));
        }
        if let Some(known) = self.storages.get(&*key) {
            if known.dtype != dtype || known.numel != numel {
                return Err(self.fail(
                    at,
                    format!("storage '{key}' is named twice with different types or sizes"),
                ));
            }
            return Ok(Value::Storage(known.clone()));
        }
        let storage = Rc::new(StorageRef {
            key: key.to_string(),
            dtype,
            numel,
            byte_len,
        });
        self.storages.insert(key.to_string(), storage.clone());
        Ok(Value::Storage(storage))
    }

    fn ints(&self, at: usize, what: &str, value: &Value) -> Result<Vec<i64>> {
        let Value::Tuple(items) = value else {
            return Err(self.fail(
                at,
                format!("tensor {what} is a {}, not a tuple", value.kind()),
            ));
        };
        items
            .iter()
            .map(|v| match v {
                Value::Int(i) if *i >= 0 => Ok(*i),
                other => Err(self.fail(at, format!("tensor {what} holds {other:?}"))),
            })
            .collect()
    }

    fn rebuild_tensor(&self, at: usize, args: &[Value]) -> Result<Value> {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        let (storage, offset, size, stride) = match args {
            [Value::Storage(s), Value::Int(o), size, stride, Value::Bool(_), _hooks, rest @ ..] if rest.len() <= 1 => {
                (s.clone(), *o, size, stride)
            }
            _ => {
                return Err(self.fail(
                    at,
                    "_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, requires_grad, hooks)",
                ))
            }
        };
        let size = self.ints(at, "size", size)?;
        let stride = self.ints(at, "stride", stride)?;
        if size.len() != stride.len() {
            return Err(self.fail(
                at,
                format!("tensor size {size:?} and stride {stride:?} differ in rank"),
            ));
        }
        let offset = usize::try_from(offset)
            .map_err(|_| self.fail(at, format!("tensor offset {offset}")))?;
        let beyond = || {
            self.fail(
                at,
                format!(
                    "a tensor of size {size:?}, stride {stride:?} at offset {offset} reaches beyond its \
                     storage '{}' of {} elements",
                    storage.key, storage.numel
                ),
            )
        };
        let mut count: usize = 1;
        let mut last: usize = offset;
        for (&d, &s) in size.iter().zip(&stride) {
            count = count.checked_mul(d as usize).ok_or_else(beyond)?;
            if d > 0 {
                let reach = ((d - 1) as usize)
                    .checked_mul(s as usize)
                    .ok_or_else(beyond)?;
                last = last.checked_add(reach).ok_or_else(beyond)?;
            }
        }
        if count > 0 && last >= storage.numel {
            return Err(beyond());
        }
        // A zero stride can make a view of any size from one element; the elements are
        // materialised, so a view may not hold more than the bytes the file stores.
        if count > storage.numel.max(1) {
            return Err(self.fail(
                at,
                format!(
                    "a tensor of size {size:?} repeats the {} elements of storage '{}' (stride {stride:?}); \
                     expanded views are not read",
                    storage.numel, storage.key
                ),
            ));
        }
        Ok(Value::Tensor(Rc::new(TensorView {
            storage,
            offset,
            size,
            stride,
        })))
    }

    fn reduce(&self, at: usize, callable: Value, args: Value) -> Result<Value> {
        let Value::Tuple(args) = args else {
            return Err(self.fail(
                at,
                format!("REDUCE arguments are a {}, not a tuple", args.kind()),
            ));
        };
        match callable {
            Value::Global(Global::OrderedDict) if args.is_empty() => {
                Ok(Value::Dict(Rc::new(RefCell::new(Vec::new()))))
            }
            Value::Global(Global::RebuildTensorV2) => self.rebuild_tensor(at, &args),
            Value::Global(Global::RebuildParameter) => match &args[..] {
                // (data, requires_grad, backward_hooks): the parameter is its data.
                [tensor @ Value::Tensor(_), Value::Bool(_), _] => Ok(tensor.clone()),
                _ => Err(self.fail(
                    at,
                    "_rebuild_parameter arguments are not (tensor, requires_grad, hooks)",
                )),
            },
            Value::Global(global) => Err(self.fail(
                at,
                format!(
                    "refused REDUCE of {} with {} argument(s): only OrderedDict() and the \
                     tensor rebuilds are called",
                    global.name(),
                    args.len()
                ),
            )),
            other => Err(self.fail(
                at,
                format!("refused REDUCE of a {}: it is not callable", other.kind()),
            )),
        }
    }

    /// Runs until STOP and returns the value on top of the stack.
    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self
                .u8()
                .map_err(|_| self.fail(at, "the pickle ends before STOP (truncated?)"))?;
            match op {
                0x80 => {
                    let protocol = self.u8()?;
                    if protocol > 5 {
                        return Err(self.fail(at, format!("pickle protocol {protocol} is unknown")));
                    }
                }
                b'\x95' => {
                    self.u64()?; // FRAME: a length hint only.
                }
                b'.' => {
                    let value = self.pop(at)?;
                    return Ok(value);
                }
                b'(' => self.marks.push(std::mem::take(&mut self.stack)),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let top = self.top(at)?.clone();
                    self.stack.push(top);
                }
                b'N' => self.stack.push(Value::None),
                b'\x88' => self.stack.push(Value::Bool(true)),
                b'\x89' => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'\x8a' | b'\x8b' => {
                    let n = if op == b'\x8a' {
                        self.u8()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let bytes = self.len(n)?;
                    self.stack.push(self.long(at, bytes)?);
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let text = line.trim_end_matches('L');
                    let v = match text {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(
                            text.parse()
                                .map_err(|_| self.fail(at, format!("integer '{text}'")))?,
                        ),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Float);
                }
                b'F' => {
                    let line = self.line()?;
                    line.parse::<f64>()
                        .map_err(|_| self.fail(at, format!("float '{line}'")))?;
                    self.stack.push(Value::Float);
                }
                b'X' | b'\x8c' | b'\x8d' => {
                    let n = match op {
                        b'X' => self.u32()? as u64,
                        b'\x8c' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let bytes = self.len(n)?;
                    let text = self.text(at, bytes)?;
                    self.stack.push(Value::Str(text));
                }
                b'T' | b'U' => {
                    // Python 2 str: read as text when it is UTF-8.
                    let n = if op == b'T' {
                        self.u32()? as u64
                    } else {
                        self.u8()? as u64
                    };
                    let bytes = self.len(n)?;
                    let text = self.text(at, bytes)?;
                    self.stack.push(Value::Str(text));
                }
                b'B' | b'C' | b'\x8e' => {
                    let n = match op {
                        b'B' => self.u32()? as u64,
                        b'C' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    self.len(n)?;
                    self.stack.push(Value::Bytes);
                }
                b')' => self.stack.push(Value::Tuple(Rc::from(Vec::new()))),
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                b'\x85' | b'\x86' | b'\x87' => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(
                            self.fail(at, "the stack is too short for TUPLE (malformed pickle)")
                        );
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                b']' => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let item = self.pop(at)?;
                    self.append(at, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    self.append(at, items)?;
                }
                b'}' => self
                    .stack
                    .push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                b'd' => {
                    let items = self.pop_mark(at)?;
                    let pairs = self.pairs(at, items)?;
                    self.stack.push(Value::Dict(Rc::new(RefCell::new(pairs))));
                }
                b's' => {
                    let value = self.pop(at)?;
                    let key = self.pop(at)?;
                    self.set_items(at, vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    let pairs = self.pairs(at, items)?;
                    self.set_items(at, pairs)?;
                }
                b'q' => {
                    let key = self.u8()? as u32;
                    self.memo_put(at, key)?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(at, key)?;
                }
                b'\x94' => {
                    let key = u32::try_from(self.memo.len())
                        .map_err(|_| self.fail(at, "memo is full"))?;
                    self.memo_put(at, key)?;
                }
                b'p' => {
                    let line = self.line()?;
                    let key = line
                        .parse()
                        .map_err(|_| self.fail(at, format!("memo key '{line}'")))?;
                    self.memo_put(at, key)?;
                }
                b'h' => {
                    let key = self.u8()? as u32;
                    let v = self.memo_get(at, key)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let key = self.u32()?;
                    let v = self.memo_get(at, key)?;
                    self.stack.push(v);
                }
                b'g' => {
                    let line = self.line()?;
                    let key = line
                        .parse()
                        .map_err(|_| self.fail(at, format!("memo key '{line}'")))?;
                    let v = self.memo_get(at, key)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self.global(at, module, name)?;
                    self.stack.push(v);
                }
                b'\x93' => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        return Err(self.fail(at, "STACK_GLOBAL needs two strings"));
                    };
                    let v = self.global(at, module, name)?;
                    self.stack.push(v);
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    let v = self.reduce(at, callable, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop(at)?;
                    // An OrderedDict's attributes (a state_dict's `_metadata`): kept out.
                    match (self.top(at)?, &state) {
                        (Value::Dict(_), Value::Dict(_) | Value::None) => {}
                        (target, _) => {
                            let kind = target.kind();
                            return Err(self.fail(
                                at,
                                format!("refused BUILD of a {kind} with a {}", state.kind()),
                            ));
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    let v = self.persistent_load(at, pid)?;
                    self.stack.push(v);
                }
                b'P' => {
                    return Err(self.fail(
                        at,
                        "refused text persistent id (PERSID); torch.save writes BINPERSID",
                    ))
                }
                b'\x81' | b'\x92' | b'i' | b'o' => {
                    return Err(self.fail(
                        at,
                        format!("refused opcode 0x{op:02x}: it builds an arbitrary object"),
                    ))
                }
                b'\x82' | b'\x83' | b'\x84' => {
                    return Err(self.fail(
                        at,
                        format!("refused opcode 0x{op:02x}: extension registry lookup"),
                    ))
                }
                _ => return Err(self.fail(at, format!("unsupported pickle opcode 0x{op:02x}"))),
            }
        }
    }

    fn long(&self, at: usize, bytes: &[u8]) -> Result<Value> {
        if bytes.len() > 8 {
            // Python ints wider than i64 only appear as the legacy magic number.
            if bytes == &LEGACY_MAGIC_PICKLE[4..] {
                return Ok(Value::Int(0));
            }
            return Err(self.fail(at, format!("a {}-byte integer is too large", bytes.len())));
        }
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buf = [if negative { 0xff } else { 0 }; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(Value::Int(i64::from_le_bytes(buf)))
    }

    fn pairs(&self, at: usize, items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.fail(at, "a dict has a key without a value (malformed pickle)"));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn append(&mut self, at: usize, items: Vec<Value>) -> Result<()> {
        match self.top(at)? {
            Value::List(list) => {
                list.borrow_mut().extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.fail(at, format!("APPEND to a {kind}, not a list")))
            }
        }
    }

    fn set_items(&mut self, at: usize, pairs: Vec<(Value, Value)>) -> Result<()> {
        let target = match self.top(at)? {
            Value::Dict(dict) => dict.clone(),
            other => {
                let kind = other.kind();
                return Err(self.fail(at, format!("SETITEM on a {kind}, not a dict")));
            }
        };
        // A dict that holds itself would be borrowed twice here; refuse that instead.
        let mut entries = target
            .try_borrow_mut()
            .map_err(|_| self.fail(at, "a dict is modified while in use (malformed pickle)"))?;
        entries.extend(pairs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn path() -> &'static Path {
        Path::new("/models/hostile.pt")
    }

    fn unicode(s: &str) -> Vec<u8> {
        let mut out = vec![b'X'];
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
        out
    }

    fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }

    /// `_rebuild_tensor_v2(('storage', torch.<class>, key, 'cpu', numel), offset, size,
    /// stride, False, OrderedDict())` as torch.save writes it.
    fn tensor(
        class: &str,
        key: &str,
        numel: u8,
        offset: u8,
        size: &[u8],
        stride: &[u8],
    ) -> Vec<u8> {
        let mut p = global("torch._utils", "_rebuild_tensor_v2");
        p.extend(b"((");
        p.extend(unicode("storage"));
        p.extend(global("torch", class));
        p.extend(unicode(key));
        p.extend(unicode("cpu"));
        p.extend([b'K', numel, b't', b'Q', b'K', offset]);
        for dims in [size, stride] {
            p.push(b'(');
            for &d in dims {
                p.extend([b'K', d]);
            }
            p.push(b't');
        }
        p.push(0x89);
        p.extend(global("collections", "OrderedDict"));
        p.extend(b")Rt");
        p.push(b'R');
        p
    }

    /// A state_dict pickle: an OrderedDict of `entries` with a `_metadata` BUILD.
    fn state_dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(global("collections", "OrderedDict"));
        p.extend(b")R(");
        for (name, value) in entries {
            p.extend(unicode(name));
            p.extend(value);
        }
        p.extend(b"u}");
        p.extend(unicode("_metadata"));
        p.extend(b"}sb.");
        p
    }

    fn zip_file(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        writer.start_file("model/data.pkl", stored).unwrap();
        writer.write_all(pickle).unwrap();
        writer.start_file("model/byteorder", stored).unwrap();
        writer.write_all(b"little").unwrap();
        for (key, bytes) in storages {
            writer
                .start_file(format!("model/data/{key}"), stored)
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.start_file("model/version", stored).unwrap();
        writer.write_all(b"3\n").unwrap();
        writer.finish().unwrap().into_inner()
    }

    fn floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn refused(bytes: &[u8], expected: &str) {
        let e = read_state_dict(path(), bytes).unwrap_err();
        assert_eq!(e.code(), "ERR_WEIGHTS", "{e}");
        let message = e.to_string();
        assert!(message.starts_with("/models/hostile.pt: "), "{message}");
        assert!(
            message.contains(expected),
            "expected '{expected}' in: {message}"
        );
    }

    #[test]
    fn a_zip_state_dict_gives_its_tensors_with_views_and_dtypes_resolved() {
        let halves: Vec<u8> = [1.0f32, -2.5, 65504.0]
            .iter()
            .flat_map(|&v| {
                // 1.0, -2.5 and 65504 (the largest half) in binary16.
                match v {
                    1.0 => 0x3c00u16,
                    -2.5 => 0xc100,
                    _ => 0x7bff,
                }
                .to_le_bytes()
            })
            .collect();
        let pickle = state_dict(&[
            // A transposed 2×3 view of a 6-element storage.
            ("w", tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])),
            ("h", tensor("HalfStorage", "1", 3, 1, &[2], &[1])),
            ("n", tensor("LongStorage", "2", 1, 0, &[], &[])),
        ]);
        let file = zip_file(
            &pickle,
            &[
                ("0", floats(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])),
                ("1", halves),
                ("2", 7i64.to_le_bytes().to_vec()),
            ],
        );
        assert!(looks_like_torch(&file));
        let tensors = read_state_dict(path(), &file).unwrap();
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w", "h", "n"]);
        assert_eq!(tensors[0].shape, [3, 2]);
        assert_eq!(tensors[0].values, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(tensors[1].dtype, StorageDtype::F16);
        assert_eq!(tensors[1].values, [-2.5, 65504.0]);
        assert_eq!(tensors[2].shape, Vec::<i64>::new());
        assert_eq!(tensors[2].values, [7.0]);
    }

    #[test]
    fn a_state_dict_wrapped_in_a_checkpoint_dict_is_found() {
        let mut p = vec![0x80, 2, b'}', b'('];
        p.extend(unicode("epoch"));
        p.extend([b'K', 3]);
        p.extend(unicode("state_dict"));
        p.extend(state_dict(&[("w", tensor("FloatStorage", "0", 1, 0, &[1], &[1]))]).split_off(2));
        p.pop(); // its STOP
        p.extend(b"u.");
        let file = zip_file(&p, &[("0", floats(&[1.5]))]);
        let tensors = read_state_dict(path(), &file).unwrap();
        assert_eq!(tensors[0].values, [1.5]);
    }

    #[test]
    fn globals_outside_the_allow_list_are_refused_before_anything_runs() {
        // The classic payload: os.system('touch pwned').
        let mut p = vec![0x80, 2];
        p.extend(global("os", "system"));
        p.extend(unicode("touch pwned"));
        p.extend(b"\x85R.");
        refused(&zip_file(&p, &[]), "refused global 'os.system'");
        let mut p = vec![0x80, 4];
        p.extend(unicode("builtins"));
        p.extend(unicode("eval"));
        p.push(0x93);
        refused(&zip_file(&p, &[]), "refused global 'builtins.eval'");
        let mut p = global(
            "facenet_pytorch.models.inception_resnet_v1",
            "InceptionResnetV1",
        );
        p.push(b'.');
        refused(&zip_file(&p, &[]), "save model.state_dict() instead");
    }

    #[test]
    fn reduce_calls_only_ordered_dict_and_tensor_rebuilds() {
        // A storage class is an allowed global, but calling it is not.
        let mut p = global("torch", "FloatStorage");
        p.extend(b")R.");
        refused(
            &zip_file(&p, &[]),
            "refused REDUCE of the float32 storage class with 0 argument(s)",
        );
        let mut p = global("collections", "OrderedDict");
        p.extend(b"]\x85R.");
        refused(
            &zip_file(&p, &[]),
            "refused REDUCE of collections.OrderedDict with 1 argument(s)",
        );
        refused(&zip_file(b"K\x01)R.", &[]), "refused REDUCE of a int");
        // Building arbitrary objects by other opcodes.
        let mut p = global("collections", "OrderedDict");
        p.extend(b")\x81.");
        refused(&zip_file(&p, &[]), "refused opcode 0x81");
        let mut p = b"(".to_vec();
        p.extend(b"ios\nsystem\n.");
        refused(&zip_file(&p, &[]), "refused opcode 0x69");
        // BUILD on anything but a dict would set attributes.
        let mut p = b"]".to_vec();
        p.extend(b"}b.");
        refused(&zip_file(&p, &[]), "refused BUILD of a list");
    }

    #[test]
    fn persistent_ids_of_another_kind_or_shape_are_refused() {
        let mut p = b"(".to_vec();
        p.extend(unicode("module"));
        p.extend(unicode("os"));
        p.extend(b"tQ.");
        refused(&zip_file(&p, &[]), "persistent id of unknown kind 'module'");
        let mut p = b"(".to_vec();
        p.extend(unicode("storage"));
        p.extend(unicode("not a class"));
        p.extend(b"tQ.");
        refused(&zip_file(&p, &[]), "storage persistent id is not");
        let p = state_dict(&[("w", tensor("FloatStorage", "../../etc", 1, 0, &[1], &[1]))]);
        refused(&zip_file(&p, &[]), "is not a plain name");
    }

    #[test]
    fn views_beyond_their_storage_and_short_storages_are_refused() {
        let p = state_dict(&[("w", tensor("FloatStorage", "0", 4, 2, &[3], &[1]))]);
        refused(
            &zip_file(&p, &[("0", floats(&[0.0; 4]))]),
            "reaches beyond its storage '0' of 4 elements",
        );
        let p = state_dict(&[("w", tensor("FloatStorage", "0", 4, 0, &[2, 2], &[2, 2]))]);
        refused(&zip_file(&p, &[("0", floats(&[0.0; 4]))]), "reaches beyond");
        // A zero stride repeating one element 200 times.
        let p = state_dict(&[("w", tensor("FloatStorage", "0", 1, 0, &[200], &[0]))]);
        refused(
            &zip_file(&p, &[("0", floats(&[0.0]))]),
            "expanded views are not read",
        );
        // The id says 4 floats, the archive holds 2.
        let p = state_dict(&[("w", tensor("FloatStorage", "0", 4, 0, &[4], &[1]))]);
        refused(
            &zip_file(&p, &[("0", floats(&[0.0; 2]))]),
            "holds 8 bytes, its tensors need 16",
        );
        let p = state_dict(&[("w", tensor("FloatStorage", "0", 4, 0, &[4], &[1]))]);
        refused(&zip_file(&p, &[]), "model/data/0");
    }

    #[test]
    fn lying_lengths_and_truncation_are_errors_not_allocations() {
        // A 4 GiB string length in a 12-byte pickle.
        let mut p = vec![0x80, 2, b'X'];
        p.extend(u32::MAX.to_le_bytes());
        p.extend(b"abc");
        refused(&zip_file(&p, &[]), "needs 4294967295 more bytes");
        let mut p = vec![0x80, 4, 0x8d];
        p.extend(u64::MAX.to_le_bytes());
        refused(&zip_file(&p, &[]), "more bytes");
        let mut p = vec![0x8a, 0xff];
        p.extend([0; 4]);
        refused(&zip_file(&p, &[]), "needs 255 more bytes");
        // No STOP.
        let p = state_dict(&[]);
        refused(&zip_file(&p[..p.len() - 1], &[]), "ends before STOP");
        // A cut archive.
        let file = zip_file(&state_dict(&[]), &[]);
        for cut in [file.len() - 10, file.len() / 2, 4] {
            refused(&file[..cut], "");
        }
        refused(b"not a torch file", "not a torch.save file");
    }

    #[test]
    fn stack_mark_and_memo_misuse_are_errors() {
        refused(&zip_file(b"R.", &[]), "the stack is empty");
        refused(&zip_file(b"}u.", &[]), "no MARK");
        refused(&zip_file(b"h\x05.", &[]), "memo entry 5 was never stored");
        refused(&zip_file(b"q\x00.", &[]), "the stack is empty");
        refused(&zip_file(b"(K\x01d.", &[]), "a key without a value");
        refused(&zip_file(b"K\x01K\x02K\x03s.", &[]), "SETITEM on a int");
        refused(&zip_file(b"\x86.", &[]), "too short for TUPLE");
        refused(&zip_file(b"\xff.", &[]), "unsupported pickle opcode 0xff");
        refused(&zip_file(b"\x80\x09.", &[]), "pickle protocol 9");
        // A dict holding itself is not a state_dict, and reading it terminates.
        let mut p = b"}q\x00".to_vec();
        p.extend(unicode("state_dict"));
        p.extend(b"h\x00s.");
        refused(
            &zip_file(&p, &[]),
            "entry 'state_dict' is a dict, not a tensor",
        );
        refused(&zip_file(b"K\x01.", &[]), "holds a int, not a state_dict");
    }

    #[test]
    fn corrupted_and_cut_files_are_errors_never_panics() {
        let pickle = state_dict(&[
            ("w", tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])),
            ("h", tensor("HalfStorage", "1", 3, 1, &[2], &[1])),
        ]);
        let zip = zip_file(&pickle, &[("0", floats(&[1.0; 6])), ("1", vec![0; 6])]);
        let object = state_dict(&[("w", tensor("FloatStorage", "17", 2, 0, &[2], &[1]))]);
        let legacy = legacy(&object, &["17"], &[(2, floats(&[0.5, -1.0]))]);
        let mut state = 0x2545_f491u32;
        for file in [zip, legacy] {
            for cut in 0..file.len() {
                let _ = read_state_dict(path(), &file[..cut]);
            }
            for _ in 0..3000 {
                let mut bad = file.clone();
                for _ in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let at = state as usize % bad.len();
                    bad[at] = (state >> 24) as u8;
                }
                // Either result is fine; reaching here without a panic is the point.
                let _ = read_state_dict(path(), &bad);
            }
        }
    }

    /// A legacy (non-zip) file: five pickles, then each storage as a count and its bytes.
    fn legacy(object: &[u8], keys: &[&str], storages: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut f = LEGACY_MAGIC_PICKLE.to_vec();
        f.push(b'.');
        f.extend(b"\x80\x02M\xe9\x03.");
        f.extend(b"\x80\x02}");
        f.extend(unicode("little_endian"));
        f.extend(b"\x88s.");
        f.extend(object);
        f.extend(b"\x80\x02(");
        for key in keys {
            f.extend(unicode(key));
        }
        f.extend(b"l.");
        for (count, bytes) in storages {
            f.extend(count.to_le_bytes());
            f.extend(bytes);
        }
        f
    }

    #[test]
    fn a_legacy_file_is_read_and_its_storage_counts_are_checked() {
        let object = state_dict(&[("w", tensor("FloatStorage", "17", 2, 0, &[2], &[1]))]);
        let file = legacy(&object, &["17"], &[(2, floats(&[0.5, -1.0]))]);
        assert!(looks_like_torch(&file));
        let tensors = read_state_dict(path(), &file).unwrap();
        assert_eq!(tensors[0].values, [0.5, -1.0]);
        let lying = legacy(&object, &["17"], &[(3, floats(&[0.5, -1.0]))]);
        refused(&lying, "holds 3 elements, its id says 2");
        refused(&file[..file.len() - 1], "the file is truncated");
        let missing = legacy(&object, &[], &[]);
        refused(&missing, "storage '17' is not in the file");
    }
}
