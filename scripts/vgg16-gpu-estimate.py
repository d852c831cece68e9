#!/usr/bin/env python3
"""Paper estimate of VGG-16 features (224x224, batch 1) on the implicit-GEMM
CUDA producers (KERNELS.md, "VGG-16 on the GPUs: a paper estimate").

Per layer: max(FLOPs / (peak x efficiency x wave efficiency), bytes /
bandwidth), with 64x64 output tiles (16 pooled outputs per tile where a
2x2/2 pool is fused) and wave efficiency = blocks / (ceil(blocks / SMs) x
SMs). Peaks and bandwidths are the vendors' published figures.

    python3 scripts/vgg16-gpu-estimate.py [--f32-eff 0.4] [--f16-eff 0.15]
"""
import argparse
import math

# (in channels, out channels, side, 2x2/2 max pool fused after it)
LAYERS = [
    (3, 64, 224, False), (64, 64, 224, True),
    (64, 128, 112, False), (128, 128, 112, True),
    (128, 256, 56, False), (256, 256, 56, False), (256, 256, 56, True),
    (256, 512, 28, False), (512, 512, 28, False), (512, 512, 28, True),
    (512, 512, 14, False), (512, 512, 14, False), (512, 512, 14, True),
]
# name: (SMs, f32 FLOP/s, f16 tensor-core FLOP/s, bytes/s)
GPUS = {
    "Titan V (sm_70)": (80, 14.9e12, 110e12, 653e9),
    "Jetson AGX Xavier (sm_72)": (8, 1.41e12, 11.3e12, 137e9),
    "H100 SXM (sm_90)": (132, 67e12, 989e12, 3.35e12),
}
TILE = 64


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f32-eff", type=float, default=0.4)
    ap.add_argument("--f16-eff", type=float, default=0.15)
    a = ap.parse_args()
    flops = sum(2 * ci * co * 9 * s * s for ci, co, s, _ in LAYERS)
    print(f"VGG-16 features: {flops / 1e9:.1f} GFLOP")
    for name, (sms, p32, p16, bw) in GPUS.items():
        t32 = t16 = 0.0
        waves = []
        for ci, co, s, pool in LAYERS:
            f = 2 * ci * co * 9 * s * s
            out_side = s // 2 if pool else s
            nbytes = 4 * (ci * s * s + co * out_side * out_side + ci * co * 9)
            per_tile = TILE // 4 if pool else TILE
            blocks = math.ceil(out_side * out_side / per_tile) * math.ceil(co / TILE)
            eff = blocks / (math.ceil(blocks / sms) * sms)
            waves.append(f"{s}²:{blocks} blocks {eff:.0%}")
            t32 += max(f / (p32 * a.f32_eff * eff), nbytes / bw)
            t16 += max(f / (p16 * a.f16_eff * eff), nbytes / bw)
        print(f"{name}: f32 {t32 * 1e3:.1f} ms, f16 {t16 * 1e3:.1f} ms")
        print("    " + ", ".join(dict.fromkeys(waves)))


if __name__ == "__main__":
    main()
