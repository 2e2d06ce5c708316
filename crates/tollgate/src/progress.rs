//! Progress bars for long CLI work (`guard replay`, `migrate`, `usage import`), on stderr.
//! Hidden when stderr is not a terminal (logs, pipes, CI) or when the command prints `--json`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// What a bar counts.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Items (events, records).
    Items,
    /// Bytes of input.
    Bytes,
}

/// A bar of `len` units labelled `what`; hidden when `quiet` or stderr is not a terminal.
pub fn bar(len: u64, unit: Unit, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = match unit {
        Unit::Items => {
            "{msg:>10} [{bar:40.cyan/blue}] {human_pos}/{human_len} ({per_sec}, {eta} left)"
        }
        Unit::Bytes => {
            "{msg:>10} [{bar:40.cyan/blue}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)"
        }
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let pb = ProgressBar::new(len).with_style(style);
    pb.set_message(what.to_owned());
    pb
}

/// A spinner for work of unknown size (reading stdin); hidden like [`bar`].
pub fn spinner(what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {msg} {bytes} read ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let pb = ProgressBar::new_spinner().with_style(style);
    pb.set_message(what.to_owned());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}
