//! A progress bar on stderr (bytes, rate, ETA) while a job runs, when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use gzship_core::worker::Progress;

/// The bar and the task that refreshes it.
#[derive(Debug)]
pub struct Bar {
    bar: Option<ProgressBar>,
    refresh: Option<JoinHandle<()>>,
}

impl Bar {
    /// Starts drawing `progress` (nothing when stderr is not a terminal).
    pub fn start(progress: Arc<Progress>) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar {
                bar: None,
                refresh: None,
            };
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} \
                 {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let b = bar.clone();
        let refresh = tokio::spawn(async move {
            loop {
                b.set_length(progress.total_bytes.load(Ordering::Relaxed));
                b.set_position(progress.source_bytes.load(Ordering::Relaxed));
                b.set_message(format!(
                    "uploaded {}",
                    indicatif::HumanBytes(progress.uploaded_bytes.load(Ordering::Relaxed))
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Bar {
            bar: Some(bar),
            refresh: Some(refresh),
        }
    }

    /// Stops refreshing and leaves the bar (or clears it on failure).
    pub fn finish(self, ok: bool) {
        if let Some(r) = self.refresh {
            r.abort();
        }
        if let Some(b) = self.bar {
            if ok {
                b.finish();
            } else {
                b.abandon();
            }
        }
    }
}
