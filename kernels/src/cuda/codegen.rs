//! Generates one CUDA C kernel for a fused chain (see `chain.cu`): a
//! producer (a convolution with bias, or a plain load), the chain's
//! pointwise ops composed into one `__device__` epilogue, and a max-pool
//! consumer (1×1 when the chain has no pool). Each op's constants are baked
//! into the source as exact bit patterns, so a kernel is specific to its
//! chain; sources are named and cached by a hash of their text.
//!
//! Pointwise ops use the expressions of [`Pointwise::apply`], with
//! `__fmul_rn`/`__fadd_rn` where NVRTC would otherwise contract a multiply
//! and an add into an FMA, so generated kernels give the CPU's bits.

use std::fmt::Write as _;

use super::params::{self, FusedParams, Launch};
use super::{COMMON, fnv1a};
use crate::error::KernelError;
use crate::op::{FusedChain, Pointwise};
use crate::tensor::Shape;

/// The template the generator fills in.
pub const TEMPLATE: &str = include_str!("chain.cu");

/// A generated kernel: its entry point and self-contained source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Entry point (`sf_chain_<hash>`).
    pub name: String,
    /// Full source for NVRTC (`common.cuh`, prelude, template).
    pub source: String,
    /// Whether the producer is a convolution (weights and bias are read).
    pub conv: bool,
}

/// A float constant as CUDA C that has exactly its bits.
fn lit(v: f32) -> String {
    format!("__int_as_float(0x{:08x})", v.to_bits())
}

/// CUDA C statements applying `op` to `v`.
fn statement(op: Pointwise) -> String {
    match op {
        Pointwise::Relu => "v = v > 0.0f ? v : 0.0f;".into(),
        Pointwise::Clip { min, max } => format!(
            "v = v > {lo} ? v : {lo}; v = v < {hi} ? v : {hi};",
            lo = lit(min),
            hi = lit(max)
        ),
        Pointwise::Affine { scale, shift } => {
            format!(
                "v = __fadd_rn(__fmul_rn(v, {}), {});",
                lit(scale),
                lit(shift)
            )
        }
        Pointwise::Threshold { threshold, value } => {
            format!("v = v > {} ? {} : 0.0f;", lit(threshold), lit(value))
        }
    }
}

/// The kernel for `chain`.
pub fn generate(chain: &FusedChain) -> Generated {
    let mut epi = String::new();
    for op in &chain.epilogue {
        let _ = writeln!(epi, "    {}", statement(*op));
    }
    let conv = chain.conv.is_some();
    let body = format!(
        "// Generated for the chain {label}.\n\
         #define SF_CHAIN_CONV {c}\n\
         __device__ __forceinline__ float sf_chain_epilogue(float v, const FusedParams& f) {{\n    (void)f;\n{epi}    return v;\n}}\n",
        label = chain.label(),
        c = i32::from(conv),
    );
    let hash = fnv1a(format!("{body}{TEMPLATE}").as_bytes());
    let name = format!("sf_chain_{hash:016x}");
    let source = format!("{COMMON}\n#define SF_CHAIN_NAME {name}\n{body}{TEMPLATE}");
    Generated { name, source, conv }
}

/// Parameters and launch of the generated kernel for `chain` on `input`,
/// or `None` when the chain does not fit the template (a pool window over
/// 3×3, or a convolution tile over the shared-memory budget): then the
/// members run one by one.
///
/// # Errors
/// [`KernelError`] when a member cannot take its input or sizes exceed the
/// kernels' 32-bit limits.
pub fn plan(
    chain: &FusedChain,
    input: Shape,
) -> Result<Option<(FusedParams, Launch)>, KernelError> {
    let out = chain.output_shape(input)?;
    let (pool_size, pool_stride) = chain.pool.map_or((1, 1), |p| (p.size, p.stride));
    let i = params::i;
    match &chain.conv {
        Some(c) => params::conv_producer(c, input, (pool_size, pool_stride), false, out),
        None => {
            let conv = params::ConvParams {
                in_c: i(input.c, "channels")?,
                in_h: i(input.h, "height")?,
                in_w: i(input.w, "width")?,
                out_c: i(input.c, "channels")?,
                out_h: i(input.h, "height")?,
                out_w: i(input.w, "width")?,
                k_h: 1,
                k_w: 1,
                stride: 1,
                pad: 0,
                has_bias: 0,
            };
            let p = FusedParams {
                conv,
                relu: 0,
                pool_size: i(pool_size, "pool size")?,
                pool_stride: i(pool_stride, "pool stride")?,
                out_h: i(out.h, "height")?,
                out_w: i(out.w, "width")?,
            };
            let y = out.h.div_ceil(8);
            if y > 65_535 || out.c > 65_535 {
                return Err(KernelError::BadParam {
                    op: "cuda",
                    what: format!("output {out:?} exceeds the grid limits"),
                });
            }
            let launch = Launch {
                grid: [out.w.div_ceil(32) as u32, y as u32, out.c as u32],
                block: [32, 8, 1],
            };
            Ok(Some((p, launch)))
        }
    }
}

/// A representative set of chains for `streamfuse kernels check`: every
/// producer and pointwise op, with and without a pool, and long epilogues.
pub fn representative_chains() -> Vec<FusedChain> {
    use crate::op::{Conv2d, Conv2dParams, MaxPoolParams};
    let conv = |bias: bool| {
        let p = Conv2dParams {
            in_channels: 3,
            out_channels: 8,
            kernel_h: 3,
            kernel_w: 3,
            stride: 1,
            padding: 1,
        };
        Conv2d::new(p, vec![0.0; p.weight_len()], bias.then(|| vec![0.0; 8]))
    };
    let ops = [
        Pointwise::Relu,
        Pointwise::Clip { min: 0.0, max: 6.0 },
        Pointwise::Affine {
            scale: 0.5,
            shift: -0.25,
        },
        Pointwise::Threshold {
            threshold: 0.5,
            value: 1.0,
        },
    ];
    let pool = Some(MaxPoolParams { size: 2, stride: 2 });
    let mut out = Vec::new();
    for producer in [conv(true).ok(), conv(false).ok(), None] {
        for p in [None, pool] {
            for op in ops {
                out.push(FusedChain {
                    conv: producer.clone(),
                    epilogue: vec![op],
                    pool: p,
                });
            }
            out.push(FusedChain {
                conv: producer.clone(),
                epilogue: ops.to_vec(),
                pool: p,
            });
            out.push(FusedChain {
                conv: producer.clone(),
                epilogue: vec![],
                pool: p,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_differ_by_chain_and_name_their_hash() {
        let chains = representative_chains();
        let gens: Vec<Generated> = chains.iter().map(generate).collect();
        for (k, g) in gens.iter().enumerate() {
            assert!(
                g.source
                    .contains(&format!("#define SF_CHAIN_NAME {}", g.name))
            );
            for h in &gens[k + 1..] {
                if h.source != g.source {
                    assert_ne!(h.name, g.name);
                }
            }
        }
        // Constants are exact bit patterns.
        let s = statement(Pointwise::Affine {
            scale: 0.1,
            shift: f32::MIN_POSITIVE,
        });
        assert!(s.contains(&format!("0x{:08x}", 0.1f32.to_bits())), "{s}");
        assert!(s.contains("0x00800000"), "{s}");
    }
}
