//! Host preflight and tuning (`sluice tune`): cores, NUMA, io_uring support, locked memory,
//! socket buffers, disk fsync latency. The operations issue builds the full report; what is
//! here now is the disk probe, which the benchmarks use to put the WAL's figures next to what
//! the disk itself can do.

pub mod disk;
