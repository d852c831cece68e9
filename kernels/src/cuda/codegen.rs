//! Generates one CUDA C kernel for a fused chain (see `chain.cu`): a
//! producer (a convolution with bias, or a plain load), the chain's
//! epilogue ops composed into one `__device__` epilogue, and a max-pool
//! consumer (1×1 when the chain has no pool). Each pointwise op's constants
//! are baked into the source as exact bit patterns, so a kernel is specific
//! to its chain; sources are named and cached by a hash of their text.
//! Per-channel ops ([`EpilogueOp::Channel`], batch normalization) read their
//! scales and shifts from a buffer the launch passes ([`channel_data`]):
//! the source only names the op's place in it, so chains that differ only
//! in those values share a kernel.
//!
//! Pointwise ops use the expressions of [`Pointwise::apply`], with
//! `__fmul_rn`/`__fadd_rn` where NVRTC would otherwise contract a multiply
//! and an add into an FMA, so generated kernels give the CPU's bits.

use std::fmt::Write as _;

use super::params::{self, FusedParams, Launch, Producer};
use super::{COMMON, fnv1a};
use crate::error::KernelError;
use crate::op::{ChannelAffine, EpilogueOp, FusedChain, Pointwise};
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
        Pointwise::LeakyRelu { alpha } => {
            format!("v = v > 0.0f ? v : __fmul_rn(v, {});", lit(alpha))
        }
    }
}

/// CUDA C statement applying the `k`-th per-channel op of a chain to `v`
/// of channel `c` (scales at `chan[2k*C + c]`, shifts at
/// `chan[(2k+1)*C + c]`, `C = f.conv.out_c`).
fn channel_statement(k: usize) -> String {
    format!(
        "v = __fadd_rn(__fmul_rn(v, __ldg(&chan[{s}L * f.conv.out_c + c])), \
         __ldg(&chan[{b}L * f.conv.out_c + c]));",
        s = 2 * k,
        b = 2 * k + 1
    )
}

/// The per-channel ops of `chain`'s epilogue, in order.
pub fn channel_ops(chain: &FusedChain) -> Vec<&ChannelAffine> {
    chain
        .epilogue
        .iter()
        .filter_map(|e| match e {
            EpilogueOp::Channel(a) => Some(a),
            EpilogueOp::Pointwise(_) => None,
        })
        .collect()
}

/// The buffer a generated kernel reads its per-channel ops from: each
/// op's scales then its shifts, op after op; empty without such ops (then
/// any pointer may be passed: it is never read).
pub fn channel_data(chain: &FusedChain) -> Vec<f32> {
    let ops = channel_ops(chain);
    let mut v = Vec::with_capacity(ops.iter().map(|a| 2 * a.channels()).sum());
    for a in ops {
        v.extend_from_slice(&a.scale);
        v.extend_from_slice(&a.shift);
    }
    v
}

/// What makes `chain`'s kernel its own: the part of its source generated
/// for it (the rest is the template). Equal keys, equal kernels; a device
/// looks a chain's kernel up by it without building the whole source.
pub fn chain_key(chain: &FusedChain) -> String {
    chain_body(chain)
}

fn chain_body(chain: &FusedChain) -> String {
    let mut epi = String::new();
    let mut channel = 0;
    for op in &chain.epilogue {
        let line = match op {
            EpilogueOp::Pointwise(p) => statement(*p),
            EpilogueOp::Channel(_) => {
                channel += 1;
                channel_statement(channel - 1)
            }
        };
        let _ = writeln!(epi, "    {line}");
    }
    let producer = chain_producer(chain).map_or(0, Producer::code);
    format!(
        "// Generated for the chain {label}.\n\
         #define SF_CHAIN_CONV {producer}\n\
         __device__ __forceinline__ float sf_chain_epilogue(float v, int c, \
         const float* __restrict__ chan, const FusedParams& f) {{\n    \
         (void)c;\n    (void)chan;\n    (void)f;\n{epi}    return v;\n}}\n",
        label = chain.label(),
    )
}

/// The pool of `chain` as the template's `(size, stride)` (`(1, 1)`
/// without one).
fn pool_of(chain: &FusedChain) -> (usize, usize) {
    chain
        .pool
        .map_or((1, 1), |p| (p.size(), p.window.stride[0]))
}

/// How `chain`'s convolution producer computes ([`params::producer`]);
/// `None` for a load producer.
pub fn chain_producer(chain: &FusedChain) -> Option<Producer> {
    chain
        .conv
        .as_ref()
        .map(|c| params::producer(c, pool_of(chain)))
}

/// The kernel for `chain` (any chain: every epilogue op has a statement).
pub fn generate(chain: &FusedChain) -> Generated {
    let body = chain_body(chain);
    let conv = chain.conv.is_some();
    let hash = fnv1a(format!("{body}{TEMPLATE}").as_bytes());
    let name = format!("sf_chain_{hash:016x}");
    let source = format!("{COMMON}\n#define SF_CHAIN_NAME {name}\n{body}{TEMPLATE}");
    Generated { name, source, conv }
}

/// Parameters and launch of the generated kernel for `chain` on `input`,
/// or `None` when the chain does not fit the template (a pool other than a
/// plain max pool, of at most 3×3 after a convolution, or a convolution
/// tile over the shared-memory budget): then the members run one by one.
///
/// # Errors
/// [`KernelError`] when a member cannot take its input or sizes exceed the
/// kernels' 32-bit limits.
pub fn plan(
    chain: &FusedChain,
    input: Shape,
) -> Result<Option<(FusedParams, Launch)>, KernelError> {
    let out = chain.output_shape(input)?;
    if chain.pool.is_some_and(|p| !p.is_simple_max()) {
        return Ok(None);
    }
    let (pool_size, pool_stride) = pool_of(chain);
    let i = params::i;
    match &chain.conv {
        Some(c) => match params::producer(c, (pool_size, pool_stride)) {
            Producer::Tiled => {
                params::conv_producer(c, input, (pool_size, pool_stride), false, out)
            }
            Producer::Gemm | Producer::GemmF16 => {
                params::gemm_producer(c, input, (pool_size, pool_stride), out).map(Some)
            }
        },
        None => {
            // The load producer takes any plain max pool.
            let conv = params::ConvParams {
                in_c: i(input.c, "channels")?,
                in_h: i(input.h, "height")?,
                in_w: i(input.w, "width")?,
                out_c: i(input.c, "channels")?,
                out_h: i(input.h, "height")?,
                out_w: i(input.w, "width")?,
                k_h: 1,
                k_w: 1,
                stride_h: 1,
                stride_w: 1,
                pad_top: 0,
                pad_left: 0,
                dil_h: 1,
                dil_w: 1,
                groups: 1,
                has_bias: 0,
            };
            let p = params::fused_params(conv, (pool_size, pool_stride), false, out)?;
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
/// producer and epilogue op (pointwise and per-channel), with and without
/// a pool, and long epilogues.
pub fn representative_chains() -> Vec<FusedChain> {
    use crate::op::{Conv2d, Conv2dParams, Pool2d};
    let conv = |bias: bool| {
        let p = Conv2dParams::square(3, 8, 3, 1, 1);
        Conv2d::new(p, vec![0.0; p.weight_len()], bias.then(|| vec![0.0; 8]))
    };
    let bn = |c: usize| ChannelAffine::new(vec![1.0; c], vec![0.0; c]).ok();
    let ops: Vec<Pointwise> = vec![
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
        Pointwise::LeakyRelu { alpha: 0.1 },
    ];
    // Deep enough for the GEMM producers (f32 and f16).
    let deep = |precision: crate::Precision| {
        let p = Conv2dParams::square(32, 32, 3, 1, 1);
        Conv2d::new(p, vec![0.0; p.weight_len()], Some(vec![0.0; 32]))
            .map(|c| c.with_precision(precision))
    };
    let pool = Some(Pool2d::max(2, 2));
    let mut out = Vec::new();
    let producers = [
        (conv(true).ok(), 8),
        (conv(false).ok(), 8),
        (None, 3),
        (deep(crate::Precision::F32).ok(), 32),
        (deep(crate::Precision::F16).ok(), 32),
    ];
    for (producer, channels) in producers {
        // The GEMM producers share the epilogue code with the others: each
        // op alone is covered there; here every op at once and the
        // per-channel chains.
        let gemm = producer
            .as_ref()
            .is_some_and(|c| params::producer(c, (1, 1)) != params::Producer::Tiled);
        let single: &[_] = if gemm { &[] } else { &ops };
        for p in [None, pool] {
            for &op in single {
                out.push(FusedChain {
                    conv: producer.clone(),
                    epilogue: vec![op.into()],
                    pool: p,
                });
            }
            out.push(FusedChain {
                conv: producer.clone(),
                epilogue: ops.iter().map(|&o| o.into()).collect(),
                pool: p,
            });
            out.push(FusedChain {
                conv: producer.clone(),
                epilogue: vec![],
                pool: p,
            });
            // Batch normalization, then leaky ReLU; and two per-channel
            // ops around a ReLU.
            if let Some(a) = bn(channels) {
                out.push(FusedChain {
                    conv: producer.clone(),
                    epilogue: vec![
                        EpilogueOp::Channel(a.clone()),
                        Pointwise::LeakyRelu { alpha: 0.01 }.into(),
                    ],
                    pool: p,
                });
                out.push(FusedChain {
                    conv: producer.clone(),
                    epilogue: vec![
                        EpilogueOp::Channel(a.clone()),
                        Pointwise::Relu.into(),
                        EpilogueOp::Channel(a),
                    ],
                    pool: p,
                });
            }
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
            assert!(!g.source.contains("#error"), "{}", chains[k].label());
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

    #[test]
    fn per_channel_ops_read_their_place_in_the_channel_buffer() {
        let a =
            ChannelAffine::new(vec![1.0, 2.0], vec![3.0, 4.0]).unwrap_or_else(|e| panic!("{e}"));
        let b =
            ChannelAffine::new(vec![5.0, 6.0], vec![7.0, 8.0]).unwrap_or_else(|e| panic!("{e}"));
        let chain = FusedChain {
            conv: None,
            epilogue: vec![
                EpilogueOp::Channel(a.clone()),
                Pointwise::Relu.into(),
                EpilogueOp::Channel(b),
            ],
            pool: None,
        };
        assert_eq!(
            channel_data(&chain),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
        );
        let g = generate(&chain);
        assert!(
            g.source.contains("chan[0L * f.conv.out_c + c]"),
            "{}",
            g.source
        );
        assert!(
            g.source.contains("chan[3L * f.conv.out_c + c]"),
            "{}",
            g.source
        );
        // Only the values differ: the same kernel.
        let other = FusedChain {
            epilogue: vec![
                EpilogueOp::Channel(
                    ChannelAffine::new(vec![9.0; 2], vec![9.0; 2])
                        .unwrap_or_else(|e| panic!("{e}")),
                ),
                Pointwise::Relu.into(),
                EpilogueOp::Channel(a),
            ],
            ..chain
        };
        assert_eq!(generate(&other).name, g.name);
    }
}
