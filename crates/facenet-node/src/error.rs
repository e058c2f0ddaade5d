//! Core errors → JavaScript errors whose `code` property is the core's stable code
//! (`ERR_SHAPE`, `ERR_WEIGHTS`, …). napi's `Status` has no room for codes of our own, so
//! the binding uses a custom status, as napi-rs's `custom_status_code` example does: napi
//! writes it into the `code` of the `Error` it creates, and the TS layer (errors.ts's
//! `fromBindingError`) reads that property; no message is parsed.

use napi::bindgen_prelude::{FromNapiValue, Unknown};
use napi::{Env, JsError, Status};

/// The `code` of an error the binding raises: one of the core's stable codes, or napi's
/// own status when napi itself failed (a typed array it could not create, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Facenet(&'static str),
    Napi(Status),
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        match self {
            Code::Facenet(code) => code,
            Code::Napi(status) => status.as_ref(),
        }
    }
}

pub type Error = napi::Error<Code>;
pub type Result<T> = std::result::Result<T, Error>;

pub fn to_js(error: facenet::Error) -> Error {
    coded(error.code(), error)
}

pub fn coded(code: &'static str, message: impl std::fmt::Display) -> Error {
    Error::new(Code::Facenet(code), message.to_string())
}

pub fn invalid(message: impl std::fmt::Display) -> Error {
    coded("ERR_INVALID_ARGUMENT", message)
}

pub fn disposed() -> Error {
    coded(
        "ERR_DISPOSED",
        "the model has been disposed; create a new one with FaceNet.create()",
    )
}

/// A panic inside libtorch or the core must never take the process down; it becomes an
/// error the caller can read.
pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Error {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    coded(
        "ERR_TORCH",
        format!("internal error in libtorch: {message}"),
    )
}

/// napi's own failures keep their status as the code.
pub trait OrNapiCode<T> {
    fn or_code(self) -> Result<T>;
}

impl<T> OrNapiCode<T> for napi::Result<T> {
    fn or_code(self) -> Result<T> {
        self.map_err(|e| Error::new(Code::Napi(e.status), e.reason))
    }
}

/// A promise is settled on the JS thread, and napi's deferred rejects only with an
/// `Error<Status>`: so the JS error (its `code` included) is made here, and napi is handed
/// that value to reject with, which it passes on unchanged.
pub fn rejection(env: Env, error: Error) -> napi::Error {
    let raw = unsafe { JsError::from(error).into_value(env.raw()) };
    match unsafe { Unknown::from_napi_value(env.raw(), raw) } {
        Ok(value) if !raw.is_null() => napi::Error::from(value),
        // Only while the environment tears down, when nobody can receive the error.
        _ => napi::Error::new(Status::GenericFailure, "the error could not be created"),
    }
}
