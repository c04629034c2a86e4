//! The SFTP source suite (`gzship_testkit::conformance::sftp`) against every SFTP server gzship
//! is tested with: OpenSSH's sshd, ProFTPD's mod_sftp, gzship-sftpd and a paramiko server
//! without FSTAT, one test per check and server
//! (`conformance::sftp::<check>::{openssh, proftpd, gzship_sftpd, no_fstat}`); then the checks
//! that are about one server, or none.

use gzship_testkit::conformance::sftp as suite;

/// Each check becomes a module with a test per server.
macro_rules! sftp_tests {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use gzship_testkit::conformance::sftp::{self as suite, Backend};

            #[tokio::test]
            async fn openssh() {
                suite::$check(Backend::OpenSsh).await;
            }

            #[tokio::test]
            async fn proftpd() {
                suite::$check(Backend::Proftpd).await;
            }

            #[tokio::test]
            async fn gzship_sftpd() {
                suite::$check(Backend::GzshipSftpd).await;
            }

            #[tokio::test]
            async fn no_fstat() {
                suite::$check(Backend::NoFstat).await;
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

/// OpenSSH only, for the same reason.
#[tokio::test]
async fn idle_connections_are_reused_and_dropped_ones_replaced() {
    suite::idle_connections_are_reused_and_dropped_ones_replaced().await;
}

/// ProFTPD only: its log names the file handles a session left open.
#[tokio::test]
async fn handles_are_closed_after_reads_and_failures() {
    suite::handles_are_closed_after_reads_and_failures().await;
}

/// The paramiko server without mtimes.
#[tokio::test]
async fn a_server_without_mtimes_is_read_with_size_checks_alone() {
    suite::a_server_without_mtimes_is_read_with_size_checks_alone().await;
}

/// The paramiko server without STAT.
#[tokio::test]
async fn an_unsupported_operation_is_not_retried() {
    suite::an_unsupported_operation_is_not_retried().await;
}

/// No server: the port has nothing behind it.
#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    suite::connection_refused_is_retried_then_reported().await;
}
