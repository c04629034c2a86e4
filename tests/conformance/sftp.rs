//! The SFTP source suite (`gzship_testkit::conformance::sftp`) against every SFTP server gzship
//! is tested with: OpenSSH's sshd and gzship-sftpd, one test per check and server
//! (`conformance::sftp::<check>::{openssh, gzship_sftpd}`); then the checks that are not about
//! one server.

use gzship_testkit::conformance::sftp as suite;

/// Each check becomes a module with an `openssh` and a `gzship_sftpd` test.
macro_rules! sftp_tests {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use gzship_testkit::conformance::sftp::{self as suite, Backend};

            #[tokio::test]
            async fn openssh() {
                suite::$check(Backend::OpenSsh).await;
            }

            #[tokio::test]
            async fn gzship_sftpd() {
                suite::$check(Backend::GzshipSftpd).await;
            }
        }
    )*};
}

gzship_testkit::for_each_sftp_check!(sftp_tests);

/// OpenSSH only: gzship-sftpd runs in this process, and a test cannot kill its sessions the
/// way a dying `sshd` child kills a connection.
#[tokio::test]
async fn killed_sessions_are_resumed_without_gaps_or_duplicates() {
    suite::killed_sessions_are_resumed_without_gaps_or_duplicates().await;
}

/// No server: the port has nothing behind it.
#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    suite::connection_refused_is_retried_then_reported().await;
}
