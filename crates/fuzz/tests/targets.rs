//! Every fuzz target over its committed corpus (`fuzz/corpus/<target>/`), then over a bounded
//! number of seeded mutations of it: CI's share of fuzzing, without an instrumented build.
//!
//! `GZSHIP_FUZZ_ITERATIONS` sets the number of mutations per target (default
//! [`ITERATIONS`]); a failure names the input, its index and the seed, and saves the input
//! under `target/fuzz-failures/` to add to the corpus once fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use gzship_fuzz::mutate::Mutator;
use gzship_fuzz::{TARGETS, corpus_dir};

/// Mutated inputs per target by default: a few seconds each in the test profile.
const ITERATIONS: u64 = 20_000;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read the corpus {}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

fn seed(target: &str) -> u64 {
    // FNV-1a of the name: stable across runs and Rust versions.
    target.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `run` on `target`'s corpus and then on mutations of it; panics naming the input.
fn drive(target: &str, run: impl Fn(&[u8])) {
    let corpus = corpus(target);
    assert!(!corpus.is_empty(), "the corpus of {target} is empty");
    let call = |what: &str, data: &[u8]| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(data))) {
            let saved = save_failure(target, data);
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "{target} panicked on {what} (saved as {saved}): {msg}\ninput: {:?}",
                String::from_utf8_lossy(data)
            );
        }
    };
    for (path, data) in &corpus {
        call(&path.display().to_string(), data);
    }
    let iterations = std::env::var("GZSHIP_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ITERATIONS);
    let inputs: Vec<Vec<u8>> = corpus.into_iter().map(|(_, d)| d).collect();
    let seed = seed(target);
    let mut mutator = Mutator::new(seed);
    for i in 0..iterations {
        let data = mutator.next(&inputs);
        call(&format!("mutation {i} of seed {seed:#x}"), &data);
    }
}

fn save_failure(target: &str, data: &[u8]) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(target);
    let path = dir.join(format!(
        "crash-{:016x}",
        seed(&String::from_utf8_lossy(data))
    ));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, data)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("not saved: {e}"),
    }
}

fn target(name: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"))
        .1
}

#[test]
fn fuzz_lambda_event() {
    drive("lambda_event", target("lambda_event"));
}

#[test]
fn fuzz_job_template() {
    drive("job_template", target("job_template"));
}

#[test]
fn fuzz_wire_json() {
    drive("wire_json", target("wire_json"));
}

#[test]
fn fuzz_urls() {
    drive("urls", target("urls"));
}

#[test]
fn fuzz_known_hosts() {
    drive("known_hosts", target("known_hosts"));
}

#[test]
fn fuzz_sftpd_packets() {
    // Its own served directory, removed at the end (the fuzz binary keeps one per process).
    let dir = tempfile::tempdir().expect("a temporary directory");
    gzship_fuzz::sftpd_fixture(dir.path()).expect("the sftpd fixture");
    drive("sftpd_packets", |data| {
        gzship_fuzz::sftpd_packets_in(dir.path(), data);
    });
}

#[test]
fn fuzz_s3lite_http() {
    drive("s3lite_http", target("s3lite_http"));
}

#[test]
fn fuzz_gunzip() {
    drive("gunzip", target("gunzip"));
}

#[test]
fn every_target_has_a_test_a_corpus_and_a_fuzz_binary() {
    let this = include_str!("targets.rs");
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(
            this.contains(&format!("fn fuzz_{name}()")),
            "no test for {name}"
        );
        assert!(corpus_dir(name).is_dir(), "no corpus for {name}");
        assert!(
            fuzz.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "no fuzz/fuzz_targets/{name}.rs"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} is not in fuzz/Cargo.toml"
        );
    }
}
