//! What both binaries share: logging and the environment.

/// Logs to stdout (CloudWatch) as one JSON object per line, filtered by `GZSHIP_LOG` (the
/// settings registry's `log`, default `info` on Lambda). Read before the other settings, so
/// that their errors are logged.
///
/// A line holds the event's fields at the top level (`level`, `message`, `job`, ...) and the
/// spans it was logged in under `spans`: the master's work on a job runs in a `job` span and a
/// worker's in a `task` span, both with the job id, so CloudWatch Logs Insights can follow one
/// job (`filter spans.0.job = "..."`). Lambda adds its own timestamps and request ids.
pub fn init_tracing() {
    let default = gzship_core::settings::setting("GZSHIP_LOG").map_or("info", |s| {
        s.default_on(gzship_core::settings::FrontEnd::Lambda).text()
    });
    let filter = env_var("GZSHIP_LOG")
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    json_logs(std::io::stdout).with_env_filter(filter).init();
}

/// The format of [`init_tracing`], writing to `writer`.
pub fn json_logs<W>(
    writer: W,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::JsonFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json, ()>,
    tracing_subscriber::filter::LevelFilter,
    W,
>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .without_time()
        .with_writer(writer)
}

/// Reads a variable of the process environment (the binaries' lookup).
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
