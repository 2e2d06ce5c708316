//! The Tollgate server: front door (OpenAI and Azure shapes), upstream providers, tenancy and
//! limits, metering into the durable ledger, and the admin API.
//!
//! [`app::App`] holds the shared state and documents the request path; [`server::serve`] runs it.

pub mod admin;
pub mod apis;
pub mod app;
pub mod billing_admin;
pub mod bootstrap;
pub mod budget;
pub mod conn;
pub mod console;
pub mod dialect;
pub mod downstream;
pub mod enforce;
pub mod error;
pub mod front;
pub mod guard_admin;
pub mod limits;
pub mod meters;
pub mod metrics;
pub mod pricing;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod shape;
pub mod sim;
pub mod start;
pub mod sync;
pub mod telemetry;
pub mod tenancy;
pub mod tokens;
pub mod upstream;

pub use app::App;
pub use routes::router;
