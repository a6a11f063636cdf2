//! Progress on stderr: a spinner with the current phase on a terminal, plain phase lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct StderrProgress {
    label: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl StderrProgress {
    pub fn new(label: &'static str) -> StderrProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        StderrProgress {
            label,
            bar,
            started: Instant::now(),
        }
    }
}

impl pyro_core::Progress for StderrProgress {
    fn phase(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_string()),
            None => eprintln!(
                "[{}] {message} (+{:.1}s)",
                self.label,
                self.started.elapsed().as_secs_f64()
            ),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
