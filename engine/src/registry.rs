//! The registry of a kind of component (sources, sinks): one line per type generates the
//! `type` names, the typed config enum the config reader fills and the dispatch to the type's
//! settings trait. A new type is its module plus one line in its kind's list.

/// `type_registry!(TypeEnum, ConfigEnum, dyn SettingsTrait, "what"; Variant = "name" => Config, …)`
macro_rules! type_registry {
    (
        $type_enum:ident, $config_enum:ident, $settings:path, $what:literal;
        $($variant:ident = $name:literal => $config:ty),* $(,)?
    ) => {
        #[doc = concat!("The ", $what, " types (`type = \"...\"`).")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
        pub enum $type_enum {
            $( #[serde(rename = $name)] $variant, )*
        }

        #[doc = concat!("A ", $what, ", typed by its `type`.")]
        #[derive(Debug, Clone, PartialEq)]
        pub enum $config_enum {
            $( $variant($config), )*
        }

        impl $config_enum {
            /// The `type` it was configured with.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( $config_enum::$variant(_) => $name, )*
                }
            }

            /// Its type's settings.
            pub fn settings(&self) -> &dyn $settings {
                match self {
                    $( $config_enum::$variant(c) => c, )*
                }
            }

            /// Reads the table of one whose type is `kind` (the config's second pass).
            pub fn read<'de, A: serde::de::MapAccess<'de>>(
                kind: $type_enum,
                map: &mut A,
            ) -> Result<Self, A::Error> {
                match kind {
                    $( $type_enum::$variant => map.next_value::<$config>().map($config_enum::$variant), )*
                }
            }
        }
    };
}

pub(crate) use type_registry;
