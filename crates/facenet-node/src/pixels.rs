//! N×H×W×3 pixel batches from JavaScript (uint8, or float32 in 0..255).
//!
//! [`Pixels`] keeps the caller's typed array alive until the call that received it
//! settles and lets the worker read it in place, so a batch is not copied into a fresh
//! tensor on the JS thread first. napi-rs 3 makes this sound: an owned `Uint8Array` or
//! `Float32Array` holds a strong reference to the JS array (the GC neither frees nor moves
//! an ArrayBuffer's memory while it is referenced), it is `Send`, and when it is dropped
//! off the JS thread its reference is released on that thread through the per-env
//! custom-GC threadsafe function (napi-rs #1399, #3360). What napi cannot stop is JS
//! writing to, transferring or resizing the buffer meanwhile; the TS layer documents that
//! the caller must leave it alone until the promise settles, as for `fs.write`.

use crate::error::Result;
use crate::error::{self, to_js};
use napi::bindgen_prelude::{Either, Float32Array, Uint8Array};
use tch::{Device, Kind, Tensor};

/// A pixel batch whose length matches its shape, held for the worker.
pub(crate) struct Pixels {
    data: Either<Uint8Array, Float32Array>,
    shape: [i64; 4],
}

impl Pixels {
    /// Checks the length against count×height×width×3 (cheap, on the JS thread, so the
    /// error comes before any work is queued). The float range check reads every pixel
    /// and runs on the worker, in [`Pixels::with_tensor`].
    pub(crate) fn new(
        data: Either<Uint8Array, Float32Array>,
        count: u32,
        height: u32,
        width: u32,
    ) -> Result<Self> {
        let shape = batch_shape(count, height, width);
        let len = match &data {
            Either::A(bytes) => bytes.len(),
            Either::B(floats) => floats.len(),
        };
        check_length(len, shape)?;
        Ok(Self { data, shape })
    }

    /// Runs `f` on a CPU tensor that views the JS memory, without copying it, after
    /// refusing float pixels that are not finite values in 0..255.
    ///
    /// `f` must not let the tensor, or any view of it, outlive the call: whatever it
    /// returns has to own its storage (the network input is a fresh tensor, because
    /// normalizing and moving to the device allocate; embeddings and detections are
    /// computed, never views of the input). `f` must not write to the tensor either.
    pub(crate) fn with_tensor<R>(&self, f: impl FnOnce(&Tensor) -> Result<R>) -> Result<R> {
        let (data, len, kind) = match &self.data {
            Either::A(bytes) => (bytes.as_ptr(), bytes.len(), Kind::Uint8),
            Either::B(floats) => {
                check_float_range(floats, self.shape)?;
                (floats.as_ptr().cast::<u8>(), floats.len(), Kind::Float)
            }
        };
        let images = if len == 0 {
            // An empty typed array may have no memory behind it at all (a null pointer).
            Tensor::f_empty(self.shape, (kind, Device::Cpu))
        } else {
            // SAFETY: `data` points to `len` initialized elements of `kind` (a Float32Array's
            // memory is 4-byte aligned), and `len` equals the product of `self.shape`
            // (checked in `new`). The memory belongs to the JS typed array in `self.data`,
            // which `self` keeps referenced, so it is neither freed nor moved while `self`
            // lives; `self` is borrowed for this whole call, and the tensor is dropped at
            // the end of it, so the tensor never outlives the memory as long as `f` keeps
            // the promise above (returns nothing that views it). The tensor does not own
            // the memory: libtorch frees nothing when it is dropped.
            unsafe { Tensor::f_from_blob(data, &self.shape, &[], kind, Device::Cpu) }
        }
        .map_err(|e| to_js(e.into()))?;
        let result = f(&images);
        drop(images);
        result
    }
}

fn batch_shape(count: u32, height: u32, width: u32) -> [i64; 4] {
    [i64::from(count), i64::from(height), i64::from(width), 3]
}

fn check_length(len: usize, shape: [i64; 4]) -> Result<()> {
    let expected = shape.iter().product::<i64>() as usize;
    if len == expected {
        return Ok(());
    }
    let [n, h, w, c] = shape;
    Err(error::coded(
        "ERR_SHAPE",
        format!("pixel data has {len} values but {n}×{h}×{w}×{c} needs {expected}"),
    ))
}

/// NaN or ±inf pixels would flow through the network into NaN embeddings that look like
/// results, and values outside 0..255 (e.g. already normalized to 0..1 or −1..1) into
/// embeddings of the wrong images; refuse them where the index can still be named.
fn check_float_range(floats: &[f32], shape: [i64; 4]) -> Result<()> {
    let Some(at) = floats
        .iter()
        .position(|v| !(v.is_finite() && (0.0..=255.0).contains(v)))
    else {
        return Ok(());
    };
    let [_, h, w, c] = shape;
    let per_image = (h * w * c).max(1) as usize;
    Err(error::coded(
        "ERR_INVALID_ARGUMENT",
        format!(
            "pixel {at} (image {}) is {}; float pixels must be finite values in 0..255",
            at / per_image,
            floats[at]
        ),
    ))
}
