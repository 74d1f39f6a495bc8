//! The `ferry` command line. Exit codes: 0 ok, 2 bad usage or config,
//! 1 runtime failure. Errors are one line on stderr, never a backtrace.

mod contract;
mod dlq;
mod mapping_test;
mod output;
mod produce;
mod schemas;
mod tail;
mod topics;
mod up;
mod validate;

use clap::{Parser, Subcommand};
use ferry::config::ConfigError;
use std::path::PathBuf;
use std::process::ExitCode;

/// Default config for `ferry up`.
pub const QUICKSTART: &str = "examples/quickstart.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: integrations on Kafka that survive real APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Ferry: the embedded broker when no Kafka is configured, every
    /// configured connector and every HTTP listener.
    Up {
        /// Config file.
        #[arg(default_value = QUICKSTART)]
        config: PathBuf,
    },
    /// Start Ferry against an external Kafka (never embeds a broker).
    Run {
        /// Config file.
        config: PathBuf,
    },
    /// Check a config file without connecting to anything.
    Validate {
        /// Config file.
        config: PathBuf,
    },
    /// Run mapping test cases (YAML files, or folders of them) with no
    /// broker: exit 0 when all pass, 1 when one fails.
    Test {
        /// Test files or folders.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check recorded API responses against the API's JSON Schema (and
    /// their mapped records against the topic's Avro schema).
    Contract {
        #[command(subcommand)]
        action: ContractAction,
    },
    /// List, create and describe topics.
    Topics {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: topics::Action,
    },
    /// Print a topic's records, one JSON object per line (Avro decoded
    /// through the schema registry).
    Tail(tail::Args),
    /// Write JSON lines from stdin to a topic, as Avro when the topic has a schema.
    Produce(produce::Args),
    /// List, register and check schemas: the contract guard to run in CI.
    Schemas {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: schemas::Action,
    },
    /// Count and list a sink's dead letters, and replay them once their
    /// cause is fixed.
    Dlq {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: dlq::Action,
    },
}

/// Which Kafka a client command talks to.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// Config file to take Kafka settings from (default: the quickstart, if present).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers; overrides the config.
    #[arg(short = 'b', long, global = true, env = "FERRY_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    /// Schema registry URL; overrides the config (default: the registry
    /// `ferry up` serves, http://127.0.0.1:8081).
    #[arg(long, global = true, env = "FERRY_SCHEMA_REGISTRY_URL")]
    registry: Option<String>,
}

/// A failed command: its message and exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The user's input is wrong (exit 2).
    Config(String),
    /// Something failed while running (exit 1).
    Runtime(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.to_string())
    }
}

impl Failure {
    pub(crate) fn runtime(e: impl std::fmt::Display) -> Self {
        Self::Runtime(e.to_string())
    }
}

/// Parses the command line, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Do not wait for stray blocking tasks (a metadata call to a dead broker).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(m)) => {
            eprintln!("error: {}", ferry::telemetry::redact::scrub(&m));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("error: {}", ferry::telemetry::redact::scrub(&m));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Up { config } => up::up(&config, ferry::runtime::BrokerMode::EmbedIfUnset).await,
        Command::Run { config } => up::up(&config, ferry::runtime::BrokerMode::External).await,
        Command::Validate { config } => validate::validate(&config),
        Command::Test { files } => mapping_test::run(&files),
        Command::Contract {
            action: ContractAction::Check { files },
        } => contract::check(&files),
        Command::Topics { target, action } => topics::run(&target, action).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Schemas { target, action } => schemas::run(&target, action).await,
        Command::Dlq { target, action } => dlq::run(&target, action).await,
    }
}

/// `ferry contract ...`.
#[derive(Debug, Subcommand)]
enum ContractAction {
    /// Exit 0 when every recorded response keeps its contract, 1 when one
    /// does not.
    Check {
        /// Contract files (`*.contract.yaml`) or folders of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `files`, with each folder replaced by its files named `*<suffix>`
/// (sorted), so configs and fixtures beside them are not taken.
fn expand(files: &[PathBuf], suffix: &str) -> Result<Vec<PathBuf>, Failure> {
    let mut paths = Vec::new();
    for f in files {
        if f.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(|e| Failure::Config(format!("{}: {e}", f.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(suffix))
                })
                .collect();
            inside.sort();
            paths.extend(inside);
        } else {
            paths.push(f.clone());
        }
    }
    if paths.is_empty() {
        return Err(Failure::Config(format!("no `*{suffix}` files given")));
    }
    Ok(paths)
}

impl Target {
    /// The config to use and the bootstrap servers: `--bootstrap-servers`,
    /// else the config's `kafka.bootstrap_servers`, else the embedded
    /// broker's address (a `ferry up` running with that config).
    pub(crate) fn resolve(&self) -> Result<(ferry::config::FerryConfig, String), Failure> {
        let (config, _) = self.load()?;
        let bootstrap = self
            .bootstrap_servers
            .clone()
            .or_else(|| config.kafka.bootstrap_servers.clone())
            .unwrap_or_else(|| config.embedded_broker.listen.to_string());
        Ok((config, bootstrap))
    }

    /// The config (see [`Target::resolve`]) and the name of its file, for messages.
    pub(crate) fn load(&self) -> Result<(ferry::config::FerryConfig, String), Failure> {
        let (config, origin) = match &self.config {
            Some(path) => (ferry::config::load(path)?, path.display().to_string()),
            None if std::path::Path::new(QUICKSTART).exists() => (
                ferry::config::load(std::path::Path::new(QUICKSTART))?,
                QUICKSTART.to_owned(),
            ),
            None => (
                ferry::config::FerryConfig::default(),
                "(default config)".to_owned(),
            ),
        };
        ferry::telemetry::logging::init(&config.log);
        Ok((config, origin))
    }

    /// A registry client: `--registry`, else the config's.
    pub(crate) fn registry(
        &self,
        config: &ferry::config::FerryConfig,
    ) -> Result<ferry::schema::registry::RegistryClient, Failure> {
        config
            .schema_registry
            .client(self.registry.as_deref())
            .map_err(|e| Failure::Config(e.to_string()))
    }
}
