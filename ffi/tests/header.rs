//! `include/flor.h` is what cbindgen generates from `src/` with
//! `cbindgen.toml`; this test fails when the checked-in header is stale.
//! Regenerate with `FLOR_BLESS=1 cargo test -p flordb-ffi --test header`.

#![allow(clippy::expect_used)]

use std::path::Path;

#[test]
fn checked_in_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("ffi/cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = crate_dir.join("include").join("flor.h");
    if std::env::var_os("FLOR_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write ffi/include/flor.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "ffi/include/flor.h is stale: the C ABI in ffi/src changed. Regenerate it with \
         `FLOR_BLESS=1 cargo test -p flordb-ffi --test header` and commit the result."
    );
    for f in ["flor_open", "flor_free", "flor_last_error", "flor_name_intern", "flor_log_f64", "flor_query_dataframe"] {
        assert!(generated.contains(&format!("{f}(")), "{f} missing from the header");
    }
    assert!(generated.contains("FLOR_STATUS_NOT_A_REPOSITORY = 20"), "status codes are numbered explicitly");
    assert!(generated.contains("struct ArrowArrayStream *out"), "queries export an Arrow C stream");
}
