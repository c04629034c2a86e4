//! The whole-job benchmark of issue 7: gzship against the pipeline a user would write
//! (`ssh host cat FILE | pigz | <multipart upload>`) and against the machine's ceilings, on one
//! machine, in one run. Not a test: it measures and writes a Markdown table and JSON.
//! Run it with `bash bench/run.sh`, which builds what it needs and passes the paths.
//!
//! Every row runs as child processes under `/usr/bin/time` (client CPU and peak RSS); the
//! sshd side (session processes, `sftp-server`, `cat`) is the growth of the listening sshd's
//! reaped-children CPU (`cutime + cstime` in `/proc/PID/stat`), read once every session has
//! ended. The S3 server (gzship-s3lite, standing in for S3) is measured too but not counted.
//! Cores busy is the whole machine's busy time over the run (`/proc/stat`), as a fraction of
//! all cores; one-core rows pin the client to core 0 (`taskset -c 0`) and also give that
//! core's busy fraction.
//! Rows are interleaved (run 1 of every row, then run 2, ...) so a noisy minute on this shared
//! machine hits every row alike, and each figure is the median of the runs. `--variant
//! NAME=PATH` (repeatable) runs every gzship row once per build, side by side in each repeat,
//! for before/after comparisons that the machine's drifts hit alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gzship_core::gzip::{BlockCompressor, Level};
use gzship_core::worker::thread_cpu_time;
use gzship_testkit::data::{self, DataKind};
use gzship_testkit::sshd::Sshd;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;
/// Clock ticks per second of `/proc/PID/stat` (Linux's USER_HZ on every common build).
const CLK_TCK: f64 = 100.0;
const BUCKET: &str = "bench";

struct Args {
    gzship: PathBuf,
    s3lite: PathBuf,
    dir: PathBuf,
    out: PathBuf,
    size_mib: u64,
    big_size_mib: u64,
    repeat: usize,
    tasks: u32,
    only: Option<String>,
    /// Levels of the one-core `gzship run` rows (`--one-core-levels 1,6,9`; default 6).
    one_core_levels: Vec<u8>,
    /// Builds of gzship to compare (`--variant NAME=PATH`, repeatable): every gzship row runs
    /// once per variant, side by side in each repeat, as `ROW@NAME`.
    variants: Vec<(String, PathBuf)>,
}

fn parse_args() -> Args {
    let mut a = Args {
        gzship: "target/release/gzship".into(),
        s3lite: "target/release/gzship-s3lite".into(),
        dir: "/dev/shm".into(),
        out: "bench/results".into(),
        size_mib: 1024,
        big_size_mib: 4096,
        repeat: 3,
        tasks: 4,
        only: None,
        one_core_levels: vec![6],
        variants: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        if flag == "--compress-only" {
            // Child mode: gzship's compression alone (see `compress_only`).
            let rest: Vec<String> = it.collect();
            compress_only(&rest);
            std::process::exit(0);
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--gzship" => a.gzship = value.into(),
            "--s3lite" => a.s3lite = value.into(),
            "--dir" => a.dir = value.into(),
            "--out" => a.out = value.into(),
            "--size-mib" => a.size_mib = value.parse().unwrap(),
            "--big-size-mib" => a.big_size_mib = value.parse().unwrap(),
            "--repeat" => a.repeat = value.parse().unwrap(),
            "--tasks" => a.tasks = value.parse().unwrap(),
            "--only" => a.only = Some(value),
            "--one-core-levels" => {
                a.one_core_levels = value.split(',').map(|l| l.parse().unwrap()).collect()
            }
            "--variant" => {
                let (name, path) = value
                    .split_once('=')
                    .unwrap_or_else(|| panic!("--variant takes NAME=PATH, not {value:?}"));
                a.variants.push((name.to_owned(), path.into()));
            }
            _ => panic!(
                "unknown option {flag}: --gzship --s3lite --dir --out --size-mib --big-size-mib \
                 --repeat --tasks --only --one-core-levels --variant"
            ),
        }
    }
    a
}

/// `--compress-only FILE LEVEL BLOCK_MIB THREADS [AHEAD]`: compresses FILE in blocks with
/// gzship's `BlockCompressor` on THREADS threads and prints `{"out": compressed bytes,
/// "compress_cpu": CPU-s inside the compressor calls}`. Nothing is written. Without AHEAD each
/// thread reads its next block itself with `pread` just before compressing it; with AHEAD, one
/// reader thread fills blocks from a pool and hands them over up to AHEAD blocks ahead, as a
/// worker's reader does (the compressors then read input another core wrote earlier).
fn compress_only(args: &[String]) {
    let file = std::fs::File::open(&args[0]).unwrap();
    let level = Level::new(args[1].parse().unwrap()).unwrap();
    let block = args[2].parse::<u64>().unwrap() * MIB;
    let threads: usize = args[3].parse().unwrap();
    let ahead: Option<usize> = args.get(4).map(|a| a.parse().unwrap());
    let size = file.metadata().unwrap().len();
    let file = Arc::new(file);
    let next = Arc::new(AtomicU64::new(0));
    let out = Arc::new(AtomicU64::new(0));
    let cpu_ns = Arc::new(AtomicU64::new(0));
    // With AHEAD: blocks filled by one reader, handed over through a bounded queue, and back.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(ahead.unwrap_or(1));
    let full_rx = Arc::new(std::sync::Mutex::new(full_rx));
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = ahead.map(|ahead| {
        let (file, empty_tx) = (file.clone(), empty_tx.clone());
        for _ in 0..ahead + threads + 1 {
            empty_tx.send(vec![0u8; block as usize]).unwrap();
        }
        std::thread::spawn(move || {
            let mut offset = 0;
            while offset < size {
                let mut buf = empty_rx.recv().unwrap();
                let len = block.min(size - offset) as usize;
                buf.resize(len, 0);
                file.read_exact_at(&mut buf, offset).unwrap();
                full_tx.send((offset, buf)).unwrap();
                offset += len as u64;
            }
        })
    });
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (file, next, out, cpu_ns) =
                (file.clone(), next.clone(), out.clone(), cpu_ns.clone());
            let (full_rx, empty_tx) = (full_rx.clone(), empty_tx.clone());
            std::thread::spawn(move || {
                let mut c = BlockCompressor::new(level);
                let mut own = vec![0u8; block as usize];
                loop {
                    let (offset, buf) = if ahead.is_some() {
                        let Ok(got) = full_rx.lock().unwrap().recv() else {
                            break;
                        };
                        got
                    } else {
                        let offset = next.fetch_add(block, Ordering::Relaxed);
                        if offset >= size {
                            break;
                        }
                        let len = block.min(size - offset) as usize;
                        own.resize(len, 0);
                        file.read_exact_at(&mut own, offset).unwrap();
                        (offset, std::mem::take(&mut own))
                    };
                    let t0 = thread_cpu_time();
                    let member = c.compress(&buf, offset).unwrap();
                    let cpu = thread_cpu_time().saturating_sub(t0);
                    cpu_ns.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
                    out.fetch_add(member.bytes.len() as u64, Ordering::Relaxed);
                    if ahead.is_some() {
                        let _ = empty_tx.send(buf);
                    } else {
                        own = buf;
                    }
                }
            })
        })
        .collect();
    drop(empty_tx);
    for h in handles {
        h.join().unwrap();
    }
    if let Some(r) = reader {
        r.join().unwrap();
    }
    let compress_cpu = cpu_ns.load(Ordering::Relaxed) as f64 / 1e9;
    println!(
        "{}",
        json!({ "out": out.load(Ordering::Relaxed), "compress_cpu": compress_cpu })
    );
}

/// One measured run of a row.
#[derive(Debug, Clone, Default)]
struct Run {
    wall: f64,
    /// user + sys of the client processes (everything under `/usr/bin/time`).
    client_cpu: f64,
    /// CPU of the sshd side: session processes, sftp-server or the remote `cat`.
    sshd_cpu: f64,
    /// CPU of the S3 server (not counted in the row's CPU).
    s3_cpu: f64,
    /// Peak RSS of the largest client process (the gzship process in gzship rows), KiB.
    max_rss_kib: u64,
    /// Compressed bytes, when the row compresses.
    out_bytes: Option<u64>,
    /// Busy time of the whole machine over the run, as a fraction of all cores.
    busy: f64,
    /// Busy fraction of core 0, the core one-core rows are pinned to.
    busy_core0: f64,
}

/// A row: a shell command and what it reads.
struct Row {
    id: String,
    label: String,
    group: &'static str,
    input: PathBuf,
    input_kind: &'static str,
    size: u64,
    command: String,
    /// How to read the compressed size from the command's stdout.
    output: Output,
    runs: Vec<Run>,
}

#[derive(Clone, Copy)]
enum Output {
    None,
    /// A bare number (`wc -c`).
    Number,
    /// A JSON object with this field.
    Json(&'static str),
}

struct Env {
    sshd: Sshd,
    s3_pid: u32,
    s3_url: String,
    ssh: String,
    gzship: String,
}

fn proc_cpu(pid: u32, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<u64> = stat[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After "pid (comm) ": state=0 ... utime=11 stime=12 cutime=13 cstime=14.
    let ticks = if children {
        f[13] + f[14]
    } else {
        f[11] + f[12]
    };
    ticks as f64 / CLK_TCK
}

/// Busy and total jiffies of the whole machine (`cpu`) and of core 0 (`cpu0`) from
/// `/proc/stat`: busy is everything but idle and iowait.
fn cpu_jiffies() -> [(u64, u64); 2] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let line = |name: &str| {
        let f: Vec<u64> = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("/proc/stat has no {name} line"))
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = f.iter().take(8).sum();
        (total - f[3] - f[4], total)
    };
    [line("cpu"), line("cpu0")]
}

fn busy_between(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return f64::NAN;
    }
    after.0.saturating_sub(before.0) as f64 / total as f64
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn measure(env: &Env, command: &str, output: Output) -> Run {
    let times = tempfile::NamedTempFile::new().unwrap();
    let sshd_before = proc_cpu(env.sshd.pid(), true);
    let s3_before = proc_cpu(env.s3_pid, false);
    let jiffies_before = cpu_jiffies();
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M", "-o"])
        .arg(times.path())
        .args(["bash", "-c", &format!("set -eo pipefail; {command}")])
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let jiffies_after = cpu_jiffies();
    assert!(
        out.status.success(),
        "{command} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The sshd side is counted once sshd has reaped every session.
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.sshd.session_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sshd_cpu = proc_cpu(env.sshd.pid(), true) - sshd_before;
    let s3_cpu = proc_cpu(env.s3_pid, false) - s3_before;
    let t = std::fs::read_to_string(times.path()).unwrap();
    let last = t.lines().last().unwrap_or_default();
    let v: Vec<f64> = last
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let out_bytes = match output {
        Output::None => None,
        Output::Number => Some(stdout.trim().parse().unwrap()),
        Output::Json(field) => {
            let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap();
            let v: Value = serde_json::from_str(line).unwrap();
            Some(v[field].as_u64().unwrap())
        }
    };
    Run {
        wall,
        client_cpu: v[0] + v[1],
        sshd_cpu,
        s3_cpu,
        max_rss_kib: v[2] as u64,
        out_bytes,
        busy: busy_between(jiffies_before[0], jiffies_after[0]),
        busy_core0: busy_between(jiffies_before[1], jiffies_after[1]),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of a row's runs.
struct Stats {
    mb_s: f64,
    wall: f64,
    ratio: Option<f64>,
    out_bytes: Option<f64>,
    cpu_per_gib: f64,
    client_per_gib: f64,
    sshd_per_gib: f64,
    s3_per_gib: f64,
    rss_mib: f64,
    rss_max_mib: f64,
    busy: f64,
    busy_core0: f64,
}

fn stats(row: &Row) -> Stats {
    let gib = row.size as f64 / GIB;
    let m = |f: &dyn Fn(&Run) -> f64| median(row.runs.iter().map(f).collect());
    let wall = m(&|r| r.wall);
    let out = row.runs[0]
        .out_bytes
        .map(|_| m(&|r| r.out_bytes.unwrap_or(0) as f64));
    Stats {
        mb_s: row.size as f64 / wall / 1e6,
        wall,
        ratio: out.map(|o| row.size as f64 / o),
        out_bytes: out,
        cpu_per_gib: m(&|r| (r.client_cpu + r.sshd_cpu) / gib),
        client_per_gib: m(&|r| r.client_cpu / gib),
        sshd_per_gib: m(&|r| r.sshd_cpu / gib),
        s3_per_gib: m(&|r| r.s3_cpu / gib),
        rss_mib: m(&|r| r.max_rss_kib as f64 / 1024.0),
        rss_max_mib: row
            .runs
            .iter()
            .map(|r| r.max_rss_kib as f64 / 1024.0)
            .fold(0.0, f64::max),
        busy: m(&|r| r.busy),
        busy_core0: m(&|r| r.busy_core0),
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn start_s3lite(path: &Path) -> (Child, String) {
    let mut child = Command::new(path)
        .args(["serve", "--bucket", BUCKET])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("http://"), "s3lite printed {line:?}");
    (child, line.trim().to_owned())
}

fn main() {
    let args = parse_args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let work = tempfile::Builder::new()
        .prefix("gzship-bench-")
        .tempdir_in(&args.dir)
        .unwrap();
    let size = args.size_mib * MIB;
    let logs = work.path().join("access.log");
    let random = work.path().join("random.bin");
    let t = Instant::now();
    data::write_file(&logs, DataKind::Logs, size, 42).unwrap();
    data::write_file(&random, DataKind::Random, size, 43).unwrap();
    eprintln!(
        "generated {} MiB of logs and of random bytes in {} in {:.1?}",
        args.size_mib,
        work.path().display(),
        t.elapsed()
    );

    let sshd = Sshd::start();
    let kh = work.path().join("known_hosts");
    std::fs::write(&kh, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let key = sshd.client_key().private_key_path.clone();
    let (mut s3, s3_url) = start_s3lite(&args.s3lite);
    let ssh = format!(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -i {} -p {} {}@127.0.0.1",
        sh_quote(&kh.display().to_string()),
        sh_quote(&key.display().to_string()),
        sshd.port(),
        sshd.user()
    );
    let gzship = format!(
        "{} run --identity {} --host-key {} --s3-endpoint {s3_url} --json",
        sh_quote(&args.gzship.display().to_string()),
        sh_quote(&key.display().to_string()),
        sshd.host_key_fingerprint()
    );
    let env = Env {
        s3_pid: s3.id(),
        s3_url: s3_url.clone(),
        ssh,
        gzship,
        sshd,
    };
    let me = std::env::current_exe().unwrap();
    let s3lite = sh_quote(&args.s3lite.display().to_string());

    let mut rows: Vec<Row> = Vec::new();
    let add = |rows: &mut Vec<Row>,
               id: &str,
               label: String,
               group: &'static str,
               input: &Path,
               kind: &'static str,
               size: u64,
               command: String,
               output: Output| {
        rows.push(Row {
            id: id.to_owned(),
            label,
            group,
            input: input.to_owned(),
            input_kind: kind,
            size,
            command,
            output,
            runs: Vec::new(),
        });
    };
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let src_url = |p: &Path| {
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            env.sshd.user(),
            env.sshd.port(),
            p.display()
        )
    };
    for (file, kind) in [(&logs, "logs"), (&random, "random")] {
        let f = q(file);
        if kind == "logs" {
            add(
                &mut rows,
                "ssh-cat",
                "`ssh host cat FILE > /dev/null` (OpenSSH's default cipher)".into(),
                "ceiling",
                file,
                kind,
                size,
                format!("{} cat {f} > /dev/null", env.ssh),
                Output::None,
            );
            add(
                &mut rows,
                "ssh-cat-aes",
                "`ssh -c aes128-gcm@openssh.com host cat FILE > /dev/null` (gzship's cipher)"
                    .into(),
                "ceiling",
                file,
                kind,
                size,
                format!("{} -c aes128-gcm@openssh.com cat {f} > /dev/null", env.ssh),
                Output::None,
            );
        }
        add(
            &mut rows,
            &format!("pigz-6-{kind}"),
            format!("`pigz -p{cores} -6 < FILE`"),
            "ceiling",
            file,
            kind,
            size,
            format!("pigz -p{cores} -6 < {f} | wc -c"),
            Output::Number,
        );
        for level in [6, 1] {
            if kind == "random" && level == 1 {
                continue;
            }
            add(
                &mut rows,
                &format!("compress-{level}-{kind}"),
                format!("gzship compression alone, level {level}, 4 MiB blocks, {cores} threads"),
                "ceiling",
                file,
                kind,
                size,
                format!("{} --compress-only {f} {level} 4 {cores}", q(&me)),
                Output::Json("out"),
            );
        }
        add(
            &mut rows,
            &format!("pipeline-{kind}"),
            format!(
                "`ssh host cat FILE | pigz -p{cores} -6 | gzship-s3lite put` (16 MiB parts, 4 in flight)"
            ),
            "pipeline",
            file,
            kind,
            size,
            format!(
                "{} cat {f} | pigz -p{cores} -6 | {s3lite} put --endpoint {} s3://{BUCKET}/pipeline-{kind}",
                env.ssh, env.s3_url
            ),
            Output::Json("bytes"),
        );
        // Two-core rows of the one-core levels too, for the second vCPU's worth.
        let more_levels = args.one_core_levels.iter().filter(|l| ![1, 6].contains(*l));
        let runs = [(6, 1), (6, args.tasks), (1, 1), (1, args.tasks)]
            .into_iter()
            .chain(more_levels.map(|&l| (l, 1)));
        for (level, tasks) in runs {
            if kind == "random" && (level != 6 || tasks == 1) {
                continue;
            }
            add(
                &mut rows,
                &format!("gzship-{level}-{tasks}t-{kind}"),
                format!(
                    "`gzship run` level {level}, {tasks} task{} (concurrency 2)",
                    if tasks == 1 { "" } else { "s" }
                ),
                "gzship",
                file,
                kind,
                size,
                format!(
                    "exec {} --level {level} --tasks {tasks} {} s3://{BUCKET}/gzship-{level}-{tasks}-{kind}.gz",
                    env.gzship,
                    src_url(file)
                ),
                Output::Json("object_bytes"),
            );
        }
        if kind == "logs" {
            // One core (issue 15): gzship pinned to core 0 beside gzship's compression alone
            // pinned there, the ceiling it is held to. sshd and the S3 server are not pinned.
            add(
                &mut rows,
                "compress-6-logs-1core",
                "gzship compression alone, level 6, 4 MiB blocks, 1 thread, `taskset -c 0`".into(),
                "one-core",
                file,
                kind,
                size,
                format!("taskset -c 0 {} --compress-only {f} 6 4 1", q(&me)),
                Output::Json("out"),
            );
            // Per level, a worker vCPU's speed (issue 12: the duration model's table).
            for &level in &args.one_core_levels {
                add(
                    &mut rows,
                    &format!("gzship-{level}-1t-logs-1core"),
                    format!("`taskset -c 0 gzship run` level {level}, 1 task (one core)"),
                    "one-core",
                    file,
                    kind,
                    size,
                    format!(
                        "exec taskset -c 0 {} --level {level} --tasks 1 {} s3://{BUCKET}/gzship-{level}-1-logs-1core.gz",
                        env.gzship,
                        src_url(file)
                    ),
                    Output::Json("object_bytes"),
                );
            }
        }
        if kind == "random" {
            // Parts as big as the planner picks for sources of about 5 TiB: spooled to the
            // system's temporary directory at the default part memory, held in memory with
            // enough of it. Peak RSS should not grow with the part size in the first row.
            for (id, label, flag) in [
                (
                    "gzship-6-1t-random-512mib-parts-spooled",
                    "`gzship run` level 6, 1 task, 512 MiB parts (default part memory: spooled to /tmp)",
                    "",
                ),
                (
                    "gzship-6-1t-random-512mib-parts-memory",
                    "`gzship run` level 6, 1 task, 512 MiB parts, --part-memory 2GiB (in memory)",
                    "--part-memory 2GiB",
                ),
            ] {
                add(
                    &mut rows,
                    id,
                    label.into(),
                    "gzship",
                    file,
                    kind,
                    size,
                    format!(
                        "exec {} --level 6 --tasks 1 --part-size 512MiB {flag} {} s3://{BUCKET}/{id}.gz",
                        env.gzship,
                        src_url(file)
                    ),
                    Output::Json("object_bytes"),
                );
            }
        }
    }
    if let Some(only) = &args.only {
        rows.retain(|r| only.split(',').any(|o| r.id.contains(o)));
    }
    if !args.variants.is_empty() {
        rows = per_variant(
            rows,
            &sh_quote(&args.gzship.display().to_string()),
            &args.variants,
        );
    }

    // gzip -6 on one core: the ratio to hold gzship to (not timed against anything).
    let t = Instant::now();
    let gzip6: u64 = sh(&format!("gzip -6 < {} | wc -c", q(&logs)))
        .parse()
        .unwrap();
    eprintln!(
        "gzip -6 reference: {} -> {gzip6} bytes (ratio {:.3}) in {:.1?}",
        size,
        size as f64 / gzip6 as f64,
        t.elapsed()
    );

    for rep in 0..args.repeat {
        for row in rows.iter_mut() {
            let run = measure(&env, &row.command, row.output);
            eprintln!(
                "run {}/{} {:<22} {:>7.1} MB/s  client {:>5.2}s  sshd {:>5.2}s  s3 {:>5.2}s  busy {:>4.1}% (core 0 {:>4.1}%)  rss {:>6.1} MiB{}",
                rep + 1,
                args.repeat,
                row.id,
                row.size as f64 / run.wall / 1e6,
                run.client_cpu,
                run.sshd_cpu,
                run.s3_cpu,
                100.0 * run.busy,
                100.0 * run.busy_core0,
                run.max_rss_kib as f64 / 1024.0,
                run.out_bytes
                    .map(|o| format!("  ratio {:.3}", row.size as f64 / o as f64))
                    .unwrap_or_default()
            );
            row.runs.push(run);
        }
    }

    // Peak RSS on a larger input: gzship alone, default tasks and one task.
    if args.big_size_mib > 0 && args.only.is_none() {
        std::fs::remove_file(&random).unwrap();
        let big = work.path().join("access-big.log");
        let big_size = args.big_size_mib * MIB;
        data::write_file(&big, DataKind::Logs, big_size, 44).unwrap();
        let mut big_rows = Vec::new();
        for tasks in [None, Some(1)] {
            let (id, label, flag) = match tasks {
                None => (
                    "gzship-6-default-big".to_string(),
                    format!(
                        "`gzship run` level 6, default tasks ({} GiB: one per GiB, concurrency 2)",
                        args.big_size_mib / 1024
                    ),
                    String::new(),
                ),
                Some(t) => (
                    format!("gzship-6-{t}t-big"),
                    format!("`gzship run` level 6, {t} task"),
                    format!("--tasks {t}"),
                ),
            };
            add(
                &mut big_rows,
                &id,
                label,
                "gzship",
                &big,
                "logs",
                big_size,
                format!(
                    "exec {} --level 6 {flag} {} s3://{BUCKET}/big.gz",
                    env.gzship,
                    src_url(&big)
                ),
                Output::Json("object_bytes"),
            );
        }
        for rep in 0..args.repeat {
            for row in big_rows.iter_mut() {
                let run = measure(&env, &row.command, row.output);
                eprintln!(
                    "run {}/{} {:<22} {:>7.1} MB/s  rss {:>6.1} MiB",
                    rep + 1,
                    args.repeat,
                    row.id,
                    row.size as f64 / run.wall / 1e6,
                    run.max_rss_kib as f64 / 1024.0
                );
                row.runs.push(run);
            }
        }
        rows.extend(big_rows);
    }
    let _ = s3.kill();
    let _ = s3.wait();

    report(&args, &rows, gzip6, size, cores);
}

/// The median over repeats of `f(run of a, run of b)`, runs paired by repeat (both rows cover
/// the same input size).
fn paired(a: &Row, b: &Row, f: impl Fn(&Run, &Run) -> f64) -> f64 {
    median(a.runs.iter().zip(&b.runs).map(|(x, y)| f(x, y)).collect())
}

/// Each row that runs `gzship` (its command names `bin`) once per variant, next to each other,
/// as `ROW@NAME`; other rows as they are.
fn per_variant(rows: Vec<Row>, bin: &str, variants: &[(String, PathBuf)]) -> Vec<Row> {
    let mut out = Vec::new();
    for row in rows {
        if !row.command.contains(bin) {
            out.push(row);
            continue;
        }
        for (name, path) in variants {
            out.push(Row {
                id: format!("{}@{name}", row.id),
                label: format!("{} [{name}]", row.label),
                input: row.input.clone(),
                command: row
                    .command
                    .replace(bin, &sh_quote(&path.display().to_string())),
                runs: Vec::new(),
                ..row
            });
        }
    }
    out
}

fn report(args: &Args, rows: &[Row], gzip6: u64, size: u64, cores: usize) {
    let date = sh("date -u +%Y-%m-%d");
    let time = sh("date -u +%H:%M");
    let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-");
    let machine = json!({
        "date": date,
        "time_utc": time,
        "cores": cores,
        "cpu": cpu,
        "memory": sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"),
        "kernel": sh("uname -r"),
        "rustc": sh("rustc --version"),
        "openssh": sh("ssh -V 2>&1"),
        "pigz": sh("pigz -V 2>&1"),
        "source_dir": args.dir.display().to_string(),
        "repeat": args.repeat,
    });
    let all: Vec<(&Row, Stats)> = rows.iter().map(|r| (r, stats(r))).collect();
    let find = |id: &str| all.iter().find(|(r, _)| r.id == id).map(|(_, s)| s);
    let find_row = |id: &str| rows.iter().find(|r| r.id == id);
    // Row ids of each variant end in "@NAME"; without variants, in nothing.
    let suffixes: Vec<String> = if args.variants.is_empty() {
        vec![String::new()]
    } else {
        args.variants.iter().map(|(n, _)| format!("@{n}")).collect()
    };
    // The two-core gzship rows over logs that targets are set for: 1 task and --tasks.
    let two_core = |sfx: &str| {
        [
            format!("gzship-6-1t-logs{sfx}"),
            format!("gzship-6-{}t-logs{sfx}", args.tasks),
        ]
    };

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {date} {time} UTC on {cores} cores ({}), {}, {}; source files on {} (tmpfs); \
         OpenSSH sshd and gzship-s3lite on 127.0.0.1; median of {} runs per row, rows interleaved.\n",
        cpu.trim(),
        machine["memory"].as_str().unwrap_or_default(),
        machine["openssh"].as_str().unwrap_or_default(),
        args.dir.display(),
        args.repeat
    );
    md.push_str("| row | input | MB/s | ratio | CPU s/GiB (client + sshd) | client | sshd | S3 server (not counted) | cores busy | peak RSS MiB (max) |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (r, s) in &all {
        let busy = if r.group == "one-core" {
            format!(
                "{:.1}% (core 0: {:.1}%)",
                100.0 * s.busy,
                100.0 * s.busy_core0
            )
        } else {
            format!("{:.1}%", 100.0 * s.busy)
        };
        let _ = writeln!(
            md,
            "| {} | {} {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {busy} | {:.0} ({:.0}) |",
            // A `|` inside a table cell ends the cell, even in a code span.
            r.label.replace('|', "\\|"),
            human(r.size),
            r.input_kind,
            s.mb_s,
            s.ratio
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
            s.cpu_per_gib,
            s.client_per_gib,
            s.sshd_per_gib,
            s.s3_per_gib,
            s.rss_mib,
            s.rss_max_mib
        );
    }
    let _ = writeln!(
        md,
        "\nReference: `gzip -6` (one core) makes {} of logs into {gzip6} bytes, ratio {:.3}.",
        human(size),
        size as f64 / gzip6 as f64
    );

    // Issue 7's targets.
    let mut targets = Vec::new();
    let pipeline = find("pipeline-logs");
    let compress = find("compress-6-logs");
    let cat = find("ssh-cat-aes");
    for id in suffixes.iter().flat_map(|sfx| two_core(sfx)) {
        let (Some(g), Some(p)) = (find(&id), pipeline) else {
            continue;
        };
        let speedup = g.mb_s / p.mb_s;
        let size_vs_gzip = g.out_bytes.unwrap_or(f64::NAN) / gzip6 as f64;
        targets.push(json!({
            "target": format!("{id}: throughput >= 1.5x the pipeline"),
            "value": speedup, "holds": speedup >= 1.5 }));
        targets.push(json!({
            "target": format!("{id}: compressed size <= 1.02x gzip -6's"),
            "value": size_vs_gzip, "holds": size_vs_gzip <= 1.02 }));
        if let (Some(c), Some(cat)) = (compress, cat) {
            let budget = c.cpu_per_gib + cat.cpu_per_gib;
            let x = g.cpu_per_gib / budget;
            targets.push(json!({
                "target": format!("{id}: CPU/GiB <= 1.3x (compression alone + ssh cat)"),
                "value": x, "holds": x <= 1.3 }));
        }
    }
    for (r, s) in &all {
        // The target is for default settings; the in-memory row raises --part-memory on purpose.
        if r.group == "gzship" && !r.command.contains("--part-memory") {
            targets.push(json!({
                "target": format!("{}: peak RSS < 512 MiB", r.id),
                "value": s.rss_max_mib, "holds": s.rss_max_mib < 512.0 }));
        }
    }
    // Issue 15's targets: gzship's own CPU next to its compression alone, on all cores and
    // pinned to one. Each is the median of the repeats' own ratios (the row and its reference
    // ran minutes apart at most), which drifts in this shared machine's speed cancel.
    for sfx in &suffixes {
        for id in two_core(sfx) {
            if let (Some(g), Some(c)) = (find_row(&id), find_row("compress-6-logs")) {
                let x = paired(g, c, |g, c| g.client_cpu / c.client_cpu);
                targets.push(json!({
                    "target": format!("{id}: gzship's CPU/GiB <= 1.08x compression alone's"),
                    "value": x, "holds": x <= 1.08 }));
            }
        }
        if let (Some(g), Some(c)) = (
            find_row(&format!("gzship-6-1t-logs-1core{sfx}")),
            find_row("compress-6-logs-1core"),
        ) {
            let x = paired(g, c, |g, c| c.wall / g.wall);
            targets.push(json!({
                "target": format!("one core{sfx}: gzship's throughput >= 0.90x compression alone's"),
                "value": x, "holds": x >= 0.90 }));
            let x = paired(g, c, |g, c| g.client_cpu / c.client_cpu);
            targets.push(json!({
                "target": format!("one core{sfx}: gzship's CPU/GiB <= 1.08x compression alone's"),
                "value": x, "holds": x <= 1.08 }));
        }
    }
    md.push_str("\n| target (issues 7 and 15) | measured | holds |\n|---|---:|---|\n");
    for t in &targets {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {} |",
            t["target"].as_str().unwrap_or_default(),
            t["value"].as_f64().unwrap_or(f64::NAN),
            if t["holds"].as_bool() == Some(true) {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    md.push_str(
        "\nCPU counts every process of the row: under `/usr/bin/time` (ssh, pigz, the uploader, \
         gzship) plus the sshd side (session processes, sftp-server or the remote `cat`). Peak \
         RSS is the largest client process: gzship itself in gzship rows. Cores busy is the \
         whole machine's busy time over the run (`/proc/stat`: all but idle and iowait) as a \
         fraction of all cores, other work on the machine included; one-core rows pin the client \
         to core 0 and give that core's busy fraction too (sshd and the S3 server are not \
         pinned).\n",
    );

    let json_rows: Vec<Value> = all
        .iter()
        .map(|(r, s)| {
            json!({
                "id": r.id, "label": r.label, "group": r.group, "input": r.input_kind,
                "input_bytes": r.size, "file": r.input.display().to_string(), "command": r.command,
                "mb_per_s": s.mb_s, "seconds": s.wall, "ratio": s.ratio,
                "compressed_bytes": s.out_bytes,
                "cpu_s_per_gib": s.cpu_per_gib, "client_cpu_s_per_gib": s.client_per_gib,
                "sshd_cpu_s_per_gib": s.sshd_per_gib, "s3_server_cpu_s_per_gib": s.s3_per_gib,
                "peak_rss_mib": s.rss_mib, "peak_rss_max_mib": s.rss_max_mib,
                "cores_busy": s.busy, "core0_busy": s.busy_core0,
                "runs": r.runs.iter().map(|x| json!({
                    "seconds": x.wall, "client_cpu_s": x.client_cpu, "sshd_cpu_s": x.sshd_cpu,
                    "s3_server_cpu_s": x.s3_cpu, "max_rss_kib": x.max_rss_kib,
                    "cores_busy": x.busy, "core0_busy": x.busy_core0,
                    "compressed_bytes": x.out_bytes })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = json!({
        "machine": machine,
        "gzip6_reference": { "input_bytes": size, "compressed_bytes": gzip6 },
        "rows": json_rows,
        "targets": targets,
    });
    std::fs::create_dir_all(&args.out).unwrap();
    // A partial run (--only) must not overwrite the day's full table.
    let stem = match &args.only {
        Some(only) => args.out.join(format!("{date}-{}", only.replace(',', "+"))),
        None => args.out.join(&date),
    };
    std::fs::write(stem.with_extension("md"), &md).unwrap();
    std::fs::write(
        stem.with_extension("json"),
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();
    println!("{md}");
    eprintln!("wrote {}.{{md,json}}", stem.display());
}

fn human(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{} GiB", n >> 30)
    } else {
        format!("{} MiB", n >> 20)
    }
}
