#!/usr/bin/env bash
# Installs the real servers and tools gzship's tests use. Idempotent; run as root on Debian 12.
# Each block installs only what is missing, so re-running it is cheap.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
    # apt-get update once per run, and only when something must be installed.
    if [ "$apt_updated" -eq 0 ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

# OpenSSH: sshd for crates/testkit/src/sshd.rs, ssh/ssh-keygen for keys and the benchmark;
# pigz, gzip and busybox (the gzip of Alpine-based containers) decode outputs in the
# end-to-end tests.
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v pigz >/dev/null 2>&1 || missing+=(pigz)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
command -v busybox >/dev/null 2>&1 || missing+=(busybox)
# ss shows the keepalive timer of the Lambda invoker's connections (crates/core invoke::keepalive).
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# moto's S3 server for crates/testkit/src/s3.rs, pinned: moto 5.2.x answers ListParts (and, in
# 5.2.1, CompleteMultipartUpload) with root elements aws-sdk-s3 rejects. Without the crc32c
# package moto silently computes CRC32 where S3 computes CRC32C. Keep in step with
# MOTO_VERSION in crates/testkit/src/s3.rs.
MOTO_VERSION=5.1.22
CRC32C_VERSION=2.9.post0
if ! python3 -c "import sys, crc32c, moto, moto.server; sys.exit(moto.__version__ != '$MOTO_VERSION')" >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    pkgs=("moto[server]==$MOTO_VERSION" "crc32c==$CRC32C_VERSION")
    python3 -m pip install --quiet "${pkgs[@]}" \
        || python3 -m pip install --quiet --break-system-packages "${pkgs[@]}"
fi

# cargo-lambda: `cargo lambda watch` runs the Lambda functions under a runtime emulator in
# tests/lambda/watch.rs (and `cargo lambda build` builds them for deployment).
# cfn-lint checks infra/template.yaml in tests/lambda/template.rs.
pip_install() {
    python3 -m pip install --quiet "$@" \
        || python3 -m pip install --quiet --break-system-packages "$@"
}
command -v cargo-lambda >/dev/null 2>&1 || pip_install cargo-lambda
command -v cfn-lint >/dev/null 2>&1 || pip_install cfn-lint

# ministack runs Step Functions state machines (Distributed Map, Retry, Catch) in
# crates/testkit/src/stepfunctions.rs and forwards their Lambda invokes to `cargo lambda watch`.
# Pinned: the test kit relies on how it reports a proxied function's error and on what it does
# not implement (RedriveExecution); see that module. It pins botocore exactly (moto accepts it).
MINISTACK_VERSION=1.5.33
if ! python3 -c "import sys, importlib.metadata as m; sys.exit(m.version('ministack') != '$MINISTACK_VERSION')" >/dev/null 2>&1; then
    pip_install "ministack==$MINISTACK_VERSION"
fi

# DuckDB reads a padded CSV object in tests/decoders.rs: its gzip reader has a fixed header
# buffer (32 KiB), which large FEXTRA fields overflow.
DUCKDB_VERSION=2.0.1
if ! python3 -c "import sys, duckdb; sys.exit(duckdb.__version__ != '$DUCKDB_VERSION')" >/dev/null 2>&1; then
    pip_install "duckdb==$DUCKDB_VERSION"
fi

# ProFTPD's mod_sftp, a second real SFTP server in the SFTP source suite
# (crates/testkit/src/proftpd.rs). Debian starts proftpd as a service on install: a temporary
# policy-rc.d forbids that (exit 101), and is removed afterwards.
if [ ! -x /usr/sbin/proftpd ] || [ ! -e /usr/lib/proftpd/mod_sftp.so ]; then
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [ -e "$policy" ] && had_policy=1
    if [ "$had_policy" -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
    fi
    apt_install proftpd-core proftpd-mod-crypto
    if [ "$had_policy" -eq 0 ]; then $SUDO rm -f "$policy"; fi
fi

# paramiko, for the SFTP server without FSTAT (and, on demand, without mtimes) that
# crates/testkit/src/pysftpd.rs starts. Pinned: the suite relies on its SFTPHandle.stat
# answering OP_UNSUPPORTED by default. asyncssh, pinned, for `bench/sftp_read.sh --server
# asyncssh` (its limits@openssh.com advertises 4 MiB READs).
PARAMIKO_VERSION=5.1.0
ASYNCSSH_VERSION=2.24.1
if ! python3 -c "import sys, paramiko; sys.exit(paramiko.__version__ != '$PARAMIKO_VERSION')" >/dev/null 2>&1; then
    pip_install "paramiko==$PARAMIKO_VERSION"
fi
if ! python3 -c "import sys, asyncssh; sys.exit(asyncssh.__version__ != '$ASYNCSSH_VERSION')" >/dev/null 2>&1; then
    pip_install "asyncssh==$ASYNCSSH_VERSION"
fi

# pip under pyenv puts console scripts behind shims; make sure the new ones resolve now.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
