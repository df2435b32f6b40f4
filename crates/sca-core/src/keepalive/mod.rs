//! Destination monitoring (the C `keepalive` module's job): SIP OPTIONS
//! pings, up/down state, state-change events.
//!
//! One engine serves several owners: the script and RPC (`ka_add_destination`,
//! `keepalive.add`), the destinations of the config (owner `_params`), other
//! Kamailio modules through the keepalive API (drouting), and later the
//! registrar for phones. A destination is a (URI, owner) pair; its state
//! changes only through the explicit operations of [`table::Table`]:
//! `add`, `remove`, `flush`, `due` (pings to send) and `on_result` (what a
//! ping got), which queue state changes as events.
//!
//! Pure Rust: the module supplies the allocator (shared memory), the lock
//! (a Kamailio lock), the clock, and sends the pings.

pub mod codes;
pub mod engine;
pub mod table;
pub mod uri;

pub use codes::AliveCodes;
pub use engine::{Engine, TableGuard};
pub use table::{Added, Applied, Config, DestInfo, Event, KaError, Now, Ping, PingResult, State, Stats, Table};
