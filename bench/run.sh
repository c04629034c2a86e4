#!/usr/bin/env bash
# The benchmark of issue 7, in one command: gzship against the pipeline a user would write
# (`ssh host cat FILE | pigz -6 | <multipart upload>`) and against the machine's ceilings
# (`ssh cat`, `pigz`, gzship's compression alone), against a real OpenSSH sshd and
# gzship-s3lite on 127.0.0.1, with 1 GiB of generated logs and of random bytes on /dev/shm,
# plus peak RSS on 4 GiB. Each figure is the median of --repeat runs (default 3). Every row
# gives CPU-s per GiB of source and the machine's cores busy; the one-core rows pin gzship and
# its compression alone to core 0.
# Writes bench/results/<date>.{md,json}. Takes about 10 minutes on 2 cores.
#
#   bash bench/run.sh                       # the whole benchmark
#   bash bench/run.sh --repeat 5 --size-mib 2048 --big-size-mib 0 --tasks 8
#   bash bench/run.sh --only gzship-6       # rows whose id contains this (or any of a,b,c)
#   bash bench/run.sh --only compress-6-logs,gzship-6-1t-logs --big-size-mib 0   # issue 15's rows
#   bash bench/run.sh --only 1t-logs --one-core-levels 1,2,3,4,5,6,7,8,9 --size-mib 256 --big-size-mib 0
#                                           # a worker vCPU's speed per level (duration model)
#   bash bench/run.sh --only 6-1t-logs,6-4t-logs,compress-6-logs --big-size-mib 0 --repeat 5 \
#     --variant before=/dev/shm/gzship-before --variant after=target/release/gzship
#                                           # two builds side by side in every repeat (ROW@NAME)
#   bash bench/run.sh --micro               # block compression and part assembly only
#
# Not part of scripts/test: it measures, it does not assert.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/install-test-deps.sh >/dev/null
for tool in pigz gzip /usr/bin/time; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq pigz gzip time >/dev/null; break; }
done
# Benches: optimised like release without its slow LTO link (the measured binaries,
# gzship and gzship-s3lite, are real release builds). libdeflate is C and compiled alike.
export CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16
mkdir -p bench/results
if [[ "${1:-}" == "--micro" ]]; then
  shift
  exec cargo bench -q -p gzship-core --bench blocks -- --out "$root/bench/results/$(date -u +%F)-blocks.md" "$@"
fi
cargo build -q --release -p gzship-cli -p gzship-s3lite
exec cargo bench -q -p gzship-core --bench pipeline -- \
  --gzship "$root/target/release/gzship" --s3lite "$root/target/release/gzship-s3lite" \
  --out "$root/bench/results" --dir /dev/shm "$@"
