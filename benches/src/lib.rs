//! Workloads shared by the criterion benches: the thesis and cnn pipelines
//! at the study's frame sizes.

pub mod transport;

use streamfuse_kernels::{Conv2d, Conv2dParams, FusedChain, Pool2d, Shape, Tensor, random};

/// Frame sizes `(width, height)` of the study: 128², 256², 512², 1024², 720p.
pub const SIZES: &[(usize, usize)] = &[
    (128, 128),
    (256, 256),
    (512, 512),
    (1024, 1024),
    (1280, 720),
];

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// 1 channel, 3x3 conv to 1 channel, no padding, no bias.
    Thesis,
    /// 3 channels, 3x3 conv to 16 channels with bias, padding 1.
    Cnn,
}

impl Workload {
    /// Both workloads.
    pub const ALL: [Workload; 2] = [Workload::Thesis, Workload::Cnn];

    /// Name in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Thesis => "thesis",
            Workload::Cnn => "cnn",
        }
    }

    /// Input channels.
    pub fn in_channels(self) -> usize {
        match self {
            Workload::Thesis => 1,
            Workload::Cnn => 3,
        }
    }

    /// Output channels of the convolution.
    pub fn out_channels(self) -> usize {
        match self {
            Workload::Thesis => 1,
            Workload::Cnn => 16,
        }
    }

    /// The workload's convolution with seeded random weights.
    pub fn conv(self) -> Conv2d {
        let (cin, cout) = (self.in_channels(), self.out_channels());
        let params = Conv2dParams::square(cin, cout, 3, 1, usize::from(self == Workload::Cnn));
        let bound = 1.0 / (params.filter_len() as f32).sqrt();
        let weights = (0..params.weight_len() as u64)
            .map(|i| random::symmetric_f32(1, 0, i, bound))
            .collect();
        let bias = (self == Workload::Cnn).then(|| {
            (0..cout as u64)
                .map(|i| random::symmetric_f32(1, 1, i, bound))
                .collect()
        });
        match Conv2d::new(params, weights, bias) {
            Ok(c) => c,
            Err(e) => panic!("workload conv is consistent by construction: {e}"),
        }
    }

    /// 2x2 max pool, stride 2.
    pub fn pool() -> Pool2d {
        Pool2d::max(2, 2)
    }

    /// conv → ReLU → pool as one chain.
    pub fn fused(self) -> FusedChain {
        FusedChain::conv_relu_pool(self.conv(), true, Some(Self::pool()))
    }
}

/// A deterministic frame of `c` channels.
pub fn frame(c: usize, w: usize, h: usize) -> Tensor {
    let shape = Shape::new(c, h, w);
    let data = (0..shape.len() as u64)
        .map(|i| random::pixel_f32(7, 0, i))
        .collect();
    match Tensor::from_vec(shape, data) {
        Ok(t) => t,
        Err(e) => panic!("frame data matches its shape by construction: {e}"),
    }
}

/// A convolution of `params` with seeded random weights and bias (uniform
/// ±1/√fan_in), the CPU algorithm left to the cost model.
pub fn random_conv(params: Conv2dParams) -> Conv2d {
    let bound = 1.0 / (params.filter_len() as f32).sqrt();
    let weights = (0..params.weight_len() as u64)
        .map(|i| random::symmetric_f32(3, 0, i, bound))
        .collect();
    let bias = (0..params.out_channels as u64)
        .map(|i| random::symmetric_f32(3, 1, i, bound))
        .collect();
    match Conv2d::new(params, weights, Some(bias)) {
        Ok(c) => c,
        Err(e) => panic!("bench conv is consistent by construction: {e}"),
    }
}
