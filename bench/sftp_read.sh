#!/usr/bin/env bash
# Benchmark: MB/s of `ssh HOST cat FILE > /dev/null` and of SftpSource::read_range over the same
# 1 GiB file of access logs on tmpfs, against a real OpenSSH sshd on 127.0.0.1, in one run.
# Not a test: it prints numbers. Options (comma lists sweep the knobs):
#   --size-mib 1024 --dir /dev/shm --in-flight 8,16,32,64 --request-kib 64,128,255
#   --connections 1,2 --ciphers default,aes128-gcm,chacha20 --repeat 2
#   --pin 1:0   (taskset: client on CPU 1, sshd and its children on CPU 0, as on two machines)
#   --server asyncssh   (read_range alone against bench/asyncssh_sftpd.py, whose
#                        limits@openssh.com allows 4 MiB READs: --request-kib 255,1024,4096)
# ssh cat and read_range runs alternate; medians are printed at the end.
# Example: bash bench/sftp_read.sh --in-flight 16,32,64 --connections 1,2
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
# Optimised like release (the dev profile's debug assertions make std's generics, such as the
# zeroing of READ buffers, 10x slower), without release's slow LTO link.
export CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 CARGO_PROFILE_BENCH_DEBUG=line-tables-only
cargo bench -q -p gzship-core --bench sftp_read -- "$@"
