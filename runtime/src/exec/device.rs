//! Device selection.

use std::fmt;

use crate::spec::DeviceChoice;

/// A device stages run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The host CPU.
    Cpu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}

/// The requested device is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// CUDA was asked for explicitly.
    #[error(
        "device cuda:{0} requested, but this build has no CUDA backend; use --device cpu or --device auto"
    )]
    NoCuda(u32),
}

/// Resolves a choice to a device. `auto` picks CUDA when a driver and a
/// device are present; this build has only the CPU backend, so `auto` is
/// the CPU.
///
/// # Errors
/// [`DeviceError::NoCuda`] for an explicit CUDA choice.
pub fn resolve(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => {
            tracing::info!("device auto: no CUDA backend in this build, using the CPU");
            Ok(Device::Cpu)
        }
        DeviceChoice::Cuda(n) => Err(DeviceError::NoCuda(n)),
    }
}
