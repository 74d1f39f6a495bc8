//! docker-compose.yml is correct by construction: no Docker engine runs here,
//! so its structure is checked instead. The environment it gives Ferry must
//! load as a valid config (every `FERRY__...` variable maps onto a real key),
//! Ferry must point at a listener Kafka advertises, and every published port
//! must agree with the README.

use ferry_testkit::repo_root;
use serde_yaml::Value;
use std::collections::HashMap;

fn compose() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml"))
        .expect("docker-compose.yml");
    serde_yaml::from_str(&text).expect("docker-compose.yml is YAML")
}

/// `environment:` as a map, whichever of the two compose forms it uses.
fn environment(service: &Value) -> HashMap<String, String> {
    match &service["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                (k.as_str().unwrap_or_default().to_owned(), v)
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        _ => HashMap::new(),
    }
}

fn published_ports(service: &Value) -> Vec<(u16, u16)> {
    service["ports"]
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let s = p.as_str()?;
                    let mut parts = s.rsplitn(3, ':');
                    let container = parts.next()?.parse().ok()?;
                    let host = parts.next()?.parse().ok()?;
                    Some((host, container))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kafka_runs_in_kraft_mode_from_the_official_image() {
    let c = compose();
    let kafka = &c["services"]["kafka"];
    assert!(kafka["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("apache/kafka:")));
    let env = environment(kafka);
    assert!(env
        .get("KAFKA_PROCESS_ROLES")
        .is_some_and(|r| r.contains("broker") && r.contains("controller")));
    for key in [
        "KAFKA_NODE_ID",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
    ] {
        assert!(env.contains_key(key), "kafka service sets {key}");
    }
    assert!(
        kafka["healthcheck"]["test"].is_sequence(),
        "kafka has a healthcheck ferry waits on"
    );
}

#[test]
fn ferry_environment_maps_onto_real_config_keys() {
    let c = compose();
    let ferry = &c["services"]["ferry"];
    let env = environment(ferry);
    let overrides: Vec<&String> = env.keys().filter(|k| k.starts_with("FERRY__")).collect();
    assert!(
        !overrides.is_empty(),
        "ferry is configured through FERRY__ variables"
    );

    // The config file the container runs with, as the Dockerfile copies it.
    let command: Vec<&str> = ferry["command"]
        .as_sequence()
        .expect("ferry service has a command list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        command.first(),
        Some(&"run"),
        "compose runs against the Kafka service, no embedded broker"
    );
    let in_container = command.get(1).expect("config path");
    let local = in_container
        .strip_prefix("/etc/ferry/")
        .map(|rest| repo_root().join(rest))
        .expect("config lives under /etc/ferry/");
    let config =
        ferry::config::load_with_env(&local, &env).unwrap_or_else(|e| panic!("compose env: {e}"));

    // Ferry points at a listener the Kafka service advertises.
    let bootstrap = config
        .kafka
        .bootstrap_servers
        .clone()
        .expect("bootstrap servers set");
    let advertised = environment(&c["services"]["kafka"])["KAFKA_ADVERTISED_LISTENERS"].clone();
    for server in bootstrap.split(',') {
        assert!(
            advertised.contains(server),
            "{server} is among {advertised}"
        );
    }
    // The admin API listens on all interfaces in a container, on the published port.
    assert!(config.admin.listen.ip().is_unspecified());
    let ports = published_ports(ferry);
    assert!(
        ports.iter().any(|(_, c)| *c == config.admin.listen.port()),
        "{ports:?}"
    );
    // So does the schema registry, and the schema files it registers are in the image.
    assert!(config.schema_registry.serves());
    assert!(config.schema_registry.listen.ip().is_unspecified());
    assert!(
        ports
            .iter()
            .any(|(_, c)| *c == config.schema_registry.listen.port()),
        "{ports:?}"
    );
    let schemas_dir = config
        .schema_registry
        .schemas_dir
        .strip_prefix("/etc/ferry/")
        .map(|rest| repo_root().join(rest))
        .expect("schemas_dir is the image's /etc/ferry/schemas");
    let mut with_local_dir = config.clone();
    with_local_dir.schema_registry.schemas_dir = schemas_dir;
    let bindings = ferry::schema::bindings::topic_bindings(&with_local_dir, "compose")
        .unwrap_or_else(|e| panic!("schema files the compose config names: {e}"));
    assert!(!bindings.is_empty());
    assert!(ferry["depends_on"]["kafka"]["condition"].as_str() == Some("service_healthy"));
}

#[test]
fn dockerfile_builds_the_ferry_binary_and_ships_the_examples() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    assert!(text.contains("--bin ferry"));
    assert!(text.contains("COPY examples"));
    assert!(text.contains("COPY schemas"));
    let c = compose();
    assert_eq!(
        c["services"]["ferry"]["build"]["dockerfile"].as_str(),
        Some("Dockerfile")
    );
}

#[test]
fn published_ports_agree_with_the_docs() {
    let c = compose();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut all = Vec::new();
    for name in ["kafka", "ferry"] {
        for (host, _) in published_ports(&c["services"][name]) {
            assert!(
                readme.contains(&format!("| {host} ")),
                "README's port table lists {host} ({name})"
            );
            all.push(host);
        }
    }
    for default in [9092, 8083, 8081] {
        assert!(
            all.contains(&default),
            "compose publishes the default port {default}"
        );
    }
    // Named volumes are declared.
    let volumes = c["volumes"].as_mapping().expect("top-level volumes");
    assert!(!volumes.is_empty());
}
