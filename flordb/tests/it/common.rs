//! Shared test fixtures: real git repositories on temp dirs.

use std::path::{Path, PathBuf};

/// A fresh git repository with one commit (`README.md`) on branch `main`.
pub fn repo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("proj").tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let repo = git2::Repository::init_opts(&root, git2::RepositoryInitOptions::new().initial_head("main")).expect("git init");
    std::fs::write(root.join("README.md"), "hello\n").expect("write");
    std::fs::write(root.join("train.py"), "print('train')\n").expect("write");
    let mut idx = repo.index().expect("index");
    idx.add_path(Path::new("README.md")).expect("add");
    idx.add_path(Path::new("train.py")).expect("add");
    idx.write().expect("write index");
    let tree = repo.find_tree(idx.write_tree().expect("tree")).expect("tree");
    let sig = git2::Signature::now("t", "t@example.invalid").expect("sig");
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[]).expect("commit");
    (dir, root)
}

/// Options for tests: fixed filename, no command line.
pub fn opts(filename: &str) -> flordb::Options {
    flordb::Options { filename: Some(filename.into()), argv: Some(vec![filename.into()]), ..Default::default() }
}

/// Runs this test binary as a child executing `child::entry` with `mode`.
pub fn child(mode: &str, root: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("exe"));
    child_args(&mut cmd, mode, root);
    cmd
}

/// As [`child`], at a raised scheduling priority (`nice -n -10`; GNU nice
/// runs the command anyway when it may not raise it), so that a timing
/// guarantee is tested against the store and not against a starved
/// scheduler on a loaded 2-core machine.
pub fn child_prioritized(mode: &str, root: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("nice");
    cmd.args(["-n", "-10"]).arg(std::env::current_exe().expect("exe"));
    child_args(&mut cmd, mode, root);
    cmd
}

fn child_args(cmd: &mut std::process::Command, mode: &str, root: &Path) {
    cmd.args(["--exact", "child::entry", "--nocapture", "--test-threads=1"])
        .env("FLOR_TEST_CHILD", mode)
        .env("FLOR_TEST_ROOT", root);
}
