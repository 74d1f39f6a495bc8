//! Log setup: `tracing` to stderr, as text or JSON. Standard output is kept
//! for what a command prints (records from `tail`, the `up` banner).

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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
