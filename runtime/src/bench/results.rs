//! One row per configuration run, written as `results.csv`; every frame's
//! latency as `latencies.csv`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BenchError;

/// What one configuration measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Position in the run order.
    pub id: usize,
    /// `1280x720`.
    pub size: String,
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// Placement letters.
    pub placement: String,
    /// Fusion mode.
    pub fusion: String,
    /// Stage ids that start a new segment, `|`-separated.
    pub split: String,
    /// Short name of the configuration.
    pub label: String,
    /// Part of the placement sweep.
    pub in_placements: bool,
    /// Process count when part of the stages sweep (else empty).
    pub stages: Option<usize>,
    /// Node the stages sweep ran on (`server`/`edge`, else empty).
    pub stages_node: String,
    /// Segments (processes).
    pub segments: usize,
    /// Frames that reached the sink.
    pub frames: u64,
    /// Throughput, frames per second, first capture to last arrival.
    pub fps: f64,
    /// Throughput in steady state, frames per second: the sink's rate
    /// between its 10th and 90th percentile arrivals (no fill or drain).
    #[serde(default)]
    pub steady_fps: Option<f64>,
    /// End-to-end latency percentiles, capture to sink, ms.
    pub latency_p50_ms: f64,
    /// 95th percentile.
    pub latency_p95_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Largest.
    pub latency_max_ms: f64,
    /// Mean.
    pub latency_mean_ms: f64,
    /// Compute time per frame, summed over every stage, ms.
    pub compute_ms: f64,
    /// Link transit time per frame, summed over every link, ms.
    pub comm_ms: f64,
    /// Communication / computation.
    pub ccr: f64,
    /// Compute per frame of each group: `stages@node=ms`, `;`-separated.
    pub group_ms: String,
    /// Transit per frame of each link: `from->to=ms (bytes)`, `;`-separated.
    pub link_ms: String,
    /// What bounds throughput (split runs): the slowest stage run alone,
    /// a link at its shaped rate, or a pool of CPUs the processes share.
    pub slowest: String,
    /// That bound, fps (split runs; empty otherwise).
    pub bound_fps: Option<f64>,
    /// `steady_fps / bound_fps` (split runs; ≥ 0.85 means the pipeline
    /// keeps up with its slowest resource).
    pub pipelining: Option<f64>,
    /// Share of the machine's CPU time that was idle during the run (no
    /// thread of any process had work), from `/proc/stat`.
    #[serde(default)]
    pub machine_idle: Option<f64>,
    /// Output digest (stats sink).
    pub output_digest: String,
    /// Wall time of the run, s.
    pub elapsed_s: f64,
}

/// Writes `rows` to `path` as CSV with a header.
///
/// # Errors
/// [`BenchError::Csv`] when the file cannot be written.
pub fn write_csv(path: &Path, rows: &[Row]) -> Result<(), BenchError> {
    let err = |source: csv::Error| BenchError::Csv {
        path: path.to_owned(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    for r in rows {
        w.serialize(r).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))
}

/// Writes every frame's latency: `id,label,size,frame,latency_ms`.
///
/// # Errors
/// [`BenchError::Csv`] when the file cannot be written.
pub fn write_latencies(
    path: &Path,
    rows: &[Row],
    latencies: &[Vec<u64>],
) -> Result<(), BenchError> {
    let err = |source: csv::Error| BenchError::Csv {
        path: path.to_owned(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record(["id", "label", "size", "frame", "latency_ms"])
        .map_err(err)?;
    for (r, lat) in rows.iter().zip(latencies) {
        for (i, ns) in lat.iter().enumerate() {
            w.write_record([
                r.id.to_string(),
                r.label.clone(),
                r.size.clone(),
                i.to_string(),
                format!("{:.4}", *ns as f64 / 1e6),
            ])
            .map_err(err)?;
        }
    }
    w.flush().map_err(|e| err(e.into()))
}

/// Reads `results.csv` and `latencies.csv` back (to draw the plots again).
///
/// # Errors
/// [`BenchError::Csv`] when a file cannot be read or parsed.
pub fn read(dir: &Path) -> Result<(Vec<Row>, Vec<Vec<u64>>), BenchError> {
    let path = dir.join("results.csv");
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source: csv::Error| BenchError::Csv {
            path: path.clone(),
            source,
        }
    };
    let mut r = csv::Reader::from_path(&path).map_err(err(&path))?;
    let rows: Vec<Row> = r
        .deserialize()
        .collect::<Result<_, _>>()
        .map_err(err(&path))?;
    let mut latencies = vec![Vec::new(); rows.len()];
    let lpath = dir.join("latencies.csv");
    let mut r = csv::Reader::from_path(&lpath).map_err(err(&lpath))?;
    for rec in r.deserialize::<(usize, String, String, usize, f64)>() {
        let (id, _, _, _, ms) = rec.map_err(err(&lpath))?;
        if let Some(pos) = rows.iter().position(|row| row.id == id) {
            latencies[pos].push((ms * 1e6).round() as u64);
        }
    }
    Ok((rows, latencies))
}
