//! Credentials and host-key flags, turned into an [`SftpSource`].

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use gzship_core::SourceUrl;
use gzship_core::source::sftp::{HostKeyPolicy, SftpConfig, SftpSource, SshAuth};

/// How to log in to the SFTP server and how to trust it.
#[derive(Debug, Clone, Args)]
pub struct SshArgs {
    /// Private key file (OpenSSH format: ed25519, ECDSA, RSA). Default: ~/.ssh/id_ed25519,
    /// id_ecdsa or id_rsa, whichever exists, unless --password-env is given.
    #[arg(long, short = 'i', env = "GZSHIP_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Name of the environment variable that holds the private key's passphrase.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Name of the environment variable that holds the password (log in with a password).
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// known_hosts file to verify the server's host key with. Default: ~/.ssh/known_hosts.
    #[arg(long, env = "GZSHIP_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// Pinned host key fingerprint, as `ssh-keygen -lf` prints it (SHA256:...).
    #[arg(long, env = "GZSHIP_HOST_KEY", conflicts_with = "known_hosts")]
    pub host_key: Option<String>,
    /// Accept any host key. Unsafe: a man-in-the-middle can read the data and steal a
    /// password. For throwaway local experiments only.
    #[arg(long, conflicts_with_all = ["known_hosts", "host_key"])]
    pub insecure_accept_any_host_key: bool,
    /// User to log in as when SOURCE names none (default: $USER).
    #[arg(long, env = "GZSHIP_USER")]
    pub user: Option<String>,
}

impl SshArgs {
    /// Builds the SFTP source for `url`.
    pub fn source(&self, url: &SourceUrl) -> anyhow::Result<SftpSource> {
        let auth = self.auth()?;
        let host_key = self.host_key_policy()?;
        let default_user = self.user.clone().or_else(|| std::env::var("USER").ok());
        let config = SftpConfig::from_url(url, default_user.as_deref(), auth, host_key)?;
        Ok(SftpSource::new(config)?)
    }

    fn auth(&self) -> anyhow::Result<SshAuth> {
        if let Some(var) = &self.password_env {
            let password = std::env::var(var)
                .with_context(|| format!("read the password from environment variable {var}"))?;
            return Ok(SshAuth::password(password));
        }
        let passphrase =
            match &self.passphrase_env {
                Some(var) => Some(std::env::var(var).with_context(|| {
                    format!("read the passphrase from environment variable {var}")
                })?),
                None => None,
            };
        let key = match &self.identity {
            Some(path) => path.clone(),
            None => default_identity().context(
                "no credential: give --identity FILE or --password-env VAR \
                 (no ~/.ssh/id_ed25519, id_ecdsa or id_rsa found)",
            )?,
        };
        Ok(SshAuth::private_key_file(&key, passphrase.as_deref())?)
    }

    fn host_key_policy(&self) -> anyhow::Result<HostKeyPolicy> {
        if self.insecure_accept_any_host_key {
            return Ok(HostKeyPolicy::AcceptAny);
        }
        if let Some(fp) = &self.host_key {
            return Ok(HostKeyPolicy::fingerprint(fp)?);
        }
        let path = match &self.known_hosts {
            Some(p) => p.clone(),
            None => match home().map(|h| h.join(".ssh/known_hosts")) {
                Some(p) if p.exists() => p,
                _ => bail!(
                    "cannot verify the server: give --host-key SHA256:... (ssh-keygen -lf on the \
                     server's host key) or --known-hosts FILE; ~/.ssh/known_hosts does not exist"
                ),
            },
        };
        Ok(HostKeyPolicy::known_hosts_file(&path)?)
    }
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
