//! `ferry up` and `ferry run`: start, print where everything listens, wait
//! for SIGINT/SIGTERM, drain, exit 0.

use super::Failure;
use ferry::runtime::{BrokerMode, Running, Signals, StartError};
use std::io::Write;
use std::path::Path;

pub(crate) async fn up(path: &Path, mode: BrokerMode) -> Result<(), Failure> {
    let mut signals = Signals::install()
        .map_err(|e| Failure::runtime(format!("cannot install signal handlers: {e}")))?;
    let mut config = ferry::config::load(path)?;
    ferry::telemetry::logging::init(&config.log);
    let origin = path.display().to_string();
    let planned = crate::registry::plan_all(&mut config, &origin)?;
    let demo = match &config.demo {
        Some(d) => Some(crate::demo::DemoApi::start(d.listen).await.map_err(|e| {
            Failure::Runtime(format!("demo API: cannot listen on {}: {e}", d.listen))
        })?),
        None => None,
    };

    let mut running = tokio::select! {
        started = Running::start(&config, &origin, mode) => started.map_err(start_failure)?,
        signal = signals.recv() => {
            tracing::info!(signal, "stopped during startup");
            return Ok(());
        }
    };
    if let Err(e) = running.start_connectors(planned).await {
        let _ = running.shutdown().await;
        return Err(start_failure(e));
    }
    print_banner(&running, &config, demo.as_ref());

    let signal = signals.recv().await;
    tracing::info!(signal, "shutting down");
    running
        .shutdown()
        .await
        .map_err(|e| Failure::runtime(format!("shutdown: {e}")))?;
    if let Some(d) = demo {
        d.stop().await;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

fn start_failure(e: StartError) -> Failure {
    if e.is_config_error() {
        Failure::Config(e.to_string())
    } else {
        Failure::Runtime(e.to_string())
    }
}

fn print_banner(
    running: &Running,
    config: &ferry::config::FerryConfig,
    demo: Option<&crate::demo::DemoApi>,
) {
    let e = &running.endpoints;
    let kafka = match (&e.embedded_broker, &e.broker_data) {
        (true, Some(data)) => format!("{} (embedded broker, data in {})", e.kafka, data.display()),
        (true, None) => format!("{} (embedded broker, in memory)", e.kafka),
        (false, _) => e.kafka.clone(),
    };
    let topics: Vec<&str> = config.topics.iter().map(|t| t.name.as_str()).collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Ferry {} is up.", ferry::VERSION);
    let _ = writeln!(out, "  Kafka       {kafka}");
    let _ = writeln!(
        out,
        "  Admin API   http://{}  (/health /ready /metrics)",
        e.admin
    );
    let registry = if e.schema_registry_served {
        format!(
            "{}  (served by Ferry, stored in `{}`)",
            e.schema_registry, config.schema_registry.topic
        )
    } else {
        // An external registry's URL may carry credentials.
        ferry::telemetry::redact::url(&e.schema_registry)
    };
    let _ = writeln!(out, "  Schemas     {registry}");
    if !topics.is_empty() {
        let _ = writeln!(out, "  Topics      {}", topics.join(", "));
    }
    for s in &running.schemas {
        let _ = writeln!(
            out,
            "  Schema      {} = schema id {} ({})",
            s.binding.subject,
            s.codec.id(),
            s.binding.file.path.display()
        );
    }
    for c in &config.connectors {
        let _ = writeln!(out, "  Connector   {} ({})", c.name, c.kind);
    }
    if let Some(d) = demo {
        let _ = writeln!(
            out,
            "  Demo API    http://{}  (a fake CRM at /contacts, a fake target at /target)",
            d.addr()
        );
    }
    if let Some(addr) = e.webhooks {
        let scheme = if config.webhooks.tls.is_some() {
            "https"
        } else {
            "http"
        };
        for c in config.connectors.iter().filter(|c| c.kind == "webhook") {
            let Some(cfg) = crate::sources::webhook::settings(c) else {
                continue;
            };
            let url = format!("{scheme}://{addr}{}", cfg.path);
            let _ = writeln!(out, "  Webhook     {}  {url}", c.name);
            let now = ferry::schema::envelope::now_millis() / 1000;
            if let Some(curl) =
                crate::sources::webhook::example::signed_curl(&c.name, &cfg, &url, now)
            {
                let _ = writeln!(
                    out,
                    "  Try it (signed now, valid for the connector's timestamp tolerance):\n{curl}"
                );
            }
        }
    }
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    let _ = out.flush();
}
