//! Sinks: one module per destination. A module holds the sink type's configuration (its
//! struct, defaults, checks, bounds and rendering: [`SinkSettings`]) and its
//! [`crate::delivery::Sink`] implementation; [`sink_registry!`] below is the registry.
//!
//! A sink only writes what it is handed and says when it is confirmed; reading the WAL,
//! batching, retrying and cursors are [`crate::delivery`]'s, shared by every sink. A sink runs
//! on its output's thread and never touches a shard.
//!
//! **A new destination is one new module here plus one line in the registry.** The registry
//! generates the `type` names, the typed config enum the config reader fills (with the key and
//! line of every error), and the dispatch to the module's settings and `open`.

mod file;
mod tcp;

use std::path::Path;

pub use file::{FileSink, SinkFsync};
pub use tcp::{TcpSink, DEFAULT_REPLAY_WINDOW};

use crate::delivery::OpenedSink;
use crate::units::Bounds;

/// What a sink writes to or connects to (what a config posted through the API may reach is
/// checked against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach<'a> {
    /// A file it writes (and rotates next to).
    File(&'a Path),
    /// A `host:port` it connects to.
    Destination(&'a str),
}

/// A sink type's configuration: everything the rest of Sluice needs to know of it.
pub trait SinkSettings {
    /// Checks that span keys; the key (`sinks.NAME.KEY`) and why, when refused.
    fn check(&self, name: &str) -> Result<(), (String, String)>;
    /// Puts every size and duration against its bounds (keys under `prefix`).
    fn check_bounds(&self, prefix: &str, bounds: &mut Bounds);
    /// Every key with its effective value (`sluice config`), `type` aside.
    fn render(&self) -> toml::Table;
    /// What it writes to or connects to.
    fn reach(&self) -> Reach<'_>;
    /// Opens the destination (where the sink is started: a refusal fails the start or the
    /// reload), with its encoding and retry backoff.
    fn open(&self) -> Result<OpenedSink, SinkError>;
}

/// Why a sink could not be opened (the start or the reload that asked for it fails).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination refused (it names the path or address and why).
    #[error("{source}")]
    Open {
        sink_type: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Declares the sink types: `Variant = "type name" => ConfigStruct`.
macro_rules! sink_registry {
    ($($variant:ident = $name:literal => $config:ty),* $(,)?) => {
        /// Sink types (`type = "..."`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
        pub enum SinkType {
            $( #[serde(rename = $name)] $variant, )*
        }

        /// A sink, typed by its `type`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum SinkConfig {
            $( $variant($config), )*
        }

        impl SinkConfig {
            /// The `type` it was configured with.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( SinkConfig::$variant(_) => $name, )*
                }
            }

            /// Its type's settings.
            pub fn settings(&self) -> &dyn SinkSettings {
                match self {
                    $( SinkConfig::$variant(c) => c, )*
                }
            }

            /// Reads the table of a sink whose type is `kind` (the config's second pass).
            pub fn read<'de, A: serde::de::MapAccess<'de>>(
                kind: SinkType,
                map: &mut A,
            ) -> Result<Self, A::Error> {
                match kind {
                    $( SinkType::$variant => map.next_value::<$config>().map(SinkConfig::$variant), )*
                }
            }
        }
    };
}

sink_registry! {
    File = "file" => FileSink,
    Tcp = "tcp" => TcpSink,
}

/// Opens the destination `config` names.
pub fn open(config: &SinkConfig) -> Result<OpenedSink, SinkError> {
    config.settings().open()
}
