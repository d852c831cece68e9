// Fused conv -> bias -> (ReLU) -> max-pool: one read of the input tile, the
// pool windows' convolution values kept in registers, one write of the
// pooled output. The convolution output never reaches memory.
//
// The kernel is chain.cu's convolution producer with a run-time ReLU flag
// as its epilogue (generated chains bake theirs in instead); its `chan`
// argument is unused (pass any pointer).
//
// One block: a SF_TILE_W x SF_TILE_H tile of pooled outputs, SF_OC_BLOCK
// output channels of one group (blockIdx.z). Each thread accumulates the
// convolution at every position of its pool window (at most SF_MAX_POOL^2)
// for its channels, one input channel at a time from the shared tile, then
// applies ReLU and the max. Launch: grid (ceil(out_w/TW), ceil(out_h/TH),
// groups*ceil(out_c/groups/OCB)), block (TW, TH); requires pool_size <=
// SF_MAX_POOL and the input tile (see chain.cu) within SF_SMEM_FLOATS.
#include "common.cuh"

#define SF_CHAIN_NAME fused_conv_pool_f32
#define SF_CHAIN_CONV 1
__device__ __forceinline__ float sf_chain_epilogue(float v, int c, const float* __restrict__ chan,
                                                   const FusedParams& f) {
    (void)c;
    (void)chan;
    return f.relu ? sf_relu(v) : v;
}

#include "chain.cu"
