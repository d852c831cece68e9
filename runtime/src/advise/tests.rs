//! The advisor's model on small profiles, and the profile's checks.

use std::path::Path;

use super::measurement::fit_hop;
use super::*;
use crate::plan;
use crate::spec::Pipeline;

/// 1 x 100 x 100 frames (40,000 bytes), conv (same size) -> relu ->
/// pool (2x2: 10,000 bytes).
const SPEC: &str = "
name: t
source: { synthetic: { width: 100, height: 100, channels: 1 } }
stages:
  - { id: conv, op: conv2d, kernel: 3, padding: 1, out_channels: 1, weights: { random: { seed: 1 } } }
  - { id: relu, op: relu }
  - { id: pool, op: maxpool, size: 2 }
sink: { stats: {} }
nodes:
  edge:   { letter: E, device: cpu }
  server: { letter: S, device: cpu }
placement: ESSS
fusion: kernel
";

fn pipeline() -> Pipeline {
    crate::spec::parse(SPEC, Path::new("t.yaml"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every stage range on both nodes: each stage costs `edge_ms` on the
/// edge and `server_ms` on the server, fused ranges the sum; one CPU
/// each; no hand-off cost.
fn profile(edge_ms: f64, server_ms: f64, link_bytes_per_s: f64) -> Profile {
    let node = |ms: f64| NodeProfile {
        cpus: 1.0,
        device: None,
        source: None,
        ranges: (0..3)
            .flat_map(|a| (a + 1..=3).map(move |b| (a, b)))
            .map(|(a, b)| {
                let t = ms * (b - a) as f64;
                (range_key(a, b), RangeCost { ms: t, cpu_ms: t })
            })
            .collect(),
    };
    Profile {
        version: PROFILE_VERSION,
        pipeline: "t".into(),
        frame: [1, 100, 100],
        nodes: [
            ("edge".to_owned(), node(edge_ms)),
            ("server".to_owned(), node(server_ms)),
        ]
        .into_iter()
        .collect(),
        links: vec![LinkProfile {
            a: "edge".into(),
            b: "server".into(),
            bytes_per_s: link_bytes_per_s,
            rtt_ms: 0.0,
            measured: false,
            samples: Vec::new(),
        }],
        hop: HopProfile {
            fixed_ms: 0.0,
            per_mb_ms: 0.0,
        },
    }
}

#[test]
fn every_placement_is_ranked_with_the_source_kept_on_the_edge() {
    let p = pipeline();
    let r = rank(&p, &profile(1.0, 1.0, 1e9), Objective::Throughput);
    assert_eq!(r.len(), 8, "2 nodes, 3 stages");
    assert!(r.iter().all(|x| x.placement.starts_with('E')));
}

#[test]
fn a_fast_link_and_a_fast_server_send_everything_to_the_server() {
    // Edge 10 ms per stage, server 1 ms; 1 GB/s (40 us per frame).
    let p = pipeline();
    let r = rank(&p, &profile(10.0, 1.0, 1e9), Objective::Throughput);
    assert_eq!(r[0].placement, "ESSS");
    // One server process, 3 ms of CPU per frame on one CPU.
    assert!((r[0].fps - 1e3 / 3.0).abs() < 1e-9, "{:?}", r[0]);
    assert_eq!(r[0].bound_by, "conv+relu+pool's worker on server");
    let l = rank(&p, &profile(10.0, 1.0, 1e9), Objective::Latency);
    assert_eq!(l[0].placement, "ESSS");
    assert!((l[0].latency_ms - (3.0 + 0.04)).abs() < 1e-9, "{:?}", l[0]);
}

#[test]
fn a_slow_link_keeps_the_frame_on_the_edge_until_it_is_small() {
    // 400 kB/s: a 40 kB frame takes 100 ms to cross, a pooled 10 kB
    // frame 25 ms; edge 2 ms per stage (6 ms for all three), server 1 ms.
    let p = pipeline();
    let r = rank(&p, &profile(2.0, 1.0, 4e5), Objective::Throughput);
    // Everything on the edge: 6 ms of its one CPU, no link.
    assert_eq!(r[0].placement, "EEEE");
    assert!((r[0].fps - 1e3 / 6.0).abs() < 1e-9);
    // Every other placement sends a full frame across: 10 fps.
    for x in &r[1..] {
        assert_eq!(x.bound_by, "link edge->server", "{x:?}");
        assert!((x.fps - 10.0).abs() < 1e-9, "{x:?}");
    }
    // By latency: EEEE (6 ms) beats EEES (conv+relu 4 ms, 100 ms on the
    // link, pool 1 ms).
    let l = rank(&p, &profile(2.0, 1.0, 4e5), Objective::Latency);
    assert_eq!(l[0].placement, "EEEE");
    assert!((l[0].latency_ms - 6.0).abs() < 1e-9);
    let eees = l.iter().find(|x| x.placement == "EEES");
    assert!(
        eees.is_some_and(|x| (x.latency_ms - 105.0).abs() < 1e-9),
        "{eees:?}"
    );
}

#[test]
fn a_profile_of_another_pipeline_or_size_is_refused() {
    let p = pipeline();
    let mut other = profile(1.0, 1.0, 1e9);
    other.frame = [1, 720, 1280];
    let e = other.check(&p).unwrap_err().to_string();
    assert!(e.contains("measured frames [1, 720, 1280]"), "{e}");
    let mut missing = profile(1.0, 1.0, 1e9);
    missing.nodes.remove("server");
    assert!(
        missing
            .check(&p)
            .unwrap_err()
            .to_string()
            .contains("node `server`")
    );
    let mut v = profile(1.0, 1.0, 1e9);
    v.version = 9;
    assert!(v.check(&p).unwrap_err().to_string().contains("version 9"));
    assert!(profile(1.0, 1.0, 1e9).check(&p).is_ok());
}

#[test]
fn a_slow_source_bounds_the_placement_and_costs_its_node_cpu() {
    let p = pipeline();
    let mut prof = profile(1.0, 1.0, 1e9);
    if let Some(e) = prof.nodes.get_mut("edge") {
        e.source = Some(RangeCost {
            ms: 5.0,
            cpu_ms: 0.5,
        });
    }
    let r = rank(&p, &prof, Objective::Throughput);
    // Every placement keeps the source on the edge: 200 fps at most.
    for x in &r {
        assert!(x.fps <= 200.0 + 1e-9, "{x:?}");
    }
    let eeee = r.iter().find(|x| x.placement == "EEEE");
    assert!(
        eeee.is_some_and(|x| x.bound_by == "the source on edge" && (x.fps - 200.0).abs() < 1e-9),
        "{eeee:?}"
    );
    // A cheap source thread but costly in CPU: the edge's one CPU pays
    // 3 ms of stages and 1 ms of source per frame.
    if let Some(e) = prof.nodes.get_mut("edge") {
        e.source = Some(RangeCost {
            ms: 0.1,
            cpu_ms: 1.0,
        });
    }
    let mut q = p.clone();
    q.placement = vec![0, 0, 0, 0];
    let x = predict(&q, &plan::plan(&q), &prof).unwrap_or_else(|| panic!("no prediction"));
    assert!((x.fps - 250.0).abs() < 1e-9, "{x:?}");
    assert_eq!(x.bound_by, "edge's 1 CPUs");
}

#[test]
fn the_hand_off_fit_recovers_a_line_and_stays_non_negative() {
    let h = fit_hop(&[(0.0, 0.1), (1.0, 1.1), (4.0, 4.1)]).unwrap_or_else(|| panic!("none"));
    assert!(
        (h.fixed_ms - 0.1).abs() < 1e-9 && (h.per_mb_ms - 1.0).abs() < 1e-9,
        "{h:?}"
    );
    // A negative intercept is refitted through the origin.
    let h = fit_hop(&[(1.0, 0.5), (2.0, 2.0)]).unwrap_or_else(|| panic!("none"));
    assert_eq!(h.fixed_ms, 0.0);
    assert!((h.per_mb_ms - 0.9).abs() < 1e-9, "{h:?}");
    // One size: a fixed cost.
    let h = fit_hop(&[(1.0, 0.3), (1.0, 0.5)]).unwrap_or_else(|| panic!("none"));
    assert!(
        (h.fixed_ms - 0.4).abs() < 1e-9 && h.per_mb_ms == 0.0,
        "{h:?}"
    );
    assert!(fit_hop(&[]).is_none());
}

#[test]
fn merged_profiles_take_each_node_and_keep_a_measured_link() {
    let p = pipeline();
    let full = profile(1.0, 2.0, 1e9);
    let mut edge = full.clone();
    edge.nodes.remove("server");
    edge.links[0].measured = true;
    edge.links[0].bytes_per_s = 5e6;
    edge.hop.fixed_ms = 0.7;
    let mut server = full.clone();
    server.nodes.remove("edge");
    let m = edge
        .clone()
        .merge(server.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(m.check(&p).is_ok());
    assert_eq!(m.nodes, full.nodes);
    // The server's assumed link does not replace the edge's measured one,
    // and the hand-off cost comes with the measured link.
    assert_eq!(m.links.len(), 1);
    assert_eq!(m.links[0].bytes_per_s, 5e6);
    assert_eq!(m.hop.fixed_ms, 0.7);
    let m2 = server.merge(edge.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m2.links[0].bytes_per_s, 5e6);
    assert_eq!(m2.hop.fixed_ms, 0.7);
    let mut other = full;
    other.frame = [1, 50, 50];
    let e = edge.merge(other).unwrap_err().to_string();
    assert!(e.contains("different pipelines or frames"), "{e}");
}

#[test]
fn link_sizes_are_every_distinct_frame_size_largest_first() {
    // 100x100 source, conv same size (padding 1), relu, pool to 50x50.
    assert_eq!(link_sizes(&pipeline()), [40_000, 10_000]);
}

#[test]
fn a_stage_that_needs_a_gpu_is_only_placed_on_a_node_with_one() {
    // The edge is a CPU-only board; conv needs a GPU.
    let text = SPEC
        .replace(
            "edge:   { letter: E, device: cpu }",
            "edge:   { letter: E, device: cpu, machine: cpu }",
        )
        .replace(
            "server: { letter: S, device: cpu }",
            "server: { letter: S, device: auto, machine: gpu-server }",
        )
        .replace(
            "weights: { random: { seed: 1 } } }",
            "weights: { random: { seed: 1 } }, device: cuda }",
        );
    let p = crate::spec::parse(&text, Path::new("t.yaml"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(p.stages[0].needs_gpu);
    // Without the constraint EEEE would win (slow link, see above).
    let r = rank(&p, &profile(2.0, 1.0, 4e5), Objective::Throughput);
    assert_eq!(r.len(), 4, "conv on the server; relu and pool anywhere");
    assert!(r.iter().all(|x| x.placement.as_bytes()[1] == b'S'), "{r:?}");
    // A spec that places conv on the edge is refused where it says so.
    let bad = text.replace("placement: ESSS", "placement: EESS");
    let e = crate::spec::parse(&bad, Path::new("t.yaml"), &Default::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("stages[0].device") && e.contains("node `edge`, which has none"),
        "{e}"
    );
}

#[test]
fn measured_links_replace_the_given_ones_either_way_round() {
    let given = profile(1.0, 1.0, 1e9);
    let measured = LinkProfile {
        a: "server".into(),
        b: "edge".into(),
        bytes_per_s: 2e6,
        rtt_ms: 0.5,
        measured: true,
        samples: Vec::new(),
    };
    let hop = HopProfile {
        fixed_ms: 0.2,
        per_mb_ms: 1.5,
    };
    let p = given.clone().with_links(vec![measured.clone()], Some(hop));
    assert_eq!(p.links, std::slice::from_ref(&measured));
    assert_eq!(p.hop, hop);
    // Without a fitted hand-off cost the given one stays.
    let q = given.clone().with_links(vec![measured], None);
    assert_eq!(q.hop, given.hop);
}

#[test]
fn the_best_placement_is_the_first_ranked_or_an_error() {
    let p = pipeline();
    let prof = profile(10.0, 1.0, 1e9);
    let best = best_placement(&p, &prof, Objective::Throughput).map(|b| b.placement);
    assert_eq!(best.ok().as_deref(), Some("ESSS"));
    let mut none = prof;
    for n in none.nodes.values_mut() {
        n.ranges.clear();
    }
    let e = best_placement(&p, &none, Objective::Latency).map_err(|e| e.to_string());
    assert_eq!(
        e.err().as_deref(),
        Some("the advisor could predict no placement from the profile")
    );
    assert_eq!(Objective::Latency.name(), "latency");
}
