//! `ferry validate CONFIG`: load and check, no I/O beyond reading the file
//! (and any `${file:...}` secret it names).

use super::Failure;
use std::path::Path;

pub(crate) fn validate(path: &Path) -> Result<(), Failure> {
    let config = ferry::config::load(path)?;
    let kafka = config.kafka.bootstrap_servers.as_deref().map_or_else(
        || format!("embedded broker on {}", config.embedded_broker.listen),
        str::to_owned,
    );
    println!(
        "{}: ok (kafka: {kafka}; admin API: {}; {} topic(s))",
        path.display(),
        config.admin.listen,
        config.topics.len()
    );
    Ok(())
}
