//! Packed datasets: an N×H×W×3 uint8 C-order `.npy` file (what `facenet pack` writes and
//! the notebook trained on), read on demand. Opening reads only the header; a batch's rows
//! are read (`pread`) from the page cache straight into one tensor, so a file far larger
//! than memory trains with the resident set bounded by the rows in use.
//!
//! The rows are read, not memory-mapped: a mapped file that another process truncates
//! kills the reader with SIGBUS on the next access, while a read past the new end is a
//! short read that becomes a [`Error::Data`] naming the file. A file replaced by rename
//! (what `facenet pack` does) keeps serving the rows it had, from the open descriptor.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Where a gathered batch's channels go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// B×H×W×3, the file's own layout (one memcpy per row).
    #[default]
    ChannelsLast,
    /// B×3×H×W, what a convolution takes.
    ChannelsFirst,
}

/// An open `.npy` of images, its rows read on demand.
pub struct NpyImages {
    path: PathBuf,
    file: File,
    data_offset: usize,
    count: i64,
    height: i64,
    width: i64,
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// numpy writes headers of a few hundred bytes; a length field beyond this is corrupt and
/// must not make `open` allocate it.
const MAX_HEADER_BYTES: usize = 1 << 20;

fn data_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Data(format!("{}: {message}", path.display()))
}

/// The three entries of a `.npy` header dict, as numpy writes them.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Parses the header's Python dict literal: `{'descr': '|u1', 'fortran_order': False,
/// 'shape': (N, H, W, 3), }`. Strict, because a misread shape would map the wrong bytes.
fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let mut rest = text.trim();
    let eat = |rest: &mut &str, token: &str| -> std::result::Result<(), String> {
        *rest = rest.trim_start();
        rest.strip_prefix(token).map(|r| *rest = r).ok_or_else(|| {
            format!(
                "expected '{token}' at '{}'",
                rest.chars().take(20).collect::<String>()
            )
        })
    };
    let string = |rest: &mut &str| -> std::result::Result<String, String> {
        *rest = rest.trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or("expected a string")?;
        let end = rest[1..].find(quote).ok_or("unterminated string")?;
        let value = rest[1..1 + end].to_owned();
        *rest = &rest[end + 2..];
        Ok(value)
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    eat(&mut rest, "{")?;
    loop {
        rest = rest.trim_start();
        if rest.starts_with('}') {
            break;
        }
        let key = string(&mut rest)?;
        eat(&mut rest, ":")?;
        rest = rest.trim_start();
        let duplicate = match key.as_str() {
            "descr" => descr.replace(string(&mut rest)?).is_some(),
            "fortran_order" => {
                let value = if let Some(r) = rest.strip_prefix("True") {
                    rest = r;
                    true
                } else if let Some(r) = rest.strip_prefix("False") {
                    rest = r;
                    false
                } else {
                    return Err("'fortran_order' must be True or False".into());
                };
                fortran_order.replace(value).is_some()
            }
            "shape" => {
                eat(&mut rest, "(")?;
                let end = rest.find(')').ok_or("unterminated shape tuple")?;
                let dims = rest[..end]
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(|d| {
                        d.parse::<u64>()
                            .map_err(|_| format!("shape entry '{d}' is not a non-negative integer"))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                rest = &rest[end + 1..];
                shape.replace(dims).is_some()
            }
            other => return Err(format!("unexpected key '{other}'")),
        };
        if duplicate {
            return Err(format!("duplicate key '{key}'"));
        }
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}'".into());
        }
    }
    if !rest[1..].trim().is_empty() {
        return Err("trailing characters after the dict".into());
    }
    Ok(Header {
        descr: descr.ok_or("missing 'descr'")?,
        fortran_order: fortran_order.ok_or("missing 'fortran_order'")?,
        shape: shape.ok_or("missing 'shape'")?,
    })
}

impl NpyImages {
    /// Maps `path` and checks its header: uint8, C order, shape (N, H, W, 3), and exactly
    /// the data that shape needs. Errors are [`Error::Data`] naming the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file =
            File::open(path).map_err(|e| data_error(path, format!("cannot be opened ({e})")))?;
        let meta = file
            .metadata()
            .map_err(|e| data_error(path, format!("cannot be read ({e})")))?;
        if !meta.is_file() {
            return Err(data_error(path, "is not a regular file"));
        }
        let file_len = meta.len();
        let read = |offset: u64, len: usize| -> Result<Vec<u8>> {
            let mut bytes = vec![0; len];
            file.read_exact_at(&mut bytes, offset)
                .map_err(|e| data_error(path, format!("cannot be read ({e})")))?;
            Ok(bytes)
        };
        let prefix = read(0, file_len.min(12) as usize)?;
        if prefix.len() < 10 || &prefix[..6] != MAGIC {
            return Err(data_error(path, "is not an .npy file (bad magic bytes)"));
        }
        let major = prefix[6];
        let (len_bytes, header_len) = match major {
            1 => (2, u16::from_le_bytes([prefix[8], prefix[9]]) as usize),
            2 | 3 if prefix.len() >= 12 => (
                4,
                u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize,
            ),
            2 | 3 => return Err(data_error(path, "truncated .npy header")),
            _ => {
                return Err(data_error(
                    path,
                    format!("unsupported .npy format version {major}.{}", prefix[7]),
                ))
            }
        };
        let data_offset = 8 + len_bytes + header_len;
        if file_len < data_offset as u64 {
            return Err(data_error(
                path,
                format!("truncated .npy header: needs {data_offset} bytes, file has {file_len}"),
            ));
        }
        if header_len > MAX_HEADER_BYTES {
            return Err(data_error(
                path,
                format!(
                    "malformed .npy header: {header_len} bytes long (numpy writes a few hundred)"
                ),
            ));
        }
        let header_bytes = read((8 + len_bytes) as u64, header_len)?;
        let text = std::str::from_utf8(&header_bytes)
            .map_err(|_| data_error(path, "malformed .npy header (not text)"))?;
        let header = parse_header(text).map_err(|e| {
            data_error(
                path,
                format!("malformed .npy header ({e}): {}", text.trim()),
            )
        })?;
        if header.descr != "|u1" && header.descr != "<u1" && header.descr != "u1" {
            return Err(data_error(
                path,
                format!(
                    "images must be uint8 (dtype |u1) to be memory-mapped, got dtype {}",
                    header.descr
                ),
            ));
        }
        if header.fortran_order {
            return Err(data_error(
                path,
                "images must be in C order to be memory-mapped, got fortran_order True",
            ));
        }
        let shape = &header.shape;
        if shape.len() != 4 || shape[3] != 3 {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            return Err(data_error(
                path,
                format!(
                    "images must have shape (N, H, W, 3), got ({})",
                    dims.join(", ")
                ),
            ));
        }
        if shape[1] == 0 || shape[2] == 0 {
            return Err(data_error(
                path,
                format!("images have an empty height or width: {shape:?}"),
            ));
        }
        let expected = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| data_error(path, format!("shape {shape:?} overflows")))?;
        let actual = file_len - data_offset as u64;
        if actual < expected {
            return Err(data_error(
                path,
                format!(
                    "truncated data: shape {shape:?} needs {expected} bytes, file has {actual}"
                ),
            ));
        }
        if actual > expected {
            return Err(data_error(
                path,
                format!(
                    "{} unexpected bytes after the data of shape {shape:?}",
                    actual - expected
                ),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            data_offset,
            count: shape[0] as i64,
            height: shape[1] as i64,
            width: shape[2] as i64,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> i64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn height(&self) -> i64 {
        self.height
    }

    pub fn width(&self) -> i64 {
        self.width
    }

    fn row_bytes(&self) -> usize {
        (self.height * self.width * 3) as usize
    }

    fn check_index(&self, index: i64) -> Result<()> {
        if !(0..self.count).contains(&index) {
            return Err(Error::invalid(format!(
                "image index {index} is out of range 0..{} of {}",
                self.count - 1,
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Reads the H×W×3 bytes of image `index` into `out` (exactly one row long). A file
    /// that shrank since `open` (truncated or rewritten in place by another process) is a
    /// [`Error::Data`] naming it, never a crash.
    pub fn read_row(&self, index: i64, out: &mut [u8]) -> Result<()> {
        self.check_index(index)?;
        let size = self.row_bytes();
        debug_assert_eq!(out.len(), size);
        let start = (self.data_offset + index as usize * size) as u64;
        self.file.read_exact_at(out, start).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                let now = self.file.metadata().map_or_else(
                    |_| "an unknown size".to_owned(),
                    |m| format!("{} bytes", m.len()),
                );
                data_error(
                    &self.path,
                    format!(
                        "shrank while in use: image {index} ends at byte {}, the file now has {now}. \
                         It was truncated or rewritten in place; write a new file and rename it over \
                         this one instead (facenet pack does)",
                        start + size as u64
                    ),
                )
            } else {
                data_error(&self.path, format!("cannot be read ({e})"))
            }
        })
    }

    /// The H×W×3 bytes of image `index`, read from the file.
    pub fn row(&self, index: i64) -> Result<Vec<u8>> {
        let mut out = vec![0; self.row_bytes()];
        self.read_row(index, &mut out)?;
        Ok(out)
    }

    /// Copies the rows `indices` (in that order, repeats allowed) into one uint8 tensor on
    /// the CPU: page-locked when `pinned` and CUDA is present, so that the copy to the GPU
    /// can run asynchronously.
    pub fn gather(&self, indices: &[i64], layout: Layout, pinned: bool) -> Result<Tensor> {
        for &i in indices {
            self.check_index(i)?;
        }
        let shape = [indices.len() as i64, self.height, self.width, 3];
        let mut batch = Tensor::f_empty(shape, (Kind::Uint8, Device::Cpu))?;
        if pinned && tch::Cuda::is_available() {
            batch = batch.f_pin_memory(Device::Cuda(0))?;
        }
        let size = self.row_bytes();
        // SAFETY: `batch` is a fresh contiguous uint8 CPU tensor of indices.len() × size
        // bytes that nothing else references until this function returns it.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(batch.data_ptr() as *mut u8, indices.len() * size)
        };
        for (row, &index) in bytes.chunks_exact_mut(size).zip(indices) {
            self.read_row(index, row)?;
        }
        match layout {
            Layout::ChannelsLast => Ok(batch),
            Layout::ChannelsFirst => Ok(batch.f_permute([0, 3, 1, 2])?.f_contiguous()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn npy_header(descr: &str, fortran: bool, shape: &str) -> Vec<u8> {
        let dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        let total = (10 + dict.len() + 1).div_ceil(64) * 64;
        let mut header = b"\x93NUMPY\x01\x00".to_vec();
        header.extend_from_slice(&((total - 10) as u16).to_le_bytes());
        header.extend_from_slice(dict.as_bytes());
        header.resize(total - 1, b' ');
        header.push(b'\n');
        header
    }

    fn write(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("facenet-packed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    }

    fn images_file(name: &str, n: usize, h: usize, w: usize) -> (PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..n * h * w * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut bytes = npy_header("|u1", false, &format!("({n}, {h}, {w}, 3)"));
        bytes.extend_from_slice(&data);
        (write(name, &bytes), data)
    }

    #[test]
    fn gather_copies_the_rows_in_the_order_asked() {
        let (path, data) = images_file("rows.npy", 5, 2, 3);
        let images = NpyImages::open(&path).unwrap();
        assert_eq!((images.len(), images.height(), images.width()), (5, 2, 3));
        let batch = images
            .gather(&[4, 0, 4], Layout::ChannelsLast, false)
            .unwrap();
        assert_eq!(batch.size(), [3, 2, 3, 3]);
        let got = Vec::<u8>::try_from(batch.flatten(0, -1)).unwrap();
        let plane = 18;
        let want: Vec<u8> = [4, 0, 4]
            .iter()
            .flat_map(|&i| data[i * plane..(i + 1) * plane].to_vec())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn channels_first_is_the_permuted_batch() {
        let (path, _) = images_file("chw.npy", 3, 4, 5);
        let images = NpyImages::open(&path).unwrap();
        let last = images.gather(&[2, 1], Layout::ChannelsLast, false).unwrap();
        let first = images
            .gather(&[2, 1], Layout::ChannelsFirst, false)
            .unwrap();
        assert_eq!(first.size(), [2, 3, 4, 5]);
        assert!(first.equal(&last.permute([0, 3, 1, 2])));
    }

    #[test]
    fn an_index_out_of_range_is_refused() {
        let (path, _) = images_file("range.npy", 2, 1, 1);
        let images = NpyImages::open(&path).unwrap();
        let error = images
            .gather(&[0, 2], Layout::ChannelsLast, false)
            .unwrap_err();
        assert_eq!(error.code(), "ERR_INVALID_ARGUMENT");
        assert!(error.to_string().contains("out of range"), "{error}");
    }

    #[test]
    fn a_file_truncated_while_open_is_a_data_error_naming_it() {
        let (path, data) = images_file("shrinks.npy", 4, 2, 2);
        let images = NpyImages::open(&path).unwrap();
        // What `pack` did before it wrote into a new file: cut the rows back in place.
        let keep = std::fs::metadata(&path).unwrap().len() - data.len() as u64 / 2;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(keep)
            .unwrap();
        assert!(images.gather(&[0, 1], Layout::ChannelsLast, false).is_ok());
        let error = images
            .gather(&[0, 3], Layout::ChannelsLast, false)
            .unwrap_err();
        assert_eq!(error.code(), "ERR_DATA");
        let message = error.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("shrank while in use"), "{message}");
    }

    #[test]
    fn a_file_replaced_by_rename_keeps_serving_the_rows_it_had() {
        let (path, data) = images_file("replaced.npy", 3, 1, 2);
        let images = NpyImages::open(&path).unwrap();
        let (other, _) = images_file("replacement.npy", 1, 1, 2);
        std::fs::rename(&other, &path).unwrap();
        let row = images.row(2).unwrap();
        assert_eq!(row, data[12..18].to_vec());
    }

    #[test]
    fn bad_headers_are_data_errors_naming_the_file() {
        let cases: [(&str, Vec<u8>, &str); 5] = [
            (
                "float.npy",
                [npy_header("<f4", false, "(1, 1, 1, 3)"), vec![0; 12]].concat(),
                "must be uint8",
            ),
            (
                "fortran.npy",
                [npy_header("|u1", true, "(1, 1, 1, 3)"), vec![0; 3]].concat(),
                "C order",
            ),
            (
                "gray.npy",
                [npy_header("|u1", false, "(1, 2, 2)"), vec![0; 4]].concat(),
                "(N, H, W, 3)",
            ),
            (
                "short.npy",
                [npy_header("|u1", false, "(2, 1, 1, 3)"), vec![0; 5]].concat(),
                "truncated data",
            ),
            (
                "magic.npy",
                b"PK\x03\x04 not numpy at all".to_vec(),
                "bad magic",
            ),
        ];
        for (name, bytes, expected) in cases {
            let path = write(name, &bytes);
            let error = NpyImages::open(&path)
                .err()
                .unwrap_or_else(|| panic!("{name} opened"));
            assert_eq!(error.code(), "ERR_DATA");
            let message = error.to_string();
            assert!(
                message.starts_with(&path.display().to_string()),
                "{message}"
            );
            assert!(message.contains(expected), "{name}: {message}");
        }
    }

    #[test]
    fn header_parser_reads_what_numpy_writes() {
        let header = parse_header(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (10, 160, 160, 3), }   \n",
        )
        .unwrap();
        assert_eq!(
            header,
            Header {
                descr: "|u1".into(),
                fortran_order: false,
                shape: vec![10, 160, 160, 3]
            }
        );
        assert!(parse_header(
            "{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (1,)}"
        )
        .is_err());
        assert!(parse_header("{'descr': '|u1', 'fortran_order': False}").is_err());
    }
}
