//! The weights and bias files a spec names, shipped to the pods in the
//! spec's ConfigMap.
//!
//! A pod reads the spec at [`SPEC_DIR`]/[`SPEC_FILE`], so a stage's
//! `weights: { npy: w.npy }` is read at `SPEC_DIR/w.npy`. Each model file
//! named by a path relative to the spec, inside its directory, goes into
//! the ConfigMap's `binaryData` and is projected at that path, as long as
//! the ConfigMap stays within what the API server accepts. A watched file
//! (`watch: true`) is then updated live by applying a new ConfigMap: the
//! kubelet replaces the projected files atomically (a symlink swap) and the
//! segment's watcher swaps the new weights in between two frames, with no
//! restart. The other files are part of the pods' spec digest, so new
//! weights in them roll the pods. A file that cannot go in (absolute, or
//! outside the spec's directory, or too large) is left out with a warning
//! naming where the pods will look for it.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::KeyToPath;

use super::{CONFIGMAP_MAX_BYTES, DeployError, SPEC_DIR, SPEC_FILE};
use crate::spec::Pipeline;

/// Bytes of a ConfigMap left for its metadata and keys.
const METADATA_MARGIN: usize = 16 << 10;

/// What the ConfigMap carries besides the spec.
#[derive(Debug, Default)]
pub(super) struct Packed {
    /// `binaryData`, by key.
    pub binary_data: BTreeMap<String, ByteString>,
    /// Where each key is projected in [`SPEC_DIR`], the spec first; empty
    /// when the ConfigMap holds only the spec (all its keys are projected).
    pub items: Vec<KeyToPath>,
    /// Keys of the files that roll the pods when they change (those not
    /// watched), in order.
    pub rolling: Vec<String>,
    /// Files left out, and where the pods will look for them.
    pub warnings: Vec<String>,
}

/// Packs the model files of `p` next to a spec of `spec_bytes`.
///
/// # Errors
/// [`DeployError::Io`] when a model file cannot be read.
pub(super) fn pack(p: &Pipeline, spec_bytes: usize) -> Result<Packed, DeployError> {
    let mut out = Packed::default();
    let mut used = spec_bytes;
    for f in &p.model_files {
        let Some(rel) = inside(&f.written) else {
            out.warnings.push(format!(
                "{} ({}): {} is not inside the spec's directory, so it is not in the ConfigMap; the pods read it at {}: mount it there",
                f.field,
                f.stage,
                f.written,
                pod_path(&f.written).display()
            ));
            continue;
        };
        let bytes = std::fs::read(&f.path).map_err(|source| DeployError::Io {
            path: f.path.clone(),
            source,
        })?;
        if used + bytes.len() + METADATA_MARGIN > CONFIGMAP_MAX_BYTES {
            out.warnings.push(format!(
                "{} ({}): {} is {} bytes, more than the ConfigMap has room for next to the spec ({} bytes in all); the pods read it at {}: mount it there",
                f.field,
                f.stage,
                f.written,
                bytes.len(),
                CONFIGMAP_MAX_BYTES,
                pod_path(&f.written).display()
            ));
            continue;
        }
        used += bytes.len();
        let key = key_for(&rel, out.binary_data.len());
        out.items.push(KeyToPath {
            key: key.clone(),
            path: rel.to_string_lossy().into_owned(),
            mode: None,
        });
        if !f.watched {
            out.rolling.push(key.clone());
        }
        out.binary_data.insert(key, ByteString(bytes));
    }
    if !out.items.is_empty() {
        out.items.insert(
            0,
            KeyToPath {
                key: SPEC_FILE.into(),
                path: SPEC_FILE.into(),
                mode: None,
            },
        );
    }
    Ok(out)
}

/// `written` as a path inside the spec's directory (no `..`, not
/// absolute, not the spec's own name), or `None`.
fn inside(written: &str) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for c in Path::new(written).components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!rel.as_os_str().is_empty() && rel != Path::new(SPEC_FILE)).then_some(rel)
}

/// Where a pod reads a file the spec names as `written`.
fn pod_path(written: &str) -> PathBuf {
    Path::new(SPEC_DIR).join(written)
}

/// A ConfigMap key for `rel` (keys are `[-._a-zA-Z0-9]+`), made unique by
/// the number of keys before it.
fn key_for(rel: &Path, n: usize) -> String {
    let flat: String = rel
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("model-{n}-{flat}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_inside_the_spec_directory_are_packed() {
        assert_eq!(inside("w.npy"), Some(PathBuf::from("w.npy")));
        assert_eq!(inside("./m/w.npy"), Some(PathBuf::from("m/w.npy")));
        assert_eq!(inside("../w.npy"), None);
        assert_eq!(inside("m/../../w.npy"), None);
        assert_eq!(inside("/models/w.npy"), None);
        assert_eq!(inside("spec.yaml"), None);
        assert_eq!(inside("."), None);
    }

    #[test]
    fn keys_are_valid_and_distinct() {
        let a = key_for(Path::new("m/w b.npy"), 0);
        let b = key_for(Path::new("m_w b.npy"), 1);
        assert_eq!(a, "model-0-m_w_b.npy");
        assert_ne!(a, b);
        for k in [a, b] {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            );
        }
    }
}
