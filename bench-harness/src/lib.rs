//! Benchmark harness: load generation and side-by-side comparison with rsyslog and syslog-ng.
//!
//! [`firehose`]: the load generator's core; [`receive`]: the receiving end (loss, duplicates,
//! latency); [`peers`]: the systems compared and their configurations; [`compare`]: the runs
//! and the tables; [`plots`]: PNG charts; [`soak`]: the crash soak; [`parsediff`]: the parser
//! compared with rsyslog's and syslog-ng's, field by field; [`processing`]: what a processing
//! chain costs next to the plain path; [`host`]: CPU time the hypervisor stole during a run.

pub mod compare;
pub mod firehose;
pub mod host;
pub mod inputs;
pub mod latency;
pub mod outputs;
pub mod parsediff;
pub mod peers;
pub mod plots;
pub mod processing;
pub mod receive;
pub mod soak;
