//! Host preflight and tuning (`sluice tune`): cores, NUMA, io_uring support, locked memory,
//! socket buffers, disk fsync latency. Built by the operations issue; `shards = "auto"` uses
//! the CPU count until then.
