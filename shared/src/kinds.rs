//! One list per kind of thing: `kinds!` defines a field-less enum together with its wire names
//! and the list of all its values, so that a message type (or error code) is added in one place
//! and everything derived from it — the unknown-type check, metric labels, tests that must cover
//! every case — follows. Each message enum maps itself to its kind with an exhaustive `match`, so
//! a new variant does not compile until it is given a kind.

/// `kinds!(Name { Variant = "wire-name", ... })`.
macro_rules! kinds {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name on the wire (and in metric labels).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }

            /// The value with wire name `wire`.
            pub fn from_wire(wire: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|kind| kind.as_str() == wire)
            }

            /// Position in [`Self::ALL`]: an index into per-kind tables (counters).
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use kinds;
