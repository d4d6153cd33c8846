//! Transforms: what runs on a shard between parsing an event and appending its record to the
//! WAL (filter, redact, parse, route, throttle: issue 13 adds the types).
//!
//! Like `ingest`, this crate is pure: no I/O, no clocks, no threads, no dependency on the
//! engine. A [`Chain`] is built once per config (conditions and regexes compiled then) and
//! owned by one shard; it runs each event through its transforms in order until one drops
//! it. Per-event work allocates nothing here: a transform keeps its scratch space in itself.
//!
//! The event type is a parameter: the engine decides what a transform sees (today the parsed
//! syslog event; the record that carries parsed fields comes with the transform types).

pub mod condition;
pub mod parse;
pub mod rate;
pub mod redact;

/// What a transform decided about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the (possibly changed) event on.
    Keep,
    /// Drop it: no later transform sees it and no record is written. Counted by the chain.
    Drop,
}

/// One processing step over events of type `E`.
pub trait Transform<E> {
    /// The name it has in the config (`[transforms.NAME]`), for metrics and errors.
    fn name(&self) -> &str;
    /// Processes `event` in place.
    fn process(&mut self, event: &mut E) -> Verdict;
}

/// The transforms of one pipeline, in order, with what each dropped.
pub struct Chain<E> {
    steps: Vec<Step<E>>,
}

struct Step<E> {
    transform: Box<dyn Transform<E>>,
    dropped: u64,
}

impl<E> Default for Chain<E> {
    fn default() -> Self {
        Chain { steps: Vec::new() }
    }
}

impl<E> Chain<E> {
    pub fn new(transforms: Vec<Box<dyn Transform<E>>>) -> Self {
        Chain {
            steps: transforms
                .into_iter()
                .map(|transform| Step {
                    transform,
                    dropped: 0,
                })
                .collect(),
        }
    }

    /// No transforms: the shard appends events as parsed (its fast path).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs `event` through every transform until one drops it.
    pub fn process(&mut self, event: &mut E) -> Verdict {
        for step in &mut self.steps {
            if step.transform.process(event) == Verdict::Drop {
                step.dropped += 1;
                return Verdict::Drop;
            }
        }
        Verdict::Keep
    }

    /// Events each transform dropped so far, by name.
    pub fn dropped(&self) -> impl Iterator<Item = (&str, u64)> {
        self.steps.iter().map(|s| (s.transform.name(), s.dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drops events above a limit.
    struct Below(u32);
    impl Transform<u32> for Below {
        fn name(&self) -> &str {
            "below"
        }
        fn process(&mut self, event: &mut u32) -> Verdict {
            if *event < self.0 {
                Verdict::Keep
            } else {
                Verdict::Drop
            }
        }
    }

    /// Doubles the event.
    struct Double;
    impl Transform<u32> for Double {
        fn name(&self) -> &str {
            "double"
        }
        fn process(&mut self, event: &mut u32) -> Verdict {
            *event = event.saturating_mul(2);
            Verdict::Keep
        }
    }

    #[test]
    fn an_empty_chain_keeps_everything_unchanged() {
        let mut chain = Chain::<u32>::default();
        let mut e = 7;
        assert!(chain.is_empty());
        assert_eq!(chain.process(&mut e), Verdict::Keep);
        assert_eq!(e, 7);
    }

    proptest! {
        /// Transforms run in order; the first drop ends the chain and is counted there.
        #[test]
        fn transforms_run_in_order_and_drops_are_counted(events in proptest::collection::vec(0u32..100, 0..200)) {
            let mut chain = Chain::new(vec![Box::new(Double), Box::new(Below(100))]);
            let mut kept = Vec::new();
            for &e in &events {
                let mut event = e;
                if chain.process(&mut event) == Verdict::Keep {
                    kept.push(event);
                }
            }
            let expected: Vec<u32> = events.iter().map(|e| e * 2).filter(|e| *e < 100).collect();
            prop_assert_eq!(&kept, &expected);
            let dropped: Vec<(String, u64)> = chain.dropped().map(|(n, d)| (n.to_string(), d)).collect();
            prop_assert_eq!(dropped, vec![("double".to_string(), 0), ("below".to_string(), (events.len() - kept.len()) as u64)]);
        }
    }
}
