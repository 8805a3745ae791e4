//! dashclaw-realtime: a per-org SSE fan-out hub with Last-Event-ID replay.
//!
//! Producers publish through the [`hub::HubHandle`] (or the `Publish` actor message), HTTP,
//! or Redis; org supervisors fan each event out to every connected SSE session.

pub mod auth;
pub mod broker;
pub mod config;
pub mod envelope;
pub mod filter;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod recovery;
pub mod server;
pub mod shutdown;
pub mod sse;
