//! The server against a real russh client + russh-sftp client that pins its host key.

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use gzship_sftpd::{Error, MAX_READ_LEN, Password, SftpServer, SftpServerConfig};
use rand::{Rng, SeedableRng};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::common::{self, PASSWORD, USER};

/// Guards waits that must end by themselves; never used to wait for readiness.
const DEADLINE: Duration = Duration::from_secs(30);

fn status_code<T>(result: Result<T, SftpError>) -> Option<StatusCode> {
    match result {
        Err(SftpError::Status(status)) => Some(status.status_code),
        _ => None,
    }
}

#[tokio::test]
async fn fingerprint_is_formatted_like_ssh_keygen() -> Result<()> {
    let fixture = common::start().await?;
    let fingerprint = fixture.server.host_key_fingerprint();
    let b64 = fingerprint
        .strip_prefix("SHA256:")
        .context("fingerprint starts with SHA256:")?;
    // 32 bytes of SHA-256 in unpadded base64.
    assert_eq!(b64.len(), 43, "{fingerprint}");
    assert!(!b64.ends_with('='));
    assert!(fixture.server.known_hosts_line().starts_with(&format!(
        "[127.0.0.1]:{} ssh-ed25519 ",
        fixture.server.port()
    )));
    assert_eq!(fixture.server.addr().ip().to_string(), "127.0.0.1");
    Ok(())
}

#[tokio::test]
async fn password_login_reads_a_whole_file_and_stats_it() -> Result<()> {
    let fixture = common::start().await?;
    // Several full reads and a short tail.
    let data = common::seeded_bytes(3 * MAX_READ_LEN as usize + 12_345, 1);
    common::write_file(fixture.dir.path(), "app.log", &data)?;
    let local = std::fs::metadata(fixture.dir.path().join("app.log"))?;

    let (_connection, sftp) = common::sftp_session(&fixture).await?;
    assert_eq!(sftp.canonicalize(".").await?, "/");
    assert_eq!(sftp.canonicalize("logs/../app.log").await?, "/app.log");

    let attrs = sftp.metadata("/app.log").await?;
    assert_eq!(attrs.size, Some(data.len() as u64));
    assert!(attrs.is_regular());
    assert!(!attrs.is_dir());
    assert_eq!(attrs.mtime, Some(u32::try_from(local.mtime())?));
    assert_eq!(attrs.permissions, Some(local.mode()));
    assert!(sftp.metadata("/").await?.is_dir());

    let mut file = sftp.open("app.log").await?;
    assert_eq!(file.metadata().await?.size, Some(data.len() as u64));
    let mut read = Vec::new();
    file.read_to_end(&mut read).await?;
    assert!(read == data, "bytes read differ from the file");
    Ok(())
}

#[tokio::test]
async fn key_login_reads_a_file() -> Result<()> {
    let fixture = common::start().await?;
    let data = common::seeded_bytes(100_000, 2);
    common::write_file(fixture.dir.path(), "k.bin", &data)?;

    let mut connection = common::connect(&fixture.server).await?;
    let auth = common::login_key(&mut connection, Arc::clone(&fixture.client_key)).await?;
    assert!(auth.success());
    let sftp =
        russh_sftp::client::SftpSession::new(common::sftp_channel(&connection).await?).await?;
    assert!(sftp.read("k.bin").await? == data);
    Ok(())
}

#[tokio::test]
async fn reads_at_random_offsets_with_seek() -> Result<()> {
    let fixture = common::start().await?;
    let data = common::seeded_bytes(2_000_000, 3);
    common::write_file(fixture.dir.path(), "r.bin", &data)?;
    let (_connection, sftp) = common::sftp_session(&fixture).await?;
    let mut file = sftp.open("r.bin").await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for _ in 0..20 {
        let start = rng.random_range(0..data.len());
        let len = rng.random_range(1..=(data.len() - start).min(600_000));
        file.seek(SeekFrom::Start(start as u64)).await?;
        let mut buf = vec![0; len];
        file.read_exact(&mut buf).await?;
        assert!(buf[..] == data[start..start + len], "range {start}+{len}");
    }
    // At the end of the file a read returns nothing.
    file.seek(SeekFrom::Start(data.len() as u64)).await?;
    let mut buf = [0u8; 16];
    assert_eq!(file.read(&mut buf).await?, 0);
    Ok(())
}

#[tokio::test]
async fn raw_reads_are_capped_exact_and_end_with_eof() -> Result<()> {
    let fixture = common::start().await?;
    let data = common::seeded_bytes(1_000_000, 5);
    common::write_file(fixture.dir.path(), "raw.bin", &data)?;
    let (_connection, raw) = common::raw_session(&fixture).await?;
    let handle = raw
        .open("raw.bin", OpenFlags::READ, Default::default())
        .await?
        .handle;

    // More than the limit: exactly MAX_READ_LEN bytes.
    let big = raw.read(&handle, 10, 1 << 20).await?;
    assert_eq!(big.data.len(), MAX_READ_LEN as usize);
    assert!(big.data[..] == data[10..10 + MAX_READ_LEN as usize]);
    // Across the end: the tail only.
    let tail = raw.read(&handle, 999_990, 100).await?;
    assert!(tail.data[..] == data[999_990..]);
    // At and past the end: EOF status.
    assert_eq!(
        status_code(raw.read(&handle, 1_000_000, 100).await),
        Some(StatusCode::Eof)
    );
    assert_eq!(
        status_code(raw.read(&handle, u64::MAX - 10, 100).await),
        Some(StatusCode::Eof)
    );
    raw.close(&handle).await?;
    // A closed handle is unknown.
    assert_eq!(
        status_code(raw.read(&handle, 0, 100).await),
        Some(StatusCode::Failure)
    );
    Ok(())
}

#[tokio::test]
async fn many_pipelined_reads_each_get_their_bytes() -> Result<()> {
    let fixture = common::start().await?;
    let chunk = MAX_READ_LEN as usize;
    let chunks = 96; // more than max_reads_in_flight, so some wait for a permit
    let data = Arc::new(common::seeded_bytes(chunk * chunks, 6));
    common::write_file(fixture.dir.path(), "p.bin", &data)?;
    let (_connection, raw) = common::raw_session(&fixture).await?;
    let raw = Arc::new(raw);
    let handle = raw
        .open("p.bin", OpenFlags::READ, Default::default())
        .await?
        .handle;

    let mut reads = tokio::task::JoinSet::new();
    for i in (0..chunks).rev() {
        let (raw, handle, data) = (Arc::clone(&raw), handle.clone(), Arc::clone(&data));
        reads.spawn(async move {
            let offset = i * chunk;
            let got = raw.read(handle, offset as u64, chunk as u32).await?;
            anyhow::ensure!(got.data[..] == data[offset..offset + chunk], "chunk {i}");
            anyhow::Ok(())
        });
    }
    while let Some(done) = reads.join_next().await {
        done??;
    }
    Ok(())
}

#[tokio::test]
async fn lists_a_directory() -> Result<()> {
    let fixture = common::start().await?;
    for i in 0..150 {
        common::write_file(fixture.dir.path(), &format!("f{i:03}"), b"x")?;
    }
    let (_connection, sftp) = common::sftp_session(&fixture).await?;
    let mut names: Vec<String> = sftp.read_dir("/").await?.map(|e| e.file_name()).collect();
    names.sort();
    assert_eq!(names.len(), 150);
    assert_eq!(names[0], "f000");
    assert_eq!(names[149], "f149");
    Ok(())
}

#[tokio::test]
async fn paths_that_escape_the_root_are_refused() -> Result<()> {
    let outside = tempfile::tempdir()?;
    common::write_file(outside.path(), "secret", b"do not serve")?;
    let fixture = common::start().await?;
    common::write_file(fixture.dir.path(), "ok", b"fine")?;
    std::os::unix::fs::symlink(outside.path(), fixture.dir.path().join("out"))?;
    let (_connection, sftp) = common::sftp_session(&fixture).await?;

    let secret = outside.path().join("secret");
    let escape = format!("/../../../../../../..{}", secret.display());
    for path in [
        escape.as_str(),
        "..",
        "/..",
        "../secret",
        "a/../../ok",
        "/out/secret",
    ] {
        assert_eq!(
            status_code(sftp.open(path).await.map(drop)),
            Some(StatusCode::PermissionDenied),
            "open {path}"
        );
        assert_eq!(
            status_code(sftp.metadata(path).await),
            Some(StatusCode::PermissionDenied),
            "stat {path}"
        );
    }
    assert_eq!(
        status_code(sftp.canonicalize("..").await),
        Some(StatusCode::PermissionDenied)
    );
    assert_eq!(
        status_code(sftp.read_dir("/out").await.map(drop)),
        Some(StatusCode::PermissionDenied)
    );
    // The symlink itself is inside the root; lstat shows it without following it.
    assert!(sftp.symlink_metadata("/out").await?.is_symlink());
    assert_eq!(
        status_code(sftp.metadata("/missing").await),
        Some(StatusCode::NoSuchFile)
    );
    Ok(())
}

#[tokio::test]
async fn writes_are_refused() -> Result<()> {
    let fixture = common::start().await?;
    common::write_file(fixture.dir.path(), "keep", b"original")?;
    let (_connection, sftp) = common::sftp_session(&fixture).await?;

    assert_eq!(
        status_code(sftp.create("new").await.map(drop)),
        Some(StatusCode::PermissionDenied)
    );
    assert_eq!(
        status_code(
            sftp.open_with_flags("keep", OpenFlags::READ | OpenFlags::WRITE)
                .await
                .map(drop)
        ),
        Some(StatusCode::PermissionDenied)
    );
    assert_eq!(
        status_code(sftp.remove_file("keep").await),
        Some(StatusCode::PermissionDenied)
    );
    assert_eq!(
        status_code(sftp.create_dir("d").await),
        Some(StatusCode::PermissionDenied)
    );
    assert_eq!(
        status_code(sftp.rename("keep", "moved").await),
        Some(StatusCode::PermissionDenied)
    );
    assert!(!fixture.dir.path().join("new").exists());
    assert!(!fixture.dir.path().join("d").exists());
    assert_eq!(std::fs::read(fixture.dir.path().join("keep"))?, b"original");
    Ok(())
}

#[tokio::test]
async fn unsupported_requests_get_op_unsupported() -> Result<()> {
    let fixture = common::start().await?;
    let (_connection, raw) = common::raw_session(&fixture).await?;
    let statvfs = raw.extended("statvfs@openssh.com", Vec::new()).await?;
    assert!(
        matches!(&statvfs, Packet::Status(s) if s.status_code == StatusCode::OpUnsupported),
        "{statvfs:?}"
    );
    assert_eq!(
        status_code(raw.readlink("/x").await),
        Some(StatusCode::OpUnsupported)
    );
    // limits@openssh.com is answered like OpenSSH.
    let limits = raw.limits().await?;
    assert_eq!(limits.max_read_len, u64::from(MAX_READ_LEN));
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_are_refused() -> Result<()> {
    let fixture = common::start().await?;

    let mut connection = common::connect(&fixture.server).await?;
    assert!(
        !common::login_password(&mut connection, "wrong")
            .await?
            .success()
    );
    assert!(
        !connection
            .authenticate_password("root", PASSWORD)
            .await?
            .success()
    );
    let stranger = Arc::new(russh::keys::PrivateKey::from(
        russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[9; 32]),
    ));
    assert!(
        !common::login_key(&mut connection, stranger)
            .await?
            .success()
    );
    assert!(
        !connection
            .authenticate_publickey(
                "root",
                russh::keys::PrivateKeyWithHashAlg::new(Arc::clone(&fixture.client_key), None),
            )
            .await?
            .success()
    );
    // Unauthenticated, no channel opens.
    assert!(connection.channel_open_session().await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_wrong_host_key_is_rejected_by_the_client() -> Result<()> {
    let fixture = common::start().await?;
    let other = common::start().await?;
    // Pin `other`'s fingerprint but connect to `fixture`.
    let verifier = common::PinnedHostKey::for_fingerprint(other.server.host_key_fingerprint());
    let connected = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        fixture.server.addr(),
        verifier,
    )
    .await;
    assert!(connected.is_err());
    Ok(())
}

#[tokio::test]
async fn only_the_sftp_subsystem_is_served() -> Result<()> {
    let fixture = common::start().await?;
    let mut connection = common::connect(&fixture.server).await?;
    assert!(
        common::login_password(&mut connection, PASSWORD)
            .await?
            .success()
    );
    let channel = connection.channel_open_session().await?;
    channel.exec(true, "cat /etc/passwd").await?;
    let mut channel = channel;
    let reply = tokio::time::timeout(DEADLINE, channel.wait()).await?;
    assert!(
        matches!(reply, Some(russh::ChannelMsg::Failure)),
        "{reply:?}"
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_listening() -> Result<()> {
    let fixture = common::start().await?;
    common::write_file(fixture.dir.path(), "a", b"abc")?;
    let (connection, sftp) = common::sftp_session(&fixture).await?;
    assert_eq!(sftp.read("a").await?, b"abc");
    let addr = fixture.server.addr();

    tokio::time::timeout(DEADLINE, fixture.server.shutdown()).await?;

    // The client's connection ends by itself and requests fail.
    tokio::time::timeout(DEADLINE, connection)
        .await?
        .context("connection ended with an error")?;
    assert!(sftp.read("a").await.is_err());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn dropping_the_server_closes_connections() -> Result<()> {
    let fixture = common::start().await?;
    let (connection, _sftp) = common::sftp_session(&fixture).await?;
    drop(fixture.server);
    let _ = tokio::time::timeout(DEADLINE, connection).await?;
    Ok(())
}

#[tokio::test]
async fn connections_past_max_sessions_are_refused() -> Result<()> {
    let fixture = common::start_with(|config| config.with_max_sessions(1)).await?;
    let (_first, sftp) = common::sftp_session(&fixture).await?;
    assert!(common::connect(&fixture.server).await.is_err());
    // The first session still works.
    assert!(sftp.metadata("/").await?.is_dir());
    Ok(())
}

#[tokio::test]
async fn start_validates_its_configuration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing");
    let config = SftpServerConfig::new(&missing, USER).with_password(Password::new("p"));
    assert!(matches!(
        SftpServer::start(config).await,
        Err(Error::Root { .. })
    ));

    common::write_file(dir.path(), "file", b"")?;
    let config =
        SftpServerConfig::new(dir.path().join("file"), USER).with_password(Password::new("p"));
    assert!(matches!(
        SftpServer::start(config).await,
        Err(Error::RootNotDirectory { .. })
    ));

    let config = SftpServerConfig::new(dir.path(), USER);
    let err = SftpServer::start(config)
        .await
        .err()
        .context("no credentials")?;
    assert!(matches!(err, Error::NoCredentials { .. }));
    assert_eq!(
        err.to_string(),
        "start the sftp server: no password and no authorized key for user \"demo\""
    );

    // Two servers on the same fixed port: the second cannot bind.
    let first = SftpServer::start(
        SftpServerConfig::new(dir.path(), USER).with_password(Password::new("p")),
    )
    .await?;
    let config = SftpServerConfig::new(dir.path(), USER)
        .with_password(Password::new("p"))
        .with_bind(first.addr());
    assert!(matches!(
        SftpServer::start(config).await,
        Err(Error::Bind { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn pipelined_reads_from_two_sessions_on_one_connection() -> Result<()> {
    let fixture = common::start().await?;
    let data = common::seeded_bytes(1_500_000, 8);
    common::write_file(fixture.dir.path(), "two.bin", &data)?;
    let (connection, first) = common::sftp_session(&fixture).await?;
    let second =
        russh_sftp::client::SftpSession::new(common::sftp_channel(&connection).await?).await?;
    let (a, b) = tokio::join!(first.read("two.bin"), second.read("two.bin"));
    assert!(a? == data);
    assert!(b? == data);
    Ok(())
}
