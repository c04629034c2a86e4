//! What both binaries share: logging and the environment.

/// Logs to stdout (CloudWatch) without colours, filtered by `GZSHIP_LOG` (the settings
/// registry's `log`, default `info` on Lambda). Read before the other settings, so that their
/// errors are logged.
pub fn init_tracing() {
    let default = gzship_core::settings::setting("GZSHIP_LOG").map_or("info", |s| {
        s.default_on(gzship_core::settings::FrontEnd::Lambda).text()
    });
    let filter = env_var("GZSHIP_LOG")
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
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
