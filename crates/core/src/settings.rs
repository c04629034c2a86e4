//! One settings surface: every knob gzship has, with its name, unit, default and doc, parsed
//! once from any key-value source.
//!
//! [`SETTINGS`] is the registry: each [`Setting`] owns its command-line flag (`--part-memory`),
//! its environment variable (`GZSHIP_PART_MEMORY`), its unit, its default on each front end
//! and its doc (default, trade-off, symptom when wrong). Both front ends read it: the `gzship`
//! CLI builds its flags from it and the Lambda functions read their environment through it, so
//! the same name means the same thing and takes the same unit everywhere (`256MiB` is a size
//! in both). A default differs between the front ends only where [`Setting::lambda_default`]
//! says so, with the reason in [`Setting::why`].
//!
//! [`Settings::from_lookup`] parses and validates every setting from a lookup by environment
//! name (the CLI passes its flags and environment, Lambda its environment, tests a map) into
//! the typed configs the engine takes ([`MasterConfig`], [`WorkerTuning`], [`SftpTuning`],
//! [`S3Config`], [`Tuning`]). The library itself never reads the environment.

use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::AccessPolicy;
use crate::duration::{DurationModel, WorkerSpeed};
use crate::error::{Error, Result};
use crate::gzip::Level;
use crate::master::MasterConfig;
use crate::plan::Tuning;
use crate::scan::ScanRules;
use crate::source::sftp::{SftpTuning, SshCipher};
use crate::store::s3::S3Config;
use crate::types::{GIB, KIB, MIB, TIB};
use crate::worker::WorkerTuning;

/// The front end settings are read for: defaults and availability may differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// The `gzship` command line (flags and `GZSHIP_*` environment).
    Cli,
    /// The Lambda functions (`GZSHIP_*` environment).
    Lambda,
}

/// What a setting's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes with an optional binary unit: `4096`, `256KiB`, `16MiB`, `1.5GiB`, `40TiB`.
    Size,
    /// A whole number.
    Count,
    /// A time with its unit: `250ms`, `30s`, `15m`, `1h`.
    Duration,
    /// A rate in MB/s (10^6 bytes a second), e.g. `50` or `117.5`.
    MbPerS,
    /// A file or directory path.
    Path,
    /// Free text (a name, a URL, a fingerprint, JSON).
    Text,
    /// Comma-separated values.
    List,
    /// On or off: `true`/`false` (`1`/`0`, `yes`/`no`); a bare flag on the command line.
    Switch,
}

impl Unit {
    /// The placeholder shown for a value in help and docs.
    pub fn value_name(self) -> &'static str {
        match self {
            Unit::Size => "SIZE",
            Unit::Count => "N",
            Unit::Duration => "DURATION",
            Unit::MbPerS => "MB/S",
            Unit::Path => "PATH",
            Unit::Text => "TEXT",
            Unit::List => "LIST",
            Unit::Switch => "",
        }
    }
}

/// Which part of gzship a setting tunes; a command takes the groups it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Logging in to the SFTP server and trusting it.
    Ssh,
    /// Which sources and destinations may be touched.
    Access,
    /// How the source is read over SFTP.
    Sftp,
    /// The job's shape: tasks, level, part and block sizes.
    Job,
    /// How the master runs tasks.
    Master,
    /// How a worker compresses and uploads.
    Worker,
    /// How S3 is reached.
    S3,
    /// Where jobs are recorded, for resume.
    Records,
    /// Which files a scan of a remote directory picks.
    Scan,
    /// The model of a job's duration.
    Model,
    /// The Lambda functions' own wiring.
    Lambda,
    /// Logging.
    Log,
}

/// A default value, on one front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// This value, parsed like a given one (the registry is where the default lives).
    Value(&'static str),
    /// Computed at run time as described (`2 x cores`).
    Computed(&'static str),
    /// Unset, with what that means (`AWS`, `any path`).
    Unset(&'static str),
    /// Must be given.
    Required,
}

impl Preset {
    /// How the default reads in docs.
    pub fn text(self) -> &'static str {
        match self {
            Preset::Value(s) | Preset::Computed(s) | Preset::Unset(s) => s,
            Preset::Required => "required",
        }
    }
}

/// Where a setting can be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// The CLI and the Lambda functions.
    Both,
    /// The CLI only, for the reason given.
    Cli(&'static str),
    /// The Lambda functions only, for the reason given.
    Lambda(&'static str),
}

/// One knob.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The command-line flag without its dashes, e.g. `part-memory`.
    pub flag: &'static str,
    /// The environment variable, e.g. `GZSHIP_PART_MEMORY` (always `GZSHIP_` and the flag in
    /// capitals).
    pub env: &'static str,
    /// What the value is.
    pub unit: Unit,
    /// What it tunes.
    pub group: Group,
    /// Where it can be given.
    pub only: Only,
    /// Its default on the CLI (and on Lambda unless `lambda_default` is set).
    pub default: Preset,
    /// Its default on Lambda where that differs.
    pub lambda_default: Option<Preset>,
    /// Why the Lambda default differs (empty when it does not).
    pub why: &'static str,
    /// One line for tables and `--help`.
    pub summary: &'static str,
    /// The trade-off and the symptom when it is wrong, for `--help`.
    pub doc: &'static str,
}

impl Setting {
    /// The default on `front`.
    pub fn default_on(&self, front: FrontEnd) -> Preset {
        match (front, self.lambda_default) {
            (FrontEnd::Lambda, Some(d)) => d,
            _ => self.default,
        }
    }

    /// Whether `front` reads this setting.
    pub fn available_on(&self, front: FrontEnd) -> bool {
        matches!(
            (self.only, front),
            (Only::Both, _) | (Only::Cli(_), FrontEnd::Cli) | (Only::Lambda(_), FrontEnd::Lambda)
        )
    }
}

/// Old variable names that the functions once read, with their successors: setting one fails
/// with what to set instead, rather than being silently ignored.
pub const RENAMED: &[(&str, &str)] = &[
    (
        "GZSHIP_PART_MEMORY_MB",
        "GZSHIP_PART_MEMORY (a size such as 256MiB)",
    ),
    (
        "GZSHIP_RETRY_DELAY_MS",
        "GZSHIP_RETRY_DELAY (a duration such as 1s)",
    ),
    (
        "GZSHIP_START_INTERVAL_MS",
        "GZSHIP_START_INTERVAL (a duration such as 200ms)",
    ),
    (
        "GZSHIP_DRAIN_TIMEOUT_SECS",
        "GZSHIP_DRAIN_TIMEOUT (a duration such as 30s)",
    ),
    (
        "GZSHIP_WORKER_TIMEOUT_SECS",
        "GZSHIP_WORKER_TIMEOUT (a duration such as 900s)",
    ),
    (
        "GZSHIP_MASTER_TIMEOUT_SECS",
        "GZSHIP_MASTER_TIMEOUT (a duration such as 900s)",
    ),
    ("GZSHIP_SSH_USER", "GZSHIP_USER"),
    ("GZSHIP_SSH_KEY_FILE", "GZSHIP_IDENTITY"),
];

const JOB_ON_LAMBDA: &str = "each job event carries it (`level`, `tuning`)";

macro_rules! setting {
    ($flag:literal, $env:literal, $unit:ident, $group:ident, $only:expr, $default:expr,
     $summary:literal, $doc:literal) => {
        Setting {
            flag: $flag,
            env: $env,
            unit: Unit::$unit,
            group: Group::$group,
            only: $only,
            default: $default,
            lambda_default: None,
            why: "",
            summary: $summary,
            doc: $doc,
        }
    };
    ($flag:literal, $env:literal, $unit:ident, $group:ident, $only:expr, $default:expr,
     lambda $lambda:expr, because $why:literal, $summary:literal, $doc:literal) => {
        Setting {
            flag: $flag,
            env: $env,
            unit: Unit::$unit,
            group: Group::$group,
            only: $only,
            default: $default,
            lambda_default: Some($lambda),
            why: $why,
            summary: $summary,
            doc: $doc,
        }
    };
}

use Preset::{Computed, Required, Unset, Value};

/// Every setting gzship has, in the order of the README's table.
pub static SETTINGS: &[Setting] = &[
    // --- ssh
    setting!("identity", "GZSHIP_IDENTITY", Path, Ssh, Only::Both,
        Computed("~/.ssh/id_ed25519, id_ecdsa or id_rsa"),
        lambda Unset("none: GZSHIP_SSH_SECRET"), because "a function has no home directory; its credential is a secret",
        "private key file (OpenSSH format: ed25519, ECDSA, RSA)",
        "Unencrypted or with --passphrase-env. Wrong: the server refuses the login."),
    setting!(
        "passphrase-env",
        "GZSHIP_PASSPHRASE_ENV",
        Text,
        Ssh,
        Only::Cli("on Lambda the secret holds the passphrase"),
        Unset("none"),
        "name of the environment variable holding the key's passphrase",
        "The passphrase itself never appears on the command line."
    ),
    setting!(
        "password-env",
        "GZSHIP_PASSWORD_ENV",
        Text,
        Ssh,
        Only::Cli("on Lambda the secret holds the password"),
        Unset("none"),
        "name of the environment variable holding a password (log in with a password)",
        "The password itself never appears on the command line."
    ),
    setting!(
        "ssh-secret",
        "GZSHIP_SSH_SECRET",
        Text,
        Ssh,
        Only::Lambda("the CLI reads keys from files and passwords from the environment"),
        Required,
        "Secrets Manager secret (name or ARN) holding the ssh credential",
        "JSON: {\"private_key\": ..., \"passphrase\": ...} or {\"password\": ...}. GZSHIP_IDENTITY may replace it for local runs."
    ),
    setting!(
        "host-key",
        "GZSHIP_HOST_KEY",
        Text,
        Ssh,
        Only::Both,
        Unset("none"),
        "pinned host key fingerprint, SHA256:... (ssh-keygen -lf on the server's public host key)",
        "The host key is always verified: give this, --known-hosts or --known-hosts-text. Wrong: the connection is refused with the fingerprint the server presented."
    ),
    setting!("known-hosts", "GZSHIP_KNOWN_HOSTS", Path, Ssh, Only::Both,
        Computed("~/.ssh/known_hosts"),
        lambda Unset("none"), because "a function has no home directory",
        "known_hosts file to verify the host key with (hashed entries too)",
        "A path in both front ends; to give the file's text instead use --known-hosts-text."),
    setting!(
        "known-hosts-text",
        "GZSHIP_KNOWN_HOSTS_TEXT",
        Text,
        Ssh,
        Only::Both,
        Unset("none"),
        "known_hosts lines given inline (host keytype key), instead of a file",
        "Handy where no file can be shipped (a Lambda environment, CI)."
    ),
    setting!(
        "insecure-accept-any-host-key",
        "GZSHIP_INSECURE_ACCEPT_ANY_HOST_KEY",
        Switch,
        Ssh,
        Only::Cli("a deployed function always verifies the host key"),
        Value("false"),
        "accept any host key (logs a warning; local experiments only)",
        "Unsafe: a man-in-the-middle can read the data and steal a password."
    ),
    setting!("user", "GZSHIP_USER", Text, Ssh, Only::Both,
        Computed("$USER"),
        lambda Unset("none"), because "a function runs as no particular user",
        "login name when SOURCE names no user",
        "A user in the source URL (sftp://user@host/path) wins."),
    // --- access
    setting!("allowed-source-paths", "GZSHIP_ALLOWED_SOURCE_PATHS", List, Access, Only::Both,
        Unset("any path"),
        lambda Required, because "anyone allowed to invoke a function could otherwise read any file the ssh user can",
        "comma-separated source path prefixes gzship may read (`/` for any)",
        "A prefix without a trailing slash matches whole components (/data allows /data/x, not /database). Paths with . or .. are always refused."),
    setting!("allowed-destinations", "GZSHIP_ALLOWED_DESTINATIONS", List, Access, Only::Both,
        Unset("any destination"),
        lambda Required, because "anyone allowed to invoke a function could otherwise write anywhere its role can",
        "comma-separated s3://bucket[/prefix] gzship may write to",
        "Checked by the master and by every worker before any connection."),
    // --- sftp
    setting!(
        "sftp-connections",
        "GZSHIP_SFTP_CONNECTIONS",
        Count,
        Sftp,
        Only::Both,
        Value("1"),
        "SSH connections one range is read over",
        "Each decrypts on its own core. Raise it only where one core's cipher is the limit and spare cores exist (on 2 cores shared with sshd, 2 were slower: ~220 vs ~350 MB/s). Each costs a handshake and counts against the server's MaxStartups and MaxSessions."
    ),
    setting!(
        "sftp-requests-in-flight",
        "GZSHIP_SFTP_REQUESTS_IN_FLIGHT",
        Count,
        Sftp,
        Only::Both,
        Value("16"),
        "SFTP READs in flight per connection",
        "Throughput is about requests x request size / round trip: raise it for distant servers. Too high: memory grows and, on loopback, throughput drops (16 gave ~590 MB/s, 32 ~230-380)."
    ),
    setting!(
        "sftp-request-size",
        "GZSHIP_SFTP_REQUEST_SIZE",
        Size,
        Sftp,
        Only::Both,
        Value("261120"),
        "bytes asked for by one SFTP READ",
        "OpenSSH answers at most 261,120; capped by the server's limits@openssh.com. Too small: low throughput with little CPU use."
    ),
    setting!(
        "sftp-window",
        "GZSHIP_SFTP_WINDOW",
        Size,
        Sftp,
        Only::Both,
        Value("16MiB"),
        "SSH channel window",
        "Must exceed requests in flight x request size, or the server waits for window updates and throughput drops."
    ),
    setting!(
        "sftp-connect-timeout",
        "GZSHIP_SFTP_CONNECT_TIMEOUT",
        Duration,
        Sftp,
        Only::Both,
        Value("30s"),
        "time for one TCP connect, SSH handshake, login and SFTP start",
        "Too short: slow or busy servers fail with `timed out`; too long: a dead server holds a worker that long before each retry."
    ),
    setting!(
        "sftp-request-timeout",
        "GZSHIP_SFTP_REQUEST_TIMEOUT",
        Duration,
        Sftp,
        Only::Both,
        Value("60s"),
        "time for one SFTP request's answer; then the connection counts as lost",
        "Too short: needless reconnects on a busy server; too long: a hung connection stalls the range that long."
    ),
    setting!(
        "sftp-handshake-attempts",
        "GZSHIP_SFTP_HANDSHAKE_ATTEMPTS",
        Count,
        Sftp,
        Only::Both,
        Value("6"),
        "attempts at connecting before giving up",
        "Refused or reset connections and handshakes dropped by MaxStartups are retried; host key and login refusals are not. Too low: bursts of workers fail on MaxStartups."
    ),
    setting!(
        "sftp-reconnect-attempts",
        "GZSHIP_SFTP_RECONNECT_ATTEMPTS",
        Count,
        Sftp,
        Only::Both,
        Value("5"),
        "reconnects allowed while reading one range (reset whenever bytes arrive)",
        "Each resumes at the first byte not yet delivered. Too low: a flaky network fails whole tasks."
    ),
    setting!(
        "sftp-backoff",
        "GZSHIP_SFTP_BACKOFF",
        Duration,
        Sftp,
        Only::Both,
        Value("250ms"),
        "first delay between connection attempts (doubles, jittered)",
        "Too short: retries hit a saturated server again in lockstep; too long: a blip costs seconds."
    ),
    setting!(
        "sftp-backoff-max",
        "GZSHIP_SFTP_BACKOFF_MAX",
        Duration,
        Sftp,
        Only::Both,
        Value("10s"),
        "longest delay between connection attempts",
        "Bounds the doubling of --sftp-backoff."
    ),
    setting!(
        "sftp-ciphers",
        "GZSHIP_SFTP_CIPHERS",
        List,
        Sftp,
        Only::Both,
        Value(
            "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-ctr,aes128-ctr"
        ),
        "ciphers offered, most preferred first",
        "With AES hardware GCM is fastest; without it put chacha20-poly1305@openssh.com first."
    ),
    // --- job
    setting!(
        "tasks",
        "GZSHIP_TASKS",
        Count,
        Job,
        Only::Cli(JOB_ON_LAMBDA),
        Computed("one per --task-size"),
        "split the file into N ranges, one worker each",
        "Overrides --task-size. The plan has fewer when the source is too small to give each task a whole block."
    ),
    setting!(
        "task-size",
        "GZSHIP_TASK_SIZE",
        Size,
        Job,
        Only::Cli(JOB_ON_LAMBDA),
        Value("1GiB"),
        "source bytes per task when --tasks is not given",
        "Too large: fewer workers run in parallel and a task may near the worker's time limit; too small: more SSH handshakes and padding."
    ),
    setting!(
        "max-tasks",
        "GZSHIP_MAX_TASKS",
        Count,
        Job,
        Only::Cli(JOB_ON_LAMBDA),
        Value("1000"),
        "most tasks a job may have (at most 10,000: each task needs a part)",
        "Bounds the fan-out of huge files."
    ),
    setting!(
        "level",
        "GZSHIP_LEVEL",
        Count,
        Job,
        Only::Cli(JOB_ON_LAMBDA),
        Value("6"),
        "gzip level, 1 (fastest) to 9 (smallest)",
        "Level 6 runs about twice the speed of level 9 for under 1% larger objects on logs."
    ),
    setting!(
        "part-size",
        "GZSHIP_PART_SIZE",
        Size,
        Job,
        Only::Cli(JOB_ON_LAMBDA),
        Value("16MiB"),
        "compressed bytes per part (raised when 10,000 parts would not hold the job)",
        "Each upload in flight holds about one part: larger parts cost memory (or spool space), smaller ones more requests."
    ),
    setting!(
        "block-size",
        "GZSHIP_BLOCK_SIZE",
        Size,
        Job,
        Only::Cli(JOB_ON_LAMBDA),
        Value("4MiB"),
        "source bytes per gzip member",
        "Smaller blocks cost ratio (each member restarts deflate's window); larger ones memory. 4 MiB gives ratio 9.320 on logs against 9.300 for 2 MiB and 9.329 for 8 MiB."
    ),
    // --- master
    setting!("concurrency", "GZSHIP_CONCURRENCY", Count, Master, Only::Both,
        Value("2"),
        lambda Value("8"), because "local tasks share one machine's cores (2 saturate 2 cores), each Lambda task has its own function",
        "tasks running at once (each is one SSH connection)",
        "Too high: OpenSSH's MaxStartups (10 by default) drops handshakes and the source disk seeks; too low: the job runs longer."),
    setting!(
        "start-interval",
        "GZSHIP_START_INTERVAL",
        Duration,
        Master,
        Only::Both,
        Value("200ms"),
        "pause between starting two tasks (staggers SSH handshakes)",
        "At most five handshakes a second reach the server, well under MaxStartups 10:30:100. Too short: dropped handshakes (retried, slower); too long: slow ramp-up."
    ),
    setting!(
        "task-attempts",
        "GZSHIP_TASK_ATTEMPTS",
        Count,
        Master,
        Only::Both,
        Value("3"),
        "attempts per task when its error is retryable",
        "A retried task uploads the same bytes under the same part numbers. Too low: a transient failure fails the job."
    ),
    setting!(
        "retry-delay",
        "GZSHIP_RETRY_DELAY",
        Duration,
        Master,
        Only::Both,
        Value("1s"),
        "delay before a task's first retry (doubles, jittered)",
        "Too short: a struggling server is hit again at once; too long: a blip costs time."
    ),
    setting!(
        "retry-delay-max",
        "GZSHIP_RETRY_DELAY_MAX",
        Duration,
        Master,
        Only::Both,
        Value("30s"),
        "longest delay between a task's retries",
        "Bounds the doubling of --retry-delay."
    ),
    setting!(
        "drain-timeout",
        "GZSHIP_DRAIN_TIMEOUT",
        Duration,
        Master,
        Only::Both,
        Value("30s"),
        "after a task failed for good, how long running tasks may take to end before the final abort",
        "Too short: a part uploaded in that race can survive the first abort (the lifecycle rule still removes it); too long: a failing job takes longer to report."
    ),
    setting!(
        "jobs-prefix",
        "GZSHIP_JOBS_PREFIX",
        Text,
        Records,
        Only::Both,
        Value(".gzship/jobs/"),
        "where job records live in the destination's bucket (or directory)",
        "Each job records its plan and finished tasks there until it completes or is aborted; `gzship jobs` lists them and `gzship resume` continues one. Give a prefix the bucket's readers ignore; ending in '/'."
    ),
    // --- scan
    setting!(
        "stable-for",
        "GZSHIP_STABLE_FOR",
        Duration,
        Scan,
        Only::Both,
        Value("60s"),
        "a scanned file modified less than this long ago may still be written: it waits for a later scan",
        "A file is also passed over when its size or mtime changes between two stats. Too short: a file written in bursts can be shipped before its last burst (the object is complete for what was there; the next scan ships it again once its mtime changed); too long: files ship later. The Lambda scan event's stable_for_secs overrides it."
    ),
    setting!(
        "scan-files",
        "GZSHIP_SCAN_FILES",
        Count,
        Scan,
        Only::Both,
        Value("100"),
        "the most files one scan ships (CLI) or enqueues (Lambda); the others wait for the next scan",
        "Bounds a scan's time and its burst on the arrival queue. Too low: a backlog takes many scans to clear."
    ),
    setting!(
        "scan-claim-expiry",
        "GZSHIP_SCAN_CLAIM_EXPIRY",
        Duration,
        Scan,
        Only::Lambda("the CLI's scan runs each job itself, which claims its destination"),
        Value("6h"),
        "how long (default 6h) a Lambda scan's claim on a file it enqueued keeps other scans from enqueueing it (master)",
        "The file's job removes the claim when it ends. Too short: a file whose message waits longer in the queue is enqueued again (its second job finds it shipped or claimed); too long: a file whose message was lost (in the dead-letter queue) waits that long for a scan to enqueue it again."
    ),
    // --- worker
    setting!(
        "compress-parallelism",
        "GZSHIP_COMPRESS_PARALLELISM",
        Count,
        Worker,
        Only::Both,
        Computed("2 x cores"),
        "blocks handed to compression at once per task",
        "Compressing, or waiting for one of the process's compression slots (one per core, shared by every task). Each costs a block of memory. On 2 cores, 1 task over 1 GiB of logs: 3 gave 310-319 MB/s, 4 gave 320-334. Too low: cores idle."
    ),
    setting!(
        "uploads-in-flight",
        "GZSHIP_UPLOADS_IN_FLIGHT",
        Count,
        Worker,
        Only::Both,
        Value("4"),
        "UploadPart requests in flight per task",
        "Each holds one part. Too low on a distant link: uploads lag compression; too high: memory and S3 throttling."
    ),
    setting!(
        "part-memory",
        "GZSHIP_PART_MEMORY",
        Size,
        Worker,
        Only::Both,
        Value("256MiB"),
        "memory per task for parts being cut and uploaded; parts too big for it are spooled",
        "Fewer uploads run when uploads + 1 parts do not fit; when not even two fit (parts over ~120 MiB, sources over ~1 TiB) parts go to --spool-dir."
    ),
    setting!(
        "spool-dir",
        "GZSHIP_SPOOL_DIR",
        Path,
        Worker,
        Only::Both,
        Computed("system temp dir (/tmp)"),
        "where parts too big for --part-memory are spooled",
        "One file per upload in flight plus the part being cut, each deleted after its upload. A task checks for room before it connects."
    ),
    setting!(
        "spool-limit",
        "GZSHIP_SPOOL_LIMIT",
        Size,
        Worker,
        Only::Both,
        Unset("free space"),
        "the most of --spool-dir the job may use",
        "On Lambda /tmp is the function's own (EphemeralStorage)."
    ),
    // --- s3
    setting!(
        "s3-endpoint",
        "GZSHIP_S3_ENDPOINT",
        Text,
        S3,
        Only::Both,
        Unset("AWS"),
        "S3-compatible endpoint (implies path-style)",
        "Wrong: every request fails to connect or is signed for the wrong host."
    ),
    setting!(
        "s3-path-style",
        "GZSHIP_S3_PATH_STYLE",
        Switch,
        S3,
        Only::Both,
        Value("false"),
        "address buckets as endpoint/bucket/key (implied by --s3-endpoint)",
        "Most S3-compatible stores need it; bucket names with dots over TLS too."
    ),
    setting!(
        "s3-region",
        "GZSHIP_S3_REGION",
        Text,
        S3,
        Only::Both,
        Unset("the standard AWS chain's"),
        "region to sign for",
        "Wrong: PermanentRedirect or AuthorizationHeaderMalformed naming the bucket's region."
    ),
    setting!(
        "s3-attempts",
        "GZSHIP_S3_ATTEMPTS",
        Count,
        S3,
        Only::Both,
        Value("5"),
        "attempts per S3 request, the first included",
        "Higher rides out longer throttling (SlowDown) at the cost of a slower failure; 1 disables retries."
    ),
    setting!(
        "s3-connect-timeout",
        "GZSHIP_S3_CONNECT_TIMEOUT",
        Duration,
        S3,
        Only::Both,
        Value("5s"),
        "time to establish a connection to S3",
        "Too short: spurious connect failures on a loaded network; too long: a black-holed endpoint stalls each attempt."
    ),
    setting!(
        "s3-attempt-timeout",
        "GZSHIP_S3_ATTEMPT_TIMEOUT",
        Duration,
        S3,
        Only::Both,
        Value("300s"),
        "time for one attempt of one S3 request, the body included",
        "Must exceed the largest part divided by the slowest upload rate (300 s: a 5 GiB part at ~20 MB/s)."
    ),
    setting!(
        "s3-operation-timeout",
        "GZSHIP_S3_OPERATION_TIMEOUT",
        Duration,
        S3,
        Only::Both,
        Value("900s"),
        "time for a whole S3 request, all attempts included",
        "Bounds how long any store call can take."
    ),
    setting!(
        "sse-kms-key",
        "GZSHIP_SSE_KMS_KEY",
        Text,
        S3,
        Only::Both,
        Unset("the bucket's default encryption"),
        "KMS key (id or ARN) to encrypt objects and job records with, SSE-KMS",
        "Set it where a bucket policy demands SSE-KMS with a given key; the credentials need kms:GenerateDataKey and kms:Decrypt on it. Wrong: AccessDenied or KMS.NotFoundException at the job's first write."
    ),
    // --- model
    setting!(
        "worker-mb-per-s",
        "GZSHIP_WORKER_MB_PER_S",
        MbPerS,
        Model,
        Only::Both,
        Unset("from GZSHIP_WORKER_MEMORY and the level, else 50"),
        "source MB/s one worker is assumed to read, compress and upload",
        "Sizes tasks to a worker's time limit and decides whether a job fits the master's. Unset: GZSHIP_WORKER_MEMORY's vCPUs times the speed of one measured at the job's level (README: Performance), or 50 (a slow single core at level 9) without it. Too high: tasks outlast the worker's timeout on slow data."
    ),
    setting!(
        "worker-memory",
        "GZSHIP_WORKER_MEMORY",
        Size,
        Model,
        Only::Both,
        Unset("unknown"),
        "the worker function's memory (the template's WorkerMemory, in MiB: 3008MiB)",
        "Lambda gives one vCPU per 1,769 MiB (six at most); the assumed worker speed follows it unless GZSHIP_WORKER_MB_PER_S is set. The template passes it; `gzship estimate` assumes 3008MiB without it."
    ),
    setting!(
        "source-mb-per-s",
        "GZSHIP_SOURCE_MB_PER_S",
        MbPerS,
        Model,
        Only::Both,
        Unset("no cap"),
        "what the source server and its network deliver in total, over all connections",
        "Caps each worker at this divided by the workers running. Unset on a slow link: tasks are planned too long and jobs that cannot fit are accepted."
    ),
    setting!(
        "worker-timeout",
        "GZSHIP_WORKER_TIMEOUT",
        Duration,
        Model,
        Only::Both,
        Value("900s"),
        "the worker function's timeout; tasks are sized to use three quarters of it",
        "Must match the function's configured timeout (the template passes it). The CLI uses it in `gzship estimate`."
    ),
    setting!(
        "master-timeout",
        "GZSHIP_MASTER_TIMEOUT",
        Duration,
        Model,
        Only::Both,
        Value("900s"),
        "the master function's timeout; jobs that cannot finish inside it are refused",
        "Must match the function's configured timeout. The CLI uses it in `gzship estimate`."
    ),
    // --- lambda
    setting!(
        "worker-function",
        "GZSHIP_WORKER_FUNCTION",
        Text,
        Lambda,
        Only::Lambda("the CLI runs tasks in-process"),
        Required,
        "the worker function's name or ARN (master)",
        "The master invokes it once per task."
    ),
    setting!(
        "state-machine",
        "GZSHIP_STATE_MACHINE",
        Text,
        Lambda,
        Only::Lambda("the CLI has no time limit and runs every job itself"),
        Unset("none"),
        "ARN of the Step Functions state machine that runs jobs longer than the master's timeout (master)",
        "Unset: such jobs are refused. The template passes its own state machine."
    ),
    setting!(
        "job-template",
        "GZSHIP_JOB_TEMPLATE",
        Text,
        Lambda,
        Only::Lambda("the CLI takes SOURCE and DESTINATION"),
        Unset("none"),
        "job template (JSON) for schedules without a job and file-arrival notices (master)",
        "{\"source\": \"sftp://u@h{path}\", \"destination\": \"s3://b/{name}.gz\"}: see the master's events."
    ),
    setting!(
        "arrival-queue",
        "GZSHIP_ARRIVAL_QUEUE",
        Text,
        Lambda,
        Only::Lambda("the CLI's scan ships each file itself"),
        Unset("none"),
        "URL of the SQS queue a scan event sends each new file's job to (master)",
        "Unset: scan events are refused. The template passes its arrival queue, whose messages run the master."
    ),
    setting!(
        "dead-letter-queue",
        "GZSHIP_DEAD_LETTER_QUEUE",
        Text,
        Lambda,
        Only::Lambda("the CLI reports a failed job to its caller"),
        Unset("none"),
        "URL of the SQS queue that gets a queued job's message at once when it fails for good (master)",
        "A message whose job fails with a Fatal.* error is sent there, with the error, and not redelivered. Unset (or unreachable): it is redelivered until the queue's maxReceiveCount moves it. The template passes its arrival dead-letter queue."
    ),
    // --- log
    setting!("log", "GZSHIP_LOG", Text, Log, Only::Both,
        Value("warn"),
        lambda Value("info"), because "CloudWatch keeps each job's progress lines",
        "log filter, e.g. `info` or `gzship_core=debug`",
        "tracing's EnvFilter syntax."),
];

/// The setting whose environment variable is `env`.
pub fn setting(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

/// How gzship logs in to the SFTP server and trusts it, as given; each front end resolves it
/// (the CLI finds keys in `~/.ssh`, Lambda fetches its secret).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SshSettings {
    /// `GZSHIP_IDENTITY`: a private key file.
    pub identity: Option<PathBuf>,
    /// `GZSHIP_PASSPHRASE_ENV`: the variable holding the key's passphrase.
    pub passphrase_env: Option<String>,
    /// `GZSHIP_PASSWORD_ENV`: the variable holding a password.
    pub password_env: Option<String>,
    /// `GZSHIP_SSH_SECRET`: the Secrets Manager secret with the credential.
    pub ssh_secret: Option<String>,
    /// `GZSHIP_HOST_KEY`: a pinned fingerprint.
    pub host_key: Option<String>,
    /// `GZSHIP_KNOWN_HOSTS`: a known_hosts file.
    pub known_hosts: Option<PathBuf>,
    /// `GZSHIP_KNOWN_HOSTS_TEXT`: known_hosts lines.
    pub known_hosts_text: Option<String>,
    /// `GZSHIP_INSECURE_ACCEPT_ANY_HOST_KEY`.
    pub insecure_accept_any_host_key: bool,
    /// `GZSHIP_USER`: login name when the URL names none.
    pub user: Option<String>,
}

/// The Lambda functions' own wiring.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LambdaSettings {
    /// `GZSHIP_WORKER_FUNCTION`.
    pub worker_function: Option<String>,
    /// `GZSHIP_JOB_TEMPLATE`, as JSON text (the Lambda crate parses it).
    pub job_template: Option<String>,
    /// `GZSHIP_STATE_MACHINE`: the state machine for jobs longer than the master's timeout.
    pub state_machine: Option<String>,
    /// `GZSHIP_ARRIVAL_QUEUE`: the queue a scan sends each new file's job to.
    pub arrival_queue: Option<String>,
    /// `GZSHIP_DEAD_LETTER_QUEUE`: where a queued job that failed for good goes at once.
    pub dead_letter_queue: Option<String>,
}

/// Every setting, parsed and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The front end they were read for.
    pub front: FrontEnd,
    /// Credentials and host key.
    pub ssh: SshSettings,
    /// Allowed sources and destinations (also in `master.policy`).
    pub policy: AccessPolicy,
    /// How the source is read.
    pub sftp: SftpTuning,
    /// gzip level.
    pub level: Level,
    /// The planner's knobs.
    pub tuning: Tuning,
    /// How the master runs tasks.
    pub master: MasterConfig,
    /// How a worker compresses and uploads.
    pub worker: WorkerTuning,
    /// How S3 is reached.
    pub s3: S3Config,
    /// Worker and source throughput and the functions' timeouts.
    pub model: ModelSettings,
    /// How a scan picks files.
    pub scan: ScanRules,
    /// `GZSHIP_SCAN_CLAIM_EXPIRY`: how long a Lambda scan's claim on a file holds.
    pub scan_claim_expiry: Duration,
    /// The Lambda functions' wiring.
    pub lambda: LambdaSettings,
    /// The log filter.
    pub log: String,
}

/// The inputs of the duration model that are not the master's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSettings {
    /// `GZSHIP_WORKER_MB_PER_S`, as given.
    pub worker_mb_per_s: Option<f64>,
    /// `GZSHIP_WORKER_MB_PER_S`, or what `GZSHIP_WORKER_MEMORY` makes of a worker.
    pub worker_speed: WorkerSpeed,
    /// `GZSHIP_WORKER_MEMORY`, in bytes.
    pub worker_memory: Option<u64>,
    /// `GZSHIP_SOURCE_MB_PER_S`.
    pub source_mb_per_s: Option<f64>,
    /// `GZSHIP_WORKER_TIMEOUT`.
    pub worker_timeout: Duration,
    /// `GZSHIP_MASTER_TIMEOUT`.
    pub master_timeout: Duration,
}

impl Settings {
    /// Reads every setting `front` knows from `lookup` (by environment variable name; empty
    /// values count as unset), with the registry's defaults, and validates them. The error
    /// names the variable and says what is wrong.
    pub fn from_lookup(front: FrontEnd, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        Self::from_lookup_with_defaults(front, front, lookup)
    }

    /// As [`Self::from_lookup`] for the settings `front` reads, with the defaults of
    /// `defaults` (`gzship estimate` models a Lambda job from the command line).
    pub fn from_lookup_with_defaults(
        front: FrontEnd,
        defaults: FrontEnd,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        for (old, new) in RENAMED {
            if lookup(old).is_some_and(|v| !v.trim().is_empty()) {
                return Err(Error::Setting {
                    name: old,
                    reason: format!("was renamed: set {new} instead"),
                });
            }
        }
        let r = Reader {
            front,
            defaults,
            lookup,
        };
        let ssh = SshSettings {
            identity: r.path("GZSHIP_IDENTITY")?,
            passphrase_env: r.text("GZSHIP_PASSPHRASE_ENV")?,
            password_env: r.text("GZSHIP_PASSWORD_ENV")?,
            ssh_secret: r.text("GZSHIP_SSH_SECRET")?,
            host_key: r.text("GZSHIP_HOST_KEY")?,
            known_hosts: r.path("GZSHIP_KNOWN_HOSTS")?,
            known_hosts_text: r.text("GZSHIP_KNOWN_HOSTS_TEXT")?,
            insecure_accept_any_host_key: r.switch("GZSHIP_INSECURE_ACCEPT_ANY_HOST_KEY")?,
            user: r.text("GZSHIP_USER")?,
        };
        if let Some(path) = &ssh.known_hosts
            && path.to_string_lossy().contains(char::is_whitespace)
        {
            return Err(Error::Setting {
                name: "GZSHIP_KNOWN_HOSTS",
                reason: "is a file path and this looks like known_hosts lines: give the text in \
                         GZSHIP_KNOWN_HOSTS_TEXT instead"
                    .into(),
            });
        }
        let pinned = [
            ssh.host_key.is_some(),
            ssh.known_hosts.is_some() || ssh.known_hosts_text.is_some(),
            ssh.insecure_accept_any_host_key,
        ];
        if pinned.iter().filter(|&&b| b).count() > 1 {
            return Err(Error::Setting {
                name: "GZSHIP_HOST_KEY",
                reason: "give one way of verifying the host key: a fingerprint (GZSHIP_HOST_KEY), \
                         known_hosts (GZSHIP_KNOWN_HOSTS or GZSHIP_KNOWN_HOSTS_TEXT), or \
                         GZSHIP_INSECURE_ACCEPT_ANY_HOST_KEY"
                    .into(),
            });
        }
        if ssh.known_hosts.is_some() && ssh.known_hosts_text.is_some() {
            return Err(Error::Setting {
                name: "GZSHIP_KNOWN_HOSTS",
                reason: "GZSHIP_KNOWN_HOSTS_TEXT is set too: keep one".into(),
            });
        }

        let policy = AccessPolicy {
            source_paths: r.list("GZSHIP_ALLOWED_SOURCE_PATHS")?,
            destinations: r.list("GZSHIP_ALLOWED_DESTINATIONS")?,
        };
        for p in policy.source_paths.iter().flatten() {
            if !p.starts_with('/') {
                return Err(Error::Setting {
                    name: "GZSHIP_ALLOWED_SOURCE_PATHS",
                    reason: format!("{p:?} is not an absolute path"),
                });
            }
        }
        for d in policy.destinations.iter().flatten() {
            if !d.starts_with("s3://") || d.len() <= "s3://".len() {
                return Err(Error::Setting {
                    name: "GZSHIP_ALLOWED_DESTINATIONS",
                    reason: format!("{d:?} is not s3://bucket or s3://bucket/prefix"),
                });
            }
        }

        let ciphers = r
            .list("GZSHIP_SFTP_CIPHERS")?
            .unwrap_or_default()
            .iter()
            .map(|c| {
                c.parse::<SshCipher>().map_err(|reason| Error::Setting {
                    name: "GZSHIP_SFTP_CIPHERS",
                    reason,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let sftp = SftpTuning {
            request_size: r.count("GZSHIP_SFTP_REQUEST_SIZE", |s| {
                parse_size(s).and_then(|n| u32::try_from(n).map_err(|e| e.to_string()))
            })?,
            requests_in_flight: r.number("GZSHIP_SFTP_REQUESTS_IN_FLIGHT")?,
            connections: r.number("GZSHIP_SFTP_CONNECTIONS")?,
            connect_timeout: r.duration("GZSHIP_SFTP_CONNECT_TIMEOUT")?,
            request_timeout: r.duration("GZSHIP_SFTP_REQUEST_TIMEOUT")?,
            handshake_attempts: r.number("GZSHIP_SFTP_HANDSHAKE_ATTEMPTS")?,
            backoff: Backoff {
                base: r.duration("GZSHIP_SFTP_BACKOFF")?,
                max: r.duration("GZSHIP_SFTP_BACKOFF_MAX")?,
            },
            reconnect_attempts: r.number("GZSHIP_SFTP_RECONNECT_ATTEMPTS")?,
            window_size: r.count("GZSHIP_SFTP_WINDOW", |s| {
                parse_size(s).and_then(|n| u32::try_from(n).map_err(|e| e.to_string()))
            })?,
            ciphers,
            ..SftpTuning::default()
        };
        sftp.validate().map_err(|e| invalid("GZSHIP_SFTP_*", e))?;

        let level =
            Level::new(r.number("GZSHIP_LEVEL")?).map_err(|e| invalid("GZSHIP_LEVEL", e))?;
        let tuning = Tuning {
            block_size: r.bytes("GZSHIP_BLOCK_SIZE")?,
            part_size: r.bytes("GZSHIP_PART_SIZE")?,
            task_size: r.bytes("GZSHIP_TASK_SIZE")?,
            tasks: r.optional("GZSHIP_TASKS", parse_number)?,
            max_tasks: r.number("GZSHIP_MAX_TASKS")?,
            max_task_size: None,
        };
        tuning
            .validate()
            .map_err(|e| invalid("GZSHIP_TASK_SIZE, GZSHIP_PART_SIZE or GZSHIP_BLOCK_SIZE", e))?;

        let master = MasterConfig {
            concurrency: r.at_least_one("GZSHIP_CONCURRENCY")?,
            start_interval: r.duration("GZSHIP_START_INTERVAL")?,
            task_attempts: r.at_least_one("GZSHIP_TASK_ATTEMPTS")?,
            retry: Backoff {
                base: r.duration("GZSHIP_RETRY_DELAY")?,
                max: r.duration("GZSHIP_RETRY_DELAY_MAX")?,
            },
            drain_timeout: r.duration("GZSHIP_DRAIN_TIMEOUT")?,
            jobs_prefix: r.text("GZSHIP_JOBS_PREFIX")?.unwrap_or_default(),
            policy: policy.clone(),
            ..MasterConfig::default()
        };
        master
            .retry
            .validate()
            .map_err(|e| invalid("GZSHIP_RETRY_DELAY", e))?;
        crate::job::check_prefix(&master.jobs_prefix)
            .map_err(|e| invalid("GZSHIP_JOBS_PREFIX", e))?;

        let defaults = WorkerTuning::default();
        let worker = WorkerTuning {
            compress_parallelism: match r.optional("GZSHIP_COMPRESS_PARALLELISM", parse_number)? {
                Some(n) => n,
                None => defaults.compress_parallelism,
            },
            uploads_in_flight: r.at_least_one("GZSHIP_UPLOADS_IN_FLIGHT")?,
            part_memory: r.bytes("GZSHIP_PART_MEMORY")?,
            spool_dir: r.path("GZSHIP_SPOOL_DIR")?.unwrap_or(defaults.spool_dir),
            spool_limit: r.size("GZSHIP_SPOOL_LIMIT")?,
        };
        worker
            .validate()
            .map_err(|e| invalid("GZSHIP_COMPRESS_PARALLELISM", e))?;

        let endpoint_url = r.text("GZSHIP_S3_ENDPOINT")?;
        let s3 = S3Config {
            force_path_style: r.switch("GZSHIP_S3_PATH_STYLE")? || endpoint_url.is_some(),
            endpoint_url,
            region: r.text("GZSHIP_S3_REGION")?,
            max_attempts: r.at_least_one("GZSHIP_S3_ATTEMPTS")?,
            connect_timeout: r.duration("GZSHIP_S3_CONNECT_TIMEOUT")?,
            attempt_timeout: r.duration("GZSHIP_S3_ATTEMPT_TIMEOUT")?,
            operation_timeout: r.duration("GZSHIP_S3_OPERATION_TIMEOUT")?,
            sse_kms_key: r.text("GZSHIP_SSE_KMS_KEY")?,
        };

        let worker_memory = r.size("GZSHIP_WORKER_MEMORY")?;
        let worker_mb_per_s = r.rate("GZSHIP_WORKER_MB_PER_S")?;
        let model = ModelSettings {
            worker_mb_per_s,
            worker_speed: match (worker_mb_per_s, worker_memory) {
                (Some(mb), _) => WorkerSpeed::Fixed(mb),
                (None, Some(bytes)) => WorkerSpeed::Memory(bytes as f64 / (1u64 << 20) as f64),
                (None, None) => MasterConfig::default().worker_speed,
            },
            worker_memory,
            source_mb_per_s: r.rate("GZSHIP_SOURCE_MB_PER_S")?,
            worker_timeout: r.lambda_timeout("GZSHIP_WORKER_TIMEOUT")?,
            master_timeout: r.lambda_timeout("GZSHIP_MASTER_TIMEOUT")?,
        };
        let lambda = LambdaSettings {
            worker_function: r.text("GZSHIP_WORKER_FUNCTION")?,
            job_template: r.text("GZSHIP_JOB_TEMPLATE")?,
            state_machine: r.text("GZSHIP_STATE_MACHINE")?,
            arrival_queue: r.text("GZSHIP_ARRIVAL_QUEUE")?,
            dead_letter_queue: r.text("GZSHIP_DEAD_LETTER_QUEUE")?,
        };
        let master = MasterConfig {
            worker_speed: model.worker_speed,
            source_mb_per_s: model.source_mb_per_s,
            ..master
        };
        Ok(Settings {
            front,
            ssh,
            policy,
            sftp,
            level,
            tuning,
            master,
            worker,
            s3,
            model,
            scan: ScanRules {
                stable_for: r.duration("GZSHIP_STABLE_FOR")?,
                max_files: r.at_least_one("GZSHIP_SCAN_FILES")?,
            },
            scan_claim_expiry: r.duration("GZSHIP_SCAN_CLAIM_EXPIRY")?,
            lambda,
            log: r.text("GZSHIP_LOG")?.unwrap_or_default(),
        })
    }

    /// The settings with nothing given: every default of `front` (required settings unset).
    pub fn defaults(front: FrontEnd) -> Self {
        // Required settings are checked by the front end that needs them, and a unit test
        // parses every default of both front ends.
        Self::from_lookup(front, &|_| None).expect("every default in the settings registry parses")
    }

    /// The duration model for these settings, at their level.
    pub fn duration_model(&self) -> DurationModel {
        self.master.duration_model(self.level)
    }
}

fn invalid(name: &'static str, e: Error) -> Error {
    Error::Setting {
        name,
        reason: crate::error::chain(&e),
    }
}

/// Reads settings by name, with the registry's defaults.
struct Reader<'a> {
    front: FrontEnd,
    defaults: FrontEnd,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    fn entry(&self, env: &'static str) -> &'static Setting {
        // The names below are the registry's own; a typo fails every settings test.
        setting(env).unwrap_or_else(|| panic!("{env} is not in the settings registry"))
    }

    /// The given value, or the registry's default value, parsed; `None` when unset without a
    /// default value (computed, unset or required: required settings are checked by the front
    /// end that needs them).
    fn optional<T>(
        &self,
        env: &'static str,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        let s = self.entry(env);
        let given = if s.available_on(self.front) {
            (self.lookup)(env)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        } else {
            None
        };
        let (text, from_default) = match (given, s.default_on(self.defaults)) {
            (Some(v), _) => (v, false),
            (None, Preset::Value(d)) => (d.to_owned(), true),
            (None, _) => return Ok(None),
        };
        parse(&text).map(Some).map_err(|reason| Error::Setting {
            name: env,
            reason: if from_default {
                format!("the default {text:?} does not parse: {reason}")
            } else {
                format!("{text:?} is not a valid {}: {reason}", unit_words(s.unit))
            },
        })
    }

    fn required<T>(
        &self,
        env: &'static str,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        self.optional(env, parse)?.ok_or_else(|| Error::Setting {
            name: env,
            reason: "has no default and is not set".into(),
        })
    }

    fn text(&self, env: &'static str) -> Result<Option<String>> {
        self.optional(env, |s| Ok(s.to_owned()))
    }

    fn path(&self, env: &'static str) -> Result<Option<PathBuf>> {
        self.optional(env, |s| Ok(PathBuf::from(s)))
    }

    fn list(&self, env: &'static str) -> Result<Option<Vec<String>>> {
        self.optional(env, |s| {
            Ok(s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect())
        })
    }

    fn switch(&self, env: &'static str) -> Result<bool> {
        Ok(self.optional(env, parse_switch)?.unwrap_or(false))
    }

    fn size(&self, env: &'static str) -> Result<Option<u64>> {
        self.optional(env, parse_size)
    }

    fn bytes(&self, env: &'static str) -> Result<u64> {
        self.required(env, parse_size)
    }

    fn number<T: std::str::FromStr>(&self, env: &'static str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        self.required(env, parse_number)
    }

    fn count<T>(
        &self,
        env: &'static str,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        self.required(env, parse)
    }

    fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(
        &self,
        env: &'static str,
    ) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        self.required(env, |s| {
            let n: T = parse_number(s)?;
            if n < T::from(1) {
                return Err("must be at least 1".into());
            }
            Ok(n)
        })
    }

    fn duration(&self, env: &'static str) -> Result<Duration> {
        self.required(env, parse_duration)
    }

    fn lambda_timeout(&self, env: &'static str) -> Result<Duration> {
        self.required(env, |s| {
            let d = parse_duration(s)?;
            if d < Duration::from_secs(1) || d > Duration::from_secs(900) {
                return Err(format!("{d:?} is outside Lambda's 1 s to 900 s"));
            }
            Ok(d)
        })
    }

    fn rate(&self, env: &'static str) -> Result<Option<f64>> {
        self.optional(env, |s| {
            let v: f64 = parse_number(s.trim_end_matches("MB/s").trim())?;
            if !(v.is_finite() && v > 0.0) {
                return Err("must be a positive number of MB/s".into());
            }
            Ok(v)
        })
    }
}

fn unit_words(unit: Unit) -> &'static str {
    match unit {
        Unit::Size => "size (e.g. 4096, 256KiB, 16MiB, 1.5GiB)",
        Unit::Count => "whole number",
        Unit::Duration => "duration (e.g. 250ms, 30s, 15m, 1h)",
        Unit::MbPerS => "rate in MB/s (e.g. 50)",
        Unit::Path => "path",
        Unit::Text => "value",
        Unit::List => "comma-separated list",
        Unit::Switch => "switch (true or false)",
    }
}

fn parse_number<T: std::str::FromStr>(s: &str) -> std::result::Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.replace('_', "")
        .parse()
        .map_err(|e: T::Err| e.to_string())
}

/// Parses `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub fn parse_switch(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("{other:?} is neither true nor false")),
    }
}

/// Parses a size: `123`, `4k`, `16MiB`, `1.5G`, `40 TiB` (binary units; `B` optional).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        "t" | "tb" | "tib" => TIB,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let bytes = num * mult as f64;
    if !(0.0..=u64::MAX as f64).contains(&bytes) || bytes.fract() != 0.0 {
        return Err(format!("{s:?} is not a whole number of bytes in range"));
    }
    Ok(bytes as u64)
}

/// Parses a duration with its unit: `250ms`, `30s`, `15m`, `1h`, `7d`, `1.5s`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let secs = match unit.trim() {
        "ms" => num / 1000.0,
        "s" => num,
        "m" | "min" => num * 60.0,
        "h" => num * 3600.0,
        "d" => num * 86_400.0,
        "" => return Err(format!("{s:?} has no unit: write e.g. {num}s or {num}ms")),
        other => {
            return Err(format!(
                "unknown time unit {other:?} in {s:?} (use ms, s, m, h, d)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// The README's settings table, generated from the registry (a test keeps the README in step).
pub fn markdown_table() -> String {
    let mut out =
        String::from("| flag | env | default | on Lambda | what |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let flag = match s.only {
            Only::Lambda(_) => String::new(),
            _ if s.unit == Unit::Switch => format!("`--{}`", s.flag),
            _ => format!("`--{} {}`", s.flag, s.unit.value_name()),
        };
        let lambda = match (s.only, s.lambda_default) {
            (Only::Cli(why), _) => format!("no: {why}"),
            (_, Some(d)) if s.why.is_empty() => d.text().to_owned(),
            (_, Some(d)) => format!("{}: {}", d.text(), s.why),
            (Only::Lambda(_), None) => "yes".to_owned(),
            (Only::Both, None) => "same".to_owned(),
        };
        let cli_default = match s.only {
            Only::Lambda(_) => "(Lambda only)".to_owned(),
            _ => s.default.text().to_owned(),
        };
        out.push_str(&format!(
            "| {flag} | `{}` | {} | {} | {} |\n",
            s.env,
            cli_default.replace('|', "\\|"),
            lambda.replace('|', "\\|"),
            s.summary.replace('|', "\\|"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn names_follow_one_rule() {
        for s in SETTINGS {
            assert_eq!(
                s.env,
                format!("GZSHIP_{}", s.flag.replace('-', "_").to_uppercase()),
                "{}",
                s.flag
            );
            assert!(!s.summary.is_empty() && !s.doc.is_empty(), "{}", s.env);
            assert_eq!(s.lambda_default.is_some(), !s.why.is_empty(), "{}", s.env);
        }
        let mut envs: Vec<_> = SETTINGS.iter().map(|s| s.env).collect();
        envs.sort_unstable();
        envs.dedup();
        assert_eq!(envs.len(), SETTINGS.len(), "a name is registered twice");
    }

    #[test]
    fn every_default_parses_on_both_front_ends() {
        for front in [FrontEnd::Cli, FrontEnd::Lambda] {
            let s = Settings::from_lookup(front, &|_| None).unwrap();
            assert_eq!(s.front, front);
        }
    }

    /// The registry owns the defaults; the engine's structs keep their own `Default` for
    /// library users, and the two must agree.
    #[test]
    fn registry_defaults_match_the_engines_defaults() {
        let s = Settings::defaults(FrontEnd::Lambda);
        let m = MasterConfig::default();
        assert_eq!(s.master.concurrency, m.concurrency);
        assert_eq!(s.master.start_interval, m.start_interval);
        assert_eq!(s.master.task_attempts, m.task_attempts);
        assert_eq!(s.master.retry, m.retry);
        assert_eq!(s.master.drain_timeout, m.drain_timeout);
        assert_eq!(s.master.jobs_prefix, m.jobs_prefix);
        assert_eq!(s.master.worker_speed, m.worker_speed);
        assert_eq!(s.worker, WorkerTuning::default());
        let t = SftpTuning::default();
        assert_eq!(format!("{:?}", s.sftp), format!("{t:?}"));
        assert_eq!(s.tuning, Tuning::default());
        assert_eq!(s.s3, S3Config::default());
        assert_eq!(s.level, Level::default());
        assert_eq!(s.log, "info");
        let cli = Settings::defaults(FrontEnd::Cli);
        assert_eq!(cli.master.concurrency, 2);
        assert_eq!(cli.log, "warn");
        assert_eq!(cli.policy, AccessPolicy::default());
    }

    #[test]
    fn the_same_name_takes_the_same_unit_on_both_front_ends() {
        let vars = map(&[
            ("GZSHIP_PART_MEMORY", "64MiB"),
            ("GZSHIP_RETRY_DELAY", "250ms"),
            ("GZSHIP_WORKER_TIMEOUT", "10m"),
            ("GZSHIP_KNOWN_HOSTS", "/etc/ssh/ssh_known_hosts"),
        ]);
        for front in [FrontEnd::Cli, FrontEnd::Lambda] {
            let s = Settings::from_lookup(front, &vars).unwrap();
            assert_eq!(s.worker.part_memory, 64 * MIB);
            assert_eq!(s.master.retry.base, Duration::from_millis(250));
            assert_eq!(s.model.worker_timeout, Duration::from_secs(600));
            assert_eq!(
                s.ssh.known_hosts.as_deref(),
                Some(std::path::Path::new("/etc/ssh/ssh_known_hosts"))
            );
        }
    }

    #[test]
    fn bad_values_name_the_variable_and_the_value() {
        let cases: &[(&str, &str, &str)] = &[
            ("GZSHIP_PART_MEMORY", "lots", "size"),
            ("GZSHIP_START_INTERVAL", "200", "has no unit"),
            ("GZSHIP_CONCURRENCY", "0", "at least 1"),
            ("GZSHIP_CONCURRENCY", "many", "many"),
            ("GZSHIP_LEVEL", "12", "GZSHIP_LEVEL"),
            ("GZSHIP_MASTER_TIMEOUT", "1h", "900 s"),
            ("GZSHIP_WORKER_MB_PER_S", "-3", "positive"),
            ("GZSHIP_ALLOWED_SOURCE_PATHS", "var/log", "absolute"),
            ("GZSHIP_ALLOWED_DESTINATIONS", "archive", "s3://bucket"),
            ("GZSHIP_SFTP_CIPHERS", "rot13", "rot13"),
            (
                "GZSHIP_KNOWN_HOSTS",
                "host ssh-ed25519 AAAA",
                "GZSHIP_KNOWN_HOSTS_TEXT",
            ),
            ("GZSHIP_PART_MEMORY_MB", "64", "GZSHIP_PART_MEMORY"),
            ("GZSHIP_SSH_KEY_FILE", "/k", "GZSHIP_IDENTITY"),
        ];
        for (name, value, want) in cases {
            let err = Settings::from_lookup(FrontEnd::Cli, &map(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(name) && err.contains(want),
                "{name}={value}: {err}"
            );
        }
        let both = map(&[
            ("GZSHIP_HOST_KEY", "SHA256:x"),
            ("GZSHIP_KNOWN_HOSTS_TEXT", "h k v"),
        ]);
        let err = Settings::from_lookup(FrontEnd::Cli, &both).unwrap_err();
        assert!(err.to_string().contains("one way"), "{err}");
    }

    #[test]
    fn settings_of_the_other_front_end_are_ignored() {
        let vars = map(&[
            ("GZSHIP_WORKER_FUNCTION", "w"),
            ("GZSHIP_INSECURE_ACCEPT_ANY_HOST_KEY", "true"),
            ("GZSHIP_LEVEL", "9"),
        ]);
        let cli = Settings::from_lookup(FrontEnd::Cli, &vars).unwrap();
        assert_eq!(cli.lambda.worker_function, None);
        assert!(cli.ssh.insecure_accept_any_host_key);
        assert_eq!(cli.level.get(), 9);
        let lambda = Settings::from_lookup(FrontEnd::Lambda, &vars).unwrap();
        assert_eq!(lambda.lambda.worker_function.as_deref(), Some("w"));
        assert!(!lambda.ssh.insecure_accept_any_host_key);
        assert_eq!(lambda.level.get(), 6);
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("40 TiB").unwrap(), 40 << 40);
        assert_eq!(parse_size("261_120").unwrap(), 261_120);
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("0.3").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("3 days").is_err());
    }

    /// The README's settings table is generated from the registry; regenerate it with
    /// `cargo run -p gzship-cli -- settings` when this fails.
    #[test]
    fn the_readme_table_matches_the_registry() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        let begin = "<!-- settings:begin -->\n";
        let end = "<!-- settings:end -->";
        let start = readme
            .find(begin)
            .expect("README has a settings:begin marker")
            + begin.len();
        let stop = readme[start..]
            .find(end)
            .expect("README has a settings:end marker")
            + start;
        let table = &readme[start..stop];
        assert!(
            table == markdown_table(),
            "README.md's settings table differs from the registry; replace it with the output \
             of `cargo run -p gzship-cli -- settings`:\n{}",
            markdown_table()
        );
    }
}
