//! Benchmark harness: load generation and side-by-side comparison with rsyslog and syslog-ng.
//!
//! [`firehose`]: the load generator's core; [`soak`]: the crash soak; [`compare`]: Sluice next
//! to rsyslog and syslog-ng, same load, same machine, one run.

pub mod compare;
pub mod firehose;
pub mod soak;
