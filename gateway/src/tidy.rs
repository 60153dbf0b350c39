//! Tidy checks run by `cargo test`: conventions that keep the code and docs honest.
//!
//! Every Rust source file starts with a `//!` doc comment; docs/ARCHITECTURE.md names
//! every source module; nothing under `docs/` names a file that does not exist.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    fn all_sources() -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in ["keys", "exchange", "gateway", "tests", "benches"] {
            rust_files(&root().join(dir), &mut files);
        }
        files
    }

    #[test]
    fn every_rust_file_starts_with_a_module_doc() {
        let missing: Vec<String> = all_sources()
            .into_iter()
            .filter(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "files without a leading //! doc comment: {missing:#?}"
        );
    }

    #[test]
    fn architecture_doc_names_every_module() {
        let arch = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md"))
            .expect("docs/ARCHITECTURE.md exists");
        let mut missing = Vec::new();
        for path in all_sources() {
            let rel = path
                .strip_prefix(root())
                .unwrap_or(&path)
                .to_string_lossy()
                .replace("/./", "/");
            let rel = rel
                .trim_start_matches("./")
                .trim_start_matches("../")
                .to_owned();
            if rel.contains("/src/") && !arch.contains(&rel) {
                missing.push(rel);
            }
        }
        assert!(
            missing.is_empty(),
            "docs/ARCHITECTURE.md does not mention: {missing:#?}"
        );
    }
}
