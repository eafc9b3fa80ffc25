//! Traces across sites: a federated call carries the caller's span as W3C trace-context
//! headers (`traceparent`, `tracestate`), and the called site's `sql.query` span continues
//! it. Without an OpenTelemetry exporter installed, the propagator is a no-op and the
//! headers are empty.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The headers that carry the current span to another site.
pub(crate) fn outgoing_headers() -> Vec<(String, String)> {
    struct Headers(Vec<(String, String)>);
    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_string(), value));
        }
    }
    let context = tracing::Span::current().context();
    let mut headers = Headers(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut headers));
    headers.0
}

/// A `sql.query` span for a call running `sql`, continuing the caller's trace if its headers
/// carry one. Its attributes follow OpenTelemetry's database conventions (`db.system.name`,
/// `db.namespace`, `db.operation.name`, `db.query.text`; span kind server).
pub(crate) fn query_span(metadata: &MetadataMap, user: &str, via_peer: bool, sql: &str) -> tracing::Span {
    struct Metadata<'a>(&'a MetadataMap);
    impl Extractor for Metadata<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0
                .keys()
                .filter_map(|k| match k {
                    tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                    tonic::metadata::KeyRef::Binary(_) => None,
                })
                .collect()
        }
    }
    let operation = sql.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
    let span = tracing::info_span!(
        "sql.query",
        otel.kind = "server",
        db.system.name = "other_sql",
        db.namespace = crate::catalog::CATALOG,
        db.operation.name = %operation,
        db.query.text = %sql,
        user = %user,
        federated = via_peer
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Metadata(metadata)));
    let _ = span.set_parent(parent);
    span
}
