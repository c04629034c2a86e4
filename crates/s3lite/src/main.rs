//! `gzship-s3lite`: serve S3 on 127.0.0.1 for benchmarks (prints its endpoint URL on stdout), or
//! `put` stdin into a multipart upload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, SharedCredentialsProvider,
};
use clap::{Parser, Subcommand};

use gzship_s3lite::put::{PutOptions, put};
use gzship_s3lite::{Config, EtagKind, Storage};

/// A lean S3-compatible server (multipart uploads, path-style, any signature accepted).
#[derive(Debug, Parser)]
#[command(name = "gzship-s3lite", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve S3 (the default): prints `http://ADDR` on stdout once listening.
    Serve(ServeArgs),
    /// Upload stdin as one multipart upload; prints `{"bytes":N,"parts":P}` on stdout.
    Put(PutArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Keep parts and objects as files under DIR (default: discard bodies after hashing).
    #[arg(long, conflicts_with = "memory")]
    dir: Option<PathBuf>,
    /// Keep parts and objects in memory (default: discard bodies after hashing).
    #[arg(long)]
    memory: bool,
    /// Part ETags are MD5s, as S3's (default: from the CRC32C, which costs nothing).
    #[arg(long)]
    md5: bool,
    /// Create this bucket at start (repeatable).
    #[arg(long = "bucket")]
    buckets: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
struct PutArgs {
    /// Endpoint, e.g. http://127.0.0.1:9000.
    #[arg(long)]
    endpoint: String,
    /// Part size in MiB.
    #[arg(long, default_value_t = 16)]
    part_size_mib: usize,
    /// UploadPart requests at once.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// s3://bucket/key
    destination: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::Put(args)) => put_stdin(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let storage = match (args.dir, args.memory) {
        (Some(dir), _) => Storage::Dir(dir),
        (None, true) => Storage::Memory,
        (None, false) => Storage::Discard,
    };
    let config = Config {
        storage,
        etag: if args.md5 {
            EtagKind::Md5
        } else {
            EtagKind::Crc32c
        },
        buckets: args.buckets,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr().context("read the bound address")?;
    // Scripts read this line to learn the port.
    println!("http://{addr}");
    use std::io::Write as _;
    std::io::stdout().flush().context("write stdout")?;
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    gzship_s3lite::run(listener, config, shutdown)
        .await
        .context("serve")
}

async fn put_stdin(args: PutArgs) -> anyhow::Result<()> {
    let (bucket, key) = args
        .destination
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .context("the destination must be s3://bucket/key")?;
    // The server accepts any signature: static credentials keep the environment out of it.
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "gzship-s3lite",
            "gzship-s3lite",
            None,
            None,
            "static",
        )))
        .endpoint_url(&args.endpoint)
        .force_path_style(true)
        // We send the CRC32C of each part ourselves, as gzship does.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let options = PutOptions {
        part_size: args.part_size_mib << 20,
        in_flight: args.in_flight,
    };
    let report = put(&client, bucket, key, tokio::io::stdin(), options).await?;
    println!("{{\"bytes\":{},\"parts\":{}}}", report.bytes, report.parts);
    Ok(())
}
