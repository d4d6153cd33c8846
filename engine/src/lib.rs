//! The Sluice engine: shards, connections, outputs, config and the control plane.
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view and invariants.

pub mod admin;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod outputs;
pub mod preflight;
pub mod reload;
pub mod runtime;
pub mod shard;
pub mod tools;

pub use config::Config;
pub use error::EngineError;
