//! The SSH side: accept loop, authentication, and handing `sftp` subsystem channels to
//! [`sftp::serve`](crate::sftp::serve). Everything but one user's password or keys, session
//! channels and the `sftp` subsystem is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Disconnect, MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Password;
use crate::root::Root;
use crate::sftp;

/// How long a shutdown waits for a session to finish after telling its client to disconnect.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) root: Arc<Root>,
    pub(crate) user: String,
    pub(crate) password: Option<Password>,
    pub(crate) authorized_keys: Vec<PublicKey>,
    pub(crate) limits: sftp::Limits,
    pub(crate) max_sessions: Option<usize>,
}

impl Shared {
    /// The authentication methods offered: only those with credentials configured.
    pub(crate) fn methods(&self) -> MethodSet {
        let mut methods = MethodSet::empty();
        if !self.authorized_keys.is_empty() {
            methods.push(MethodKind::PublicKey);
        }
        if self.password.is_some() {
            methods.push(MethodKind::Password);
        }
        methods
    }

    fn key_allowed(&self, user: &str, key: &PublicKey) -> bool {
        // Compare the key material only: the comment is not part of the key's identity.
        user == self.user
            && self
                .authorized_keys
                .iter()
                .any(|allowed| allowed.key_data() == key.key_data())
    }

    fn rejection(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(self.methods()),
            partial_success: false,
        }
    }
}

/// Accepts connections until `cancel` fires, then waits for every session to disconnect.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut sessions = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!("accept an ssh connection: {e}");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                    }
                }
            },
        };
        while sessions.try_join_next().is_some() {}
        if shared.max_sessions.is_some_and(|max| sessions.len() >= max) {
            warn!(%peer, "refuse an ssh connection: {} sessions already open", sessions.len());
            continue;
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, "set TCP_NODELAY: {e}");
        }
        let connection = Connection {
            shared: Arc::clone(&shared),
            peer,
            channels: HashMap::new(),
            sftp_sessions: HashMap::new(),
            ended: cancel.child_token(),
        };
        sessions.spawn(serve_connection(
            Arc::clone(&config),
            stream,
            connection,
            cancel.clone(),
        ));
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

async fn serve_connection(
    config: Arc<russh::server::Config>,
    stream: TcpStream,
    connection: Connection,
    cancel: CancellationToken,
) {
    let peer = connection.peer;
    let session = tokio::select! {
        () = cancel.cancelled() => return,
        started = russh::server::run_stream(config, stream, connection) => match started {
            Ok(session) => session,
            Err(e) => {
                debug!(%peer, "ssh handshake failed: {e}");
                return;
            }
        },
    };
    let handle = session.handle();
    let mut session = session;
    tokio::select! {
        ended = &mut session => match ended {
            Ok(()) => debug!(%peer, "ssh session closed"),
            Err(e) => debug!(%peer, "ssh session ended: {e}"),
        },
        () = cancel.cancelled() => {
            let reason = "server shutting down".to_owned();
            if handle.disconnect(Disconnect::ByApplication, reason, "en".to_owned()).await.is_err() {
                debug!(%peer, "ssh session already gone at shutdown");
            }
            if tokio::time::timeout(DISCONNECT_GRACE, session).await.is_err() {
                warn!(%peer, "ssh session still running {DISCONNECT_GRACE:?} after disconnect");
            }
        }
    }
}

/// One client connection.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Session channels opened but not yet turned into an sftp subsystem.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Running sftp engines by channel, each stopped when its channel closes.
    sftp_sessions: HashMap<ChannelId, CancellationToken>,
    /// Cancelled when the connection ends (this handler is dropped) or the server shuts down,
    /// which stops this connection's sftp engines: a reply writer waiting for a window that
    /// will never open again would otherwise wait forever.
    ended: CancellationToken,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(self.shared.rejection())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let accepted = user == self.shared.user
            && self
                .shared
                .password
                .as_ref()
                .is_some_and(|expected| expected.matches(password));
        if accepted {
            info!(peer = %self.peer, user, "ssh login with a password");
            Ok(Auth::Accept)
        } else {
            info!(peer = %self.peer, user, "refuse an ssh login: wrong user or password");
            Ok(self.shared.rejection())
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.key_allowed(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            Ok(self.shared.rejection())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.key_allowed(user, key.public_key) {
            info!(peer = %self.peer, user, "ssh login with a public key");
            Ok(Auth::Accept)
        } else {
            info!(peer = %self.peer, user, "refuse an ssh login: key not authorized");
            Ok(self.shared.rejection())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        if let Some(sftp) = self.sftp_sessions.remove(&channel) {
            sftp.cancel();
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.remove(&channel_id) {
            Some(channel) if name == "sftp" => {
                session.channel_success(channel_id)?;
                debug!(peer = %self.peer, "sftp session started");
                let stop = self.ended.child_token();
                self.sftp_sessions.insert(channel_id, stop.clone());
                tokio::spawn(sftp::serve(
                    channel,
                    Arc::clone(&self.shared.root),
                    self.shared.limits,
                    stop,
                ));
            }
            channel => {
                debug!(peer = %self.peer, name, "refuse subsystem");
                if let Some(channel) = channel {
                    self.channels.insert(channel_id, channel);
                }
                session.channel_failure(channel_id)?;
            }
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}
