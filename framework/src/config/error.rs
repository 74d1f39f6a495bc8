use std::path::PathBuf;

/// Everything that can be wrong with a configuration. Every variant names where
/// the problem is (the file, or the environment variable, and the key path) and
/// is the user's to fix: none of them is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{}: not valid YAML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// A key has a value Ferry cannot accept (unknown key, wrong type, failed check).
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        /// The file path, or `environment variable FERRY__...` when the value came from there.
        origin: String,
        /// The dotted key path, e.g. `kafka.producer.linger`.
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for a check made after deserialization.
    pub fn invalid(
        origin: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            origin: origin.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}
