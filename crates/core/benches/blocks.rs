//! Micro-benchmarks: block compression (one core) per level and block size, and part assembly.
//! Not a test: it measures and prints a Markdown table (and writes it with `--out FILE`).
//! Run it with `bash bench/run.sh --micro`.
//!
//! Block size trades ratio (each block is a gzip member that restarts deflate's 32 KiB window
//! and its Huffman statistics) against memory (a worker holds about 2 x compress_parallelism
//! blocks) and parallelism on short ranges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use gzship_core::assemble::PartAssembler;
use gzship_core::gzip::{BlockCompressor, Level};
use gzship_core::{PartNumber, PartWindow};
use gzship_testkit::data::{DataKind, generate};

const MIB: usize = 1 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut input_mib = 64usize;
    let mut repeat = 3usize;
    let mut out_file = None;
    let mut levels = vec![1u8, 6, 9];
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bench" => {}
            "--input-mib" => input_mib = it.next().unwrap().parse().unwrap(),
            "--repeat" => repeat = it.next().unwrap().parse().unwrap(),
            "--out" => out_file = it.next(),
            "--levels" => {
                levels = it
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|l| l.parse().unwrap())
                    .collect();
            }
            _ => panic!("unknown option {flag}: --input-mib --repeat --levels --out"),
        }
    }
    let logs = generate(DataKind::Logs, input_mib * MIB, 42);
    let random = generate(DataKind::Random, 16 * MIB, 43);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Block compression on one core (gzship_core::gzip::BlockCompressor, libdeflate), \
         {input_mib} MiB of generated access logs and 16 MiB of random bytes, median of {repeat}.\n"
    );
    md.push_str("| level | block | logs MB/s | logs ratio | random MB/s | random ratio |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|\n");
    let block_sizes = [256 * 1024, MIB, 2 * MIB, 4 * MIB, 8 * MIB];
    for &level in &levels {
        for &block in &block_sizes {
            let mut cells = Vec::new();
            for data in [&logs, &random] {
                let mut c = BlockCompressor::new(Level::new(level).unwrap());
                let mut out = 0usize;
                let times: Vec<f64> = (0..repeat)
                    .map(|_| {
                        out = 0;
                        let t = Instant::now();
                        for (i, chunk) in data.chunks(block).enumerate() {
                            let m = c.compress(chunk, (i * block) as u64).unwrap();
                            out += m.bytes.len();
                            black_box(&m);
                        }
                        t.elapsed().as_secs_f64()
                    })
                    .collect();
                let secs = median(times);
                cells.push(format!(
                    "{:.0} | {:.3}",
                    data.len() as f64 / secs / 1e6,
                    data.len() as f64 / out as f64
                ));
            }
            let line = format!(
                "| {level} | {} | {} | {} |",
                if block < MIB {
                    format!("{} KiB", block / 1024)
                } else {
                    format!("{} MiB", block / MIB)
                },
                cells[0],
                cells[1]
            );
            eprintln!("{line}");
            let _ = writeln!(md, "{line}");
        }
    }

    // Part assembly: level-6 members of 4 MiB log blocks, pushed until 2 GiB of compressed
    // bytes went through the assembler.
    let mut c = BlockCompressor::new(Level::default());
    let members: Vec<_> = logs
        .chunks(4 * MIB)
        .enumerate()
        .map(|(i, b)| c.compress(b, (i * 4 * MIB) as u64).unwrap().bytes)
        .collect();
    let member_bytes: usize = members.iter().map(|m| m.len()).sum();
    md.push_str("\n| part assembly | members | MB/s of compressed bytes |\n|---|---:|---:|\n");
    for part_mib in [5u64, 16, 64] {
        let total = 2usize << 30;
        let times: Vec<f64> = (0..repeat)
            .map(|_| {
                let window = PartWindow::new(PartNumber::new(1).unwrap(), 10_000).unwrap();
                let mut a = PartAssembler::new(window, part_mib << 20, true).unwrap();
                let t = Instant::now();
                let mut pushed = 0usize;
                while pushed < total {
                    for m in &members {
                        for part in a.push(m).unwrap() {
                            black_box(part);
                        }
                    }
                    pushed += member_bytes;
                }
                black_box(a.finish().unwrap());
                t.elapsed().as_secs_f64()
            })
            .collect();
        let rounds = total.div_ceil(member_bytes);
        let line = format!(
            "| PartAssembler push+finish, {part_mib} MiB parts | {} of ~{} KiB | {:.0} |",
            members.len() * rounds,
            member_bytes / members.len() / 1024,
            (rounds * member_bytes) as f64 / median(times) / 1e6
        );
        eprintln!("{line}");
        let _ = writeln!(md, "{line}");
    }
    println!("{md}");
    if let Some(path) = out_file {
        std::fs::write(&path, &md).unwrap();
        eprintln!("wrote {path}");
    }
}
