//! Read throughput through the server on loopback. A measurement, not an assertion: run with
//! `cargo nextest run --workspace --run-ignored only --no-capture -E 'binary(sftpd) & test(throughput)'`.
//!
//! Client and server share the process (and its cores), so each SSH connection costs one core
//! of encryption on the server and one of decryption on the client.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use gzship_sftpd::MAX_READ_LEN;
use russh::cipher;
use russh_sftp::client::{RawSftpSession, SftpSession};
use russh_sftp::protocol::OpenFlags;
use tokio::io::AsyncReadExt;

use crate::common;

const SIZE: usize = 256 << 20;

fn report(what: &str, bytes: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what}: {} MiB in {secs:.2} s = {:.0} MB/s",
        bytes >> 20,
        bytes as f64 / secs / 1e6
    );
}

#[derive(Debug, Clone, Copy)]
struct Client {
    cipher: cipher::Name,
    nodelay: bool,
}

impl Client {
    fn label(self) -> String {
        let nagle = if self.nodelay { "nodelay" } else { "Nagle on" };
        format!("{}, {nagle}", self.cipher.as_ref())
    }
}

async fn logged_in(fixture: &common::Fixture, client: Client) -> Result<common::Connection> {
    let config = common::config_with_cipher(client.cipher, client.nodelay);
    let mut connection = common::connect_with(&fixture.server, config).await?;
    ensure!(
        common::login_password(&mut connection, common::PASSWORD)
            .await?
            .success()
    );
    Ok(connection)
}

/// russh-sftp's `File` as a plain `AsyncRead` (64 reads in flight).
async fn file_read(fixture: &common::Fixture, data: &[u8], client: Client) -> Result<()> {
    let connection = logged_in(fixture, client).await?;
    let config = russh_sftp::client::Config {
        max_concurrent_reads: 64,
        ..Default::default()
    };
    let sftp =
        SftpSession::new_with_config(common::sftp_channel(&connection).await?, config).await?;
    let mut file = sftp.open("big.bin").await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    let started = Instant::now();
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        ensure!(buf[..n] == data[at..at + n], "bytes differ at {at}");
        at += n;
    }
    ensure!(at == data.len(), "read {at} of {} bytes", data.len());
    report(
        &format!("SftpSession File x64, {}", client.label()),
        at,
        started,
    );
    Ok(())
}

/// Explicit READs of `MAX_READ_LEN` with `in_flight` outstanding, as gzship's worker issues them.
async fn pipelined_read(
    fixture: &common::Fixture,
    data: Arc<Vec<u8>>,
    client: Client,
    in_flight: usize,
) -> Result<()> {
    let connection = logged_in(fixture, client).await?;
    let raw = Arc::new(RawSftpSession::new(
        common::sftp_channel(&connection).await?,
    ));
    raw.init().await?;
    let handle = raw
        .open("big.bin", OpenFlags::READ, Default::default())
        .await?
        .handle;
    let chunk = MAX_READ_LEN as usize;
    let mut reads = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut done = 0;
    let started = Instant::now();
    while done < data.len() {
        while next < data.len() && reads.len() < in_flight {
            let (raw, handle, data) = (Arc::clone(&raw), handle.clone(), Arc::clone(&data));
            let offset = next;
            reads.spawn(async move {
                let got = raw.read(handle, offset as u64, chunk as u32).await?;
                let end = (offset + chunk).min(data.len());
                ensure!(
                    got.data[..] == data[offset..end],
                    "bytes differ at {offset}"
                );
                Ok(got.data.len())
            });
            next += chunk;
        }
        done += reads.join_next().await.context("reads pending")???;
    }
    report(
        &format!("pipelined READs x{in_flight}, {}", client.label()),
        done,
        started,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: reads 256 MiB several times"]
async fn throughput() -> Result<()> {
    let fixture = common::start().await?;
    let data = Arc::new(common::seeded_bytes(SIZE, 42));
    common::write_file(fixture.dir.path(), "big.bin", &data)?;

    for cipher in [cipher::AES_256_GCM, cipher::CHACHA20_POLY1305] {
        let client = Client {
            cipher,
            nodelay: true,
        };
        file_read(&fixture, &data, client).await?;
        for in_flight in [1, 16, 64] {
            pipelined_read(&fixture, Arc::clone(&data), client, in_flight).await?;
        }
    }
    // russh's client leaves Nagle on by default; show what that costs.
    let nagle = Client {
        cipher: cipher::AES_256_GCM,
        nodelay: false,
    };
    file_read(&fixture, &data, nagle).await?;
    for in_flight in [16, 64] {
        pipelined_read(&fixture, Arc::clone(&data), nagle, in_flight).await?;
    }
    Ok(())
}
