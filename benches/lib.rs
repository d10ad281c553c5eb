//! Shared helpers for the criterion benches in `benches/benches/`.

#![allow(missing_docs)]

use std::path::{Path, PathBuf};

/// A fresh git repository with one commit, in a temporary directory.
pub fn git_repo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("flor-bench").tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let repo = git2::Repository::init(&root).expect("git init");
    std::fs::write(root.join("train.py"), "print('train')\n").expect("write");
    let mut idx = repo.index().expect("index");
    idx.add_path(Path::new("train.py")).expect("add");
    idx.write().expect("index");
    let tree = repo.find_tree(idx.write_tree().expect("tree")).expect("tree");
    let sig = git2::Signature::now("bench", "bench@example.invalid").expect("sig");
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[]).expect("commit");
    (dir, root)
}
