//! Logs and traces: the `tracing` subscriber the binary installs.
//!
//! - Logs go to stdout, filtered by `RUST_LOG` (default `info`), as text or, with
//!   `LOG_FORMAT=json`, one JSON object per line for log collectors.
//! - With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans also go to an OpenTelemetry collector over
//!   OTLP/gRPC: one server span per call (made by `grpc/telemetry.rs`, continuing the caller's
//!   W3C `traceparent`), with the spans of the store, Redis and NATS adapters below it. This
//!   layer has its own filter (this crate's spans at INFO and above), so a quiet `RUST_LOG` does
//!   not silence traces, and the libraries' own spans (hyper, h2) never reach the collector.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::config::Config;

/// The service name spans carry.
const SERVICE_NAME: &str = "temporal-state-server";

/// What must be flushed before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered, then stops the exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The processor's final export runs on the runtime; wait for it off a worker thread.
            let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = result {
                eprintln!("flushing traces failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber (logs, and traces when configured). Call once, inside the
/// tokio runtime.
pub fn init(config: &Config) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.log_format.as_str() {
        "json" => fmt::layer()
            .json()
            .with_current_span(false)
            .with_filter(filter)
            .boxed(),
        _ => fmt::layer().with_filter(filter).boxed(),
    };
    let (traces, provider) = match &config.otel_exporter_otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint}: {e}"))?;
            let processor =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(SERVICE_NAME)
                        .build(),
                )
                .build();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                .with_filter(
                    Targets::new()
                        .with_default(LevelFilter::OFF)
                        .with_target(env!("CARGO_CRATE_NAME"), LevelFilter::INFO),
                );
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}
