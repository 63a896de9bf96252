//! A live progress line for long work, on standard error.

use std::time::Duration;

use engine::events::{Counters, Event, Observer};
use indicatif::{ProgressBar, ProgressStyle};

/// Shows the running counts of a sync; hidden when output is for scripts or not a terminal.
pub struct Progress {
    bar: ProgressBar,
    counters: Counters,
}

impl Progress {
    /// A progress line labelled `label`; `hidden` for `--json`.
    pub fn new(label: &str, hidden: bool) -> Self {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            counters: Counters::default(),
        }
    }

    /// A progress bar of an import: bytes of the export read of its total, with the counts.
    pub fn of_import(label: &str, hidden: bool) -> Self {
        let progress = Self::new(label, hidden);
        progress.bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:24}] {bytes}/{total_bytes} {msg} [{elapsed}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        progress
    }

    /// The counts so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Clears the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn refresh(&self) {
        let totals = self.counters.totals();
        if totals.requests == 0 {
            // An import: nothing is requested.
            self.bar.set_message(format!(
                "records {} · rejected {}",
                totals.records, totals.written.rejected
            ));
            return;
        }
        self.bar.set_message(format!(
            "records {} · pages {} · requests {} · retries {} · rate-limit waits {}",
            totals.records, totals.pages, totals.requests, totals.retries, totals.rate_limit_waits
        ));
    }
}

impl Observer for Progress {
    fn event(&self, event: &Event<'_>) {
        self.counters.event(event);
        match event {
            Event::RateLimited { wait } => self.bar.set_message(format!(
                "waiting {:.1}s for the provider's rate limit",
                wait.as_secs_f64()
            )),
            Event::Retry {
                attempt,
                wait,
                reason,
            } => self.bar.set_message(format!(
                "attempt {attempt} failed ({reason}); retrying in {:.1}s",
                wait.as_secs_f64()
            )),
            // The person has to act: said whether or not a progress bar is shown.
            Event::SessionOpened { stream, url } => {
                let message = format!(
                    "Open this page to choose what `{stream}` imports, then come back (waiting until you are done):\n  {url}"
                );
                if self.bar.is_hidden() {
                    eprintln!("{message}");
                } else {
                    self.bar.println(message);
                }
            }
            Event::Read { read, total, .. } => {
                if let Some(total) = total {
                    self.bar.set_length(*total);
                }
                self.bar.set_position(*read);
                self.refresh();
            }
            _ => self.refresh(),
        }
    }
}
