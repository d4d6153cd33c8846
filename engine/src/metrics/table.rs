//! The declarative metric tables: each counter family is written once, as a table, and the
//! counters (struct fields), the Prometheus exposition, the shutdown summary and the metrics
//! reference in `docs/metrics.md` are all generated from it.
//!
//! Naming (Prometheus conventions): `sluice_` prefix, units last in the name (`_bytes`,
//! `_seconds`), counters end in `_total`. A metric with a `loss` reason also counts in
//! `sluice_events_dropped_total{reason}`; rows sharing a name (with different fixed labels)
//! form one family.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The metric types Sluice exports from tables (histograms are exported separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One row of a table: a value of `T` and how it is exported.
pub struct Metric<T: ?Sized> {
    /// The field (and the key in the shutdown summary).
    pub key: &'static str,
    /// The Prometheus name, `_total` included for counters.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// A fixed label this row adds (rows of one name differ in it), e.g. `reason`.
    pub label: Option<(&'static str, &'static str)>,
    /// The `reason` under which this row also counts in `sluice_events_dropped_total`.
    pub loss: Option<&'static str>,
    pub read: fn(&T) -> f64,
}

/// A family of metrics: one set of values per label set (`shard`, `source`, `sink`, …).
pub trait Family: Sized + 'static {
    /// The family's name in the reference.
    const NAME: &'static str;
    /// The labels every series of the family carries, in order.
    const LABELS: &'static [&'static str];
    const METRICS: &'static [Metric<Self>];
}

/// Reads a table cell as f64 (Prometheus values are floats; counts stay exact below 2^53).
pub trait Cell {
    fn value(&self) -> f64;
}

impl Cell for AtomicU64 {
    fn value(&self) -> f64 {
        self.load(Relaxed) as f64
    }
}

impl Cell for AtomicI64 {
    fn value(&self) -> f64 {
        // A gauge that briefly went below zero (a close counted before its open) reads 0.
        self.load(Relaxed).max(0) as f64
    }
}

impl Cell for f64 {
    fn value(&self) -> f64 {
        *self
    }
}

/// Declares a counter family: the struct (atomics, written by one thread each, relaxed) and
/// its table; a row's help text is its doc comment. `extra` fields are state the family carries that is not a table metric.
macro_rules! counter_family {
    (
        $(#[$meta:meta])*
        pub struct $name:ident ($family:literal, labels [$($label:literal),*]) {
            $(
                $(#[doc = $doc:literal])+
                $field:ident: $kind:ident $metric:literal
                    $(label($lk:literal = $lv:literal))? $(loss($reason:literal))?;
            )*
        }
        $(extra {
            $( $(#[$xmeta:meta])* $xfield:ident: $xty:ty = $xinit:expr; )*
        })?
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: counter_family!(@ty $kind), )*
            $($( $(#[$xmeta])* pub $xfield: $xty, )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $( $field: Default::default(), )*
                    $($( $xfield: $xinit, )*)?
                }
            }
        }

        impl $crate::metrics::table::Family for $name {
            const NAME: &'static str = $family;
            const LABELS: &'static [&'static str] = &[$($label),*];
            const METRICS: &'static [$crate::metrics::table::Metric<$name>] = &[
                $(
                    $crate::metrics::table::Metric {
                        key: stringify!($field),
                        name: $metric,
                        help: concat!($($doc),+),
                        kind: counter_family!(@kind $kind),
                        label: counter_family!(@opt $( ($lk, $lv) )?),
                        loss: counter_family!(@opt $( $reason )?),
                        read: |c: &$name| $crate::metrics::table::Cell::value(&c.$field),
                    },
                )*
            ];
        }
    };
    (@opt) => { None };
    (@opt $value:expr) => { Some($value) };
    (@ty counter) => { std::sync::atomic::AtomicU64 };
    (@ty gauge) => { std::sync::atomic::AtomicI64 };
    (@kind counter) => { $crate::metrics::table::Kind::Counter };
    (@kind gauge) => { $crate::metrics::table::Kind::Gauge };
}

pub(crate) use counter_family;

/// The shutdown summary of a family: `key=value` per table row, summed over `sets`.
pub fn summary<T: Family>(sets: &[&T]) -> Vec<(&'static str, f64)> {
    T::METRICS
        .iter()
        .map(|m| (m.key, sets.iter().map(|s| (m.read)(s)).sum()))
        .collect()
}

/// The family's rows as a Markdown table (the metrics reference).
pub fn reference<T: Family>(out: &mut String) {
    use std::fmt::Write;
    let labels = T::LABELS.join(", ");
    let _ = writeln!(
        out,
        "\n### {} (labels: {})\n",
        T::NAME,
        if labels.is_empty() { "none" } else { &labels }
    );
    let _ = writeln!(
        out,
        "| name | type | extra label | also a loss reason | meaning |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for m in T::METRICS {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let label = m
            .label
            .map(|(k, v)| format!("`{k}=\"{v}\"`"))
            .unwrap_or_default();
        let loss = m.loss.map(|r| format!("`{r}`")).unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{}` | {kind} | {label} | {loss} | {} |",
            m.name,
            m.help.trim()
        );
    }
}
