//! Functions of each value: pointwise ops (one expression per value),
//! the per-channel affine (batch normalization at inference), and the
//! epilogue ops a fused chain applies after its producer.

use std::sync::Arc;

use super::Op;
use crate::error::KernelError;

/// A function of one value, applied to every value of a tensor: what a
/// fused chain's epilogue is made of. Each is defined by one expression
/// that the CPU and CUDA backends evaluate identically (no contraction into
/// FMA), so a fused chain gives the same bits as the ops run one by one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pointwise {
    /// `x > 0 ? x : 0`.
    Relu,
    /// `v = x > min ? x : min; v < max ? v : max`.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `x * scale + shift`, rounded after the multiply and after the add.
    Affine {
        /// Factor.
        scale: f32,
        /// Offset.
        shift: f32,
    },
    /// `x > 0 ? x : x * alpha` (ONNX `LeakyRelu`).
    LeakyRelu {
        /// Slope below zero.
        alpha: f32,
    },
    /// `x > threshold ? value : 0` (OpenCV's `THRESH_BINARY`).
    Threshold {
        /// Level.
        threshold: f32,
        /// Value above the level.
        value: f32,
    },
}

impl Pointwise {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Pointwise::Relu => "relu",
            Pointwise::Clip { .. } => "clip",
            Pointwise::Affine { .. } => "affine",
            Pointwise::LeakyRelu { .. } => "leaky_relu",
            Pointwise::Threshold { .. } => "threshold",
        }
    }

    /// The function at one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Pointwise::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Pointwise::Clip { min, max } => {
                let v = if x > min { x } else { min };
                if v < max { v } else { max }
            }
            Pointwise::Affine { scale, shift } => x * scale + shift,
            Pointwise::LeakyRelu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    x * alpha
                }
            }
            Pointwise::Threshold { threshold, value } => {
                if x > threshold {
                    value
                } else {
                    0.0
                }
            }
        }
    }

    /// The function on every value of `d`, in place (one tight loop per
    /// op, so it vectorises).
    #[inline(always)]
    pub fn apply_slice(self, d: &mut [f32]) {
        match self {
            Pointwise::Relu => d.iter_mut().for_each(|v| *v = Pointwise::Relu.apply(*v)),
            Pointwise::Clip { min, max } => d
                .iter_mut()
                .for_each(|v| *v = Pointwise::Clip { min, max }.apply(*v)),
            Pointwise::Affine { scale, shift } => d
                .iter_mut()
                .for_each(|v| *v = Pointwise::Affine { scale, shift }.apply(*v)),
            Pointwise::LeakyRelu { alpha } => d
                .iter_mut()
                .for_each(|v| *v = Pointwise::LeakyRelu { alpha }.apply(*v)),
            Pointwise::Threshold { threshold, value } => d
                .iter_mut()
                .for_each(|v| *v = Pointwise::Threshold { threshold, value }.apply(*v)),
        }
    }

    /// Floating-point operations per value.
    pub fn flops(self) -> u64 {
        match self {
            Pointwise::Relu | Pointwise::Threshold { .. } => 1,
            Pointwise::Clip { .. } | Pointwise::Affine { .. } | Pointwise::LeakyRelu { .. } => 2,
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`KernelError::BadParam`] for a clip whose `min` is above its `max`
    /// or a parameter that is NaN.
    pub fn check(self) -> Result<(), KernelError> {
        let bad = |what: String| {
            Err(KernelError::BadParam {
                op: self.name(),
                what,
            })
        };
        match self {
            Pointwise::Relu => Ok(()),
            Pointwise::Clip { min, max } if min > max => {
                bad(format!("min {min} is above max {max}"))
            }
            Pointwise::Clip { min, max } if min.is_nan() || max.is_nan() => {
                bad("min and max must be numbers".into())
            }
            Pointwise::Affine { scale, shift } if !scale.is_finite() || !shift.is_finite() => {
                bad(format!("scale {scale} and shift {shift} must be finite"))
            }
            Pointwise::LeakyRelu { alpha } if !alpha.is_finite() => {
                bad(format!("alpha {alpha} must be finite"))
            }
            Pointwise::Threshold { threshold, value } if threshold.is_nan() || value.is_nan() => {
                bad("threshold and value must be numbers".into())
            }
            _ => Ok(()),
        }
    }
}

impl From<Pointwise> for Op {
    fn from(p: Pointwise) -> Self {
        Op::Pointwise(p)
    }
}

/// Applies `ops` in order to every value of `d`, in place.
#[inline(always)]
pub fn apply_pointwise(ops: &[Pointwise], d: &mut [f32]) {
    for op in ops {
        op.apply_slice(d);
    }
}

/// `x * scale[c] + shift[c]` for every value of channel `c`, rounded after
/// the multiply and after the add (no FMA): batch normalization at
/// inference with its statistics folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAffine {
    /// Factor per channel.
    pub scale: Arc<[f32]>,
    /// Offset per channel.
    pub shift: Arc<[f32]>,
}

impl ChannelAffine {
    /// Builds the affine, checking that both have one finite value per
    /// channel.
    ///
    /// # Errors
    /// [`KernelError::BadParam`] when the lengths differ, are zero, or a
    /// value is not finite.
    pub fn new(scale: Vec<f32>, shift: Vec<f32>) -> Result<Self, KernelError> {
        let bad = |what: String| {
            Err(KernelError::BadParam {
                op: "batchnorm",
                what,
            })
        };
        if scale.is_empty() || scale.len() != shift.len() {
            return bad(format!(
                "scale has {} values and shift {}: need one of each per channel",
                scale.len(),
                shift.len()
            ));
        }
        if let Some(i) = scale.iter().chain(&shift).position(|v| !v.is_finite()) {
            return bad(format!("value {i} of scale/shift is not finite"));
        }
        Ok(Self {
            scale: scale.into(),
            shift: shift.into(),
        })
    }

    /// Batch normalization at inference, `(x - mean) / sqrt(var + eps) *
    /// gamma + beta`, folded into a scale and shift per channel (computed
    /// in f64, rounded once).
    ///
    /// # Errors
    /// [`KernelError::BadParam`] when the lengths differ, a variance plus
    /// epsilon is not positive, or a folded value is not finite.
    pub fn batch_norm(
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        epsilon: f64,
    ) -> Result<Self, KernelError> {
        let n = gamma.len();
        if beta.len() != n || mean.len() != n || var.len() != n {
            return Err(KernelError::BadParam {
                op: "batchnorm",
                what: format!(
                    "scale, bias, mean and var have {n}, {}, {} and {} values: need one of each per channel",
                    beta.len(),
                    mean.len(),
                    var.len()
                ),
            });
        }
        let mut scale = Vec::with_capacity(n);
        let mut shift = Vec::with_capacity(n);
        for c in 0..n {
            let d = f64::from(var[c]) + epsilon;
            if d.is_nan() || d <= 0.0 {
                return Err(KernelError::BadParam {
                    op: "batchnorm",
                    what: format!("channel {c}: var + epsilon = {d} is not positive"),
                });
            }
            let s = f64::from(gamma[c]) / d.sqrt();
            scale.push(s as f32);
            shift.push((f64::from(beta[c]) - f64::from(mean[c]) * s) as f32);
        }
        Self::new(scale, shift)
    }

    /// Channels it applies to.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// The function on every value of one channel's values `d`, in place.
    #[inline(always)]
    pub fn apply_slice(&self, c: usize, d: &mut [f32]) {
        let p = Pointwise::Affine {
            scale: self.scale[c],
            shift: self.shift[c],
        };
        p.apply_slice(d);
    }

    /// Checks that the affine has `channels` channels.
    ///
    /// # Errors
    /// [`KernelError::Channels`] when it does not.
    pub fn check_channels(&self, channels: usize) -> Result<(), KernelError> {
        if self.channels() == channels {
            Ok(())
        } else {
            Err(KernelError::Channels {
                op: "batchnorm",
                expected: self.channels(),
                got: channels,
            })
        }
    }
}

/// One op of a fused chain's epilogue.
#[derive(Debug, Clone, PartialEq)]
pub enum EpilogueOp {
    /// The same function of every value.
    Pointwise(Pointwise),
    /// A per-channel affine (batch normalization).
    Channel(ChannelAffine),
}

impl EpilogueOp {
    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            EpilogueOp::Pointwise(p) => p.name(),
            EpilogueOp::Channel(_) => "batchnorm",
        }
    }

    /// Floating-point operations per value.
    pub fn flops(&self) -> u64 {
        match self {
            EpilogueOp::Pointwise(p) => p.flops(),
            EpilogueOp::Channel(_) => 2,
        }
    }

    /// The op on its own, as a stage would run it.
    pub fn to_op(&self) -> Op {
        match self {
            EpilogueOp::Pointwise(p) => Op::Pointwise(*p),
            EpilogueOp::Channel(a) => Op::ChannelAffine(a.clone()),
        }
    }

    /// The op applied to the values `d` of channel `c`, in place.
    #[inline(always)]
    pub fn apply_slice(&self, c: usize, d: &mut [f32]) {
        match self {
            EpilogueOp::Pointwise(p) => p.apply_slice(d),
            EpilogueOp::Channel(a) => a.apply_slice(c, d),
        }
    }

    /// Checks the parameters for a tensor of `channels` channels.
    ///
    /// # Errors
    /// [`KernelError`] when a parameter is invalid or the channels differ.
    pub fn check(&self, channels: usize) -> Result<(), KernelError> {
        match self {
            EpilogueOp::Pointwise(p) => p.check(),
            EpilogueOp::Channel(a) => a.check_channels(channels),
        }
    }
}

impl From<Pointwise> for EpilogueOp {
    fn from(p: Pointwise) -> Self {
        EpilogueOp::Pointwise(p)
    }
}

/// Applies `ops` in order to the values `d` of channel `c`, in place.
#[inline(always)]
pub fn apply_epilogue(ops: &[EpilogueOp], c: usize, d: &mut [f32]) {
    for op in ops {
        op.apply_slice(c, d);
    }
}
