//! The profile: what each node, link and hand-off of a cluster costs, as
//! `streamfuse profile` measures it; read, merged and checked.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::Pipeline;

/// Version of the profile format this build reads and writes.
pub const PROFILE_VERSION: u32 = 1;

/// Measured costs of a pipeline on a cluster (`streamfuse profile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version ([`PROFILE_VERSION`]).
    pub version: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Frame shape the costs were measured at, `[C, H, W]`.
    pub frame: [usize; 3],
    /// Per node (by name).
    pub nodes: BTreeMap<String, NodeProfile>,
    /// Links between nodes.
    pub links: Vec<LinkProfile>,
    /// CPU cost of handing a frame from one process to another.
    pub hop: HopProfile,
}

/// What one node costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeProfile {
    /// CPUs its processes share (a CPU quota, or its cores).
    pub cpus: f64,
    /// The device the stage ranges ran on (`cpu`, or the CUDA device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// What producing one frame of the spec's sources costs on this node
    /// (they run on threads of their own in the segment that holds them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RangeCost>,
    /// Per stage range `"a..b"` (stage indices, end exclusive): the cost of
    /// running those stages as one segment on this node.
    pub ranges: BTreeMap<String, RangeCost>,
}

/// The cost of a stage range on a node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeCost {
    /// Wall time per frame, ms.
    pub ms: f64,
    /// CPU time per frame (every kernel thread), ms.
    pub cpu_ms: f64,
}

/// A link between two nodes (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Bandwidth, bytes per second.
    pub bytes_per_s: f64,
    /// Round-trip time, ms.
    pub rtt_ms: f64,
    /// Whether the figures were measured (`profile --peer`) rather than
    /// given on the command line.
    #[serde(default)]
    pub measured: bool,
    /// What each probe measured, by payload size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<LinkSample>,
}

/// What a probe of one payload size measured, as the profile file keeps it
/// (the file's own type: a change to the probe's wire or structs does not
/// change the file format).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSample {
    /// Payload bytes per frame.
    pub bytes: usize,
    /// Frames that arrived.
    pub frames: u64,
    /// Payload bytes per second from the first arrival to the last.
    pub bytes_per_s: f64,
    /// Median round trip, ms.
    pub rtt_ms: f64,
    /// CPU time per frame of sending, ms.
    pub send_cpu_ms: f64,
    /// CPU time per frame of receiving, ms.
    pub recv_cpu_ms: f64,
}

impl From<crate::transport::probe::LinkSample> for LinkSample {
    fn from(s: crate::transport::probe::LinkSample) -> Self {
        Self {
            bytes: s.bytes,
            frames: s.frames,
            bytes_per_s: s.bytes_per_s,
            rtt_ms: s.rtt_ms,
            send_cpu_ms: s.send_cpu_ms,
            recv_cpu_ms: s.recv_cpu_ms,
        }
    }
}

/// CPU cost of one hand-off between processes: `fixed_ms + per_mb_ms *
/// bytes / 1e6`, split evenly between the sender and the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopProfile {
    /// Per frame, ms.
    pub fixed_ms: f64,
    /// Per MB of frame, ms.
    pub per_mb_ms: f64,
}

/// A profile or an advice request is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdviseError {
    /// The profile file cannot be read or parsed.
    #[error("profile {file}: {message}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// The profile does not describe this pipeline.
    #[error("profile: {0}")]
    Mismatch(String),
    /// The profile lets the advisor predict no placement
    /// ([`super::best_placement`]).
    #[error("the advisor could predict no placement from the profile")]
    NoPlacement,
}

/// The key of stage range `a..b`.
pub fn range_key(a: usize, b: usize) -> String {
    format!("{a}..{b}")
}

impl Profile {
    /// Reads and validates a profile for `p`.
    ///
    /// # Errors
    /// [`AdviseError`] when the file is missing, not a profile of this
    /// version, or does not describe `p` ([`Profile::check`]).
    pub fn load(path: &Path, p: &Pipeline) -> Result<Self, AdviseError> {
        Self::load_all(&[path], p)
    }

    /// Reads the profiles in `paths` (each node measured on itself, say),
    /// merges them ([`Profile::merge`]) and validates the result for `p`.
    ///
    /// # Errors
    /// [`AdviseError`] when a file is missing or not a profile of this
    /// version, two disagree on the pipeline or frame, or the merged
    /// profile does not describe `p` ([`Profile::check`]).
    pub fn load_all<P: AsRef<Path>>(paths: &[P], p: &Pipeline) -> Result<Self, AdviseError> {
        let mut merged: Option<Self> = None;
        for path in paths {
            let path = path.as_ref();
            let read = |message: String| AdviseError::Read {
                file: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
            let prof: Self = serde_json::from_str(&text).map_err(|e| read(e.to_string()))?;
            merged = Some(match merged {
                None => prof,
                Some(m) => m.merge(prof).map_err(|e| read(e.to_string()))?,
            });
        }
        let prof = merged.ok_or_else(|| AdviseError::Mismatch("no profile given".into()))?;
        prof.check(p)?;
        Ok(prof)
    }

    /// This profile with `other`'s nodes and links added: a node or link
    /// both describe takes `other`'s figures, except that a measured link
    /// is not replaced by one given on the command line. The hand-off cost
    /// is taken from the profile with measured links.
    ///
    /// # Errors
    /// [`AdviseError::Mismatch`] when the two describe different versions,
    /// pipelines or frame shapes.
    pub fn merge(mut self, other: Self) -> Result<Self, AdviseError> {
        if (other.version, &other.pipeline, other.frame)
            != (self.version, &self.pipeline, self.frame)
        {
            return Err(AdviseError::Mismatch(format!(
                "profiles of different pipelines or frames: `{}` {:?} (version {}) and `{}` {:?} (version {})",
                self.pipeline, self.frame, self.version, other.pipeline, other.frame, other.version
            )));
        }
        let other_measured = other.links.iter().any(|l| l.measured);
        let self_measured = self.links.iter().any(|l| l.measured);
        if other_measured && !self_measured {
            self.hop = other.hop;
        }
        self.nodes.extend(other.nodes);
        for l in other.links {
            let same = |x: &LinkProfile| (x.a == l.a && x.b == l.b) || (x.a == l.b && x.b == l.a);
            match self.links.iter_mut().find(|x| same(x)) {
                Some(x) if x.measured && !l.measured => {}
                Some(x) => *x = l,
                None => self.links.push(l),
            }
        }
        Ok(self)
    }

    /// Checks that the profile is of this version and describes `p`: its
    /// name and frame shape, a node profile for every node, finite positive
    /// figures, and links between known nodes.
    ///
    /// # Errors
    /// [`AdviseError::Mismatch`] naming the first problem.
    pub fn check(&self, p: &Pipeline) -> Result<(), AdviseError> {
        let bad = |m: String| Err(AdviseError::Mismatch(m));
        if self.version != PROFILE_VERSION {
            return bad(format!(
                "version {} (this build reads version {PROFILE_VERSION})",
                self.version
            ));
        }
        if self.pipeline != p.name {
            return bad(format!(
                "measured pipeline `{}`, the spec is `{}`",
                self.pipeline, p.name
            ));
        }
        let s = p.source.shape();
        if self.frame != [s.c, s.h, s.w] {
            return bad(format!(
                "measured frames {:?}, the spec's are {:?} (CxHxW)",
                self.frame,
                [s.c, s.h, s.w]
            ));
        }
        let source_key = "source".to_owned();
        for n in &p.nodes {
            let Some(np) = self.nodes.get(&n.name) else {
                return bad(format!("no measurements of node `{}`", n.name));
            };
            if !(np.cpus.is_finite() && np.cpus > 0.0) {
                return bad(format!(
                    "node `{}`: cpus {} is not positive",
                    n.name, np.cpus
                ));
            }
            for (k, c) in np
                .ranges
                .iter()
                .chain(np.source.iter().map(|c| (&source_key, c)))
            {
                if !(c.ms.is_finite() && c.ms >= 0.0 && c.cpu_ms.is_finite() && c.cpu_ms >= 0.0) {
                    return bad(format!(
                        "node `{}`, stages {k}: a negative or non-finite time",
                        n.name
                    ));
                }
            }
        }
        for l in &self.links {
            for end in [&l.a, &l.b] {
                if !p.nodes.iter().any(|n| &n.name == end) {
                    return bad(format!("link to unknown node `{end}`"));
                }
            }
            if !(l.bytes_per_s.is_finite()
                && l.bytes_per_s > 0.0
                && l.rtt_ms.is_finite()
                && l.rtt_ms >= 0.0)
            {
                return bad(format!("link {}-{}: bandwidth must be positive", l.a, l.b));
            }
        }
        let h = self.hop;
        if !(h.fixed_ms.is_finite()
            && h.fixed_ms >= 0.0
            && h.per_mb_ms.is_finite()
            && h.per_mb_ms >= 0.0)
        {
            return bad("hop costs must be non-negative".into());
        }
        Ok(())
    }

    /// This profile with `links` (measured, say by [`super::measure_links`])
    /// in place of any link it has between the same two nodes, and `hop`
    /// as the hand-off cost where given.
    pub fn with_links(mut self, links: Vec<LinkProfile>, hop: Option<HopProfile>) -> Self {
        for l in links {
            self.links
                .retain(|x| !((x.a == l.a && x.b == l.b) || (x.a == l.b && x.b == l.a)));
            self.links.push(l);
        }
        if let Some(h) = hop {
            self.hop = h;
        }
        self
    }

    /// The link between nodes `a` and `b` (either way round).
    pub(super) fn link(&self, a: &str, b: &str) -> Option<&LinkProfile> {
        self.links
            .iter()
            .find(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    /// CPU time of handing a frame of `bytes` from one process to another.
    pub(super) fn hop_ms(&self, bytes: usize) -> f64 {
        self.hop.fixed_ms + self.hop.per_mb_ms * bytes as f64 / 1e6
    }
}
