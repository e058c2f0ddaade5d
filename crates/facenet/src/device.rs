//! Device names as users write them ("auto", "cpu", "cuda", "cuda:1") and what this
//! machine has.

use crate::error::{Error, Result};
use tch::{Cuda, Device};

/// Resolves a device name. "auto" is the first CUDA device when there is one, else the CPU.
pub fn parse_device(name: &str) -> Result<Device> {
    let trimmed = name.trim().to_ascii_lowercase();
    match trimmed.as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda_device(0, name),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => cuda_device(index, name),
            _ => Err(Error::invalid(format!(
                "unknown device '{name}'; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ))),
        },
    }
}

fn cuda_device(index: usize, name: &str) -> Result<Device> {
    let count = Cuda::device_count() as usize;
    if index < count {
        Ok(Device::Cuda(index))
    } else if count == 0 {
        Err(Error::DeviceUnavailable(format!(
            "device '{name}' was requested but CUDA is not available on this machine"
        )))
    } else {
        Err(Error::DeviceUnavailable(format!(
            "device '{name}' was requested but this machine has {count} CUDA device(s) (cuda:0..cuda:{})",
            count - 1
        )))
    }
}

/// The canonical name of a device, the inverse of [`parse_device`].
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_owned(),
        Device::Cuda(index) => format!("cuda:{index}"),
        Device::Mps => "mps".to_owned(),
        Device::Vulkan => "vulkan".to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub cuda_available: bool,
    pub cuda_device_count: usize,
    pub cudnn_available: bool,
    /// Threads libtorch uses for one op on the calling thread.
    pub cpu_threads: usize,
}

pub fn devices() -> DeviceInfo {
    DeviceInfo {
        cuda_available: Cuda::is_available(),
        cuda_device_count: Cuda::device_count() as usize,
        cudnn_available: Cuda::cudnn_is_available(),
        cpu_threads: tch::get_num_threads().max(1) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_auto() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device(" CPU ").unwrap(), Device::Cpu);
        let auto = parse_device("auto").unwrap();
        assert_eq!(auto == Device::Cpu, !Cuda::is_available());
    }

    #[test]
    fn rejects_unknown_names_with_the_name() {
        let err = parse_device("tpu").unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARGUMENT");
        assert!(err.to_string().contains("'tpu'"), "{err}");
    }

    #[test]
    fn missing_cuda_device_is_unavailable() {
        let err = parse_device("cuda:99").unwrap_err();
        assert_eq!(err.code(), "ERR_DEVICE_UNAVAILABLE");
        assert!(err.to_string().contains("cuda:99"), "{err}");
    }
}
