use std::path::Path;

/// The checked-in `v1beta1.rs` is what `protoc` and prost make of `proto/api.proto` today.
/// Needs `protoc` (Debian's protobuf-compiler, which `.ci/run` installs); without it the test
/// fails under `TIDELET_REQUIRE_PRIVILEGED=1` (CI) and is skipped with a message otherwise.
#[test]
fn generated_code_is_current() {
    let Some(out) = generate() else { return };
    let want = std::fs::read_to_string(out.path().join("v1beta1.rs")).unwrap();
    let have = std::fs::read_to_string(crate_dir().join("src/v1beta1.rs")).unwrap();
    assert!(
        want == have,
        "src/v1beta1.rs is not what proto/api.proto generates: run `cargo test -p tidelet-deviceplugin-api -- --ignored regenerate`"
    );
}

/// Rewrites `src/v1beta1.rs` from `proto/api.proto`.
#[test]
#[ignore]
fn regenerate() {
    let out = generate().expect("protoc is needed");
    std::fs::copy(
        out.path().join("v1beta1.rs"),
        crate_dir().join("src/v1beta1.rs"),
    )
    .unwrap();
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn generate() -> Option<tempfile::TempDir> {
    let have_protoc = std::process::Command::new("protoc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_protoc {
        assert!(
            !tidelet_testgate::required(),
            "protoc is not installed (apt-get install protobuf-compiler)"
        );
        eprintln!("skipped: protoc is not installed");
        return None;
    }
    let out = tempfile::tempdir().unwrap();
    let proto = crate_dir().join("proto");
    tonic_prost_build::configure()
        .out_dir(out.path())
        .compile_protos(&[proto.join("api.proto")], &[proto])
        .unwrap();
    Some(out)
}
