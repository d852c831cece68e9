//! Compiles the kernels' CUDA C sources with the system C++ compiler under
//! `cuda_emu.h`, plus a deliberately broken copy of the conv kernel (an
//! off-by-one halo) that the tests must catch.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let cuda = manifest.join("../src/cuda");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());

    // The broken copy: tile width one short of the halo, every entry point renamed.
    let conv = std::fs::read_to_string(cuda.join("conv.cu")).unwrap_or_default();
    let halo = "const int tile_w = (SF_TILE_W - 1) * p.stride_w + (p.k_w - 1) * p.dil_w + 1;";
    assert!(
        conv.matches(halo).count() == 2,
        "conv.cu no longer has the two halo lines (conv2d_f32, conv2d_depthwise_f32) the broken copy edits"
    );
    let entry = "extern \"C\" __global__ void ";
    let broken = conv
        .replacen(
            halo,
            "const int tile_w = (SF_TILE_W - 1) * p.stride_w + (p.k_w - 1) * p.dil_w;",
            1,
        )
        .replace(entry, &format!("{entry}broken_"))
        .replace(
            "#include \"common.cuh\"",
            &format!("#include \"{}\"", cuda.join("common.cuh").display()),
        );
    let broken_path = out.join("broken_conv.cu");
    if let Err(e) = std::fs::write(&broken_path, broken) {
        panic!("cannot write {}: {e}", broken_path.display());
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .flag("-pthread")
        .flag("-include")
        .flag(manifest.join("cuda_emu.h").to_string_lossy().as_ref())
        .flag("-x")
        .flag("c++")
        .include(&cuda)
        .warnings(false);
    for f in ["conv.cu", "elementwise.cu", "fused.cu", "vision.cu"] {
        build.file(cuda.join(f));
    }
    build.file(&broken_path);
    build.file(manifest.join("launch.cpp"));
    build.compile("streamfuse_cuda_emu");
    println!("cargo:rustc-link-lib=stdc++");
    println!("cargo:rerun-if-changed=cuda_emu.h");
    println!("cargo:rerun-if-changed=cuda_emu_kernel.h");
    println!("cargo:rerun-if-changed=launch.cpp");
    println!("cargo:rerun-if-changed=../src/cuda");
}
