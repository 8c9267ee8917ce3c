//! The progress bar on stderr: one bar, re-labelled per stage.
//!
//! Hidden with `--quiet` or when stderr is not a terminal. Updated by the
//! orchestrator's polling loop a few times a second, never per event, so it
//! costs nothing on the hot path.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A stage-by-stage progress bar.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar that draws only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        let bar = ProgressBar::new(0);
        if !enabled || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Self { bar }
    }

    /// Starts a stage of `len` units.
    pub fn stage(&self, name: &str, len: u64) {
        let style =
            ProgressStyle::with_template("{prefix:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
                .expect("constant template is valid");
        self.bar.set_style(style);
        self.bar.set_prefix(name.to_owned());
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.bar.set_message("");
        self.bar.reset_elapsed();
    }

    /// Moves the bar to `position` with `message` beside it.
    pub fn update(&self, position: u64, message: String) {
        self.bar.set_position(position);
        self.bar.set_message(message);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
