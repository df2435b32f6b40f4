//! Keepalive statistics (in the module's group, names `keepalive_*`;
//! docs/observability.md): ping outcomes as per-process counters where
//! they happen, destination states read from the table when asked.

use core::ffi::CStr;

use sca_core::keepalive::State;

use crate::host::stats::{register_gauge, Counter};

pub static PINGS_SENT: Counter =
    Counter::new(c"keepalive_pings_sent", c"OPTIONS pings handed to tm");
pub static PINGS_FAILED: Counter = Counter::new(
    c"keepalive_pings_failed",
    c"pings not sent, not answered in time, or answered with a code that does not count as alive",
);
pub static PINGS_ANSWERED: Counter = Counter::new(
    c"keepalive_pings_answered",
    c"pings answered by the destination (any code)",
);
pub static PING_RTT_MS: Counter = Counter::new(
    c"keepalive_ping_rtt_ms",
    c"sum of the round-trip times of answered pings (ms); divided by keepalive_pings_answered: mean latency",
);

fn count_state(s: State) -> i64 {
    super::with_table(|t| {
        let (up, down, unknown) = t.count_states();
        (match s {
            State::Up => up,
            State::Down => down,
            State::Unknown => unknown,
        }) as i64
    })
    .unwrap_or(0)
}

/// Register in `group` (mod_init).
pub fn register(group: &'static CStr) -> Result<(), String> {
    for c in [&PINGS_SENT, &PINGS_FAILED, &PINGS_ANSWERED, &PING_RTT_MS] {
        c.register(group)?;
    }
    register_gauge(
        group,
        c"keepalive_destinations_up",
        c"destinations answering (state up)",
        || count_state(State::Up),
    )?;
    register_gauge(
        group,
        c"keepalive_destinations_down",
        c"destinations declared down",
        || count_state(State::Down),
    )?;
    register_gauge(
        group,
        c"keepalive_destinations_unknown",
        c"destinations not pinged enough yet to tell",
        || count_state(State::Unknown),
    )
}
