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

/// Calls a shim that writes `n` new tensors into `out`, and takes ownership of them.
fn collect(n: usize, call: impl FnOnce(*mut *mut C_tensor) -> *mut c_char) -> Result<Vec<Tensor>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut out: Vec<*mut C_tensor> = vec![std::ptr::null_mut(); n];
    check(call(out.as_mut_ptr()))?;
    // SAFETY: on success the shim filled every slot with a tensor allocated by `new`, which
    // tch's Tensor frees with `delete` when dropped.
    Ok(out
        .into_iter()
        .map(|t| unsafe { Tensor::from_ptr(t) })
        .collect())
}

pub fn zero_(xs: &[Tensor]) -> Result<()> {
    let h = handles(xs);
    if h.is_empty() {
        return Ok(());
    }
    // SAFETY (every call below): the handle arrays live across the call and hold valid
    // tensors of the stated count; the shim catches every C++ exception.
    check(unsafe { facenet_foreach_zero_(h.as_ptr(), h.len()) })
}

pub fn mul_scalar_(xs: &[Tensor], s: f64) -> Result<()> {
    let h = handles(xs);
    if h.is_empty() {
        return Ok(());
    }
    check(unsafe { facenet_foreach_mul_scalar_(h.as_ptr(), h.len(), s) })
}

pub fn div_scalar_(xs: &[Tensor], s: f64) -> Result<()> {
    let h = handles(xs);
    if h.is_empty() {
        return Ok(());
    }
    check(unsafe { facenet_foreach_div_scalar_(h.as_ptr(), h.len(), s) })
}

pub fn add_scalar_(xs: &[Tensor], s: f64) -> Result<()> {
    let h = handles(xs);
    if h.is_empty() {
        return Ok(());
    }
    check(unsafe { facenet_foreach_add_scalar_(h.as_ptr(), h.len(), s) })
}

/// xs += alpha·ys
pub fn add_(xs: &[Tensor], ys: &[Tensor], alpha: f64) -> Result<()> {
    let n = same_length(&[xs, ys])?;
    if n == 0 {
        return Ok(());
    }
    let (hx, hy) = (handles(xs), handles(ys));
    check(unsafe { facenet_foreach_add_list_(hx.as_ptr(), hy.as_ptr(), n, alpha) })
}

/// xs + alpha·ys, as new tensors.
pub fn add(xs: &[Tensor], ys: &[Tensor], alpha: f64) -> Result<Vec<Tensor>> {
    let n = same_length(&[xs, ys])?;
    let (hx, hy) = (handles(xs), handles(ys));
    collect(n, |out| unsafe {
        facenet_foreach_add_list(hx.as_ptr(), hy.as_ptr(), n, alpha, out)
    })
}

/// xs += value·a·b
pub fn addcmul_(xs: &[Tensor], a: &[Tensor], b: &[Tensor], value: f64) -> Result<()> {
    let n = same_length(&[xs, a, b])?;
    if n == 0 {
        return Ok(());
    }
    let (hx, ha, hb) = (handles(xs), handles(a), handles(b));
    check(unsafe { facenet_foreach_addcmul_(hx.as_ptr(), ha.as_ptr(), hb.as_ptr(), n, value) })
}

/// xs += value·a/b
pub fn addcdiv_(xs: &[Tensor], a: &[Tensor], b: &[Tensor], value: f64) -> Result<()> {
    let n = same_length(&[xs, a, b])?;
    if n == 0 {
        return Ok(());
    }
    let (hx, ha, hb) = (handles(xs), handles(a), handles(b));
    check(unsafe { facenet_foreach_addcdiv_(hx.as_ptr(), ha.as_ptr(), hb.as_ptr(), n, value) })
}

/// √x of each tensor, as new tensors.
pub fn sqrt(xs: &[Tensor]) -> Result<Vec<Tensor>> {
    let h = handles(xs);
    collect(h.len(), |out| unsafe {
        facenet_foreach_sqrt(h.as_ptr(), h.len(), out)
    })
}

/// xs ← src, elementwise.
pub fn copy_(xs: &[Tensor], src: &[Tensor]) -> Result<()> {
    let n = same_length(&[xs, src])?;
    if n == 0 {
        return Ok(());
    }
    let (hx, hs) = (handles(xs), handles(src));
    check(unsafe { facenet_foreach_copy_(hx.as_ptr(), hs.as_ptr(), n) })
}

/// One 0-dim tensor per input holding its `ord`-norm (2.0: L2; f64::INFINITY: max |x|,
/// which is NaN when the tensor holds a NaN).
pub fn norm(xs: &[Tensor], ord: f64) -> Result<Vec<Tensor>> {
    let h = handles(xs);
    collect(h.len(), |out| unsafe {
        facenet_foreach_norm(h.as_ptr(), h.len(), ord, out)
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
