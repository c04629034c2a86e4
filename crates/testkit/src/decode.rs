//! Real decoders: a `.gz` file must decompress with GNU gzip, pigz, busybox's gunzip (the gzip
//! of Alpine-based containers, which has a small fixed header buffer) and Python's `gzip` module
//! to exactly the expected bytes, and pass `gzip -t`.

use std::path::Path;
use std::process::Command;

use crate::data::sha256;

/// Fails the test, with the fix, when `tool` is not on the PATH.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is missing: run scripts/install-test-deps.sh");
}

/// Decompresses `gz` with gzip, pigz, busybox and Python, checks each output's SHA-256 against
/// `want_sha256` (hex), and runs `gzip -t`.
pub fn assert_decodes(gz: &Path, want_sha256: &str) {
    for tool in ["gzip", "pigz", "busybox", "python3"] {
        require(tool);
    }
    let path = gz.to_str().expect("a UTF-8 path");
    let python =
        "import gzip,sys\nwith gzip.open(sys.argv[1]) as f:\n    sys.stdout.buffer.write(f.read())";
    let decoders: [(&str, Vec<&str>); 4] = [
        ("gzip", vec!["-dc", path]),
        ("pigz", vec!["-dc", path]),
        // busybox's zcat prints what it decoded before an error and exits 0; gunzip fails.
        ("busybox", vec!["gunzip", "-c", path]),
        ("python3", vec!["-c", python, path]),
    ];
    for (tool, args) in decoders {
        let out = Command::new(tool)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed on {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sha256(&out.stdout),
            want_sha256,
            "{tool} decoded other bytes"
        );
    }
    let t = Command::new("gzip")
        .args(["-t", path])
        .output()
        .expect("run gzip -t");
    assert!(
        t.status.success(),
        "gzip -t {path}: {}",
        String::from_utf8_lossy(&t.stderr)
    );
}
