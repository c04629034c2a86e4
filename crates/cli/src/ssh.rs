//! The ssh settings (`--identity`, `--host-key`, `--known-hosts`, ...) turned into an
//! [`SftpSource`]: the CLI's own resolution of what a user's machine has (`~/.ssh` keys and
//! known_hosts, `$USER`, passwords in environment variables).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use gzship_core::SourceUrl;
use gzship_core::settings::{Settings, SshSettings};
use gzship_core::source::sftp::{HostKeyPolicy, SftpConfig, SftpSource, SshAuth};

/// Builds the SFTP source for `url` from the settings, with their SFTP tuning.
pub fn source(settings: &Settings, url: &SourceUrl) -> anyhow::Result<SftpSource> {
    let ssh = &settings.ssh;
    let auth = auth(ssh)?;
    let host_key = host_key_policy(ssh)?;
    let default_user = ssh.user.clone().or_else(|| std::env::var("USER").ok());
    let config = SftpConfig::from_url(url, default_user.as_deref(), auth, host_key)?
        .with_tuning(settings.sftp.clone());
    Ok(SftpSource::new(config)?)
}

fn auth(ssh: &SshSettings) -> anyhow::Result<SshAuth> {
    if let Some(var) = &ssh.password_env {
        let password = std::env::var(var)
            .with_context(|| format!("read the password from environment variable {var}"))?;
        return Ok(SshAuth::password(password));
    }
    let passphrase = match &ssh.passphrase_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("read the passphrase from environment variable {var}"))?,
        ),
        None => None,
    };
    let key = match &ssh.identity {
        Some(path) => path.clone(),
        None => default_identity().context(
            "no credential: give --identity FILE or --password-env VAR \
             (no ~/.ssh/id_ed25519, id_ecdsa or id_rsa found)",
        )?,
    };
    Ok(SshAuth::private_key_file(&key, passphrase.as_deref())?)
}

/// The host key policy: a pinned fingerprint, known_hosts text or file, or (explicitly) any
/// key; `~/.ssh/known_hosts` when none is given.
pub fn host_key_policy(ssh: &SshSettings) -> anyhow::Result<HostKeyPolicy> {
    if ssh.insecure_accept_any_host_key {
        return Ok(HostKeyPolicy::AcceptAny);
    }
    if let Some(fp) = &ssh.host_key {
        return Ok(HostKeyPolicy::fingerprint(fp)?);
    }
    if let Some(text) = &ssh.known_hosts_text {
        return Ok(HostKeyPolicy::known_hosts(text));
    }
    let path = match &ssh.known_hosts {
        Some(p) => p.clone(),
        None => match home().map(|h| h.join(".ssh/known_hosts")) {
            Some(p) if p.exists() => p,
            _ => bail!(
                "cannot verify the server: give --host-key SHA256:... (ssh-keygen -lf on the \
                 server's host key), --known-hosts FILE or --known-hosts-text LINES; \
                 ~/.ssh/known_hosts does not exist"
            ),
        },
    };
    Ok(HostKeyPolicy::known_hosts_file(&path)?)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn default_identity() -> Option<PathBuf> {
    let ssh = home()?.join(".ssh");
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| ssh.join(n))
        .find(|p| Path::new(p).exists())
}
