//! Device selection: `auto` picks CUDA when a driver, a device and an NVRTC
//! that targets it are present and every kernel compiles and loads on it,
//! else the CPU, and says why in the log and the run report
//! ([`Resolved::fallback`]); `cuda` fails with that same reason.

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

/// A resolved device, with why `auto` fell back to the CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The device.
    pub device: Device,
    /// Why `auto` chose the CPU (`None`: it did not fall back).
    pub fallback: Option<String>,
}

/// Resolves a choice to a device ([`resolve_explained`] without the
/// reason).
///
/// # Errors
/// [`DeviceError::NoCuda`] for an explicit CUDA choice that cannot be used.
pub fn resolve(choice: DeviceChoice) -> Result<Device, DeviceError> {
    resolve_explained(choice).map(|r| r.device)
}

/// Resolves a choice to a device: CUDA only once its driver, device and
/// NVRTC are there and every kernel compiled and loaded on it (the device
/// is opened once here; the compiled code is cached on disk for the run's
/// own open). Never panics on a machine without CUDA.
///
/// # Errors
/// [`DeviceError::NoCuda`] for an explicit CUDA choice that cannot be used.
pub fn resolve_explained(choice: DeviceChoice) -> Result<Resolved, DeviceError> {
    resolve_with(choice, probe)
}

/// [`resolve_explained`] with `probe` deciding whether CUDA device `N` can
/// be used (`Err`: why not).
fn resolve_with(
    choice: DeviceChoice,
    probe: impl Fn(usize) -> Result<(), String>,
) -> Result<Resolved, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Resolved {
            device: Device::Cpu,
            fallback: None,
        }),
        DeviceChoice::Auto => match probe(0) {
            Ok(()) => {
                tracing::info!("device auto: using CUDA device 0");
                Ok(Resolved {
                    device: Device::Cuda(0),
                    fallback: None,
                })
            }
            Err(why) => {
                tracing::info!("device auto: using the CPU ({why})");
                Ok(Resolved {
                    device: Device::Cpu,
                    fallback: Some(why),
                })
            }
        },
        DeviceChoice::Cuda(n) => probe(n)
            .map(|()| Resolved {
                device: Device::Cuda(n),
                fallback: None,
            })
            .map_err(|reason| DeviceError::NoCuda { ordinal: n, reason }),
    }
}

/// Whether CUDA device `ordinal` can run the kernels: a driver, the
/// device, an NVRTC, and every kernel compiled and loaded.
fn probe(ordinal: usize) -> Result<(), String> {
    if !cuda::driver_available() {
        return Err("no CUDA driver (libcuda.so) on this machine".into());
    }
    let count = cuda::device_count();
    if ordinal >= count {
        return Err(format!("{count} CUDA device(s) found"));
    }
    if let Err(e) = streamfuse_kernels::cuda::nvrtc::library() {
        return Err(e.to_string());
    }
    cuda::CudaDevice::open(ordinal)
        .map(drop)
        .map_err(|e| format!("CUDA device {ordinal} cannot run the kernels: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_the_cpu_with_the_reason_and_cuda_fails_with_it() {
        let broken = |_: usize| Err("loading conv.cu (sm_90): module load failed".to_owned());
        let r = resolve_with(DeviceChoice::Auto, broken);
        assert_eq!(
            r,
            Ok(Resolved {
                device: Device::Cpu,
                fallback: Some("loading conv.cu (sm_90): module load failed".into()),
            })
        );
        let e = resolve_with(DeviceChoice::Cuda(0), broken).unwrap_err();
        assert!(e.to_string().contains("module load failed"), "{e}");
        let fine = |_: usize| Ok(());
        assert_eq!(
            resolve_with(DeviceChoice::Auto, fine).map(|r| r.device),
            Ok(Device::Cuda(0))
        );
        assert_eq!(
            resolve_with(DeviceChoice::Cpu, broken).map(|r| r.fallback),
            Ok(None)
        );
    }
}
