//! Loading: a YAML file, then `FERRY__SECTION__KEY=value` environment overrides,
//! deserialized into [`FerryConfig`] with the failing key's path kept for the
//! error message.

use super::{ConfigError, FerryConfig};
use config::{Config, Environment, File, FileFormat};
use std::collections::HashMap;
use std::path::Path;

/// Environment variables that override config keys start with this.
pub const ENV_PREFIX: &str = "FERRY";
/// Separates the prefix and each level of the key path: `FERRY__KAFKA__BOOTSTRAP_SERVERS`.
pub const ENV_SEPARATOR: &str = "__";

/// Loads and validates `path` with overrides from the process environment.
pub fn load(path: &Path) -> Result<FerryConfig, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    load_with_env(path, &env)
}

/// Loads and validates `path` with overrides from `env` (a map of variable
/// name to value) instead of the process environment.
pub fn load_with_env(
    path: &Path,
    env: &HashMap<String, String>,
) -> Result<FerryConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let origin = path.display().to_string();
    let text =
        super::interpolate::interpolate(&text, env).map_err(|message| ConfigError::Syntax {
            path: path.to_owned(),
            message,
        })?;
    let overrides: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| is_override(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let raw = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Yaml))
        .add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;

    let config: FerryConfig = serde_path_to_error::deserialize(raw).map_err(|e| {
        let (key, message) = describe(&e);
        let origin = env_var_for(&key)
            .filter(|var| env.contains_key(var))
            .map(|var| format!("environment variable {var}"))
            .unwrap_or_else(|| origin.clone());
        ConfigError::Invalid {
            origin,
            key,
            message,
        }
    })?;
    config.validate(&origin)?;
    Ok(config)
}

fn is_override(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX)
        .is_some_and(|rest| rest.starts_with(ENV_SEPARATOR))
}

/// The environment variable that would set `key` (`kafka.client_id` ->
/// `FERRY__KAFKA__CLIENT_ID`). None for keys inside lists.
fn env_var_for(key: &str) -> Option<String> {
    if key.contains('[') {
        return None;
    }
    let parts: Vec<String> = key.split('.').map(str::to_uppercase).collect();
    Some(format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        parts.join(ENV_SEPARATOR)
    ))
}

/// The key path and a message without the `config` crate's own prefixes. For
/// an unknown field, serde points at the parent; the key is the field itself.
fn describe(e: &serde_path_to_error::Error<config::ConfigError>) -> (String, String) {
    let mut key = e.path().to_string();
    let message = match e.inner() {
        config::ConfigError::Type {
            unexpected,
            expected,
            key: inner_key,
            ..
        } => {
            if key == "." || key.is_empty() {
                key = inner_key.clone().unwrap_or_default();
            }
            format!("expected {expected}, found {unexpected}")
        }
        other => other.to_string(),
    };
    let message = strip_config_suffix(&message);
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        let already = key == field || key.ends_with(&format!(".{field}"));
        if !already {
            key = if key == "." || key.is_empty() {
                field.to_owned()
            } else {
                format!("{key}.{field}")
            };
        }
    }
    if key.is_empty() {
        key = ".".to_owned();
    }
    (key, message)
}

/// The `config` crate appends "for key `...`" and "in <origin>"; Ferry prints
/// both itself.
fn strip_config_suffix(message: &str) -> String {
    let cut = [" for key `", " in "]
        .iter()
        .filter_map(|m| message.find(m))
        .min()
        .unwrap_or(message.len());
    message[..cut].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    fn err(text: &str, env: &[(&str, &str)]) -> String {
        let f = write(text);
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match load_with_env(f.path(), &env) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let f = write("");
        let c = load_with_env(f.path(), &HashMap::new()).expect("defaults");
        assert_eq!(c.admin.listen.port(), 8083);
        assert!(c.kafka.bootstrap_servers.is_none());
    }

    #[test]
    fn env_overrides_file() {
        let f = write("kafka:\n  client_id: from-file\n");
        let env = HashMap::from([
            ("FERRY__KAFKA__CLIENT_ID".to_owned(), "from-env".to_owned()),
            (
                "FERRY__KAFKA__BOOTSTRAP_SERVERS".to_owned(),
                "k1:9092,k2:9092".to_owned(),
            ),
            ("FERRY__ADMIN__LISTEN".to_owned(), "0.0.0.0:9999".to_owned()),
        ]);
        let c = load_with_env(f.path(), &env).expect("config");
        assert_eq!(c.kafka.client_id, "from-env");
        assert_eq!(
            c.kafka.bootstrap_servers.as_deref(),
            Some("k1:9092,k2:9092")
        );
        assert_eq!(c.admin.listen.port(), 9999);
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = err("kafka:\n  producer:\n    lingr: 5ms\n", &[]);
        assert!(e.contains("key `kafka.producer.lingr`"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let e = err("topics:\n  - name: a\n    partitions: many\n", &[]);
        assert!(e.contains("topics[0].partitions"), "{e}");
    }

    #[test]
    fn env_value_errors_name_the_variable() {
        let e = err("", &[("FERRY__ADMIN__LISTEN", "not-an-address")]);
        assert!(
            e.contains("environment variable FERRY__ADMIN__LISTEN"),
            "{e}"
        );
        assert!(e.contains("admin.listen"), "{e}");
    }

    #[test]
    fn malformed_yaml_names_the_file() {
        let f = write("kafka: [unclosed\n");
        let e = load_with_env(f.path(), &HashMap::new())
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(
            e.contains(&f.path().display().to_string()) && e.contains("not valid YAML"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_is_refused() {
        let e = err("kafka:\n  producer:\n    linger: soon\n", &[]);
        assert!(e.contains("kafka.producer.linger"), "{e}");
    }
}
