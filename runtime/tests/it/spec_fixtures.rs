//! The shared spec fixtures: every `valid-*.yaml` loads; every
//! `invalid-*.yaml` fails with the one-line error its first comment line
//! gives (`# expect: LINE:COL: FIELD: MESSAGE`, a prefix of the error after
//! the file name) and, where present, a `# message:` it must contain.
//! Fixtures with a `# requires: opencv` line (video, camera and image
//! sources and sinks) are skipped in builds without the `opencv` feature.

use std::path::{Path, PathBuf};

use streamfuse::plan::plan;
use streamfuse::spec::{self, FusionMode, Machine, Overrides, SpecError};
use streamfuse_kernels::{Op, Shape};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

/// Whether this build can load the fixture (`# requires: opencv`).
fn supported(p: &Path) -> bool {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    cfg!(feature = "opencv") || !text.lines().any(|l| l == "# requires: opencv")
}

fn name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

#[test]
fn invalid_fixtures_fail_with_their_located_one_line_error() {
    let mut seen = 0;
    for path in fixtures()
        .into_iter()
        .filter(|p| name(p).starts_with("invalid-") && supported(p))
    {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()));
        let message = text.lines().find_map(|l| l.strip_prefix("# message: "));
        let err = match spec::load(&path, &Overrides::default()) {
            Ok(_) => panic!("{} loaded but should fail", path.display()),
            Err(e) => e,
        };
        assert!(
            matches!(err, SpecError::Field(_)),
            "{}: {err:?}",
            path.display()
        );
        let msg = err.to_string();
        let want = format!("{}:{expect}", path.display());
        assert!(
            msg.starts_with(&want),
            "{}:\n  got  {msg}\n  want {want}...",
            name(&path)
        );
        assert!(
            !msg.contains('\n'),
            "{}: error spans lines: {msg}",
            name(&path)
        );
        if let Some(m) = message {
            assert!(msg.contains(m), "{}: `{msg}` lacks `{m}`", name(&path));
        }
        seen += 1;
    }
    assert!(seen >= 15, "only {seen} invalid fixtures found");
}

#[test]
fn valid_fixtures_load_and_plan() {
    let mut seen = 0;
    for path in fixtures()
        .into_iter()
        .filter(|p| name(p).starts_with("valid-") && supported(p))
    {
        let p = spec::load(&path, &Overrides::default())
            .unwrap_or_else(|e| panic!("{} should load: {e}", path.display()));
        let pl = plan(&p);
        assert!(!pl.segments.is_empty());
        assert_eq!(p.placement.len(), p.stages.len() + 1);
        seen += 1;
    }
    assert!(seen >= 3);
}

fn load(name: &str, ov: &Overrides) -> spec::Pipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec")
        .join(name);
    spec::load(&path, ov).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn map_placement_fills_unnamed_elements_from_the_previous_one() {
    let p = load("valid-thesis-map.yaml", &Overrides::default());
    assert_eq!(p.placement_letters(), "EESS");
    assert_eq!(p.fusion, FusionMode::Chain);
    assert_eq!(
        p.nodes[1].address.as_deref(),
        Some("streamfuse-server:50051")
    );
    let pl = plan(&p);
    assert_eq!(pl.segments.len(), 2);
    assert!(pl.segments[0].has_source);
    assert_eq!(pl.segments[1].stages, 1..3);
}

#[test]
fn precision_f16_reaches_the_convolution_and_the_cuda_plan() {
    use streamfuse_kernels::Precision;
    use streamfuse_kernels::cuda::{device::producer_of, params::Producer};
    let p = load("valid-precision-f16.yaml", &Overrides::default());
    let precision = |i: usize| match &p.stages[i].op {
        Op::Conv2d(c) => c.precision,
        other => panic!("stage {i} is not a conv: {other:?}"),
    };
    assert_eq!(precision(0), Precision::F32);
    assert_eq!(precision(1), Precision::F16);
    let producers: Vec<Option<Producer>> = p
        .stages
        .iter()
        .map(|s| producer_of(&s.op, s.input).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    // The thin layer (3 input channels) keeps the hand-written kernel; the
    // f16 one runs on the tensor cores.
    assert_eq!(producers[..2], [None, Some(Producer::GemmF16)]);
}

#[test]
fn npy_weights_are_loaded_and_fuse_false_starts_a_segment() {
    let w = load("valid-weights-watch.yaml", &Overrides::default());
    assert_eq!(w.watch.len(), 1);
    assert_eq!(w.watch[0].stage, "conv");
    assert!(w.watch[0].path.ends_with("weights-1x1x3x3.npy"));
    assert!(
        load("valid-npy-weights.yaml", &Overrides::default())
            .watch
            .is_empty()
    );
    let p = load("valid-npy-weights.yaml", &Overrides::default());
    let Op::Conv2d(conv) = &p.stages[0].op else {
        panic!("stage 0 is not a conv: {:?}", p.stages[0].op)
    };
    assert_eq!(&conv.weights[..], &[0., 1., 0., 1., -4., 1., 0., 1., 0.]);
    assert_eq!(conv.bias.as_deref(), Some(&[0.5f32][..]));
    assert_eq!(p.stages[0].output, Shape::new(1, 33, 65));
    assert_eq!(p.stages[2].output, Shape::new(1, 16, 32));
    let pl = plan(&p);
    assert_eq!(pl.segments.len(), 2, "{pl:?}");
    assert_eq!(pl.segments[1].stages, 1..3);
}

#[test]
fn kernel_fusion_groups_conv_relu_pool_within_a_segment_only() {
    let fused = load(
        "valid-thesis-map.yaml",
        &Overrides {
            placement: Some("EEEE".into()),
            fusion: Some(FusionMode::Kernel),
            ..Overrides::default()
        },
    );
    let pl = plan(&fused);
    assert_eq!(pl.segments.len(), 1);
    assert_eq!(pl.segments[0].groups.len(), 1);
    assert_eq!(
        pl.segments[0].groups[0].op.label(),
        "fused(conv2d+relu+maxpool)"
    );

    let split = load(
        "valid-thesis-map.yaml",
        &Overrides {
            placement: Some("EESS".into()),
            fusion: Some(FusionMode::Kernel),
            ..Overrides::default()
        },
    );
    let pl = plan(&split);
    assert_eq!(pl.segments.len(), 2);
    assert_eq!(pl.segments[0].groups[0].op.label(), "conv2d");
    // The server's ReLU and pool become one kernel reading the link's frame.
    assert_eq!(pl.segments[1].groups.len(), 1);
    assert_eq!(
        pl.segments[1].groups[0].op.label(),
        "fused(load+relu+maxpool)"
    );

    let off = load(
        "valid-thesis-map.yaml",
        &Overrides {
            fusion: Some(FusionMode::Off),
            ..Overrides::default()
        },
    );
    assert_eq!(plan(&off).segments.len(), 4);
}

#[test]
fn overrides_apply_before_validation() {
    let p = load(
        "valid-thesis-map.yaml",
        &Overrides {
            frames: Some(3),
            size: Some((128, 96)),
            ..Overrides::default()
        },
    );
    assert_eq!(p.source.frames(), 3);
    assert_eq!(p.source.shape(), Shape::new(1, 96, 128));
    assert_eq!(p.output_shape(), Shape::new(1, 47, 63));

    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec/valid-thesis-map.yaml");
    let err = spec::load(
        &path,
        &Overrides {
            placement: Some("EEQS".into()),
            ..Overrides::default()
        },
    )
    .err()
    .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("--placement: letter `Q` (for stage relu) names no node; nodes: E=edge, S=server")
    );
    // A size too small for the kernel is caught by validation, located at the kernel.
    let err = spec::load(
        &path,
        &Overrides {
            size: Some((2, 2)),
            ..Overrides::default()
        },
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains(":5:37: stages[0].kernel: window 3x3"), "{err}");
}

#[test]
fn machine_is_given_or_inferred_from_the_device() {
    let p = load("valid-machines.yaml", &Overrides::default());
    let machines: Vec<Machine> = p.nodes.iter().map(|n| n.machine).collect();
    assert_eq!(
        machines,
        [Machine::Cpu, Machine::Jetson, Machine::GpuServer],
        "pi says cpu, xavier says jetson, titan's cuda device makes it a GPU server"
    );
    // `auto` and no machine: taken as a machine without a GPU.
    let p = load("valid-thesis-map.yaml", &Overrides::default());
    assert_eq!(p.nodes[1].machine, Machine::Cpu);
    assert!(!Machine::Cpu.has_gpu() && Machine::Jetson.has_gpu());
}

#[test]
fn vision_stages_fuse_into_row_chains_that_resize_ends() {
    let p = load("valid-vision.yaml", &Overrides::default());
    let pl = plan(&p);
    let labels: Vec<String> = pl.segments[0].groups.iter().map(|g| g.op.label()).collect();
    assert_eq!(
        labels,
        [
            "fused(gray+gaussian_blur+sobel+threshold)",
            "resize",
            "fused(normalize+sobel)"
        ]
    );
    assert_eq!(p.output_shape(), Shape::new(1, 24, 32));
    // Chained, every stage is its own kernel.
    let chained = load(
        "valid-vision.yaml",
        &Overrides {
            fusion: Some(FusionMode::Chain),
            ..Overrides::default()
        },
    );
    assert_eq!(plan(&chained).segments[0].groups.len(), 7);
    assert!(matches!(pl.segments[0].groups[1].op, Op::Vision(_)));
}

#[test]
fn media_sources_and_sinks_need_the_opencv_build() {
    let text = "name: v\nsource: { video: { path: in.mkv } }\nstages: [ { id: gray, op: gray } ]\nsink: { stats: {} }\n";
    let res = spec::parse(text, Path::new("v.yaml"), &Overrides::default());
    let msg = res.err().map(|e| e.to_string()).unwrap_or_default();
    if cfg!(feature = "opencv") {
        // The file is looked for (and missing): the source is supported.
        assert!(
            msg.starts_with("v.yaml:2:26: source.video.path: ") && msg.contains("in.mkv"),
            "{msg}"
        );
    } else {
        assert!(
            msg.starts_with(
                "v.yaml:2:26: source.video.path: this streamfuse was built without OpenCV"
            ),
            "{msg}"
        );
    }
}
