//! Device selection: `auto` picks CUDA when a driver and a device are
//! present (and the kernels compile), else the CPU, and logs which.

use std::fmt;

use streamfuse_kernels::cuda::device as cuda;

use crate::spec::DeviceChoice;

/// A device stages run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The host CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The requested device is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// CUDA was asked for explicitly and cannot be used.
    #[error("device cuda:{ordinal} requested, but {reason}; use --device cpu or --device auto")]
    NoCuda {
        /// Requested ordinal.
        ordinal: usize,
        /// Why not.
        reason: String,
    },
}

/// Resolves a choice to a device, checking that CUDA is usable (driver,
/// device, NVRTC) before choosing it; never panics on a machine without CUDA.
///
/// # Errors
/// [`DeviceError::NoCuda`] for an explicit CUDA choice that cannot be used.
pub fn resolve(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => match usable(0) {
            Ok(()) => {
                tracing::info!("device auto: using CUDA device 0");
                Ok(Device::Cuda(0))
            }
            Err(why) => {
                tracing::info!("device auto: using the CPU ({why})");
                Ok(Device::Cpu)
            }
        },
        DeviceChoice::Cuda(n) => usable(n)
            .map(|()| Device::Cuda(n))
            .map_err(|reason| DeviceError::NoCuda { ordinal: n, reason }),
    }
}

fn usable(ordinal: usize) -> Result<(), String> {
    if !cuda::driver_available() {
        return Err("no CUDA driver (libcuda.so) on this machine".into());
    }
    let count = cuda::device_count();
    if ordinal >= count {
        return Err(format!("{count} CUDA device(s) found"));
    }
    if !streamfuse_kernels::cuda::nvrtc::available() {
        return Err("NVRTC (libnvrtc.so.12) cannot be loaded".into());
    }
    Ok(())
}
