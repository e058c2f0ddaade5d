//! ATen's multi-tensor ("foreach") ops through cpp/foreach.cpp: one call updates a whole
//! list of tensors, so an optimizer step is a few kernel launches rather than several per
//! parameter. On the CPU they loop over the tensors with the same arithmetic.
//!
//! Functions whose name ends in `_` change the tensors of their first list in place.
//! Empty lists are a no-op (ATen refuses them).

use crate::error::{Error, Result};
use std::os::raw::c_char;
use tch::{TchError, Tensor};
use torch_sys::C_tensor;

type Handle = *const C_tensor;

extern "C" {
    fn facenet_free_error(message: *mut c_char);
    fn facenet_foreach_zero_(xs: *const Handle, n: usize) -> *mut c_char;
    fn facenet_foreach_mul_scalar_(xs: *const Handle, n: usize, s: f64) -> *mut c_char;
    fn facenet_foreach_div_scalar_(xs: *const Handle, n: usize, s: f64) -> *mut c_char;
    fn facenet_foreach_add_scalar_(xs: *const Handle, n: usize, s: f64) -> *mut c_char;
    fn facenet_foreach_add_list_(
        xs: *const Handle,
        ys: *const Handle,
        n: usize,
        alpha: f64,
    ) -> *mut c_char;
    fn facenet_foreach_add_list(
        xs: *const Handle,
        ys: *const Handle,
        n: usize,
        alpha: f64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn facenet_foreach_addcmul_(
        xs: *const Handle,
        a: *const Handle,
        b: *const Handle,
        n: usize,
        value: f64,
    ) -> *mut c_char;
    fn facenet_foreach_addcdiv_(
        xs: *const Handle,
        a: *const Handle,
        b: *const Handle,
        n: usize,
        value: f64,
    ) -> *mut c_char;
    fn facenet_foreach_sqrt(xs: *const Handle, n: usize, out: *mut *mut C_tensor) -> *mut c_char;
    fn facenet_foreach_copy_(xs: *const Handle, src: *const Handle, n: usize) -> *mut c_char;
    fn facenet_foreach_norm(
        xs: *const Handle,
        n: usize,
        ord: f64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}

fn handles(tensors: &[Tensor]) -> Vec<Handle> {
    tensors.iter().map(Tensor::as_ptr).collect()
}

/// Turns the shim's error message, if any, into an error (and frees it).
fn check(message: *mut c_char) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result is a NUL-terminated string from strdup, freed here once.
    let text = unsafe { std::ffi::CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { facenet_free_error(message) };
    Err(Error::Torch(TchError::Torch(text)))
}

fn same_length(lists: &[&[Tensor]]) -> Result<usize> {
    let n = lists[0].len();
    if lists.iter().any(|list| list.len() != n) {
        return Err(Error::invalid(format!(
            "foreach lists differ in length: {:?}",
            lists.iter().map(|l| l.len()).collect::<Vec<_>>()
        )));
    }
    Ok(n)
}

/// Runs a shim op that changes the tensors of its first list in place, over lists of equal
/// length; empty lists are a no-op.
fn in_place(
    lists: &[&[Tensor]],
    call: impl FnOnce(&[Vec<Handle>], usize) -> *mut c_char,
) -> Result<()> {
    let n = same_length(lists)?;
    if n == 0 {
        return Ok(());
    }
    let handles: Vec<Vec<Handle>> = lists.iter().map(|list| handles(list)).collect();
    check(call(&handles, n))
}

/// Runs a shim op that writes `n` new tensors into its `out` array, and takes ownership of
/// them.
fn new_tensors(
    lists: &[&[Tensor]],
    call: impl FnOnce(&[Vec<Handle>], usize, *mut *mut C_tensor) -> *mut c_char,
) -> Result<Vec<Tensor>> {
    let n = same_length(lists)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let handles: Vec<Vec<Handle>> = lists.iter().map(|list| handles(list)).collect();
    let mut out: Vec<*mut C_tensor> = vec![std::ptr::null_mut(); n];
    check(call(&handles, n, out.as_mut_ptr()))?;
    // SAFETY: on success the shim filled every slot with a tensor allocated by `new`, which
    // tch's Tensor frees with `delete` when dropped.
    Ok(out
        .into_iter()
        .map(|t| unsafe { Tensor::from_ptr(t) })
        .collect())
}

// SAFETY (every `unsafe` below): the handle arrays outlive the call and hold `n` valid
// tensors each, `out` has room for `n`; the shim catches every C++ exception.

pub fn zero_(xs: &[Tensor]) -> Result<()> {
    in_place(&[xs], |h, n| unsafe {
        facenet_foreach_zero_(h[0].as_ptr(), n)
    })
}

pub fn mul_scalar_(xs: &[Tensor], s: f64) -> Result<()> {
    in_place(&[xs], |h, n| unsafe {
        facenet_foreach_mul_scalar_(h[0].as_ptr(), n, s)
    })
}

pub fn div_scalar_(xs: &[Tensor], s: f64) -> Result<()> {
    in_place(&[xs], |h, n| unsafe {
        facenet_foreach_div_scalar_(h[0].as_ptr(), n, s)
    })
}

pub fn add_scalar_(xs: &[Tensor], s: f64) -> Result<()> {
    in_place(&[xs], |h, n| unsafe {
        facenet_foreach_add_scalar_(h[0].as_ptr(), n, s)
    })
}

/// xs += alpha·ys
pub fn add_(xs: &[Tensor], ys: &[Tensor], alpha: f64) -> Result<()> {
    in_place(&[xs, ys], |h, n| unsafe {
        facenet_foreach_add_list_(h[0].as_ptr(), h[1].as_ptr(), n, alpha)
    })
}

/// xs + alpha·ys, as new tensors.
pub fn add(xs: &[Tensor], ys: &[Tensor], alpha: f64) -> Result<Vec<Tensor>> {
    new_tensors(&[xs, ys], |h, n, out| unsafe {
        facenet_foreach_add_list(h[0].as_ptr(), h[1].as_ptr(), n, alpha, out)
    })
}

/// xs += value·a·b
pub fn addcmul_(xs: &[Tensor], a: &[Tensor], b: &[Tensor], value: f64) -> Result<()> {
    in_place(&[xs, a, b], |h, n| unsafe {
        facenet_foreach_addcmul_(h[0].as_ptr(), h[1].as_ptr(), h[2].as_ptr(), n, value)
    })
}

/// xs += value·a/b
pub fn addcdiv_(xs: &[Tensor], a: &[Tensor], b: &[Tensor], value: f64) -> Result<()> {
    in_place(&[xs, a, b], |h, n| unsafe {
        facenet_foreach_addcdiv_(h[0].as_ptr(), h[1].as_ptr(), h[2].as_ptr(), n, value)
    })
}

/// √x of each tensor, as new tensors.
pub fn sqrt(xs: &[Tensor]) -> Result<Vec<Tensor>> {
    new_tensors(&[xs], |h, n, out| unsafe {
        facenet_foreach_sqrt(h[0].as_ptr(), n, out)
    })
}

/// xs ← src, elementwise.
pub fn copy_(xs: &[Tensor], src: &[Tensor]) -> Result<()> {
    in_place(&[xs, src], |h, n| unsafe {
        facenet_foreach_copy_(h[0].as_ptr(), h[1].as_ptr(), n)
    })
}

/// One 0-dim tensor per input holding its `ord`-norm (2.0: L2; f64::INFINITY: max |x|,
/// which is NaN when the tensor holds a NaN).
pub fn norm(xs: &[Tensor], ord: f64) -> Result<Vec<Tensor>> {
    new_tensors(&[xs], |h, n, out| unsafe {
        facenet_foreach_norm(h[0].as_ptr(), n, ord, out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn tensors() -> Vec<Tensor> {
        vec![
            Tensor::from_slice(&[1f32, -2., 3.]),
            Tensor::from_slice(&[4f32, 5.]).view([1, 2]),
        ]
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn in_place_ops_change_every_tensor_of_the_list() {
        let xs = tensors();
        let ys = tensors();
        mul_scalar_(&xs, 2.0).unwrap();
        add_(&xs, &ys, -0.5).unwrap();
        addcmul_(&xs, &ys, &ys, 1.0).unwrap();
        assert_eq!(values(&xs[0]), vec![2.5, 1.0, 13.5]);
        assert_eq!(values(&xs[1]), vec![22.0, 32.5]);
        addcdiv_(&xs, &ys, &ys, 2.0).unwrap();
        add_scalar_(&xs, 1.0).unwrap();
        div_scalar_(&xs, 2.0).unwrap();
        assert_eq!(values(&xs[0]), vec![2.75, 2.0, 8.25]);
        copy_(&xs, &ys).unwrap();
        assert_eq!(values(&xs[1]), vec![4.0, 5.0]);
        zero_(&xs).unwrap();
        assert_eq!(values(&xs[0]), vec![0.0; 3]);
    }

    #[test]
    fn out_of_place_ops_return_new_tensors() {
        let xs = tensors();
        let sum = add(&xs, &xs, 1.0).unwrap();
        assert_eq!(values(&sum[1]), vec![8.0, 10.0]);
        assert_eq!(values(&xs[1]), vec![4.0, 5.0]);
        let roots = sqrt(&[Tensor::from_slice(&[4f32, 9.])]).unwrap();
        assert_eq!(values(&roots[0]), vec![2.0, 3.0]);
        let norms = norm(&xs, 2.0).unwrap();
        assert!((norms[0].double_value(&[]) - 14f64.sqrt()).abs() < 1e-6);
        let max = norm(&xs, f64::INFINITY).unwrap();
        assert_eq!(max[1].double_value(&[]), 5.0);
        let nan = norm(&[Tensor::from_slice(&[1f32, f32::NAN])], f64::INFINITY).unwrap();
        assert!(nan[0].double_value(&[]).is_nan());
    }

    #[test]
    fn errors_come_back_as_torch_errors() {
        let a = vec![Tensor::zeros([3], (Kind::Float, Device::Cpu))];
        let b = vec![Tensor::zeros([4], (Kind::Float, Device::Cpu))];
        let err = add_(&a, &b, 1.0).unwrap_err();
        assert_eq!(err.code(), "ERR_TORCH");
        let err = add_(&a, &[], 1.0).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARGUMENT");
    }

    #[test]
    fn empty_lists_are_a_no_op() {
        zero_(&[]).unwrap();
        add_(&[], &[], 1.0).unwrap();
        assert!(sqrt(&[]).unwrap().is_empty());
        assert!(norm(&[], 2.0).unwrap().is_empty());
    }
}
