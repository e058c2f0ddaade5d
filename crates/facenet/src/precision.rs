//! Mixed precision: running the forward pass under libtorch's autocast with bfloat16 as
//! the reduced dtype, as `torch.autocast(device_type, dtype=torch.bfloat16)` does.
//! Weights, optimizer state, the loss and the mining stay in float32; bfloat16 keeps
//! float32's exponent range, so no gradient scaler is needed.

use crate::error::{Error, Result};
use std::os::raw::c_int;
use tch::Device;

/// The arithmetic of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Fp32,
    /// Autocast to bfloat16: convolutions and matrix products in bf16, reductions and
    /// normalizations in float32 (libtorch's autocast op lists).
    Bf16,
}

extern "C" {
    fn facenet_autocast_enter_bf16(
        device: c_int,
        was_enabled: *mut bool,
        was_dtype: *mut i8,
    ) -> c_int;
    fn facenet_autocast_leave(device: c_int, was_enabled: bool, was_dtype: i8) -> c_int;
    fn facenet_autocast_dtype(device: c_int) -> i8;
    fn facenet_autocast_enabled(device: c_int) -> bool;
}

fn device_code(device: Device) -> Result<c_int> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(Error::invalid(format!(
            "bf16 autocast runs on the CPU or CUDA, not on {other:?}"
        ))),
    }
}

/// Restores the thread's previous autocast state when dropped, also on unwinding.
struct AutocastGuard {
    device: c_int,
    was_enabled: bool,
    was_dtype: i8,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: plain C ABI call; the shim catches every C++ exception.
        unsafe { facenet_autocast_leave(self.device, self.was_enabled, self.was_dtype) };
    }
}

/// Runs `f` with `precision` on `device`'s autocast, on this thread only.
pub fn with_precision<T>(device: Device, precision: Precision, f: impl FnOnce() -> T) -> Result<T> {
    if precision == Precision::Fp32 {
        return Ok(f());
    }
    let code = device_code(device)?;
    let mut was_enabled = false;
    let mut was_dtype = 0i8;
    // SAFETY: the out-pointers are valid locals; the shim catches every C++ exception.
    let failed = unsafe { facenet_autocast_enter_bf16(code, &mut was_enabled, &mut was_dtype) };
    if failed != 0 {
        return Err(Error::invalid(format!(
            "libtorch refused bf16 autocast on {device:?}"
        )));
    }
    let _guard = AutocastGuard {
        device: code,
        was_enabled,
        was_dtype,
    };
    Ok(f())
}

/// Whether autocast is on for `device` on this thread, and its reduced dtype code
/// (libtorch's ScalarType: 5 = float16, 15 = bfloat16).
pub fn autocast_state(device: Device) -> Result<(bool, i8)> {
    let code = device_code(device)?;
    // SAFETY: plain C ABI calls; the shim catches every C++ exception.
    Ok(unsafe { (facenet_autocast_enabled(code), facenet_autocast_dtype(code)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn bf16_runs_matrix_products_in_bf16_and_restores_the_previous_state() {
        let before = autocast_state(Device::Cpu).unwrap();
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        let (kind, inside) = with_precision(Device::Cpu, Precision::Bf16, || {
            (a.matmul(&b).kind(), autocast_state(Device::Cpu).unwrap())
        })
        .unwrap();
        assert_eq!(kind, Kind::BFloat16);
        assert_eq!(inside, (true, 15));
        assert_eq!(autocast_state(Device::Cpu).unwrap(), before);
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }

    #[test]
    fn fp32_leaves_autocast_alone() {
        let a = Tensor::randn([2, 2], (Kind::Float, Device::Cpu));
        let kind = with_precision(Device::Cpu, Precision::Fp32, || a.matmul(&a).kind()).unwrap();
        assert_eq!(kind, Kind::Float);
    }
}
