//! Logging and tracing for the process: log lines to stderr (filtered by `RUST_LOG`), as text
//! or as one JSON object per line (`[log] format = "json"`, for a cluster's log pipeline), and,
//! when an OTLP endpoint is configured (`[telemetry] otlp_endpoint`, `--otlp-endpoint` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), every span exported to an OpenTelemetry collector over
//! OTLP/gRPC, batched. Off by default: without an endpoint nothing is exported and spans cost
//! what `tracing` costs.
//!
//! The spans: `ingest.batch` (a flushed Arrow batch) → `detect.step` (the engine taking it
//! in, closing windows) → `alert.emit` (each alert written); `sql.query` for each Flight SQL
//! query, continued on the other sites when it federates (W3C trace context in the call's
//! headers; see `tessera_sql`).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// Keeps the exporter running; dropping it sends what is still buffered (up to 5 s).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// The exporter's gRPC channel lives on this runtime.
    runtime: Option<tokio::runtime::Runtime>,
}

impl TelemetryGuard {
    /// True if spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("tessera: flushing the last spans to the OTLP endpoint failed: {e}");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The OTLP endpoint to use: the config's, else `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn endpoint(config: &TelemetryConfig) -> Option<String> {
    config.otlp_endpoint.clone().or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty()))
}

/// A tracer provider exporting to `endpoint` (its gRPC channel on `runtime`).
pub fn otlp_provider(
    endpoint: &str,
    config: &TelemetryConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<SdkTracerProvider, NodeError> {
    let _on_runtime = runtime.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| NodeError::Telemetry { what: format!("telemetry.otlp_endpoint {endpoint}"), source: e.into() })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            [("service.version".to_string(), env!("CARGO_PKG_VERSION").to_string())]
                .into_iter()
                .chain(config.resource.iter().cloned())
                .map(|(k, v)| opentelemetry::KeyValue::new(k, v)),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
        .with_resource(resource)
        .build())
}

/// How log lines are written (`[log] format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Text for people: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, the event's fields
    /// at the top level, and the current span with its fields (`span`).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("'{other}': give text or json")),
        }
    }
}

/// The `[log]` section: how log lines look (which lines: `RUST_LOG`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Installs the process's subscriber: log lines to stderr in `log`'s format, and spans to
/// OTLP when an endpoint is set. Also installs the W3C trace-context propagator used across
/// sites. `default_filter` applies to the log lines when `RUST_LOG` is unset.
pub fn init(config: &TelemetryConfig, log: &LogConfig, default_filter: &str) -> Result<TelemetryGuard, NodeError> {
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let fmt = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter()).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let Some(endpoint) = endpoint(config) else {
        tracing_subscriber::registry().with(fmt).try_init().map_err(subscriber)?;
        return Ok(TelemetryGuard { provider: None, runtime: None });
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tessera-otlp")
        .enable_all()
        .build()
        .map_err(|source| NodeError::Io { what: "building the OTLP exporter's runtime", source })?;
    let provider = otlp_provider(&endpoint, config, &runtime)?;
    let tracer = provider.tracer("tessera");
    // Spans of Tessera's own crates at info and above go out, whatever the log filter says.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::Targets::new().with_target("tessera", tracing::Level::INFO));
    tracing_subscriber::registry().with(fmt).with(spans).try_init().map_err(subscriber)?;
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(TelemetryGuard { provider: Some(provider), runtime: Some(runtime) })
}

/// The `[telemetry]` section: where traces go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An OTLP/gRPC collector (`http://otel-collector:4317`); unset: no export (off by
    /// default). `OTEL_EXPORTER_OTLP_ENDPOINT` sets it too.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    pub service_name: String,
    /// Share of traces kept (0–1), decided at the root span and followed by its children.
    pub sample_ratio: f64,
    /// Resource attributes besides `service.name` and `service.version` (set by the command
    /// from the node's identity: [`resource_attributes`]); not a key.
    #[serde(skip)]
    pub resource: Vec<(String, String)>,
}

/// The resource attributes of a process: `service.instance.id` (the host name, which is the
/// pod's name in Kubernetes, else the process id), and for a node its site (`tessera.site`)
/// and Raft id (`tessera.node.id`).
pub fn resource_attributes(site: Option<&str>, node_id: Option<u64>) -> Vec<(String, String)> {
    let instance = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .map_or_else(|| format!("tessera-{}", std::process::id()), |host| format!("{host}/{}", std::process::id()));
    let mut attributes = vec![("service.instance.id".to_string(), instance)];
    if let Some(site) = site {
        attributes.push(("tessera.site".to_string(), site.to_string()));
    }
    if let Some(id) = node_id {
        attributes.push(("tessera.node.id".to_string(), id.to_string()));
    }
    attributes
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "tessera".into(), sample_ratio: 1.0, resource: Vec::new() }
    }
}

impl TelemetryConfig {
    /// Checks the fields; the error names the field (relative to `[telemetry]`).
    pub fn validate(&self) -> Result<(), tessera_core::ConfigError> {
        tessera_core::ensure((0.0..=1.0).contains(&self.sample_ratio), "sample_ratio", "must be between 0 and 1")?;
        match &self.otlp_endpoint {
            Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => Err(tessera_core::ConfigError::new(
                "otlp_endpoint",
                format!("'{e}' must start with http:// or https://"),
            )),
            _ => Ok(()),
        }
    }
}

fn subscriber(e: tracing_subscriber::util::TryInitError) -> NodeError {
    NodeError::Telemetry { what: "installing the log subscriber".into(), source: e.into() }
}
