//! The one error type of the core. Every variant has a stable `code` that the binding
//! passes to JavaScript, so callers can branch on it without parsing messages.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option or argument has a value the library cannot use.
    #[error("{0}")]
    InvalidArgument(String),
    /// Input data has the wrong length, shape or element type.
    #[error("{0}")]
    Shape(String),
    /// The architecture name is not one the model zoo knows.
    #[error("unknown arch '{name}'; expected one of: {known}")]
    UnknownArch { name: String, known: String },
    /// The requested device does not exist on this machine.
    #[error("{0}")]
    DeviceUnavailable(String),
    /// The model was disposed before the call.
    #[error("{0}")]
    Disposed(String),
    /// A loss, gradient or weight became NaN or infinite during training.
    #[error("{0}")]
    NonFinite(String),
    /// A weights file cannot be read, written or used (missing, truncated, corrupt,
    /// another arch, missing tensors); the message names the file.
    #[error("{0}")]
    Weights(String),
    /// A dataset file cannot be used (not an `.npy`, wrong dtype, shape or order,
    /// truncated); the message starts with the file.
    #[error("{0}")]
    Data(String),
    /// A collective or the rendezvous of distributed training failed; the message names
    /// the address and the ranks involved.
    #[error("{1}")]
    Distributed(DistributedFailure, String),
    /// libtorch reported an error.
    #[error("libtorch: {}", torch_message(.0))]
    Torch(#[from] tch::TchError),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "ERR_INVALID_ARGUMENT",
            Error::Shape(_) => "ERR_SHAPE",
            Error::UnknownArch { .. } => "ERR_UNKNOWN_ARCH",
            Error::DeviceUnavailable(_) => "ERR_DEVICE_UNAVAILABLE",
            Error::Disposed(_) => "ERR_DISPOSED",
            Error::NonFinite(_) => "ERR_NON_FINITE",
            Error::Weights(_) => "ERR_WEIGHTS",
            Error::Data(_) => "ERR_DATA",
            Error::Torch(_) => "ERR_TORCH",
            Error::Distributed(failure, _) => failure.code(),
        }
    }

    pub fn invalid(message: impl fmt::Display) -> Self {
        Error::InvalidArgument(message.to_string())
    }

    pub fn shape(message: impl fmt::Display) -> Self {
        Error::Shape(message.to_string())
    }
}

/// How distributed training failed, each with its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistributedFailure {
    /// No answer within the group's timeout (a rank stalled, or never joined).
    Timeout,
    /// Another rank's process is gone (killed, crashed) mid-run.
    PeerLost,
    /// The rendezvous at MASTER_ADDR:MASTER_PORT cannot be reached.
    Unreachable,
    /// Rank 0 cannot host the rendezvous: the port is taken.
    AddressInUse,
    /// c10d refused the call (e.g. ranks passed tensors of different shapes).
    Collective,
}

impl DistributedFailure {
    pub fn code(self) -> &'static str {
        match self {
            DistributedFailure::Timeout => "ERR_DIST_TIMEOUT",
            DistributedFailure::PeerLost => "ERR_DIST_PEER_LOST",
            DistributedFailure::Unreachable => "ERR_DIST_UNREACHABLE",
            DistributedFailure::AddressInUse => "ERR_DIST_ADDRESS_IN_USE",
            DistributedFailure::Collective => "ERR_DIST_COLLECTIVE",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// libtorch's own message without the C++ stack trace it appends ("Exception raised
/// from …" and the frames after it), which means nothing to a JavaScript caller.
fn torch_message(error: &tch::TchError) -> String {
    let text = error.to_string();
    let cut = text.find("Exception raised from").unwrap_or(text.len());
    text[..cut].trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn torch_errors_keep_the_message_and_drop_the_cpp_stack() {
        let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([4, 5], (Kind::Float, Device::Cpu));
        let error: Error = a.f_matmul(&b).unwrap_err().into();
        let message = error.to_string();
        assert!(message.starts_with("libtorch: "), "{message}");
        assert!(
            message.contains("2x3") || message.contains("cannot be multiplied"),
            "{message}"
        );
        assert!(!message.contains("Exception raised from"), "{message}");
        assert!(!message.contains("frame #"), "{message}");
    }
}
