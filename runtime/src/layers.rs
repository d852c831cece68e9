//! The layer rule, checked: a module may use the layers below it and its
//! own, never one above. See the crate docs for the order.

/// The library's top-level modules, lowest layer first; modules on one
/// line share a layer.
pub const LAYERS: &[&[&str]] = &[
    &["frame", "percentiles", "sys", "media", "model"],
    &["spec"],
    &["plan", "io", "import"],
    &["exec", "transport"],
    &["segment"],
    &["launch"],
    &["advise", "bench", "deploy", "stagebench"],
    &["fuzzing"],
];

/// The layer of top-level module `module`, if it is one.
pub fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{LAYERS, layer_of};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Every `crate::NAME` path in `text` (use lines and inline paths),
    /// with its line number; comments are skipped.
    fn crate_paths(text: &str) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                let before = &rest[..i];
                rest = &rest[i + "crate::".len()..];
                // `streamfuse_kernels::...` etc. are other crates: only a
                // path that starts at `crate` counts.
                if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push((n + 1, name));
            }
        }
        found
    }

    #[test]
    fn every_module_is_in_a_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_else(|e| panic!("{e}"));
        for line in lib.lines() {
            if let Some(m) = line
                .strip_prefix("pub mod ")
                .and_then(|l| l.strip_suffix(';'))
            {
                if m == "layers" {
                    continue;
                }
                assert!(
                    layer_of(m).is_some(),
                    "module `{m}` (lib.rs) is in no layer of layers::LAYERS"
                );
            }
        }
    }

    #[test]
    fn no_module_uses_a_layer_above_its_own() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut bad = Vec::new();
        let mut checked = 0;
        for f in &files {
            let rel = f.strip_prefix(&src).unwrap_or(f);
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or("")
                .trim_end_matches(".rs")
                .to_owned();
            let Some(own) = layer_of(&top) else {
                // lib.rs, main.rs, the CLI (a module of the binary, above
                // every layer) and this file.
                continue;
            };
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{e}"));
            for (line, used) in crate_paths(&text) {
                checked += 1;
                match layer_of(&used) {
                    Some(l) if l > own => bad.push(format!(
                        "{}:{line}: `{top}` (layer {own}: {:?}) uses `crate::{used}` (layer {l}: {:?})",
                        rel.display(),
                        LAYERS[own],
                        LAYERS[l]
                    )),
                    _ => {}
                }
            }
        }
        assert!(
            checked > 100,
            "only {checked} crate paths found: the scan is broken"
        );
        assert!(bad.is_empty(), "layer rule broken:\n{}", bad.join("\n"));
    }

    #[test]
    fn the_scan_sees_paths_and_skips_other_crates() {
        let text = "use crate::spec::Pipeline;\nlet x = crate::exec::run();\nuse my_crate::bench; // crate::bench\n";
        let got: Vec<String> = crate_paths(text).into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, ["spec", "exec"]);
    }
}
