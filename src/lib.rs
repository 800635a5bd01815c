//! clinic-gateway: the on-premise edge daemon between a clinic's waiting queue, its building
//! systems and its upstream services. See ARCHITECTURE.md for the map.

pub mod access;
pub mod alerts;
pub mod breaker;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod credentials;
pub mod daemon;
pub mod devices;
pub mod facility;
pub mod fhir_api;
pub mod journal;
pub mod markup;
pub mod messaging;
pub mod metrics;
pub mod notices;
pub mod notify;
pub mod pem;
pub mod queue;
pub mod relay;
pub mod reload;
pub mod reports;
pub mod settings;
pub mod supervisor;
pub mod suspension;
pub mod web;

/// The destination name of the cloud relay.
pub const CLOUD: &str = "cloud";
