//! The experiment matrix: which configurations a bench runs.
//!
//! Two sweeps over every image size:
//! - **placements**: each placement (`SSSS`, `ESSS`, …) with each fusion
//!   mode (`off`: every element its own process; `kernel`: a segment per
//!   run of elements on one node, fused);
//! - **stages**: the whole pipeline on one node (the server's letter, then
//!   the edge's) split into 1, 2, 3 or 4 processes: 1 is the fused
//!   monolith, `N` cuts the elements (source, then each stage) into `N`
//!   runs as even as possible, the last `N` being every element alone
//!   (the microservice layout of `fusion: off`).
//!
//! A configuration both sweeps contain runs once.

use crate::spec::{FusionMode, Pipeline};

/// One configuration to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Frame width and height.
    pub size: (usize, usize),
    /// Placement letters (source, then each stage).
    pub placement: String,
    /// Fusion mode.
    pub fusion: FusionMode,
    /// Stage ids that start a new segment (`--split`).
    pub split: Vec<String>,
    /// Part of the placement sweep.
    pub in_placements: bool,
    /// Number of processes, when part of the stages sweep.
    pub stages: Option<usize>,
}

impl Config {
    /// `1280x720`.
    pub fn size_label(&self) -> String {
        size_label(self.size)
    }

    /// A short name: `EESS kernel`, `SSSS kernel | relu` (cut before relu).
    pub fn label(&self) -> String {
        let mut s = format!("{} {}", self.placement, self.fusion);
        if !self.split.is_empty() {
            s.push_str(" | ");
            s.push_str(&self.split.join(" | "));
        }
        s
    }

    /// Whether `other` runs the same thing.
    fn same_run(&self, other: &Config) -> bool {
        self.size == other.size
            && self.placement == other.placement
            && self.fusion == other.fusion
            && self.split == other.split
    }
}

/// `WxH`.
pub fn size_label((w, h): (usize, usize)) -> String {
    format!("{w}x{h}")
}

/// The stage ids to cut before so that `elements` elements (the source,
/// then the stages) form `n` runs as even as possible: run `i` starts at
/// element `round(i * elements / n)`.
pub fn even_cuts(p: &Pipeline, n: usize) -> Vec<String> {
    let elements = p.stages.len() + 1;
    (1..n)
        .map(|i| (i * elements + n / 2) / n)
        .filter(|&e| e >= 1 && e < elements)
        .map(|e| p.stages[e - 1].id.clone())
        .collect()
}

/// What to sweep.
#[derive(Debug, Clone)]
pub struct Sweeps<'a> {
    /// Image sizes.
    pub sizes: &'a [(usize, usize)],
    /// Placements.
    pub placements: &'a [String],
    /// Fusion modes of the placement sweep.
    pub fusion: &'a [FusionMode],
    /// Process counts of the stages sweep.
    pub stages: &'a [usize],
    /// Node letters the stages sweep runs on.
    pub stage_nodes: &'a [char],
}

/// Every configuration of the sweeps over `p`, in run order (size by
/// size), each once.
pub fn configs(p: &Pipeline, s: &Sweeps<'_>) -> Vec<Config> {
    let elements = p.stages.len() + 1;
    let mut out: Vec<Config> = Vec::new();
    let mut add = |c: Config| {
        if let Some(existing) = out.iter_mut().find(|e| e.same_run(&c)) {
            existing.in_placements |= c.in_placements;
            existing.stages = existing.stages.or(c.stages);
        } else {
            out.push(c);
        }
    };
    for &size in s.sizes {
        for placement in s.placements {
            for &fusion in s.fusion {
                add(Config {
                    size,
                    placement: placement.clone(),
                    fusion,
                    split: Vec::new(),
                    in_placements: true,
                    stages: None,
                });
            }
        }
        for &letter in s.stage_nodes {
            let placement: String = std::iter::repeat_n(letter, elements).collect();
            for &n in s.stages {
                if n == 0 || n > elements {
                    continue;
                }
                let (fusion, split) = if n == elements {
                    (FusionMode::Off, Vec::new())
                } else {
                    (FusionMode::Kernel, even_cuts(p, n))
                };
                add(Config {
                    size,
                    placement: placement.clone(),
                    fusion,
                    split,
                    in_placements: false,
                    stages: Some(n),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Overrides, parse};

    fn thesis() -> Pipeline {
        let text = "name: t\nsource: { synthetic: { width: 32, height: 32 } }\nstages:\n  - { id: conv, op: conv2d, kernel: 3, out_channels: 1, weights: { random: { seed: 1 } } }\n  - { id: relu, op: relu }\n  - { id: pool, op: maxpool, size: 2 }\nsink: { stats: {} }\nnodes:\n  edge: { letter: E }\n  server: { letter: S }\n";
        match parse(text, std::path::Path::new("t.yaml"), &Overrides::default()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn cuts_are_even_and_the_sweeps_share_runs() {
        let p = thesis();
        assert_eq!(even_cuts(&p, 1), Vec::<String>::new());
        assert_eq!(even_cuts(&p, 2), ["relu"]);
        assert_eq!(even_cuts(&p, 3), ["conv", "pool"]);
        assert_eq!(even_cuts(&p, 4), ["conv", "relu", "pool"]);
        let placements = ["SSSS".to_owned(), "EESS".to_owned()];
        let c = configs(
            &p,
            &Sweeps {
                sizes: &[(64, 64)],
                placements: &placements,
                fusion: &[FusionMode::Off, FusionMode::Kernel],
                stages: &[1, 2, 3, 4],
                stage_nodes: &['S'],
            },
        );
        // 4 placement runs; stages 1 and 4 on S are SSSS kernel and SSSS off.
        assert_eq!(c.len(), 6, "{c:#?}");
        let mono = c.iter().find(|c| {
            c.placement == "SSSS" && c.fusion == FusionMode::Kernel && c.split.is_empty()
        });
        assert!(mono.is_some_and(|m| m.in_placements && m.stages == Some(1)));
        let micro = c
            .iter()
            .find(|c| c.placement == "SSSS" && c.fusion == FusionMode::Off);
        assert!(micro.is_some_and(|m| m.in_placements && m.stages == Some(4)));
    }
}
