//! Ferry's configuration: the typed model, how it is loaded (a YAML file plus
//! `FERRY__...` environment overrides), secrets, and validation.
//!
//! The contract (Vector's `validate` / `build` split): [`load`] and
//! [`FerryConfig::validate`] do no network I/O. They read the config file and
//! any `${file:...}` secret it names, and nothing else, so `ferry validate` can
//! run anywhere. Everything that connects happens later, in the runtime.

mod error;
mod interpolate;
mod load;
mod model;
pub mod secret;

pub use error::ConfigError;
pub use load::{load, load_with_env, ENV_PREFIX, ENV_SEPARATOR};
pub use model::{
    validate_topic_name, AdminConfig, DemoConfig, FerryConfig, LogConfig, LogFormat, OffsetsConfig,
    TopicSpec,
};
pub use secret::Secret;
