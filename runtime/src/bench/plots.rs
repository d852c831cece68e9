//! SVG plots of a bench (plotters, SVG backend only): latency CDF per
//! placement, throughput per placement per size, CCR vs image size, fps vs
//! number of processes, median latency per size.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::BenchError;
use super::results::Row;

const W: u32 = 900;
const H: u32 = 560;

fn plot_err(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |detail| BenchError::Plot {
        path: path.to_owned(),
        detail,
    }
}

fn sizes(rows: &[Row]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        if !out.contains(&r.size) {
            out.push(r.size.clone());
        }
    }
    out
}

fn labels(rows: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in rows {
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// A tick label with as many decimals as its size needs.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

/// The colour of the `i`-th configuration label (the same label has the
/// same colour in every plot).
fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// Draws every plot into `dir`; returns the files with what each shows.
///
/// # Errors
/// [`BenchError::Plot`] when a plot cannot be drawn or written.
pub fn all(
    dir: &Path,
    rows: &[Row],
    latencies: &[Vec<u64>],
) -> Result<Vec<(PathBuf, String)>, BenchError> {
    let mut files = Vec::new();
    for size in sizes(rows) {
        let path = dir.join(format!("latency_cdf_{size}.svg"));
        latency_cdf(&path, rows, latencies, &size)?;
        files.push((
            path,
            format!("end-to-end latency CDF per placement, {size}"),
        ));
    }
    let path = dir.join("throughput.svg");
    per_size(
        &path,
        rows,
        "Throughput per placement",
        "throughput (frames/s, log scale)",
        |r| r.in_placements,
        |r| Some(r.fps),
    )?;
    files.push((path, "throughput per placement per image size".to_owned()));
    let path = dir.join("latency.svg");
    per_size(
        &path,
        rows,
        "Median end-to-end latency per placement",
        "p50 latency, capture to sink (ms, log scale)",
        |r| r.in_placements,
        |r| Some(r.latency_p50_ms),
    )?;
    files.push((
        path,
        "median latency per placement per image size".to_owned(),
    ));
    let path = dir.join("ccr.svg");
    per_size(
        &path,
        rows,
        "Communication-to-computation ratio vs image size",
        "CCR (link transit / compute, log scale)",
        |r| r.in_placements && r.segments > 1,
        |r| (r.ccr > 0.0).then_some(r.ccr),
    )?;
    files.push((
        path,
        "CCR vs image size for each split placement".to_owned(),
    ));
    let path = dir.join("stages.svg");
    stages(&path, rows)?;
    files.push((path, "throughput vs number of processes".to_owned()));
    Ok(files)
}

fn latency_cdf(
    path: &Path,
    rows: &[Row],
    latencies: &[Vec<u64>],
    size: &str,
) -> Result<(), BenchError> {
    let e = plot_err(path);
    let series: Vec<(String, Vec<f64>)> = rows
        .iter()
        .zip(latencies)
        .filter(|(r, l)| r.size == size && r.in_placements && !l.is_empty())
        .map(|(r, l)| {
            let mut v: Vec<f64> = l.iter().map(|&ns| ns as f64 / 1e6).collect();
            v.sort_by(f64::total_cmp);
            (r.label.clone(), v)
        })
        .collect();
    let lo = series
        .iter()
        .filter_map(|(_, v)| v.first().copied())
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let hi = series
        .iter()
        .filter_map(|(_, v)| v.last().copied())
        .fold(0.0, f64::max)
        .max(lo * 2.0);
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("End-to-end latency CDF, {size}"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("latency, capture to sink (ms, log scale)")
        .y_desc("fraction of frames")
        .x_label_formatter(&|v| num(*v))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let all = labels(rows.iter().map(|r| r.label.clone()));
    for (label, v) in &series {
        let n = v.len() as f64;
        let c = color(all.iter().position(|l| l == label).unwrap_or(0));
        chart
            .draw_series(LineSeries::new(
                v.iter().enumerate().map(|(k, &x)| (x, (k + 1) as f64 / n)),
                c.stroke_width(2),
            ))
            .map_err(|x| e(x.to_string()))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// One line per configuration label, x = image size, y = `value` (log).
fn per_size(
    path: &Path,
    rows: &[Row],
    title: &str,
    y_desc: &str,
    keep: impl Fn(&Row) -> bool,
    value: impl Fn(&Row) -> Option<f64>,
) -> Result<(), BenchError> {
    let e = plot_err(path);
    let kept: Vec<&Row> = rows.iter().filter(|r| keep(r)).collect();
    let xs = sizes(rows);
    let names = labels(kept.iter().map(|r| r.label.clone()));
    let vals: Vec<f64> = kept
        .iter()
        .filter_map(|r| value(r))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.1, 1.0)
    };
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(70)
        // A segmented range includes its end: sizes 0..=n-1, and one empty
        // column on the right for the legend.
        .build_cartesian_2d((0..xs.len()).into_segmented(), (lo..hi).log_scale())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("image size (width x height, pixels)")
        .y_desc(y_desc)
        .x_labels(xs.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                xs.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|v| num(*v))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let all = labels(rows.iter().map(|r| r.label.clone()));
    for name in &names {
        let pts: Vec<(SegmentValue<usize>, f64)> = xs
            .iter()
            .enumerate()
            .filter_map(|(k, size)| {
                kept.iter()
                    .find(|r| r.label == *name && r.size == *size)
                    .and_then(|r| value(r))
                    .filter(|v| *v > 0.0)
                    .map(|v| (SegmentValue::CenterOf(k), v))
            })
            .collect();
        let c = color(all.iter().position(|l| l == name).unwrap_or(0));
        let dashed = name.ends_with(" off");
        let style = if dashed {
            c.stroke_width(1)
        } else {
            c.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(pts.clone(), style))
            .map_err(|x| e(x.to_string()))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(pts.iter().map(|p| {
                if dashed {
                    EmptyElement::at(p.clone()) + Circle::new((0, 0), 4, c.stroke_width(1))
                } else {
                    EmptyElement::at(p.clone()) + Circle::new((0, 0), 4, c.filled())
                }
            }))
            .map_err(|x| e(x.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// fps vs number of processes, one line per (node, size).
fn stages(path: &Path, rows: &[Row]) -> Result<(), BenchError> {
    let e = plot_err(path);
    let kept: Vec<&Row> = rows.iter().filter(|r| r.stages.is_some()).collect();
    let max_n = kept.iter().filter_map(|r| r.stages).max().unwrap_or(1);
    let vals: Vec<f64> = kept.iter().map(|r| r.fps).filter(|v| *v > 0.0).collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(0.0, f64::max);
    // Headroom above the lines for the legend (one entry per node and size).
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 1.5, hi * 8.0)
    } else {
        (0.1, 1.0)
    };
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput vs number of processes (1 = fused monolith)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d((1..max_n).into_segmented(), (lo..hi).log_scale())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("processes the pipeline is split into")
        .y_desc("throughput (frames/s, log scale)")
        .x_labels(max_n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => i.to_string(),
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|v| num(*v))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let names = labels(kept.iter().map(|r| format!("{} {}", r.stages_node, r.size)));
    for (i, name) in names.iter().enumerate() {
        let mut pts: Vec<(usize, f64)> = kept
            .iter()
            .filter(|r| format!("{} {}", r.stages_node, r.size) == *name)
            .filter_map(|r| r.stages.map(|n| (n, r.fps)))
            .collect();
        pts.sort_by_key(|p| p.0);
        let c = color(i);
        let pts: Vec<(SegmentValue<usize>, f64)> = pts
            .into_iter()
            .map(|(n, f)| (SegmentValue::CenterOf(n), f))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(
                pts.iter()
                    .map(|p| EmptyElement::at(p.clone()) + Circle::new((0, 0), 4, c.filled())),
            )
            .map_err(|x| e(x.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}
