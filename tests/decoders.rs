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
