//! Log setup: `tracing` to stderr, as text or JSON. Standard output is kept
//! for what a command prints (records from `tail`, the `up` banner). Every
//! line passes through the redaction policy ([`super::redact::scrub`])
//! before it is written, whichever crate logged it.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Directives added to every filter: tansu's own logging is noisy at info.
const QUIET_DEPENDENCIES: &[&str] = &[
    "tansu_broker=warn",
    "tansu_storage=warn",
    "tansu_sans_io=warn",
];

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `config.level`.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(config: &LogConfig) {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    let mut filter = EnvFilter::try_new(&base).unwrap_or_else(|_| EnvFilter::new("info"));
    for d in QUIET_DEPENDENCIES {
        if !base.contains(d.split('=').next().unwrap_or(d)) {
            if let Ok(d) = d.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Scrubbed(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A writer that scrubs secrets from what it is given. `tracing`'s fmt
/// layer formats a whole event, then writes it with one call.
struct Scrubbed<W>(W);

impl<W: std::io::Write> std::io::Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                self.0.write_all(super::redact::scrub(text).as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
