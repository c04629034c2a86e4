//! Framing, assembly and padding checked the way a user would: the concatenated parts of a
//! job decompress with GNU gzip, pigz and Python's `gzip` module to exactly the source bytes.

use gzship_core::assemble::PartAssembler;
use gzship_core::gzip::{BlockCompressor, EMPTY_MEMBER, Level};
use gzship_core::plan::{Plan, Tuning, plan};
use gzship_core::store::body::Content;
use gzship_core::types::{KIB, MIB, MIN_PART_SIZE};
use gzship_testkit::data::{DataKind, generate, sha256};
use gzship_testkit::decode::assert_decodes;

/// Runs every task of `plan` over `source` sequentially, as workers would, and returns each
/// part's bytes in part-number order.
fn ship(source: &[u8], plan: &Plan, level: Level) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut compressor = BlockCompressor::new(level);
    for task in &plan.tasks {
        let mut asm = PartAssembler::new(task.window, plan.part_size, task.is_last).unwrap();
        let range = &source[task.range.start() as usize..task.range.end() as usize];
        if range.is_empty() {
            parts.extend(asm.push(&EMPTY_MEMBER).unwrap());
        }
        for (i, block) in range.chunks(plan.block_size as usize).enumerate() {
            let offset = task.range.start() + (i as u64) * plan.block_size;
            let member = compressor.compress(block, offset).unwrap();
            parts.extend(asm.push(&member.bytes).unwrap());
        }
        parts.push(asm.finish().unwrap().part);
    }
    for pair in parts.windows(2) {
        assert!(pair[0].number < pair[1].number, "part numbers ascend");
    }
    let n = parts.len();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < n {
            assert!(p.data.len() >= MIN_PART_SIZE, "part {} is short", p.number);
        }
    }
    parts
        .into_iter()
        .map(|p| match p.data.content() {
            Content::Memory(b) => b.to_vec(),
            Content::File(f) => std::fs::read(f).unwrap(),
        })
        .collect()
}

fn round_trip(source: &[u8], tuning: &Tuning) -> usize {
    let plan = plan(source.len() as u64, tuning).unwrap();
    let parts = ship(source, &plan, Level::default());
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("object.gz");
    std::fs::write(&gz, parts.concat()).unwrap();
    assert_decodes(&gz, &sha256(source));
    parts.len()
}

fn tuning(tasks: u32) -> Tuning {
    Tuning {
        tasks: Some(tasks),
        block_size: 256 * KIB,
        part_size: 5 * MIB,
        ..Tuning::default()
    }
}

#[test]
fn random_data_decodes() {
    let data = generate(DataKind::Random, 23 * MIB as usize + 12_345, 1);
    let parts = round_trip(&data, &tuning(2));
    assert!(
        parts >= 4,
        "incompressible data makes several parts, got {parts}"
    );
}

#[test]
fn log_data_decodes() {
    let data = generate(DataKind::Logs, 40 * MIB as usize + 777, 2);
    round_trip(&data, &tuning(3));
}

#[test]
fn all_zero_tasks_are_padded_and_decode() {
    let data = generate(DataKind::Zeros, 16 * MIB as usize + 1, 3);
    // Three tasks of zeros compress to a few KiB each: the first two are padded to 5 MiB.
    assert_eq!(round_trip(&data, &tuning(3)), 3);
}

#[test]
fn zero_middle_between_random_ranges_decodes() {
    let mut data = generate(DataKind::Random, 8 * MIB as usize, 4);
    data.extend(generate(DataKind::Zeros, 8 * MIB as usize, 0));
    data.extend(generate(DataKind::Random, 8 * MIB as usize - 3, 5));
    round_trip(&data, &tuning(3));
}

#[test]
fn empty_and_tiny_sources_decode() {
    for len in [0usize, 1, 100] {
        let data = generate(DataKind::Logs, len, 6);
        assert_eq!(round_trip(&data, &Tuning::default()), 1);
    }
}

/// DuckDB's CSV reader over a padded object reads the same rows as over the plain file. Its
/// gzip reader rejects headers over 32 KiB, which large FEXTRA padding used to overflow.
#[test]
fn duckdb_reads_a_padded_csv_object() {
    gzship_testkit::decode::require("python3");
    // 3 tasks of ~6 MiB: numbered rows, then one row repeated, then numbered rows again. Each
    // task compresses far under 5 MiB, so the first two are padded.
    let mut csv = b"id,host,status,bytes\n".to_vec();
    let mut id = 0u64;
    while csv.len() < 18 * MIB as usize {
        if (6 * MIB as usize..12 * MIB as usize).contains(&csv.len()) {
            csv.extend_from_slice(b"0,repeated.example.com,200,0\n");
        } else {
            id += 1;
            let status = [200, 301, 404, 500][(id % 4) as usize];
            let row = format!(
                "{id},host{}.example.com,{status},{}\n",
                id % 97,
                id * 31 % 10_007
            );
            csv.extend_from_slice(row.as_bytes());
        }
    }
    let plan = plan(csv.len() as u64, &tuning(3)).unwrap();
    let parts = ship(&csv, &plan, Level::default());
    let padded = parts[..parts.len() - 1]
        .iter()
        .filter(|p| p.len() as u64 == MIN_PART_SIZE)
        .count();
    assert_eq!(padded, 2, "the first two tasks are padded to exactly 5 MiB");

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("rows.csv");
    let gz = dir.path().join("rows.csv.gz");
    std::fs::write(&plain, &csv).unwrap();
    std::fs::write(&gz, parts.concat()).unwrap();
    assert_decodes(&gz, &sha256(&csv));
    // No progress bar: DuckDB prints one to stdout once a query runs over 2 s (a loaded
    // machine).
    let script = "import duckdb, sys\n\
        db = duckdb.connect()\n\
        db.execute('SET enable_progress_bar = false')\n\
        a, b = (f\"read_csv('{p}')\" for p in sys.argv[1:3])\n\
        n = db.sql(f'select count(*) from {a}').fetchall()[0][0]\n\
        d = db.sql(f'select count(*) from ((from {a} except all from {b}) \
        union all (from {b} except all from {a}))').fetchall()[0][0]\n\
        print(n, d)";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&gz)
        .arg(&plain)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "DuckDB read_csv on the padded object failed (is duckdb installed? run \
         scripts/install-test-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = csv.iter().filter(|&&b| b == b'\n').count() - 1;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{rows} 0"),
        "DuckDB reads every row of the plain file from the object, and no other"
    );
}
