//! Models in: an ONNX model (built here with the generated protobuf types)
//! imported into a spec and run on `.npy` frames, checked against the f64
//! reference; weights from safetensors; one-line errors for an unsupported
//! node and for a tensor of the wrong shape.

use std::path::{Path, PathBuf};

use crate::common::{streamfuse, values, write_npy};
use prost::Message;
use streamfuse::model::onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use streamfuse_kernels::reference;
use streamfuse_kernels::{Conv2d, Conv2dParams, Pool2d, Shape};

fn init(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(1),
        name: Some(name.into()),
        raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..TensorProto::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: v.to_vec(),
        r#type: Some(7),
        ..AttributeProto::default()
    }
}

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.into()],
        name: Some(name.into()),
        op_type: Some(op.into()),
        attribute: attrs,
        ..NodeProto::default()
    }
}

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            dim_value: Some(d),
                            dim_param: None,
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

struct Net {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
}

/// Conv 3->8 3x3 pad 1 + bias -> Relu -> MaxPool 2x2 -> Conv 8->4 3x3 -> Relu
/// (and optionally a Softmax in the middle).
fn model(h: i64, w: i64, softmax: bool) -> (ModelProto, Net) {
    let net = Net {
        w1: values(8 * 3 * 9, 1, 0.4),
        b1: values(8, 2, 0.4),
        w2: values(4 * 8 * 9, 3, 0.2),
    };
    let mut nodes = vec![
        node(
            "conv1",
            "Conv",
            &["x", "w1", "b1"],
            "c1",
            vec![
                ints("kernel_shape", &[3, 3]),
                ints("pads", &[1, 1, 1, 1]),
                ints("strides", &[1, 1]),
            ],
        ),
        node("relu1", "Relu", &["c1"], "r1", vec![]),
    ];
    if softmax {
        nodes.push(node("soft", "Softmax", &["r1"], "r1s", vec![]));
        nodes.push(node(
            "pool1",
            "MaxPool",
            &["r1s"],
            "p1",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ));
    } else {
        nodes.push(node(
            "pool1",
            "MaxPool",
            &["r1"],
            "p1",
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        ));
    }
    nodes.push(node(
        "conv2",
        "Conv",
        &["p1", "w2"],
        "c2",
        vec![ints("kernel_shape", &[3, 3])],
    ));
    nodes.push(node("relu2", "Relu", &["c2"], "y", vec![]));
    let g = GraphProto {
        node: nodes,
        name: Some("small-cnn".into()),
        initializer: vec![
            init("w1", &[8, 3, 3, 3], &net.w1),
            init("b1", &[8], &net.b1),
            init("w2", &[4, 8, 3, 3], &net.w2),
        ],
        input: vec![value("x", &[1, 3, h, w])],
        output: vec![value("y", &[])],
    };
    let m = ModelProto {
        ir_version: Some(8),
        producer_name: Some("streamfuse-tests".into()),
        graph: Some(g),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
    };
    (m, net)
}

fn expected(net: &Net, frame: &[f32], h: usize, w: usize) -> reference::RefTensor {
    let c1 = Conv2d::new(
        Conv2dParams::square(3, 8, 3, 1, 1),
        net.w1.clone(),
        Some(net.b1.clone()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c2 = Conv2d::new(Conv2dParams::square(8, 4, 3, 1, 0), net.w2.clone(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = reference::conv2d(frame, Shape::new(3, h, w), &c1).unwrap_or_else(|| panic!("ref"));
    let t =
        reference::pool(&reference::relu(&t), &Pool2d::max(2, 2)).unwrap_or_else(|| panic!("ref"));
    // The second conv reads f32 values: round the intermediate like the pipeline.
    let mid: Vec<f32> = t.values.iter().map(|&v| v as f32).collect();
    let t2 = reference::conv2d(&mid, t.shape, &c2).unwrap_or_else(|| panic!("ref"));
    reference::relu(&t2)
}

/// Writes `m` as `<name>.onnx` in `d`, imports it to `<name>.yaml` and
/// returns the spec's path and text.
fn import(d: &Path, name: &str, m: &ModelProto) -> (PathBuf, String) {
    let model = d.join(format!("{name}.onnx"));
    std::fs::write(&model, m.encode_to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let spec = d.join(format!("{name}.yaml"));
    let out = streamfuse(&[
        "import",
        model.to_str().unwrap_or_default(),
        "-o",
        spec.to_str().unwrap_or_default(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&spec).unwrap_or_else(|e| panic!("{e}"));
    (spec, text)
}

/// Replaces the spec's source and sink lines, writes it and runs it.
fn run_with(spec: &Path, text: &str, source: &str, sink: &str) {
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("source:") {
                format!("source: {source}")
            } else if l.starts_with("sink:") {
                format!("sink: {sink}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(spec, text).unwrap_or_else(|e| panic!("{e}"));
    let run = streamfuse(&["run", spec.to_str().unwrap_or_default(), "--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn an_imported_onnx_model_runs_and_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let (h, w) = (17usize, 23usize);
    let (m, net) = model(h as i64, w as i64, false);
    let (spec, text) = import(d, "model", &m);
    assert!(
        text.contains("initializer: \"w1\", bias: \"b1\"") && text.contains("path: \"model.onnx\""),
        "{text}"
    );

    // Swap the synthetic source for two frames from a file, and save the outputs.
    let frames = values(2 * 3 * h * w, 9, 1.0);
    write_npy(&d.join("frames.npy"), &[2, 3, h as u64, w as u64], &frames);
    run_with(
        &spec,
        &text,
        "{ npy: { path: frames.npy } }",
        "{ npy: { path: out.npy } }",
    );
    let (shape, got) =
        streamfuse::media::npy::read_f32(&d.join("out.npy")).unwrap_or_else(|e| panic!("{e}"));
    let (oh, ow) = (h / 2 - 2, w / 2 - 2);
    assert_eq!(shape, vec![2, 4, oh as u64, ow as u64]);
    for k in 0..2 {
        let want = expected(&net, &frames[k * 3 * h * w..(k + 1) * 3 * h * w], h, w);
        let got = &got[k * 4 * oh * ow..(k + 1) * 4 * oh * ow];
        for (i, ((&g, &r), &mag)) in got
            .iter()
            .zip(&want.values)
            .zip(&want.magnitude)
            .enumerate()
        {
            let tol = reference::tolerance(72, mag) + 1e-6;
            assert!(
                (f64::from(g) - r).abs() <= tol,
                "frame {k} value {i}: {g} vs {r}"
            );
        }
    }
}

#[test]
fn an_unsupported_node_is_one_line_naming_node_op_and_where_the_chain_stopped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let (m, _) = model(16, 16, true);
    std::fs::write(d.join("soft.onnx"), m.encode_to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let out = streamfuse(&[
        "import",
        d.join("soft.onnx").to_str().unwrap_or_default(),
        "-o",
        d.join("soft.yaml").to_str().unwrap_or_default(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("node `soft` (op Softmax) is not supported (a classifier head")
            && err.contains("; the chain stopped after stage `relu1`"),
        "{err}"
    );
    assert!(!d.join("soft.yaml").exists(), "a spec was written");
}

#[test]
fn safetensors_weights_load_and_a_wrong_shape_is_one_located_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let w = values(4 * 9, 5, 0.5);
    let b = values(4, 6, 0.5);
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (wb, bb) = (bytes(&w), bytes(&b));
    let tensors = vec![
        (
            "conv.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 1, 3, 3], &wb)
                .unwrap_or_else(|e| panic!("{e}")),
        ),
        (
            "conv.bias",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &bb)
                .unwrap_or_else(|e| panic!("{e}")),
        ),
    ];
    safetensors::serialize_to_file(tensors, None, &d.join("w.safetensors"))
        .unwrap_or_else(|e| panic!("{e}"));
    let write_spec = |k: usize| {
        let spec = format!(
            "name: st\nsource: {{ synthetic: {{ width: 20, height: 12, frames: 2 }} }}\nstages:\n  - {{ id: conv, op: conv2d, kernel: {k}, out_channels: 4, weights: {{ safetensors: {{ path: w.safetensors, tensor: conv.weight, bias: conv.bias }} }} }}\nsink: {{ stats: {{}} }}\n"
        );
        std::fs::write(d.join("st.yaml"), spec).unwrap_or_else(|e| panic!("{e}"));
    };
    write_spec(3);
    let ok = streamfuse(&[
        "run",
        d.join("st.yaml").to_str().unwrap_or_default(),
        "--json",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    write_spec(5);
    let bad = streamfuse(&["run", d.join("st.yaml").to_str().unwrap_or_default()]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("stages[0].weights.safetensors.tensor:")
            && err.contains(
                "w.safetensors: tensor `conv.weight` has shape [4, 1, 3, 3], expected [4, 1, 5, 5]"
            ),
        "{err}"
    );
}

#[test]
fn a_batchnorm_after_a_conv_is_folded_into_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let (h, w) = (11usize, 14usize);
    let wts = values(5 * 2 * 9, 11, 0.5);
    let bias = values(5, 12, 0.5);
    let gamma: Vec<f32> = values(5, 13, 0.5).iter().map(|v| v + 1.0).collect();
    let beta = values(5, 14, 0.5);
    let mean = values(5, 15, 0.3);
    let var: Vec<f32> = values(5, 16, 0.4).iter().map(|v| v + 0.6).collect();
    let eps = 1e-3f32;
    let g = GraphProto {
        node: vec![
            node(
                "conv",
                "Conv",
                &["x", "w", "b"],
                "c",
                vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
            ),
            NodeProto {
                attribute: vec![AttributeProto {
                    name: Some("epsilon".into()),
                    f: Some(eps),
                    r#type: Some(1),
                    ..AttributeProto::default()
                }],
                ..node(
                    "bn",
                    "BatchNormalization",
                    &["c", "gamma", "beta", "mean", "var"],
                    "n",
                    vec![],
                )
            },
            node("relu", "Relu", &["n"], "y", vec![]),
        ],
        name: Some("bn".into()),
        initializer: vec![
            init("w", &[5, 2, 3, 3], &wts),
            init("b", &[5], &bias),
            init("gamma", &[5], &gamma),
            init("beta", &[5], &beta),
            init("mean", &[5], &mean),
            init("var", &[5], &var),
        ],
        input: vec![value("x", &[1, 2, h as i64, w as i64])],
        output: vec![value("y", &[])],
    };
    let m = ModelProto {
        ir_version: Some(8),
        graph: Some(g),
        ..ModelProto::default()
    };
    let (spec, text) = import(d, "bn", &m);
    let frame = values(2 * h * w, 17, 1.0);
    write_npy(&d.join("x.npy"), &[2, h as u64, w as u64], &frame);
    assert!(text.contains("batchnorm: { scale: \"gamma\""), "{text}");
    assert_eq!(
        text.matches("op: ").count(),
        2,
        "the BatchNormalization became a stage: {text}"
    );
    run_with(
        &spec,
        &text,
        "{ npy: { path: x.npy } }",
        "{ npy: { path: y.npy } }",
    );
    let (shape, got) =
        streamfuse::media::npy::read_f32(&d.join("y.npy")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shape, vec![1, 5, h as u64, w as u64]);
    // Reference: the conv in f64, then the batch norm in f64, then ReLU.
    let conv = Conv2d::new(Conv2dParams::square(2, 5, 3, 1, 1), wts, Some(bias))
        .unwrap_or_else(|e| panic!("{e}"));
    let c = reference::conv2d(&frame, Shape::new(2, h, w), &conv).unwrap_or_else(|| panic!("ref"));
    let plane = h * w;
    for (i, &g) in got.iter().enumerate() {
        let oc = i / plane;
        let k = f64::from(gamma[oc]) / (f64::from(var[oc]) + f64::from(eps)).sqrt();
        let want = ((c.values[i] - f64::from(mean[oc])) * k + f64::from(beta[oc])).max(0.0);
        let tol = 4.0 * reference::tolerance(18, c.magnitude[i] * k.abs()) + 1e-6;
        assert!(
            (f64::from(g) - want).abs() <= tol,
            "value {i}: {g} vs {want}"
        );
    }
}

#[test]
fn a_clip_imports_as_a_bounded_relu() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let wts = values(3 * 9, 21, 2.0);
    let g = GraphProto {
        node: vec![
            node(
                "conv",
                "Conv",
                &["x", "w"],
                "c",
                vec![ints("kernel_shape", &[3, 3])],
            ),
            node("relu6", "Clip", &["c", "lo", "hi"], "y", vec![]),
        ],
        name: Some("clip".into()),
        initializer: vec![
            init("w", &[3, 1, 3, 3], &wts),
            init("lo", &[], &[0.0]),
            init("hi", &[], &[0.5]),
        ],
        input: vec![value("x", &[1, 1, 9, 12])],
        output: vec![value("y", &[])],
    };
    let m = ModelProto {
        ir_version: Some(8),
        graph: Some(g),
        ..ModelProto::default()
    };
    let (spec, text) = import(d, "clip", &m);
    let frame = values(9 * 12, 22, 1.0);
    write_npy(&d.join("x.npy"), &[1, 9, 12], &frame);
    assert!(text.contains("op: clip, min: 0e0, max: 5e-1"), "{text}");
    run_with(
        &spec,
        &text,
        "{ npy: { path: x.npy } }",
        "{ npy: { path: y.npy } }",
    );
    let (_, got) =
        streamfuse::media::npy::read_f32(&d.join("y.npy")).unwrap_or_else(|e| panic!("{e}"));
    let conv = Conv2d::new(Conv2dParams::square(1, 3, 3, 1, 0), wts, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let want = reference::clip(
        &reference::conv2d(&frame, Shape::new(1, 9, 12), &conv).unwrap_or_else(|| panic!("ref")),
        0.0,
        0.5,
    );
    assert_eq!(got.len(), want.values.len());
    assert!(
        got.contains(&0.5) && got.contains(&0.0),
        "bounds never hit: {got:?}"
    );
    for (i, (&g, (&r, &m))) in got
        .iter()
        .zip(want.values.iter().zip(&want.magnitude))
        .enumerate()
    {
        assert!(
            (f64::from(g) - r).abs() <= reference::tolerance(9, m) + 1e-7,
            "value {i}: {g} vs {r}"
        );
    }
}
