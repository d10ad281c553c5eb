//! Builds `examples/log.c` against the cdylib and the checked-in header with
//! the system C compiler, runs it in a fresh git repository, and checks what
//! it recorded through the Rust API.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`: the directory of this test's `deps/`, where cargo
/// put `libflordb_ffi.so`.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

fn git(root: &Path, args: &[&str]) {
    let st = Command::new("git").args(args).current_dir(root).status().expect("git runs");
    assert!(st.success(), "git {args:?} failed");
}

#[test]
fn c_example_logs_and_reads_back() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = lib_dir();
    assert!(
        lib_dir.join("libflordb_ffi.so").exists(),
        "cdylib not found in {}: `cargo test` does not build it; run `cargo build -p flordb-ffi --lib` first (`make test` does)",
        lib_dir.display()
    );
    let work = tempfile::tempdir().expect("tempdir");
    let exe = work.path().join("log");
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .arg(crate_dir.join("examples/log.c"))
        .arg("-std=c99")
        .arg("-Wall")
        .arg("-Werror")
        .arg(format!("-I{}", crate_dir.join("include").display()))
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lflordb_ffi")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("cc runs");
    assert!(out.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let root = work.path().join("proj");
    std::fs::create_dir(&root).unwrap();
    git(&root, &["init", "-q", "-b", "main"]);
    std::fs::write(root.join("README.md"), "c example\n").unwrap();
    git(&root, &["add", "README.md"]);
    git(&root, &["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "init"]);

    let run = Command::new(&exe).current_dir(&root).output().expect("example runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "example failed: {stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(stdout.trim(), "rows: 3");

    // The values, read back through the Rust query layer.
    let ctx = flordb::query::FlorContext::open(&root).unwrap();
    let df = ctx.dataframe(&["loss"]).unwrap();
    let loss = df.column_by_name("loss").unwrap();
    let loss = loss.as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
    assert_eq!(loss.values().to_vec(), vec![1.0, 0.5, 1.0 / 3.0]);
    let filename = df.column_by_name("filename").unwrap();
    let filename = filename.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    assert_eq!(filename.value(0), "log.c");
}
