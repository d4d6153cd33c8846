//! Benchmark harness: load generation and side-by-side comparison with rsyslog and syslog-ng.
//!
//! The load generator lives in `src/bin/sluice-bench.rs`, the crash soak in [`soak`]; the peer
//! comparison comes with the bench-harness issue.

pub mod soak;
