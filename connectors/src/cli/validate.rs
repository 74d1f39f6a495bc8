//! `ferry validate CONFIG`: load and check, no network I/O: reads the file,
//! any `${file:...}` secret it names and the schema files its topics name.

use super::Failure;
use std::path::Path;

pub(crate) fn validate(path: &Path) -> Result<(), Failure> {
    let mut config = ferry::config::load(path)?;
    let origin = path.display().to_string();
    let planned = crate::registry::plan_all(&mut config, &origin)?;
    let bindings = ferry::schema::bindings::topic_bindings(&config, &origin)?;
    let kafka = config.kafka.bootstrap_servers.as_deref().map_or_else(
        || format!("embedded broker on {}", config.embedded_broker.listen),
        str::to_owned,
    );
    println!(
        "{}: ok (kafka: {kafka}; admin API: {}; schema registry: {}; {} topic(s), {} schema(s), {} connector(s))",
        path.display(),
        config.admin.listen,
        ferry::telemetry::redact::url(&config.schema_registry.client_url()),
        config.topics.len(),
        bindings.len(),
        planned.len()
    );
    Ok(())
}
