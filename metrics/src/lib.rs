//! bootcache's metrics registry. Every counter and gauge is declared once,
//! with its name, help text, kind and unit ([`Desc`]), next to the struct
//! that holds it ([`counters!`]) or, for a struct declared elsewhere, in a
//! table of getters ([`fields!`]). The slow path reads them into a
//! [`Snapshot`] of `|`-separated sections, and every output comes from that
//! one snapshot: the operator's stats line ([`Snapshot::line`]), one JSON
//! object per interval ([`Snapshot::json`], read back by tests and the
//! benchmark with [`Reader`]), and OpenMetrics for Prometheus
//! (`openmetrics`, feature `openmetrics`).
//!
//! Fast-path counters stay plain integers per lcore (published in atomics
//! and summed when read); nothing here runs on the fast path.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "openmetrics")]
pub mod openmetrics;
pub mod ratelimit;
mod reader;
mod snapshot;

pub use reader::Reader;
pub use snapshot::{Sample, Section, Show, Snapshot};

/// Whether a value only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic since start; Prometheus names it `…_total`.
    Counter,
    /// A current level (active sessions, files in the store).
    Gauge,
}

/// The unit of a value, as Prometheus names it (base units only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count of things (frames, files, sessions).
    None,
    /// Bytes.
    Bytes,
    /// Nanoseconds in the stats line, exported to Prometheus as seconds.
    Nanoseconds,
    /// Milliseconds in the stats line, exported to Prometheus as seconds.
    Milliseconds,
}

/// One metric, declared once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// The Prometheus name without the `bootcache_` prefix, the unit and
    /// `_total` (`serve_hits`, `port_rx_frames`).
    pub name: &'static str,
    /// One line for operators.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The unit of the value.
    pub unit: Unit,
    /// The word of the stats line and the key of the JSON object
    /// (`hits`, `rx`).
    pub key: &'static str,
    /// A label this field carries in its family (`result="completed"`):
    /// several fields of one struct can be one Prometheus family.
    pub label: Option<(&'static str, &'static str)>,
}

impl Desc {
    /// A counter without unit or label.
    pub const fn counter(name: &'static str, key: &'static str, help: &'static str) -> Desc {
        Desc {
            name,
            help,
            kind: Kind::Counter,
            unit: Unit::None,
            key,
            label: None,
        }
    }

    /// A gauge without unit or label.
    pub const fn gauge(name: &'static str, key: &'static str, help: &'static str) -> Desc {
        Desc {
            kind: Kind::Gauge,
            ..Desc::counter(name, key, help)
        }
    }

    /// The same with a unit.
    pub const fn unit(self, unit: Unit) -> Desc {
        Desc { unit, ..self }
    }

    /// The same with a label of its own in its family.
    pub const fn label(self, key: &'static str, value: &'static str) -> Desc {
        Desc {
            label: Some((key, value)),
            ..self
        }
    }
}

/// A described field of a counter struct: its description and how to read it.
pub struct Field<T> {
    /// What it is.
    pub desc: Desc,
    /// Reads it from the struct.
    pub get: fn(&T) -> u64,
}

impl<T> std::fmt::Debug for Field<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.desc.fmt(f)
    }
}

/// A table of [`Field`]s of `T`, for a struct declared elsewhere (the
/// adapter for counters whose crate does not use [`counters!`]):
///
/// ```
/// struct Served { hits: u64, active: usize }
/// static SERVED: &[bootcache_metrics::Field<Served>] = bootcache_metrics::fields!(Served {
///     hits: Counter None "serve_hits" "hits" "Read requests answered from the cache",
///     active: Gauge None "serve_sessions_active" "active" "Sessions in progress",
/// });
/// let s = Served { hits: 3, active: 1 };
/// assert_eq!((SERVED[0].get)(&s), 3);
/// assert_eq!(SERVED[1].desc.key, "active");
/// ```
///
/// Each entry: `field: Kind Unit "prometheus_name" "line_key" "help"`, or
/// with a label of its own in the family,
/// `field: Kind Unit {"result" = "completed"} "name" "key" "help"`; the
/// field may be any integer or `bool` (read `as u64`).
#[macro_export]
macro_rules! fields {
    ($t:ty { $( $field:ident : $kind:ident $unit:ident $({$lk:literal = $lv:literal})? $name:literal $key:literal $help:expr ),* $(,)? }) => {
        &[ $( $crate::Field::<$t> {
            desc: $crate::Desc {
                name: $name,
                help: $help,
                kind: $crate::Kind::$kind,
                unit: $crate::Unit::$unit,
                key: $key,
                label: $crate::__label!($($lk = $lv)?),
            },
            get: |c: &$t| c.$field as u64,
        } ),* ]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __label {
    () => {
        None
    };
    ($k:literal = $v:literal) => {
        Some(($k, $v))
    };
}

/// Declares a struct of `u64` counters and its descriptions at once: the
/// struct as written (doc comments kept; each field's doc is its help text)
/// and `Name::FIELDS`, the table the snapshot reads.
///
/// ```
/// bootcache_metrics::counters! {
///     /// What a port did.
///     #[derive(Debug, Default)]
///     pub struct Port {
///         /// Frames received.
///         #[metric(Counter None "port_rx_frames" "rx")]
///         pub rx: u64,
///     }
/// }
/// assert_eq!(Port::FIELDS[0].desc.name, "port_rx_frames");
/// assert_eq!(Port::FIELDS[0].desc.help.trim(), "Frames received.");
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                #[metric($kind:ident $unit:ident $pname:literal $key:literal)]
                $fvis:vis $field:ident : u64
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[doc = $doc])+ $fvis $field: u64, )*
        }
        impl $name {
            /// Every field's description, in declaration order (the
            /// metrics registry reads the struct through it).
            $vis const FIELDS: &'static [$crate::Field<$name>] = $crate::fields!($name {
                $( $field: $kind $unit $pname $key concat!($($doc),+) ),*
            });
        }
    };
}
