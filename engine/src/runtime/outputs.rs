//! The running outputs, one thread each; a reload stops and starts them by name.

use std::sync::Arc;
use std::time::Instant;

use super::write_lock;
use crate::config::SinkConfig;
use crate::delivery::{run_output, DeliveryError, OutputControl, OutputSpec, ShardLog};
use crate::error::EngineError;
use crate::metrics::{Counters, OutputCounters};
use crate::shard::OutputWakers;

/// The running outputs, one thread each; a reload stops and starts them by name. A removed
/// or changed output drains in the background ("retiring"); a changed one starts again (same
/// name, same cursor) once its old instance has stopped.
pub(super) struct OutputSet {
    /// Dead-letter queues live under it (`dlq/NAME`).
    data_dir: std::path::PathBuf,
    logs: Vec<ShardLog>,
    pub(super) wakers: Arc<OutputWakers>,
    running: std::collections::BTreeMap<String, RunningOutput>,
    retiring: Vec<Retiring>,
    /// Outputs waiting for their old instance (same name) to finish retiring, with their
    /// routing bit.
    waiting: std::collections::BTreeMap<String, (SinkConfig, u8)>,
    /// Each output's thread sends its name here when it ends (the main loop waits on it).
    ended: crossbeam_channel::Sender<String>,
}

struct Retiring {
    name: String,
    output: RunningOutput,
    /// Gone from the config: stop holding segments back once it stopped.
    forget: bool,
}

struct RunningOutput {
    control: Arc<OutputControl>,
    handle: std::thread::JoinHandle<Result<(), DeliveryError>>,
    counters: Arc<OutputCounters>,
}

impl OutputSet {
    pub(super) fn new(
        data_dir: &std::path::Path,
        logs: &[ShardLog],
        ended: crossbeam_channel::Sender<String>,
    ) -> Self {
        OutputSet {
            data_dir: data_dir.to_path_buf(),
            ended,
            logs: logs.to_vec(),
            wakers: Arc::new(OutputWakers::default()),
            running: Default::default(),
            retiring: Vec::new(),
            waiting: Default::default(),
        }
    }

    /// Starts output `name`: it holds WAL segments back from now on, and appears in metrics.
    /// While an old instance of the same name retires, the start waits for it (`tick`).
    pub(super) fn start(
        &mut self,
        name: &str,
        sink: &SinkConfig,
        route_bit: u8,
        registry: &Counters,
    ) -> Result<(), EngineError> {
        if self.retiring.iter().any(|r| r.name == name) {
            for log in &self.logs {
                log.retention.register(name);
            }
            self.waiting
                .insert(name.to_string(), (sink.clone(), route_bit));
            return Ok(());
        }
        let opened = crate::sinks::open(sink).map_err(|error| EngineError::Sink {
            sink: name.to_string(),
            error,
        })?;
        for log in &self.logs {
            log.retention.register(name);
        }
        let control = Arc::new(OutputControl::default());
        let counters = Arc::new(OutputCounters::new(self.logs.len()));
        let common = sink.settings().common();
        let spec = OutputSpec {
            name: name.to_string(),
            shards: self.logs.clone(),
            control: Arc::clone(&control),
            counters: Arc::clone(&counters),
            route_bit,
            circuit: common.circuit,
            batch: common.batch,
            concurrency: common.concurrency,
            dead_letters: storage::dead_letter::DeadLetters::new(
                &storage::dead_letter::queue_dir(&self.data_dir, name),
                common.dlq_max_size,
            ),
            // Taken now (on the control thread), so whatever is accepted after the start or
            // the reload that added the sink reaches it.
            start_positions: self.start_positions(name, sink),
        };
        let ended = self.ended.clone();
        let handle = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                let name = spec.name.clone();
                let result = run_output(spec, opened);
                let _ = ended.send(name);
                result
            })
            .map_err(|source| EngineError::Io {
                op: "start the thread of sink",
                path: name.into(),
                source,
            })?;
        self.wakers.add(name, handle.thread().clone());
        write_lock(&registry.outputs).push((name.to_string(), Arc::clone(&counters)));
        self.running.insert(
            name.to_string(),
            RunningOutput {
                control,
                handle,
                counters,
            },
        );
        Ok(())
    }

    /// Where output `name` starts on each shard when it has no cursor: with `start_at = "end"`
    /// the durable end now, written as its cursor at once (so a crash before its first delivery
    /// cannot move its start past what was accepted meanwhile); `None`: the oldest record.
    fn start_positions(&self, name: &str, sink: &SinkConfig) -> Option<Vec<storage::Position>> {
        if sink.settings().common().start_at == crate::sinks::StartAt::Oldest {
            return None;
        }
        let ends: Vec<storage::Position> = self.logs.iter().map(|l| l.watermark.load()).collect();
        for (log, &end) in self.logs.iter().zip(&ends) {
            if let Ok(None) = storage::read_cursor(&log.dir, name) {
                if let Err(e) =
                    storage::write_cursor(&log.dir, name, crate::delivery::cursor_at(end))
                {
                    tracing::warn!(sink = %name, shard = log.id, error = %e, "cannot write the new sink's start cursor yet; its thread will");
                }
            }
        }
        Some(ends)
    }

    /// Tells output `name` to deliver what was durable when asked (bounded by `deadline`)
    /// and stop; it does so in the background. `forget`: it is gone from the config, so once
    /// stopped it no longer holds segments back.
    pub(super) fn retire(&mut self, name: &str, deadline: Instant, forget: bool) {
        self.waiting.remove(name);
        let Some(output) = self.running.remove(name) else {
            // Already retiring (changed by an earlier reload): now perhaps gone altogether.
            for r in self.retiring.iter_mut().filter(|r| r.name == name) {
                r.forget |= forget;
            }
            return;
        };
        output.control.stop(deadline);
        output.handle.thread().unpark();
        self.retiring.push(Retiring {
            name: name.to_string(),
            output,
            forget,
        });
    }

    /// Output `name`'s thread ended: if it was retiring, joins it and starts what waited for
    /// it. True when the last retiring output just finished.
    pub(super) fn retired(&mut self, name: &str, registry: &Counters) -> bool {
        let Some(at) = self.retiring.iter().position(|r| r.name == name) else {
            return false; // A running output ended on its own: joined and logged at stop.
        };
        let r = self.retiring.swap_remove(at);
        let counters = Arc::clone(&r.output.counters);
        join_output(&r.name, r.output);
        self.wakers.remove(&r.name);
        write_lock(&registry.outputs).retain(|(_, c)| !Arc::ptr_eq(c, &counters));
        let wanted = self.waiting.contains_key(&r.name) || self.running.contains_key(&r.name);
        if r.forget && !wanted {
            for log in &self.logs {
                log.retention.unregister(&r.name);
            }
        }
        if let Some((sink, bit)) = self.waiting.remove(&r.name) {
            if let Err(e) = self.start(&r.name, &sink, bit, registry) {
                tracing::error!(sink = %r.name, error = %e, "cannot start the reloaded sink");
            }
        }
        !self.draining()
    }

    pub(super) fn draining(&self) -> bool {
        !self.retiring.is_empty() || !self.waiting.is_empty()
    }

    pub(super) fn draining_names(&self) -> Vec<String> {
        self.retiring.iter().map(|r| r.name.clone()).collect()
    }

    /// Shutdown: every output delivers up to the final watermarks, bounded by `deadline`
    /// (retiring ones keep the deadline their reload gave them); waiting ones start at the
    /// next run.
    pub(super) fn stop_all(mut self, deadline: Instant) {
        for output in self.running.values() {
            output.control.stop(deadline);
        }
        self.wakers.wake_all();
        for (name, output) in std::mem::take(&mut self.running) {
            join_output(&name, output);
        }
        for r in std::mem::take(&mut self.retiring) {
            join_output(&r.name, r.output);
        }
    }
}

fn join_output(name: &str, output: RunningOutput) {
    match output.handle.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(sink = %name, error = %e, "sink stopped with an error"),
        Err(_) => tracing::error!(sink = %name, "sink thread panicked"),
    }
    tracing::info!(sink = %name, summary = %output.counters.summary(), "sink stopped");
}
