//! Tidy checks run by `cargo test`: conventions that keep the code and docs honest.
//!
//! Every Rust source file starts with a `//!` doc comment; docs/ARCHITECTURE.md names
//! every source module; nothing in README.md or `docs/` names a repository path that does
//! not exist.

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

    /// The repository paths a doc names: words that start with a top-level directory of
    /// the repository (`docs/keys.md`, `deploy/k8s/`, `tests/integration/tls.rs`).
    fn named_paths(text: &str) -> Vec<String> {
        const ROOTS: [&str; 9] = [
            "keys/",
            "exchange/",
            "gateway/",
            "tests/",
            "benches/",
            "deploy/",
            "docs/",
            "scripts/",
            ".ci/",
        ];
        let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
        let mut out = Vec::new();
        for (start, _) in text.char_indices() {
            let before = text[..start].chars().next_back();
            if before.is_some_and(|c| is_path_char(c) || "{}$".contains(c)) {
                continue;
            }
            let rest = &text[start..];
            if !ROOTS.iter().any(|r| rest.starts_with(r)) {
                continue;
            }
            let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(['.', '-']);
            out.push(path.to_owned());
        }
        out
    }

    #[test]
    fn docs_name_only_files_that_exist() {
        let mut docs = vec![root().join("README.md")];
        for entry in std::fs::read_dir(root().join("docs"))
            .expect("docs/")
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "md") {
                docs.push(entry.path());
            }
        }
        let mut missing = Vec::new();
        for doc in docs {
            let text = std::fs::read_to_string(&doc).unwrap_or_default();
            for path in named_paths(&text) {
                if !root().join(&path).exists() {
                    missing.push(format!("{}: {path}", doc.display()));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "docs name paths that do not exist: {missing:#?}"
        );
    }

    #[test]
    fn named_paths_finds_repository_paths_only() {
        let text = "See docs/keys.md, `deploy/k8s/` and tests/integration/tls.rs. \
                    Not {prefix}keys/x, not src/docs/x, not $HOME/docs/y.";
        assert_eq!(
            named_paths(text),
            ["docs/keys.md", "deploy/k8s/", "tests/integration/tls.rs"]
        );
    }
}
