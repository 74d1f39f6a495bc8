//! `ferry topics list|create|describe`.

use super::{Failure, Target};
use ferry::config::TopicSpec;
use ferry::kafka::KafkaAdmin;
use std::collections::BTreeMap;
use std::num::NonZeroU32;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Action {
    /// List topics with their partition counts.
    List,
    /// Create a topic (does nothing if it exists).
    Create {
        name: String,
        #[arg(short, long, default_value = "3")]
        partitions: NonZeroU32,
        /// Unset: the broker's default.
        #[arg(short, long)]
        replication_factor: Option<NonZeroU32>,
        /// Topic config as KEY=VALUE, repeatable (e.g. cleanup.policy=compact).
        #[arg(long = "config-entry", short = 'x', value_parser = parse_entry)]
        entries: Vec<(String, String)>,
    },
    /// Show a topic's partitions, replicas and configs as JSON.
    Describe { name: String },
}

fn parse_entry(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

pub(crate) async fn run(target: &Target, action: Action) -> Result<(), Failure> {
    let (config, bootstrap) = target.resolve()?;
    let admin = KafkaAdmin::new(&config.kafka, &bootstrap).map_err(Failure::runtime)?;
    match action {
        Action::List => {
            for t in admin.describe_all().await.map_err(Failure::runtime)? {
                println!("{}\t{} partition(s)", t.name, t.partitions.len());
            }
        }
        Action::Create {
            name,
            partitions,
            replication_factor,
            entries,
        } => {
            ferry::config::validate_topic_name(&name).map_err(Failure::Config)?;
            let spec = TopicSpec {
                name: name.clone(),
                partitions,
                replication_factor,
                config: entries.into_iter().collect::<BTreeMap<_, _>>(),
                value_schema: None,
                key_schema: None,
            };
            let outcome = admin.ensure_topic(&spec).await.map_err(Failure::runtime)?;
            println!("{name}: {outcome:?}");
        }
        Action::Describe { name } => {
            let d = admin.describe(&name).await.map_err(Failure::runtime)?;
            let text = serde_json::to_string_pretty(&d).map_err(Failure::runtime)?;
            println!("{text}");
        }
    }
    Ok(())
}
