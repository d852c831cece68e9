// Template of the generated fused-chain kernels (see codegen.rs): a
// producer, the chain's epilogue and a max-pool consumer (a 1x1 window
// with stride 1 stores each value as it is). The generator prepends
// `common.cuh` and a prelude that defines
//   SF_CHAIN_NAME       the kernel's name (sf_chain_<hash>),
//   SF_CHAIN_CONV       1: the producer is a convolution (with bias),
//                       0: the producer loads the input as it is,
//   sf_chain_epilogue   the epilogue: a __device__ float(float v, int c,
//                       const float* chan, const FusedParams&) that applies
//                       each op in order to value v of channel c (fused.cu's
//                       reads the ReLU flag of the params; generated ones
//                       have their ops baked in). Per-channel ops read
//                       their scale and shift from `chan`: the k-th such
//                       op's scales at chan[2k*C ..], shifts at
//                       chan[(2k+1)*C ..], C = f.conv.out_c.
// Numerics follow common.cuh: the convolution as conv.cu (bias, then fmaf
// over taps in (ic, ky, kx) order), each window's columns' vertical maxima
// first, then across columns, so results match the CPU backend bit for
// bit.
//
// Parameters: FusedParams (`relu` unused by generated kernels). For a load
// producer, `conv` describes the input: in_c = out_c = channels, in/out
// sizes equal.

#if SF_CHAIN_CONV == 1
// One block: a SF_TILE_W x SF_TILE_H tile of outputs, SF_OC_BLOCK output
// channels of one group (blockIdx.z, as conv.cu's conv2d_f32). Each thread
// accumulates the convolution at every position of its pool window (at
// most SF_MAX_POOL^2) for its channels, one input channel at a time from
// the shared tile, then applies the epilogue and the max. Launch: grid
// (ceil(out_w/TW), ceil(out_h/TH), groups*ceil(out_c/groups/OCB)), block
// (TW, TH); pool_size <= SF_MAX_POOL and the input tile
// ((TH-1)*ps + P-1)*stride_h + (k_h-1)*dil_h + 1 by
// ((TW-1)*ps + P-1)*stride_w + (k_w-1)*dil_w + 1 within SF_SMEM_FLOATS.
extern "C" __global__ void SF_CHAIN_NAME(const float* __restrict__ in,
                                         const float* __restrict__ w,
                                         const float* __restrict__ bias,
                                         float* __restrict__ out,
                                         const float* __restrict__ chan, FusedParams f) {
    __shared__ float tile[SF_SMEM_FLOATS];
    const ConvParams p = f.conv;
    const SfConvBlock blk = sf_conv_block(p, blockIdx.z);
    const int ps = f.pool_stride;
    const int pk = f.pool_size;
    const int px0 = blockIdx.x * SF_TILE_W;
    const int py0 = blockIdx.y * SF_TILE_H;
    const int px = px0 + threadIdx.x;
    const int py = py0 + threadIdx.y;
    const int conv_w = (SF_TILE_W - 1) * ps + pk;
    const int conv_h = (SF_TILE_H - 1) * ps + pk;
    const int tile_w = (conv_w - 1) * p.stride_w + (p.k_w - 1) * p.dil_w + 1;
    const int tile_h = (conv_h - 1) * p.stride_h + (p.k_h - 1) * p.dil_h + 1;
    const int flen = blk.icg * p.k_h * p.k_w;
    const float* wb = w + (long)blk.oc0 * flen;

    float acc[SF_OC_BLOCK][SF_MAX_POOL * SF_MAX_POOL];
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        const float b = (p.has_bias && j < blk.n) ? __ldg(&bias[blk.oc0 + j]) : 0.0f;
#pragma unroll
        for (int d = 0; d < SF_MAX_POOL * SF_MAX_POOL; ++d) {
            acc[j][d] = b;
        }
    }
    for (int i = 0; i < blk.icg; ++i) {
        const int ic = blk.g * blk.icg + i;
        __syncthreads();
        sf_load_tile(in + (long)ic * p.in_h * p.in_w, tile, tile_h, tile_w,
                     py0 * ps * p.stride_h - p.pad_top, px0 * ps * p.stride_w - p.pad_left,
                     p.in_h, p.in_w);
        __syncthreads();
        const float* t =
            tile + threadIdx.y * ps * p.stride_h * tile_w + threadIdx.x * ps * p.stride_w;
        for (int ky = 0; ky < p.k_h; ++ky) {
            const float* row = t + ky * p.dil_h * tile_w;
            for (int kx = 0; kx < p.k_w; ++kx) {
                const float* tap_x = row + kx * p.dil_w;
                const int tap = (i * p.k_h + ky) * p.k_w + kx;
                float wj[SF_OC_BLOCK];
#pragma unroll
                for (int j = 0; j < SF_OC_BLOCK; ++j) {
                    wj[j] = j < blk.n ? __ldg(&wb[(long)j * flen + tap]) : 0.0f;
                }
#pragma unroll
                for (int dy = 0; dy < SF_MAX_POOL; ++dy) {
#pragma unroll
                    for (int dx = 0; dx < SF_MAX_POOL; ++dx) {
                        if (dy < pk && dx < pk) {
                            const float x = tap_x[dy * p.stride_h * tile_w + dx * p.stride_w];
#pragma unroll
                            for (int j = 0; j < SF_OC_BLOCK; ++j) {
                                acc[j][dy * SF_MAX_POOL + dx] =
                                    fmaf(wj[j], x, acc[j][dy * SF_MAX_POOL + dx]);
                            }
                        }
                    }
                }
            }
        }
    }
    if (px < f.out_w && py < f.out_h) {
#pragma unroll
        for (int j = 0; j < SF_OC_BLOCK; ++j) {
            if (j < blk.n) {
                const int oc = blk.oc0 + j;
                float m = 0.0f;
#pragma unroll
                for (int dx = 0; dx < SF_MAX_POOL; ++dx) {
                    if (dx < pk) {
                        float v = sf_chain_epilogue(acc[j][dx], oc, chan, f);
#pragma unroll
                        for (int dy = 1; dy < SF_MAX_POOL; ++dy) {
                            if (dy < pk) {
                                v = sf_max(v, sf_chain_epilogue(acc[j][dy * SF_MAX_POOL + dx],
                                                                oc, chan, f));
                            }
                        }
                        m = dx == 0 ? v : sf_max(m, v);
                    }
                }
                out[((long)oc * f.out_h + py) * f.out_w + px] = m;
            }
        }
    }
}
#elif SF_CHAIN_CONV == 2 || SF_CHAIN_CONV == 3
#if SF_CHAIN_CONV == 2
#define SF_GEMM_BIAS(v, b) (v)
#else
#define SF_GEMM_BIAS(v, b) __fadd_rn((v), (b))
#endif
// Implicit GEMM for deep layers (many input and output channels): per
// group g, C[m][n] = sum_k A[m][k] B[k][n] with A the group's weights
// ([ocg][icg*k_h*k_w] as stored), k a tap (ic, ky, kx) in that order, and B
// the input gathered on the fly (im2col in shared memory, never in global
// memory). Column n of a block's tile is a convolution output position:
// tiles walk the pooled output plane, each pooled output owning pk*pk
// consecutive columns (its window, row by row; pk = 1 without a pool), so
// a tile holds SF_GEMM_BN / (pk*pk) whole windows and no value is computed
// twice when the pool's stride equals its size (the planner's condition).
//
// SF_CHAIN_CONV 2 (f32): every thread owns a 4x4 register block of C and
// accumulates it from bias with fmaf over k in order: the operations of
// conv.cu, so the CPU's bits. SF_CHAIN_CONV 3 (f16, opt-in): A and B are
// rounded to f16 as they are staged, each warp multiplies 16x16x16 tiles
// on the tensor cores with f32 accumulators, and the bias is added after
// (within reference::f16_tolerance of the exact result, not bit equal).
//
// Both stage the finished tile in shared memory, where the epilogue and the
// pool (each window's columns' vertical maxima first, then across columns,
// as the other producers) read it; consecutive threads store consecutive
// pooled outputs of one channel.
// Launch: grid (ceil(out_h*out_w / (SF_GEMM_BN/(pk*pk))),
// ceil(ocg/SF_GEMM_BM), groups), block (SF_GEMM_THREADS); pk*pk <= SF_GEMM_BN.
extern "C" __global__ void SF_CHAIN_NAME(const float* __restrict__ in,
                                         const float* __restrict__ w,
                                         const float* __restrict__ bias,
                                         float* __restrict__ out,
                                         const float* __restrict__ chan, FusedParams f) {
    const ConvParams p = f.conv;
    const int tid = threadIdx.x;
    const int ocg = p.out_c / p.groups;
    const int icg = p.in_c / p.groups;
    const int khw = p.k_h * p.k_w;
    const int K = icg * khw;
    const int g = blockIdx.z;
    const int m0 = blockIdx.y * SF_GEMM_BM;
    const int pk = f.pool_size;
    const int ps = f.pool_stride;
    const int win = pk * pk;
    const int per = SF_GEMM_BN / win;
    const int q0 = blockIdx.x * per;
    const int nq = f.out_h * f.out_w;
    const long plane = (long)p.in_h * p.in_w;
    const float* wg = w + (long)g * ocg * K;
    const float* ing = in + (long)g * icg * plane;

    // The B column this thread gathers (the same in every k slice), and its
    // rows bk0, bk0 + 4, ...; the A row and four consecutive k it loads.
    const int bn = tid % SF_GEMM_BN;
    const int bk0 = tid / SF_GEMM_BN;
    const int am = tid / 4;
    const int ak0 = (tid % 4) * 4;
    int iy0 = 0;
    int ix0 = 0;
    bool col_ok = false;
    {
        const int q = bn / win;
        const int d = bn - q * win;
        if (q < per && q0 + q < nq) {
            const int py = (q0 + q) / f.out_w;
            const int px = (q0 + q) - py * f.out_w;
            iy0 = (py * ps + d / pk) * p.stride_h - p.pad_top;
            ix0 = (px * ps + d % pk) * p.stride_w - p.pad_left;
            col_ok = true;
        }
    }
    const bool row_ok = m0 + am < ocg;
    const float* wrow = wg + (long)(m0 + am) * K;
    float ra[4];
    float rb[4];
    // Global values of k slice k0 into registers (0 outside the matrices).
    auto fetch = [&](int k0) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int k = k0 + ak0 + j;
            ra[j] = (row_ok && k < K) ? __ldg(&wrow[k]) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int k = k0 + bk0 + 4 * j;
            float x = 0.0f;
            if (col_ok && k < K) {
                const int ic = k / khw;
                const int r = k - ic * khw;
                const int ky = r / p.k_w;
                const int kx = r - ky * p.k_w;
                const int iy = iy0 + ky * p.dil_h;
                const int ix = ix0 + kx * p.dil_w;
                if (iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w) {
                    x = __ldg(&ing[ic * plane + (long)iy * p.in_w + ix]);
                }
            }
            rb[j] = x;
        }
    };
    __shared__ float sc[SF_GEMM_BM][SF_GEMM_BN + 4];
#if SF_CHAIN_CONV == 2
    __shared__ float sa[SF_GEMM_BK][SF_GEMM_BM];
    __shared__ float sb[SF_GEMM_BK][SF_GEMM_BN];
    const int tm = (tid / 16) * 4;
    const int tn = (tid % 16) * 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float b = (p.has_bias && m0 + tm + i < ocg) ? __ldg(&bias[g * ocg + m0 + tm + i])
                                                          : 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = b;
    }
    fetch(0);
    for (int k0 = 0; k0 < K; k0 += SF_GEMM_BK) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            sa[ak0 + j][am] = ra[j];
            sb[bk0 + 4 * j][bn] = rb[j];
        }
        __syncthreads();
        if (k0 + SF_GEMM_BK < K) fetch(k0 + SF_GEMM_BK);
        // Only the slice's real k: padding rows would add zeros, whose
        // signs could change a -0 result's bits.
        const int kn = min(SF_GEMM_BK, K - k0);
#pragma unroll
        for (int kk = 0; kk < SF_GEMM_BK; ++kk) {
            if (kk < kn) {
                float a[4];
                float b[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) a[i] = sa[kk][tm + i];
#pragma unroll
                for (int j = 0; j < 4; ++j) b[j] = sb[kk][tn + j];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) sc[tm + i][tn + j] = acc[i][j];
    }
#else
    // Leading dimensions: multiples of 8 halves (4 floats), rows 32-byte aligned.
    __shared__ __align__(32) sf_half sa[SF_GEMM_BM][SF_GEMM_BK + 16];
    __shared__ __align__(32) sf_half sb[SF_GEMM_BK][SF_GEMM_BN + 16];
    const int warp = tid / 32;
    const int wm = (warp % 4) * 16;
    const int wn = (warp / 4) * 32;
    SfFragC c0;
    SfFragC c1;
    sf_frag_zero(c0);
    sf_frag_zero(c1);
    fetch(0);
    for (int k0 = 0; k0 < K; k0 += SF_GEMM_BK) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            sa[am][ak0 + j] = sf_f2h(ra[j]);
            sb[bk0 + 4 * j][bn] = sf_f2h(rb[j]);
        }
        __syncthreads();
        if (k0 + SF_GEMM_BK < K) fetch(k0 + SF_GEMM_BK);
        SfFragA a;
        SfFragB b;
        sf_frag_load_a(a, &sa[wm][0], SF_GEMM_BK + 16);
        sf_frag_load_b(b, &sb[0][wn], SF_GEMM_BN + 16);
        sf_frag_mma(c0, a, b);
        sf_frag_load_b(b, &sb[0][wn + 16], SF_GEMM_BN + 16);
        sf_frag_mma(c1, a, b);
        __syncthreads();
    }
    sf_frag_store_c(&sc[wm][wn], c0, SF_GEMM_BN + 4);
    sf_frag_store_c(&sc[wm][wn + 16], c1, SF_GEMM_BN + 4);
#endif
    __syncthreads();
    for (int idx = tid; idx < SF_GEMM_BM * per; idx += SF_GEMM_THREADS) {
        const int m = idx / per;
        const int q = idx - m * per;
        if (m0 + m >= ocg || q0 + q >= nq) continue;
        const int oc = g * ocg + m0 + m;
        const float* v = &sc[m][q * win];
#if SF_CHAIN_CONV == 2
        const float b = 0.0f;
#else
        const float b = p.has_bias ? __ldg(&bias[oc]) : 0.0f;
#endif
        float mx = 0.0f;
        for (int dx = 0; dx < pk; ++dx) {
            float e = sf_chain_epilogue(SF_GEMM_BIAS(v[dx], b), oc, chan, f);
            for (int dy = 1; dy < pk; ++dy) {
                e = sf_max(e, sf_chain_epilogue(SF_GEMM_BIAS(v[dy * pk + dx], b), oc, chan, f));
            }
            mx = dx == 0 ? e : sf_max(mx, e);
        }
        out[(long)oc * nq + q0 + q] = mx;
    }
}
#else
// One thread per output value. Launch: grid (ceil(out_w/32),
// ceil(out_h/8), channels), block (32, 8).
extern "C" __global__ void SF_CHAIN_NAME(const float* __restrict__ in,
                                         const float* __restrict__ w,
                                         const float* __restrict__ bias,
                                         float* __restrict__ out,
                                         const float* __restrict__ chan, FusedParams f) {
    (void)w;
    (void)bias;
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    const int ch = blockIdx.z;
    if (ox >= f.out_w || oy >= f.out_h || ch >= f.conv.in_c) return;
    const int iw = f.conv.in_w;
    const float* plane = in + (long)ch * f.conv.in_h * iw;
    const int x0 = ox * f.pool_stride;
    const int y0 = oy * f.pool_stride;
    float m = 0.0f;
    for (int dx = 0; dx < f.pool_size; ++dx) {
        float v = sf_chain_epilogue(__ldg(&plane[(long)y0 * iw + x0 + dx]), ch, chan, f);
        for (int dy = 1; dy < f.pool_size; ++dy) {
            v = sf_max(v, sf_chain_epilogue(__ldg(&plane[(long)(y0 + dy) * iw + x0 + dx]), ch,
                                            chan, f));
        }
        m = dx == 0 ? v : sf_max(m, v);
    }
    out[((long)ch * f.out_h + oy) * f.out_w + ox] = m;
}
#endif
