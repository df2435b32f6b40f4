//! Appearance states and their wire names (`appearance-state=` values).
//!
//! Numeric values are those of the C module's `SCA_APPEARANCE_STATE_*`
//! enum (sca_appearance.h); they show up wherever the C module exposes the
//! raw number.
//!
//! # Compatibility
//!
//! The C module keeps a name table indexed by state in which `"active"`
//! appears twice: once for `ACTIVE_PENDING` (4) and once for `ACTIVE` (5).
//! Its name-to-state lookup stops at the first match, so parsing `"active"`
//! yields **`ActivePending`**, not `Active`. [`AppearanceState::from_bytes`]
//! reproduces this, because the C module relies on it: an SCA callee's 200
//! OK carrying `appearance-state=active` puts the appearance into
//! active-pending, and only the caller's ACK promotes it to active.
//!
//! Name matching is exact and case-sensitive (`memcmp` in C): `"IDLE"` is
//! not a state. `"unknown"` is printed for [`AppearanceState::Unknown`] but
//! is not accepted by the parser, again as in C.

use std::fmt;

/// State of one appearance (line) of a shared AoR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AppearanceState {
    /// `idle` (0).
    Idle = 0,
    /// `seized` (1): a line-seize SUBSCRIBE reserved the index.
    Seized = 1,
    /// `progressing` (2): 180/183 seen.
    Progressing = 2,
    /// `alerting` (3): ringing.
    Alerting = 3,
    /// Printed as `active` (4): answered, waiting for the caller's ACK.
    ActivePending = 4,
    /// `active` (5).
    Active = 5,
    /// `held` (6).
    Held = 6,
    /// `held-private` (7).
    HeldPrivate = 7,
    /// `unknown` (255): the C module's "no state" marker.
    Unknown = 255,
}

impl AppearanceState {
    /// Every state, in numeric order.
    pub const ALL: [AppearanceState; 9] = [
        Self::Idle,
        Self::Seized,
        Self::Progressing,
        Self::Alerting,
        Self::ActivePending,
        Self::Active,
        Self::Held,
        Self::HeldPrivate,
        Self::Unknown,
    ];

    /// The wire name, exactly as the C module prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Seized => "seized",
            Self::Progressing => "progressing",
            Self::Alerting => "alerting",
            Self::ActivePending | Self::Active => "active",
            Self::Held => "held",
            Self::HeldPrivate => "held-private",
            Self::Unknown => "unknown",
        }
    }

    /// The C module's numeric value.
    pub const fn as_c_int(self) -> i32 {
        self as i32
    }

    /// From the C module's numeric value; anything out of range is
    /// `Unknown` (as `sca_appearance_state_to_str` treats it).
    pub const fn from_c_int(value: i32) -> Self {
        match value {
            0 => Self::Idle,
            1 => Self::Seized,
            2 => Self::Progressing,
            3 => Self::Alerting,
            4 => Self::ActivePending,
            5 => Self::Active,
            6 => Self::Held,
            7 => Self::HeldPrivate,
            _ => Self::Unknown,
        }
    }

    /// Parse a wire name exactly like `sca_appearance_state_from_str`:
    /// case-sensitive, no trimming, `"active"` gives `ActivePending` (see
    /// the module docs). `None` is the C module's `UNKNOWN` result.
    pub fn from_bytes(name: &[u8]) -> Option<Self> {
        match name {
            b"idle" => Some(Self::Idle),
            b"seized" => Some(Self::Seized),
            b"progressing" => Some(Self::Progressing),
            b"alerting" => Some(Self::Alerting),
            b"active" => Some(Self::ActivePending),
            b"held" => Some(Self::Held),
            b"held-private" => Some(Self::HeldPrivate),
            _ => None,
        }
    }

    /// `held` or `held-private` (the C `sca_appearance_is_held`).
    pub const fn is_held(self) -> bool {
        matches!(self, Self::Held | Self::HeldPrivate)
    }
}

impl fmt::Display for AppearanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_values_match_c_enum() {
        let expected = [0, 1, 2, 3, 4, 5, 6, 7, 255];
        for (state, value) in AppearanceState::ALL.iter().zip(expected) {
            assert_eq!(state.as_c_int(), value);
            assert_eq!(AppearanceState::from_c_int(value), *state);
        }
        assert_eq!(AppearanceState::from_c_int(8), AppearanceState::Unknown);
        assert_eq!(AppearanceState::from_c_int(-1), AppearanceState::Unknown);
        assert_eq!(
            AppearanceState::from_c_int(i32::MAX),
            AppearanceState::Unknown
        );
    }

    #[test]
    fn wire_names_match_c_table() {
        let names: Vec<&str> = AppearanceState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "idle",
                "seized",
                "progressing",
                "alerting",
                "active",
                "active",
                "held",
                "held-private",
                "unknown"
            ]
        );
        assert_eq!(AppearanceState::HeldPrivate.to_string(), "held-private");
    }

    #[test]
    fn from_bytes_round_trips_except_active_quirk() {
        for state in AppearanceState::ALL {
            let parsed = AppearanceState::from_bytes(state.as_str().as_bytes());
            match state {
                AppearanceState::Unknown => assert_eq!(parsed, None),
                AppearanceState::Active => {
                    assert_eq!(parsed, Some(AppearanceState::ActivePending))
                }
                other => assert_eq!(parsed, Some(other)),
            }
        }
    }

    #[test]
    fn from_bytes_is_exact_and_case_sensitive() {
        for bad in [
            &b""[..],
            b"IDLE",
            b"Idle",
            b" idle",
            b"idle ",
            b"idle\0",
            b"held_private",
            b"heldprivate",
            b"unknown",
            b"ringing",
            b"\"idle\"",
        ] {
            assert_eq!(AppearanceState::from_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn held_states() {
        let held: Vec<_> = AppearanceState::ALL
            .into_iter()
            .filter(|s| s.is_held())
            .collect();
        assert_eq!(held, [AppearanceState::Held, AppearanceState::HeldPrivate]);
    }
}
