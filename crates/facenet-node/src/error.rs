//! Core errors → JavaScript errors. The reason carries the stable code as a prefix
//! ("ERR_SHAPE: ..."), which the TS layer (errors.ts's `bindingError`, its one reader)
//! turns into a typed `FaceNetError` subclass.

use napi::{Error, Status};

pub fn to_js(error: facenet::Error) -> Error {
    coded(error.code(), error)
}

pub fn coded(code: &str, message: impl std::fmt::Display) -> Error {
    Error::new(Status::GenericFailure, format!("{code}: {message}"))
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
