//! What both binaries share: logging and the environment.

/// Logs to stdout (CloudWatch) without colours, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        // Lambda adds its own timestamps and request ids to every line.
        .without_time()
        .with_target(false)
        .init();
}

/// Reads a variable of the process environment (the binaries' lookup).
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
