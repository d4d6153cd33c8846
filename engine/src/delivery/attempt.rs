//! Delivering one round: runs within the batch limits, retries with backoff and the circuit
//! breaker, resends of the events a destination asked for again, splits of requests it found
//! too large, and the dead-letter queue for what it rejected for good.
//!
//! A round is done when every event of it is confirmed or durable in the dead-letter queue;
//! only then does the caller advance the cursors. Runs go out in order; with `concurrency`
//! N, up to N runs are sent at once (the destination may take them in any order), and what
//! failed of them is retried one run at a time.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use storage::dead_letter::Letter;

use super::{
    publish_circuit, wait_or_deadline, Batch, BatchSettings, CircuitState, DeliveryResult, Failure,
    FailureKind, OutputSpec, Retry, Sink, Verdicts,
};

/// One round's delivery.
pub(super) struct Attempt<'a> {
    pub(super) spec: &'a OutputSpec,
    /// Runs sent at once (their first attempt; retries go one at a time).
    pub(super) concurrency: usize,
    pub(super) sink: &'a mut dyn Sink,
    pub(super) retry: &'a mut Retry,
}

impl Attempt<'_> {
    /// Delivers every event of `batch`, in runs within `limits`; false if the stop deadline
    /// passed first (nothing of the round may then be confirmed).
    pub(super) fn deliver_round(&mut self, batch: &Batch, limits: &BatchSettings) -> bool {
        if batch.is_empty() {
            return true; // Every record read was meant for other sinks.
        }
        let ends = limits.runs(batch);
        if ends.len() == 1 {
            return self.deliver_run(batch, None);
        }
        let mut runs = Vec::with_capacity(ends.len());
        let mut start = 0;
        for end in ends {
            runs.push(batch.subset(start..end));
            start = end;
        }
        for wave in runs.chunks(self.concurrency) {
            if wave.len() == 1 {
                if !self.deliver_run(&wave[0], None) {
                    return false;
                }
                continue;
            }
            self.spec
                .counters
                .requests
                .fetch_add(wave.len() as u64, Relaxed);
            let answers = self.sink.deliver_all(wave);
            for (run, answer) in wave.iter().zip(answers) {
                if !self.deliver_run(run, Some(answer)) {
                    return false;
                }
            }
        }
        true
    }

    /// Delivers one request's worth until every event is confirmed or dead-lettered
    /// (`answered`: the answer to a first attempt already made).
    fn deliver_run(&mut self, batch: &Batch, mut answered: Option<DeliveryResult>) -> bool {
        let mut pending = std::borrow::Cow::Borrowed(batch);
        loop {
            let answer = answered.take().unwrap_or_else(|| {
                self.spec.counters.requests.fetch_add(1, Relaxed);
                self.sink.deliver(&pending)
            });
            let failure = match answer {
                Ok(verdicts) => {
                    self.succeeded();
                    match self.settle(&pending, verdicts) {
                        Settled::Done => return true,
                        Settled::Again(rest, delay) => {
                            pending = std::borrow::Cow::Owned(rest);
                            if !wait_or_deadline(self.spec, delay) {
                                return false;
                            }
                            continue;
                        }
                        Settled::Stopped => return false,
                    }
                }
                Err(failure) => failure,
            };
            match failure.kind {
                FailureKind::Rejected => {
                    let all: Vec<_> = (0..pending.len())
                        .map(|i| (i, failure.error.clone()))
                        .collect();
                    tracing::warn!(sink = %self.spec.name, events = pending.len(), error = %failure.error, "the destination rejected the whole batch");
                    return self.dead_letter(&pending, &all);
                }
                FailureKind::TooLarge if pending.len() > 1 => {
                    self.spec.counters.batches_split.fetch_add(1, Relaxed);
                    let mid = pending.len() / 2;
                    tracing::info!(sink = %self.spec.name, events = pending.len(), "the destination found the request too large: splitting it");
                    return self.deliver_run(&pending.subset(0..mid), None)
                        && self.deliver_run(&pending.subset(mid..pending.len()), None);
                }
                FailureKind::TooLarge => {
                    let reason = format!("too large for the destination: {}", failure.error);
                    return self.dead_letter(&pending, &[(0, reason)]);
                }
                FailureKind::Retriable => {
                    if !self.failed(&failure) {
                        return false;
                    }
                }
            }
        }
    }

    /// Counts what the sink confirmed and dead-letters what it rejected; what is left to
    /// send again, and after how long.
    fn settle(&mut self, batch: &Batch, verdicts: Verdicts) -> Settled {
        let counters = &self.spec.counters;
        if verdicts.is_all_confirmed() {
            counters.events_sent.fetch_add(batch.len() as u64, Relaxed);
            counters
                .bytes_sent
                .fetch_add(batch.bytes().len() as u64, Relaxed);
            return Settled::Done;
        }
        let confirmed = batch.len() - verdicts.retry.len() - verdicts.rejected.len();
        counters.events_sent.fetch_add(confirmed as u64, Relaxed);
        if !self.dead_letter(batch, &verdicts.rejected) {
            return Settled::Stopped;
        }
        if verdicts.retry.is_empty() {
            return Settled::Done;
        }
        counters
            .items_retried
            .fetch_add(verdicts.retry.len() as u64, Relaxed);
        counters.retries.fetch_add(1, Relaxed);
        let backoff = self.retry.next_delay();
        let delay = verdicts.retry_after.map_or(backoff, |d| d.max(backoff));
        tracing::info!(sink = %self.spec.name, events = verdicts.retry.len(), retry_in = ?delay, "the destination asked for some events again");
        Settled::Again(batch.subset(verdicts.retry.iter().copied()), delay)
    }

    /// Writes `rejected` (index in `batch`, reason) to the dead-letter queue, retrying a
    /// queue that is full or failing until it takes them; false if the stop deadline passed.
    fn dead_letter(&mut self, batch: &Batch, rejected: &[(usize, String)]) -> bool {
        if rejected.is_empty() {
            return true;
        }
        let spec = self.spec;
        let queue = &spec.dead_letters;
        let at_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let letters: Vec<Letter> = rejected
            .iter()
            .map(|(i, reason)| Letter {
                at_ms: at_ms as i64,
                shard: batch.shard(*i) as u16,
                reason: reason.clone(),
                record: batch.record(*i).to_vec(),
            })
            .collect();
        loop {
            match queue.append(&letters) {
                Ok(()) => {
                    spec.counters
                        .dead_lettered
                        .fetch_add(letters.len() as u64, Relaxed);
                    let first = &rejected[0].1;
                    tracing::warn!(sink = %spec.name, events = letters.len(), reason = %first, "events rejected by the destination: written to the dead-letter queue");
                    return true;
                }
                Err(e) => {
                    spec.counters.dead_letter_failures.fetch_add(1, Relaxed);
                    let delay = self.retry.next_delay().max(Duration::from_millis(100));
                    tracing::error!(sink = %spec.name, error = %e, retry_in = ?delay, "cannot write to the dead-letter queue: holding the events in the WAL");
                    if !wait_or_deadline(spec, delay) {
                        return false;
                    }
                }
            }
        }
    }

    fn succeeded(&mut self) {
        self.retry.failures = 0;
        if self.retry.breaker.succeeded() {
            tracing::info!(sink = %self.spec.name, "circuit closed: the destination takes deliveries again");
        }
        publish_circuit(self.spec, &self.retry.breaker);
    }

    /// A retriable failure: backoff (at least `Retry-After`), the breaker; false if the stop
    /// deadline passed while waiting.
    fn failed(&mut self, failure: &Failure) -> bool {
        let spec = self.spec;
        spec.counters.errors.fetch_add(1, Relaxed);
        spec.counters.retries.fetch_add(1, Relaxed);
        self.sink.reset();
        let backoff = self.retry.next_delay();
        let backoff = failure.retry_after.map_or(backoff, |d| d.max(backoff));
        if self.retry.breaker.failed() {
            spec.counters.circuit_opened.fetch_add(1, Relaxed);
            tracing::warn!(sink = %spec.name, open_for = ?spec.circuit.open_for, "circuit open: {} deliveries failed in a row; no attempt until it half-opens", spec.circuit.failure_threshold);
        }
        publish_circuit(spec, &self.retry.breaker);
        let delay = self.retry.breaker.wait(backoff);
        tracing::warn!(sink = %spec.name, error = %failure.error, retry_in = ?delay, "delivery failed");
        if !wait_or_deadline(spec, delay) {
            return false;
        }
        if self.retry.breaker.state() == CircuitState::Open {
            self.retry.breaker.waited();
            tracing::info!(sink = %spec.name, "circuit half-open: one probe delivery");
            publish_circuit(spec, &self.retry.breaker);
        }
        true
    }
}

/// After a sink's answer to a batch it could send.
enum Settled {
    Done,
    /// These events again, after this delay.
    Again(Batch, Duration),
    /// The stop deadline passed.
    Stopped,
}
