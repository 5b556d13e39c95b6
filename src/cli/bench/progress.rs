//! What the bench shows on stderr while it runs.

use std::io::IsTerminal;
use std::time::Duration;

/// Shows what runs now: a live line on a terminal, one line per step otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A spinner when stderr is a terminal; plain lines otherwise.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    /// A new step; shown on a plain line when stderr is not a terminal.
    pub fn step(&self, message: String) {
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => errln!("{message}"),
        }
    }

    /// An update within a step (terminal only).
    pub fn update(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// Prints a line on stdout without tearing the progress line.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| outln!("{line}")),
            None => outln!("{line}"),
        }
    }

    /// Clears the live line (terminal only).
    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
