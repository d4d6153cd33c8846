//! The Sluice engine: shards, connections, outputs, config and the control plane.
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view and invariants.

pub mod admin;
mod atomic_file;
pub mod config;
pub mod delivery;
pub mod error;
pub mod metrics;
mod registry;
pub mod runtime;
pub mod shard;
pub mod sinks;
pub mod sources;
pub mod tools;
pub mod transforms;
pub mod units;

pub use config::Config;
pub use error::EngineError;
