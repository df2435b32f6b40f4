//! Plain value types shared by the store, the parsers and the module.

/// The two SCA event packages (numeric values as the C module stores them
/// in the `event` column of `sca_subscriptions`; one byte in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventType {
    CallInfo = 1,
    LineSeize = 2,
}

impl EventType {
    pub const fn name(self) -> &'static str {
        match self {
            EventType::CallInfo => "call-info",
            EventType::LineSeize => "line-seize",
        }
    }

    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            1 => Some(EventType::CallInfo),
            2 => Some(EventType::LineSeize),
            _ => None,
        }
    }

    /// Exact (case-sensitive) event package name, as RPC arguments use it.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"call-info" => Some(EventType::CallInfo),
            b"line-seize" => Some(EventType::LineSeize),
            _ => None,
        }
    }

    /// The success reply to a SUBSCRIBE of this package.
    pub const fn ok_reply(self) -> (u16, &'static str) {
        match self {
            EventType::CallInfo => (202, "Accepted"),
            EventType::LineSeize => (200, "OK"),
        }
    }
}

/// Subscription states, numbered as the C module numbers them (the `state`
/// column of `sca_subscriptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SubState {
    Active = 0,
    Pending = 1,
    Terminated = 2,
    TerminatedDeactivated = 3,
    TerminatedGiveup = 4,
    TerminatedNoresource = 5,
    TerminatedProbation = 6,
    TerminatedRejected = 7,
    TerminatedTimeout = 8,
}

impl SubState {
    /// The Subscription-State header value (without `;expires=`).
    pub const fn as_str(self) -> &'static str {
        match self {
            SubState::Active => "active",
            SubState::Pending => "pending",
            SubState::Terminated => "terminated",
            SubState::TerminatedDeactivated => "terminated;reason=deactivated",
            SubState::TerminatedGiveup => "terminated;reason=giveup",
            SubState::TerminatedNoresource => "terminated;reason=noresource",
            SubState::TerminatedProbation => "terminated;reason=probation",
            SubState::TerminatedRejected => "terminated;reason=rejected",
            SubState::TerminatedTimeout => "terminated;reason=timeout",
        }
    }

    pub fn from_i32(v: i32) -> Option<Self> {
        use SubState::*;
        [
            Active,
            Pending,
            Terminated,
            TerminatedDeactivated,
            TerminatedGiveup,
            TerminatedNoresource,
            TerminatedProbation,
            TerminatedRejected,
            TerminatedTimeout,
        ]
        .into_iter()
        .find(|s| *s as i32 == v)
    }

    pub const fn is_terminated(self) -> bool {
        !matches!(self, SubState::Active | SubState::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_values_round_trip() {
        for v in 0..9 {
            let s = SubState::from_i32(v).expect("state");
            assert_eq!(s as i32, v);
        }
        assert_eq!(SubState::from_i32(9), None);
        assert_eq!(SubState::from_i32(-1), None);
        assert_eq!(EventType::from_i32(2), Some(EventType::LineSeize));
        assert_eq!(EventType::from_i32(0), None);
    }

    #[test]
    fn names() {
        assert_eq!(SubState::TerminatedTimeout.as_str(), "terminated;reason=timeout");
        assert!(SubState::Terminated.is_terminated());
        assert!(!SubState::Active.is_terminated());
        assert_eq!(EventType::from_name(b"line-seize"), Some(EventType::LineSeize));
        assert_eq!(EventType::from_name(b"Line-Seize"), None);
        assert_eq!(EventType::CallInfo.ok_reply(), (202, "Accepted"));
    }
}
