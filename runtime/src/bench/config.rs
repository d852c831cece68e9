//! What `streamfuse bench` sweeps by default: image sizes, placements,
//! fusion modes, process counts and frames per run, and what `--quick` and
//! the advisor check (`--advisor-links`) change. A [`SweepRequest`] holds
//! what was asked for; [`SweepRequest::resolve`] fills in the rest from the
//! [`Study`]'s defaults ([`Sweep::defaults`]).

use crate::spec::FusionMode;

/// Image sizes of the full study.
pub const SIZES: &[(usize, usize)] = &[
    (128, 128),
    (256, 256),
    (512, 512),
    (1024, 1024),
    (1280, 720),
];
/// Image sizes of the quick study (`--quick`).
pub const QUICK_SIZES: &[(usize, usize)] = &[(256, 256), (1280, 720)];
/// Image sizes of the advisor check.
pub const ADVISOR_SIZES: &[(usize, usize)] = &[(256, 256), (512, 512)];
/// Placements of the placement sweep.
pub const PLACEMENTS: &[&str] = &["SSSS", "ESSS", "EESS", "EEES", "EEEE"];
/// Fusion modes of the placement sweep (the advisor check runs the spec's
/// own instead).
pub const FUSION: &[FusionMode] = &[FusionMode::Off, FusionMode::Kernel];
/// Process counts of the stages sweep.
pub const STAGES: &[usize] = &[1, 2, 3, 4];
/// Frames per run of the full study.
pub const FRAMES: u64 = 1000;
/// Frames per run of the quick study.
pub const QUICK_FRAMES: u64 = 100;
/// Frames per run of the advisor check (the check runs more where a run
/// would last under 3 s).
pub const ADVISOR_FRAMES: u64 = 200;

/// Which study runs: each has its own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Study {
    /// A small matrix that finishes in a few minutes (`--quick`): two
    /// sizes, 100 frames.
    pub quick: bool,
    /// The advisor check instead of the study (`--advisor-links`): its own
    /// sizes and frames (`--quick`'s frames win), the spec's fusion.
    pub advisor: bool,
}

/// The sweep a bench runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Image sizes `(width, height)`.
    pub sizes: Vec<(usize, usize)>,
    /// Placements of the placement sweep.
    pub placements: Vec<String>,
    /// Fusion modes of the placement sweep (empty: the spec's own).
    pub fusion: Vec<FusionMode>,
    /// Process counts of the stages sweep.
    pub stages: Vec<usize>,
    /// Frames per run.
    pub frames: u64,
}

impl Sweep {
    /// The defaults of `study`.
    pub fn defaults(study: Study) -> Self {
        let sizes = if study.advisor {
            ADVISOR_SIZES
        } else if study.quick {
            QUICK_SIZES
        } else {
            SIZES
        };
        let frames = if study.quick {
            QUICK_FRAMES
        } else if study.advisor {
            ADVISOR_FRAMES
        } else {
            FRAMES
        };
        Self {
            sizes: sizes.to_vec(),
            placements: PLACEMENTS.iter().map(|&p| p.to_owned()).collect(),
            fusion: if study.advisor {
                Vec::new()
            } else {
                FUSION.to_vec()
            },
            stages: STAGES.to_vec(),
            frames,
        }
    }
}

/// What the command line asked to sweep: an empty list or `None` takes the
/// study's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepRequest {
    /// `--sizes`.
    pub sizes: Vec<(usize, usize)>,
    /// `--placements`.
    pub placements: Vec<String>,
    /// `--fusion`.
    pub fusion: Vec<FusionMode>,
    /// `--stages`.
    pub stages: Vec<usize>,
    /// `--frames`.
    pub frames: Option<u64>,
}

impl SweepRequest {
    /// The sweep: what was asked for, the rest from `study`'s defaults.
    pub fn resolve(self, study: Study) -> Sweep {
        let d = Sweep::defaults(study);
        Sweep {
            sizes: or_default(self.sizes, d.sizes),
            placements: or_default(self.placements, d.placements),
            fusion: or_default(self.fusion, d.fusion),
            stages: or_default(self.stages, d.stages),
            frames: self.frames.unwrap_or(d.frames),
        }
    }
}

/// `asked`, or `default` where nothing was asked for.
fn or_default<T>(asked: Vec<T>, default: Vec<T>) -> Vec<T> {
    if asked.is_empty() { default } else { asked }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_study_has_its_defaults_and_asked_values_win() {
        let full = SweepRequest::default().resolve(Study::default());
        assert_eq!(full.sizes.len(), 5);
        assert_eq!(full.frames, 1000);
        assert_eq!(full.fusion, [FusionMode::Off, FusionMode::Kernel]);
        assert_eq!(full.stages, [1, 2, 3, 4]);
        assert_eq!(full.placements, ["SSSS", "ESSS", "EESS", "EEES", "EEEE"]);
        let quick = Sweep::defaults(Study {
            quick: true,
            advisor: false,
        });
        assert_eq!(
            (quick.sizes, quick.frames),
            (vec![(256, 256), (1280, 720)], 100)
        );
        // The advisor's sizes win over --quick's, --quick's frames over the advisor's.
        let both = Sweep::defaults(Study {
            quick: true,
            advisor: true,
        });
        assert_eq!(
            (both.sizes, both.frames),
            (vec![(256, 256), (512, 512)], 100)
        );
        let advisor = Sweep::defaults(Study {
            quick: false,
            advisor: true,
        });
        assert_eq!(advisor.frames, 200);
        assert!(advisor.fusion.is_empty());
        let asked = SweepRequest {
            sizes: vec![(64, 32)],
            frames: Some(7),
            ..SweepRequest::default()
        }
        .resolve(Study::default());
        assert_eq!((asked.sizes, asked.frames), (vec![(64, 32)], 7));
    }
}
