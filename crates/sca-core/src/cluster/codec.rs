//! The binary format of cluster messages (content type
//! `application/x-sca-rs`), and its encoder and validating decoder.
//!
//! # Layout
//!
//! All numbers are little-endian and fixed-width. A message is a 20-byte
//! header followed by any number of records:
//!
//! ```text
//! header : "SCAR" | proto u8 (= 1) | kind u8 | flags u16
//!          | node_id u32 | boot_id u32 | seq u32
//! record : type u8 | len u32 | payload (len bytes)
//! string : length u16 | bytes (any octets, no terminator)
//! Ver    : ms u64 | node u32
//! ```
//!
//! The message kinds are `CHANGES` (1), `SYNC_REQ` (2), `SYNC_CHUNK`
//! (3) and `DIGEST` (4). The record payloads, field by field in wire order:
//!
//! * `SUB_PUT` (1), a subscription stored or refreshed: aor string,
//!   event u8, subscriber string, expires i64, state u8, index i32,
//!   call_id, from_tag, to_tag and record_route strings, notify_cseq u32,
//!   subscribe_cseq u32, origin u32, ver.
//! * `SUB_DEL` (2), a subscription removed: aor string, event u8,
//!   subscriber string, ver.
//! * `AOR_APPS` (3), every appearance of one AoR: aor string, shared u8
//!   (0 or 1), the shared flag's ver, a u16 count of appearances, each one
//!   index u32, state u8, flags u8, mtime i64, ctime i64, inc ver, ver, and
//!   eleven strings (owner, callee, uri, call_id, from_tag, to_tag,
//!   prev_owner, prev_callee, prev_call_id, prev_from_tag, prev_to_tag);
//!   then a u16 count of tombstones, each index u32, inc ver, ver.
//! * `SYNC_REQ` (4): session u32, cursor u32, max_bytes u32.
//! * `SYNC_CHUNK` (5): session u32, next_cursor u32 ([`SYNC_DONE`] when
//!   the walk is complete).
//! * `DIGEST` (6), the sender's digest of its store (anti-entropy, see
//!   [`super::digest`]): session u32, cursor u32, max_bytes u32, a u16
//!   count of bucket sums, each u64.
//!
//! Which records a message may hold depends on its kind:
//!
//! * `CHANGES`: any number of `SUB_PUT`, `SUB_DEL` and `AOR_APPS`.
//! * `SYNC_REQ`: exactly one `SYNC_REQ`.
//! * `DIGEST`: exactly one `DIGEST` (answered like a `SYNC_REQ`, with a
//!   `SYNC_CHUNK` message holding only what differs).
//! * `SYNC_CHUNK`: exactly one `SYNC_CHUNK` record, anywhere among any
//!   number of `SUB_PUT` and `AOR_APPS` records. (The records of a chunk
//!   sit next to it rather than inside it, so a sender that learns where
//!   its walk stopped only at the end can append the `SYNC_CHUNK` record
//!   last.)
//!
//! # Validation
//!
//! [`decode`] checks the whole message before it returns anything: it
//! gives back every record or an [`Error`], never part of a message. A
//! message is rejected when it is over [`MAX_MESSAGE_LEN`] bytes, when
//! the magic, protocol version or kind is wrong, when a length runs past
//! the end of the message or of its record, when bytes are left over at
//! the end of a record, when a value is out of range (an event other than
//! 1 or 2, an unknown subscription or appearance state, an appearance or
//! tombstone index outside 1 to 2^31 - 1, a subscription's index below -1,
//! a shared flag other than 0 or 1), or when a known record does not
//! belong in the message's kind. Records of an unknown type are skipped, so that later
//! versions can add records that older nodes ignore.
//!
//! Decoded strings borrow from the input. The decoder allocates only the
//! list of records and the appearance and tombstone lists of `AOR_APPS`,
//! each element of which consumes input bytes, so what it allocates is
//! bounded by the (at most 64 KiB) input.
//!
//! The encoder ([`Builder`], [`encode`]) applies the same rules, so what
//! it produces always decodes, and it refuses to make a message over
//! [`MAX_MESSAGE_LEN`] bytes: a caller with more to send starts another
//! message.

// Decoding runs on bytes from the network: no panicking operation may be
// used outside the tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use core::fmt;

use super::Ver;
use crate::appearance::DialogRef;
use crate::model::{EventType, SubState};
use crate::parse::appearance::AppearanceState;
use crate::parse::callinfo::MAX_APPEARANCE_INDEX;
use crate::store::SubscriptionRec;

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"SCAR";
/// The protocol version this code writes and reads.
pub const PROTO: u8 = 1;
/// The content type of the DMQ body.
pub const CONTENT_TYPE: &str = "application/x-sca-rs";
/// The largest message, header included (64 KiB).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Length of the message header.
pub const HEADER_LEN: usize = 20;
/// Length of a record's type and length fields.
pub const RECORD_HEADER_LEN: usize = 5;
/// The longest string a message can carry.
pub const MAX_STR_LEN: usize = u16::MAX as usize;
/// The most appearances, or tombstones, one `AOR_APPS` record can carry.
pub const MAX_LIST_LEN: usize = u16::MAX as usize;
/// `next_cursor` of the last `SYNC_CHUNK` of a sync.
pub const SYNC_DONE: u32 = u32::MAX;

/// Record type of [`SubPut`].
pub const REC_SUB_PUT: u8 = 1;
/// Record type of [`SubDel`].
pub const REC_SUB_DEL: u8 = 2;
/// Record type of [`AorApps`].
pub const REC_AOR_APPS: u8 = 3;
/// Record type of [`SyncReq`].
pub const REC_SYNC_REQ: u8 = 4;
/// Record type of [`SyncChunk`].
pub const REC_SYNC_CHUNK: u8 = 5;
/// Record type of [`DigestRec`].
pub const REC_DIGEST: u8 = 6;

/// The name of a record type, for log lines (`"unknown"` for types this
/// version does not know).
pub const fn record_name(code: u8) -> &'static str {
    match code {
        REC_SUB_PUT => "SUB_PUT",
        REC_SUB_DEL => "SUB_DEL",
        REC_AOR_APPS => "AOR_APPS",
        REC_SYNC_REQ => "SYNC_REQ",
        REC_SYNC_CHUNK => "SYNC_CHUNK",
        REC_DIGEST => "DIGEST",
        _ => "unknown",
    }
}

/// What a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Local changes, broadcast to every peer.
    Changes = 1,
    /// A request for a chunk of a peer's whole store.
    SyncReq = 2,
    /// A chunk of the store, in the reply to a `SyncReq`.
    SyncChunk = 3,
    /// A digest of the sender's store: send me what differs (answered by
    /// a `SyncChunk`).
    Digest = 4,
}

impl Kind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Kind::Changes),
            2 => Some(Kind::SyncReq),
            3 => Some(Kind::SyncChunk),
            4 => Some(Kind::Digest),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Kind::Changes => "CHANGES",
            Kind::SyncReq => "SYNC_REQ",
            Kind::SyncChunk => "SYNC_CHUNK",
            Kind::Digest => "DIGEST",
        }
    }

    /// May a record of (known) type `code` appear in this kind of message?
    const fn allows(self, code: u8) -> bool {
        match self {
            Kind::Changes => matches!(code, REC_SUB_PUT | REC_SUB_DEL | REC_AOR_APPS),
            Kind::SyncReq => code == REC_SYNC_REQ,
            Kind::SyncChunk => matches!(code, REC_SUB_PUT | REC_AOR_APPS | REC_SYNC_CHUNK),
            Kind::Digest => code == REC_DIGEST,
        }
    }

    /// The record type this kind of message must hold exactly once.
    const fn required(self) -> Option<u8> {
        match self {
            Kind::Changes => None,
            Kind::SyncReq => Some(REC_SYNC_REQ),
            Kind::SyncChunk => Some(REC_SYNC_CHUNK),
            Kind::Digest => Some(REC_DIGEST),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version; always [`PROTO`] (other values are refused).
    pub proto: u8,
    pub kind: Kind,
    /// Reserved for later use: zero when written, carried as read.
    pub flags: u16,
    /// The sender's node id.
    pub node_id: u32,
    /// Random per start of the sender.
    pub boot_id: u32,
    /// The sender's message counter, for gap statistics.
    pub seq: u32,
}

impl Header {
    /// A header of this protocol version with no flags.
    pub const fn new(kind: Kind, node_id: u32, boot_id: u32, seq: u32) -> Self {
        Header {
            proto: PROTO,
            kind,
            flags: 0,
            node_id,
            boot_id,
            seq,
        }
    }
}

/// `SUB_PUT`: a subscription stored or refreshed: the store's own record
/// (what `AorGuard::put_sub` takes; its `index` is the seized appearance
/// of a line-seize subscription, -1 or 0 for none, and values below -1
/// are refused), plus where and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPut<'a> {
    pub sub: SubscriptionRec<'a>,
    /// The node that received the latest SUBSCRIBE.
    pub origin: u32,
    pub ver: Ver,
}

/// `SUB_DEL`: a subscription removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubDel<'a> {
    pub aor: &'a [u8],
    pub event: EventType,
    pub subscriber: &'a [u8],
    pub ver: Ver,
}

/// One appearance in an [`AorApps`] record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppearanceRec<'a> {
    /// 1 to [`MAX_APPEARANCE_INDEX`].
    pub index: u32,
    pub state: AppearanceState,
    /// `appearance::FLAG_*` bits; unknown bits are carried as they are.
    pub flags: u8,
    pub mtime: i64,
    pub ctime: i64,
    /// The seize that made this incarnation of the appearance.
    pub inc: Ver,
    pub ver: Ver,
    pub owner: &'a [u8],
    pub callee: &'a [u8],
    pub uri: &'a [u8],
    pub dialog: DialogRef<'a>,
    pub prev_owner: &'a [u8],
    pub prev_callee: &'a [u8],
    pub prev_dialog: DialogRef<'a>,
}

/// A released appearance, remembered for a while so that late upserts of
/// the incarnation it ended are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// 1 to [`MAX_APPEARANCE_INDEX`].
    pub index: u32,
    pub inc: Ver,
    pub ver: Ver,
}

/// `AOR_APPS`: the shared flag and every appearance of one AoR, each with
/// its own version, plus the AoR's appearance tombstones. An index that is
/// absent does not mean "released": only tombstones release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AorApps<'a> {
    pub aor: &'a [u8],
    pub shared: bool,
    pub shared_ver: Ver,
    pub apps: Vec<AppearanceRec<'a>>,
    pub tombstones: Vec<Tombstone>,
}

/// `SYNC_REQ`: send me the store from slot `cursor` on, in about
/// `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReq {
    pub session: u32,
    pub cursor: u32,
    pub max_bytes: u32,
}

/// `SYNC_CHUNK`: the session this chunk answers, and where the next
/// request should start ([`SYNC_DONE`] when there is nothing more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncChunk {
    pub session: u32,
    pub next_cursor: u32,
}

/// `DIGEST`: the sender's bucket sums ([`super::digest`]); the receiver
/// answers, like a [`SyncReq`] from slot `cursor` on in about `max_bytes`,
/// with the AoRs of the buckets whose sums differ from its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRec {
    pub session: u32,
    pub cursor: u32,
    pub max_bytes: u32,
    /// At most [`MAX_LIST_LEN`].
    pub sums: Vec<u64>,
}

/// One record of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    SubPut(SubPut<'a>),
    SubDel(SubDel<'a>),
    AorApps(AorApps<'a>),
    SyncReq(SyncReq),
    SyncChunk(SyncChunk),
    Digest(DigestRec),
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    /// The known records, in message order.
    pub records: Vec<Record<'a>>,
    /// How many records of unknown types were skipped.
    pub skipped: usize,
}

/// Why a message could not be decoded or encoded. The `Display` text is
/// meant for the log line of a rejected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The message (or the message a builder would make) is over
    /// [`MAX_MESSAGE_LEN`] bytes.
    TooLarge { len: usize },
    /// The message is shorter than its header.
    ShortHeader { len: usize },
    /// The message does not start with [`MAGIC`].
    BadMagic,
    /// A protocol version other than [`PROTO`].
    UnknownProto(u8),
    /// A message kind this version does not know.
    UnknownKind(u8),
    /// The message or a record ends inside `what`, which starts at
    /// `offset`.
    Truncated { what: &'static str, offset: usize },
    /// A record at `offset` claims a payload of `len` bytes, but only
    /// `left` are left in the message.
    RecordOverrun {
        record: u8,
        offset: usize,
        len: u32,
        left: usize,
    },
    /// A record at `offset` has `extra` bytes after its last field.
    TrailingBytes {
        record: u8,
        offset: usize,
        extra: usize,
    },
    /// An event number other than 1 (call-info) or 2 (line-seize).
    BadEvent(u8),
    /// An unknown subscription state.
    BadSubState(u8),
    /// An unknown appearance state.
    BadAppearanceState(u8),
    /// An index out of its range (appearance and tombstone indexes must be
    /// 1 to [`MAX_APPEARANCE_INDEX`], a subscription's -1 or more).
    BadIndex { what: &'static str, value: i64 },
    /// A flag byte other than 0 or 1.
    BadFlag { what: &'static str, value: u8 },
    /// A known record that does not belong in this kind of message.
    UnexpectedRecord { kind: Kind, record: u8 },
    /// A second copy of the record this kind of message holds once.
    DuplicateRecord { kind: Kind, record: u8 },
    /// The record this kind of message must hold is missing.
    MissingRecord { kind: Kind, record: u8 },
    /// Encoding only: a string over [`MAX_STR_LEN`] bytes.
    StringTooLong { what: &'static str, len: usize },
    /// Encoding only: a list over [`MAX_LIST_LEN`] entries.
    ListTooLong { what: &'static str, len: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::TooLarge { len } => {
                write!(
                    f,
                    "message of {len} bytes is over the limit of {MAX_MESSAGE_LEN}"
                )
            }
            Error::ShortHeader { len } => {
                write!(
                    f,
                    "message of {len} bytes is shorter than the {HEADER_LEN}-byte header"
                )
            }
            Error::BadMagic => f.write_str("not an sca_rs cluster message (bad magic)"),
            Error::UnknownProto(p) => {
                write!(f, "unknown protocol version {p} (this node speaks {PROTO})")
            }
            Error::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            Error::Truncated { what, offset } => {
                write!(
                    f,
                    "{what} at offset {offset} runs past the end of its record or message"
                )
            }
            Error::RecordOverrun {
                record,
                offset,
                len,
                left,
            } => write!(
                f,
                "{} record (type {record}) at offset {offset} claims {len} bytes, \
                 only {left} are left",
                record_name(record)
            ),
            Error::TrailingBytes {
                record,
                offset,
                extra,
            } => write!(
                f,
                "{extra} bytes left over at the end of the {} record at offset {offset}",
                record_name(record)
            ),
            Error::BadEvent(v) => {
                write!(f, "event {v} is out of range (1 call-info, 2 line-seize)")
            }
            Error::BadSubState(v) => write!(f, "unknown subscription state {v}"),
            Error::BadAppearanceState(v) => write!(f, "unknown appearance state {v}"),
            Error::BadIndex { what, value } => write!(f, "{what} {value} is out of range"),
            Error::BadFlag { what, value } => write!(f, "{what} is {value}, not 0 or 1"),
            Error::UnexpectedRecord { kind, record } => write!(
                f,
                "{} record (type {record}) does not belong in a {kind} message",
                record_name(record)
            ),
            Error::DuplicateRecord { kind, record } => write!(
                f,
                "{kind} message with more than one {} record",
                record_name(record)
            ),
            Error::MissingRecord { kind, record } => {
                write!(
                    f,
                    "{kind} message without its {} record",
                    record_name(record)
                )
            }
            Error::StringTooLong { what, len } => {
                write!(
                    f,
                    "{what} of {len} bytes is over the limit of {MAX_STR_LEN}"
                )
            }
            Error::ListTooLong { what, len } => {
                write!(f, "{len} {what} are over the limit of {MAX_LIST_LEN}")
            }
        }
    }
}

impl std::error::Error for Error {}

// ---------------------------------------------------------------------------
// value checks, shared by the encoder and the decoder

fn check_app_index(what: &'static str, index: u32) -> Result<(), Error> {
    if (1..=MAX_APPEARANCE_INDEX).contains(&index) {
        Ok(())
    } else {
        Err(Error::BadIndex {
            what,
            value: i64::from(index),
        })
    }
}

fn check_sub_index(index: i32) -> Result<(), Error> {
    if index >= -1 {
        Ok(())
    } else {
        Err(Error::BadIndex {
            what: "subscription appearance index",
            value: i64::from(index),
        })
    }
}

fn event_from_u8(v: u8) -> Result<EventType, Error> {
    EventType::from_i32(i32::from(v)).ok_or(Error::BadEvent(v))
}

fn sub_state_from_u8(v: u8) -> Result<SubState, Error> {
    SubState::from_i32(i32::from(v)).ok_or(Error::BadSubState(v))
}

/// Strict: unlike `AppearanceState::from_c_int`, an unknown number is an
/// error rather than `Unknown` (255 itself is accepted).
fn app_state_from_u8(v: u8) -> Result<AppearanceState, Error> {
    AppearanceState::ALL
        .into_iter()
        .find(|s| *s as u8 == v)
        .ok_or(Error::BadAppearanceState(v))
}

// ---------------------------------------------------------------------------
// encoding

/// Bytes a string takes on the wire.
const fn str_len(s: &[u8]) -> usize {
    2 + s.len()
}
const VER_LEN: usize = 12;
/// The fixed-width part of an appearance: index, state, flags, mtime,
/// ctime, inc, ver.
const APP_FIXED_LEN: usize = 4 + 1 + 1 + 8 + 8 + VER_LEN + VER_LEN;
const TOMBSTONE_LEN: usize = 4 + VER_LEN + VER_LEN;

fn check_str(what: &'static str, s: &[u8]) -> Result<(), Error> {
    if s.len() <= MAX_STR_LEN {
        Ok(())
    } else {
        Err(Error::StringTooLong { what, len: s.len() })
    }
}

fn check_list(what: &'static str, len: usize) -> Result<(), Error> {
    if len <= MAX_LIST_LEN {
        Ok(())
    } else {
        Err(Error::ListTooLong { what, len })
    }
}

impl<'a> AppearanceRec<'a> {
    /// The eleven strings in wire order, which is the store's order
    /// (`AppearanceParts::strs`).
    pub fn str_parts(&self) -> [&'a [u8]; 11] {
        [
            self.owner,
            self.callee,
            self.uri,
            self.dialog.call_id,
            self.dialog.from_tag,
            self.dialog.to_tag,
            self.prev_owner,
            self.prev_callee,
            self.prev_dialog.call_id,
            self.prev_dialog.from_tag,
            self.prev_dialog.to_tag,
        ]
    }

    /// The eleven strings, in wire order, with their names.
    fn strs(&self) -> [(&'static str, &[u8]); 11] {
        [
            ("owner", self.owner),
            ("callee", self.callee),
            ("appearance uri", self.uri),
            ("call_id", self.dialog.call_id),
            ("from_tag", self.dialog.from_tag),
            ("to_tag", self.dialog.to_tag),
            ("prev_owner", self.prev_owner),
            ("prev_callee", self.prev_callee),
            ("prev_call_id", self.prev_dialog.call_id),
            ("prev_from_tag", self.prev_dialog.from_tag),
            ("prev_to_tag", self.prev_dialog.to_tag),
        ]
    }

    fn encoded_len(&self) -> usize {
        APP_FIXED_LEN + self.strs().iter().map(|(_, s)| str_len(s)).sum::<usize>()
    }
}

impl SubPut<'_> {
    fn strs(&self) -> [(&'static str, &[u8]); 6] {
        let s = &self.sub;
        [
            ("aor", s.aor),
            ("subscriber", s.subscriber),
            ("call_id", s.call_id),
            ("from_tag", s.from_tag),
            ("to_tag", s.to_tag),
            ("record_route", s.record_route),
        ]
    }
}

impl Record<'_> {
    /// The record type on the wire.
    pub const fn code(&self) -> u8 {
        match self {
            Record::SubPut(_) => REC_SUB_PUT,
            Record::SubDel(_) => REC_SUB_DEL,
            Record::AorApps(_) => REC_AOR_APPS,
            Record::SyncReq(_) => REC_SYNC_REQ,
            Record::SyncChunk(_) => REC_SYNC_CHUNK,
            Record::Digest(_) => REC_DIGEST,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Record::SubPut(r) => {
                r.strs().iter().map(|(_, s)| str_len(s)).sum::<usize>()
                    + 1 // event
                    + 8 // expires
                    + 1 // state
                    + 4 // index
                    + 4 * 3 // notify_cseq, subscribe_cseq, origin
                    + VER_LEN
            }
            Record::SubDel(r) => str_len(r.aor) + 1 + str_len(r.subscriber) + VER_LEN,
            Record::AorApps(r) => {
                str_len(r.aor)
                    + 1
                    + VER_LEN
                    + 2
                    + r.apps.iter().map(AppearanceRec::encoded_len).sum::<usize>()
                    + 2
                    + r.tombstones.len() * TOMBSTONE_LEN
            }
            Record::SyncReq(_) => 12,
            Record::SyncChunk(_) => 8,
            Record::Digest(d) => 12 + 2 + 8 * d.sums.len(),
        }
    }

    /// Bytes this record takes in a message, its type and length included.
    /// Meaningful for records [`Record::validate`] accepts.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload_len()
    }

    /// Check that the record can be encoded and would pass the decoder's
    /// checks: strings and lists within their limits, indexes in range.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Record::SubPut(r) => {
                for (what, s) in r.strs() {
                    check_str(what, s)?;
                }
                check_sub_index(r.sub.index)
            }
            Record::SubDel(r) => {
                check_str("aor", r.aor)?;
                check_str("subscriber", r.subscriber)
            }
            Record::AorApps(r) => {
                check_str("aor", r.aor)?;
                check_list("appearances", r.apps.len())?;
                check_list("tombstones", r.tombstones.len())?;
                for a in &r.apps {
                    check_app_index("appearance index", a.index)?;
                    for (what, s) in a.strs() {
                        check_str(what, s)?;
                    }
                }
                for t in &r.tombstones {
                    check_app_index("tombstone index", t.index)?;
                }
                Ok(())
            }
            Record::SyncReq(_) | Record::SyncChunk(_) => Ok(()),
            Record::Digest(d) => check_list("digest sums", d.sums.len()),
        }
    }

    /// Append the payload. The caller has validated the record, so every
    /// length fits its field.
    fn write_payload(&self, w: &mut Vec<u8>) {
        match self {
            Record::SubPut(r) => {
                let s = &r.sub;
                put_str(w, s.aor);
                w.push(s.event as u8);
                put_str(w, s.subscriber);
                w.extend_from_slice(&s.expires.to_le_bytes());
                w.push(s.state as u8);
                w.extend_from_slice(&s.index.to_le_bytes());
                put_str(w, s.call_id);
                put_str(w, s.from_tag);
                put_str(w, s.to_tag);
                put_str(w, s.record_route);
                w.extend_from_slice(&s.notify_cseq.to_le_bytes());
                w.extend_from_slice(&s.subscribe_cseq.to_le_bytes());
                w.extend_from_slice(&r.origin.to_le_bytes());
                put_ver(w, r.ver);
            }
            Record::SubDel(r) => {
                put_str(w, r.aor);
                w.push(r.event as u8);
                put_str(w, r.subscriber);
                put_ver(w, r.ver);
            }
            Record::AorApps(r) => {
                put_str(w, r.aor);
                w.push(u8::from(r.shared));
                put_ver(w, r.shared_ver);
                put_count(w, r.apps.len());
                for a in &r.apps {
                    w.extend_from_slice(&a.index.to_le_bytes());
                    w.push(a.state as u8);
                    w.push(a.flags);
                    w.extend_from_slice(&a.mtime.to_le_bytes());
                    w.extend_from_slice(&a.ctime.to_le_bytes());
                    put_ver(w, a.inc);
                    put_ver(w, a.ver);
                    for (_, s) in a.strs() {
                        put_str(w, s);
                    }
                }
                put_count(w, r.tombstones.len());
                for t in &r.tombstones {
                    w.extend_from_slice(&t.index.to_le_bytes());
                    put_ver(w, t.inc);
                    put_ver(w, t.ver);
                }
            }
            Record::SyncReq(r) => {
                w.extend_from_slice(&r.session.to_le_bytes());
                w.extend_from_slice(&r.cursor.to_le_bytes());
                w.extend_from_slice(&r.max_bytes.to_le_bytes());
            }
            Record::SyncChunk(r) => {
                w.extend_from_slice(&r.session.to_le_bytes());
                w.extend_from_slice(&r.next_cursor.to_le_bytes());
            }
            Record::Digest(r) => {
                w.extend_from_slice(&r.session.to_le_bytes());
                w.extend_from_slice(&r.cursor.to_le_bytes());
                w.extend_from_slice(&r.max_bytes.to_le_bytes());
                put_count(w, r.sums.len());
                for s in &r.sums {
                    w.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
    }
}

/// A string: u16 length, then the bytes. Validated lengths only (longer
/// strings would be cut, but `validate` refuses them first).
fn put_str(w: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    w.extend_from_slice(&len.to_le_bytes());
    w.extend_from_slice(s.get(..usize::from(len)).unwrap_or(s));
}

fn put_count(w: &mut Vec<u8>, n: usize) {
    let n = u16::try_from(n).unwrap_or(u16::MAX);
    w.extend_from_slice(&n.to_le_bytes());
}

fn put_ver(w: &mut Vec<u8>, v: Ver) {
    w.extend_from_slice(&v.ms.to_le_bytes());
    w.extend_from_slice(&v.node.to_le_bytes());
}

/// Builds one message record by record, refusing any record that would
/// take it over [`MAX_MESSAGE_LEN`] or that does not belong in its kind.
/// A refused record leaves the message as it was, so the caller can
/// [`finish`](Builder::finish) it and put the record in a new one.
#[derive(Debug, Clone)]
pub struct Builder {
    buf: Vec<u8>,
    kind: Kind,
    records: usize,
    /// The record a message of this kind holds exactly once is in.
    has_required: bool,
}

impl Builder {
    /// Start a message with this header. Fails only for a header whose
    /// `proto` is not [`PROTO`].
    pub fn new(header: &Header) -> Result<Self, Error> {
        if header.proto != PROTO {
            return Err(Error::UnknownProto(header.proto));
        }
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&MAGIC);
        buf.push(header.proto);
        buf.push(header.kind as u8);
        buf.extend_from_slice(&header.flags.to_le_bytes());
        buf.extend_from_slice(&header.node_id.to_le_bytes());
        buf.extend_from_slice(&header.boot_id.to_le_bytes());
        buf.extend_from_slice(&header.seq.to_le_bytes());
        Ok(Builder {
            buf,
            kind: header.kind,
            records: 0,
            has_required: false,
        })
    }

    /// Append a record. On error nothing is appended: a
    /// [`Error::TooLarge`] means the record does not fit in what is left of
    /// this message (see [`Builder::room`]); any other error means it can
    /// never be sent in this kind of message.
    pub fn push(&mut self, record: &Record<'_>) -> Result<(), Error> {
        let code = record.code();
        if !self.kind.allows(code) {
            return Err(Error::UnexpectedRecord {
                kind: self.kind,
                record: code,
            });
        }
        let singleton = self.kind.required() == Some(code);
        if singleton && self.has_required {
            return Err(Error::DuplicateRecord {
                kind: self.kind,
                record: code,
            });
        }
        record.validate()?;
        let payload = record.payload_len();
        let total = self
            .buf
            .len()
            .saturating_add(RECORD_HEADER_LEN)
            .saturating_add(payload);
        if total > MAX_MESSAGE_LEN {
            return Err(Error::TooLarge { len: total });
        }
        // payload <= MAX_MESSAGE_LEN here, so it fits a u32
        let len = u32::try_from(payload).map_err(|_| Error::TooLarge { len: total })?;
        self.buf.reserve(RECORD_HEADER_LEN + payload);
        self.buf.push(code);
        self.buf.extend_from_slice(&len.to_le_bytes());
        let start = self.buf.len();
        record.write_payload(&mut self.buf);
        debug_assert_eq!(
            self.buf.len() - start,
            payload,
            "payload_len agrees with write_payload"
        );
        self.records += 1;
        self.has_required |= singleton;
        Ok(())
    }

    /// Bytes in the message so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes still free before [`MAX_MESSAGE_LEN`]. A record fits when its
    /// [`Record::encoded_len`] is at most this.
    pub fn room(&self) -> usize {
        MAX_MESSAGE_LEN.saturating_sub(self.buf.len())
    }

    /// Records appended so far.
    pub fn record_count(&self) -> usize {
        self.records
    }

    /// No record appended yet?
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The finished message. Fails when a `SYNC_REQ` or `SYNC_CHUNK`
    /// message lacks its `SYNC_REQ` or `SYNC_CHUNK` record.
    pub fn finish(self) -> Result<Vec<u8>, Error> {
        match self.kind.required() {
            Some(record) if !self.has_required => Err(Error::MissingRecord {
                kind: self.kind,
                record,
            }),
            _ => Ok(self.buf),
        }
    }
}

/// Encode a whole message at once (see [`Builder`]).
pub fn encode(header: &Header, records: &[Record<'_>]) -> Result<Vec<u8>, Error> {
    let mut b = Builder::new(header)?;
    for r in records {
        b.push(r)?;
    }
    b.finish()
}

// ---------------------------------------------------------------------------
// decoding

/// A bounds-checked, forward-only reader. `base` is the offset of `buf`
/// in the message, for error messages.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let bytes = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end));
        match bytes {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => Err(Error::Truncated {
                what,
                offset: self.offset(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let offset = self.offset();
        <[u8; N]>::try_from(self.take(N, what)?).map_err(|_| Error::Truncated { what, offset })
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, Error> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// A string: u16 length, then that many bytes.
    fn str(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    fn ver(&mut self, what: &'static str) -> Result<Ver, Error> {
        Ok(Ver {
            ms: self.u64(what)?,
            node: self.u32(what)?,
        })
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, Error> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(Error::BadFlag { what, value }),
        }
    }

    fn event(&mut self) -> Result<EventType, Error> {
        event_from_u8(self.u8("event")?)
    }
}

fn read_sub_put<'a>(r: &mut Reader<'a>) -> Result<SubPut<'a>, Error> {
    let aor = r.str("aor")?;
    let event = r.event()?;
    let subscriber = r.str("subscriber")?;
    let expires = r.i64("expires")?;
    let state = sub_state_from_u8(r.u8("state")?)?;
    let index = r.i32("index")?;
    check_sub_index(index)?;
    let sub = SubscriptionRec {
        aor,
        event,
        subscriber,
        expires,
        state,
        index,
        call_id: r.str("call_id")?,
        from_tag: r.str("from_tag")?,
        to_tag: r.str("to_tag")?,
        record_route: r.str("record_route")?,
        notify_cseq: r.u32("notify_cseq")?,
        subscribe_cseq: r.u32("subscribe_cseq")?,
    };
    Ok(SubPut { sub, origin: r.u32("origin")?, ver: r.ver("ver")? })
}

fn read_sub_del<'a>(r: &mut Reader<'a>) -> Result<SubDel<'a>, Error> {
    Ok(SubDel {
        aor: r.str("aor")?,
        event: r.event()?,
        subscriber: r.str("subscriber")?,
        ver: r.ver("ver")?,
    })
}

fn read_dialog<'a>(r: &mut Reader<'a>, prev: bool) -> Result<DialogRef<'a>, Error> {
    let (c, f, t) = if prev {
        ("prev_call_id", "prev_from_tag", "prev_to_tag")
    } else {
        ("call_id", "from_tag", "to_tag")
    };
    Ok(DialogRef {
        call_id: r.str(c)?,
        from_tag: r.str(f)?,
        to_tag: r.str(t)?,
    })
}

fn read_appearance<'a>(r: &mut Reader<'a>) -> Result<AppearanceRec<'a>, Error> {
    let index = r.u32("appearance index")?;
    check_app_index("appearance index", index)?;
    let state = app_state_from_u8(r.u8("appearance state")?)?;
    Ok(AppearanceRec {
        index,
        state,
        flags: r.u8("appearance flags")?,
        mtime: r.i64("mtime")?,
        ctime: r.i64("ctime")?,
        inc: r.ver("inc")?,
        ver: r.ver("ver")?,
        owner: r.str("owner")?,
        callee: r.str("callee")?,
        uri: r.str("appearance uri")?,
        dialog: read_dialog(r, false)?,
        prev_owner: r.str("prev_owner")?,
        prev_callee: r.str("prev_callee")?,
        prev_dialog: read_dialog(r, true)?,
    })
}

fn read_tombstone(r: &mut Reader<'_>) -> Result<Tombstone, Error> {
    let index = r.u32("tombstone index")?;
    check_app_index("tombstone index", index)?;
    Ok(Tombstone {
        index,
        inc: r.ver("tombstone inc")?,
        ver: r.ver("tombstone ver")?,
    })
}

/// Room for `n` list entries of at least `min` bytes each, capped by what
/// the input can actually hold, so a lying count allocates nothing extra.
fn list_capacity(r: &Reader<'_>, n: u16, min: usize) -> usize {
    usize::from(n).min(r.left() / min)
}

fn read_aor_apps<'a>(r: &mut Reader<'a>) -> Result<AorApps<'a>, Error> {
    let aor = r.str("aor")?;
    let shared = r.flag("shared flag")?;
    let shared_ver = r.ver("shared ver")?;
    let n = r.u16("appearance count")?;
    // the fixed part and eleven empty strings
    let mut apps = Vec::with_capacity(list_capacity(r, n, APP_FIXED_LEN + 11 * 2));
    for _ in 0..n {
        apps.push(read_appearance(r)?);
    }
    let m = r.u16("tombstone count")?;
    let mut tombstones = Vec::with_capacity(list_capacity(r, m, TOMBSTONE_LEN));
    for _ in 0..m {
        tombstones.push(read_tombstone(r)?);
    }
    Ok(AorApps {
        aor,
        shared,
        shared_ver,
        apps,
        tombstones,
    })
}

fn read_sync_req(r: &mut Reader<'_>) -> Result<SyncReq, Error> {
    Ok(SyncReq {
        session: r.u32("session")?,
        cursor: r.u32("cursor")?,
        max_bytes: r.u32("max_bytes")?,
    })
}

fn read_sync_chunk(r: &mut Reader<'_>) -> Result<SyncChunk, Error> {
    Ok(SyncChunk {
        session: r.u32("session")?,
        next_cursor: r.u32("next_cursor")?,
    })
}

fn read_digest(r: &mut Reader<'_>) -> Result<DigestRec, Error> {
    let session = r.u32("session")?;
    let cursor = r.u32("cursor")?;
    let max_bytes = r.u32("max_bytes")?;
    let n = r.u16("digest sums")?;
    // every sum consumes 8 input bytes: bounded by the input
    let mut sums = Vec::new();
    for _ in 0..n {
        sums.push(r.u64("digest sum")?);
    }
    Ok(DigestRec { session, cursor, max_bytes, sums })
}

/// Decode the payload of a record of type `code`; `None` for a type this
/// version does not know.
fn read_record<'a>(code: u8, r: &mut Reader<'a>) -> Result<Option<Record<'a>>, Error> {
    Ok(Some(match code {
        REC_SUB_PUT => Record::SubPut(read_sub_put(r)?),
        REC_SUB_DEL => Record::SubDel(read_sub_del(r)?),
        REC_AOR_APPS => Record::AorApps(read_aor_apps(r)?),
        REC_SYNC_REQ => Record::SyncReq(read_sync_req(r)?),
        REC_SYNC_CHUNK => Record::SyncChunk(read_sync_chunk(r)?),
        REC_DIGEST => Record::Digest(read_digest(r)?),
        _ => return Ok(None),
    }))
}

fn read_header(r: &mut Reader<'_>) -> Result<Header, Error> {
    if r.left() < HEADER_LEN {
        return Err(Error::ShortHeader { len: r.left() });
    }
    if r.array::<4>("magic")? != MAGIC {
        return Err(Error::BadMagic);
    }
    let proto = r.u8("proto")?;
    if proto != PROTO {
        return Err(Error::UnknownProto(proto));
    }
    let k = r.u8("kind")?;
    let kind = Kind::from_u8(k).ok_or(Error::UnknownKind(k))?;
    Ok(Header {
        proto,
        kind,
        flags: r.u16("flags")?,
        node_id: r.u32("node_id")?,
        boot_id: r.u32("boot_id")?,
        seq: r.u32("seq")?,
    })
}

/// Decode and validate a whole message (see the module docs for what is
/// checked). Strings in the result borrow from `buf`.
pub fn decode(buf: &[u8]) -> Result<Message<'_>, Error> {
    if buf.len() > MAX_MESSAGE_LEN {
        return Err(Error::TooLarge { len: buf.len() });
    }
    let mut r = Reader::new(buf, 0);
    let header = read_header(&mut r)?;
    let kind = header.kind;
    // grows with the records read, each of which took input bytes
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut has_required = false;
    while r.left() > 0 {
        let offset = r.offset();
        let code = r.u8("record type")?;
        let len = r.u32("record length")?;
        let payload_offset = r.offset();
        let left = r.left();
        let payload = usize::try_from(len)
            .ok()
            .filter(|&l| l <= left)
            .and_then(|l| r.take(l, "record payload").ok())
            .ok_or(Error::RecordOverrun {
                record: code,
                offset,
                len,
                left,
            })?;
        let mut p = Reader::new(payload, payload_offset);
        let Some(record) = read_record(code, &mut p)? else {
            skipped += 1;
            continue;
        };
        if p.left() > 0 {
            return Err(Error::TrailingBytes {
                record: code,
                offset,
                extra: p.left(),
            });
        }
        if !kind.allows(code) {
            return Err(Error::UnexpectedRecord { kind, record: code });
        }
        if kind.required() == Some(code) {
            if has_required {
                return Err(Error::DuplicateRecord { kind, record: code });
            }
            has_required = true;
        }
        records.push(record);
    }
    if let Some(record) = kind.required() {
        if !has_required {
            return Err(Error::MissingRecord { kind, record });
        }
    }
    Ok(Message {
        header,
        records,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(ms: u64, node: u32) -> Ver {
        Ver::new(ms, node)
    }

    fn sub_put() -> SubPut<'static> {
        SubPut {
            sub: SubscriptionRec {
                aor: b"sip:100@example.com",
                event: EventType::LineSeize,
                subscriber: b"sip:100@192.0.2.10:5060",
                expires: 1_700_000_123,
                state: SubState::Active,
                index: 3,
                call_id: b"abc@192.0.2.10",
                from_tag: b"ft1",
                to_tag: b"tt1",
                record_route: b"<sip:192.0.2.1;lr>",
                notify_cseq: 7,
                subscribe_cseq: 42,
            },
            origin: 2,
            ver: ver(1_700_000_000_123, 2),
        }
    }

    fn sub_del() -> SubDel<'static> {
        SubDel {
            aor: b"sip:100@example.com",
            event: EventType::CallInfo,
            subscriber: b"sip:101@192.0.2.11",
            ver: ver(99, 3),
        }
    }

    fn app(index: u32) -> AppearanceRec<'static> {
        AppearanceRec {
            index,
            state: AppearanceState::Held,
            flags: 0b101,
            mtime: 1_700_000_001,
            ctime: 1_700_000_000,
            inc: ver(10, 1),
            ver: ver(20, 2),
            owner: b"sip:100@192.0.2.10",
            callee: b"sip:200@example.com",
            uri: b"\"Bob\" <sip:200@example.com>",
            dialog: DialogRef {
                call_id: b"c1",
                from_tag: b"f1",
                to_tag: b"t1",
            },
            prev_owner: b"sip:101@192.0.2.11",
            prev_callee: b"",
            prev_dialog: DialogRef {
                call_id: b"c0",
                from_tag: b"",
                to_tag: b"t0\0\xff",
            },
        }
    }

    fn aor_apps() -> AorApps<'static> {
        AorApps {
            aor: b"sip:100@example.com",
            shared: true,
            shared_ver: ver(5, 1),
            apps: vec![app(1), app(2), app(MAX_APPEARANCE_INDEX)],
            tombstones: vec![Tombstone {
                index: 4,
                inc: ver(1, 1),
                ver: ver(2, 3),
            }],
        }
    }

    fn changes() -> Header {
        Header::new(Kind::Changes, 1, 0xdead_beef, 17)
    }

    fn round_trip(header: Header, records: Vec<Record<'_>>) {
        let bytes = encode(&header, &records).unwrap();
        let expect: usize = HEADER_LEN + records.iter().map(Record::encoded_len).sum::<usize>();
        assert_eq!(bytes.len(), expect);
        let m = decode(&bytes).unwrap();
        assert_eq!(m.header, header);
        assert_eq!(m.records, records);
        assert_eq!(m.skipped, 0);
        // encoding is canonical
        assert_eq!(encode(&m.header, &m.records).unwrap(), bytes);
    }

    #[test]
    fn every_record_type_round_trips() {
        round_trip(changes(), vec![Record::SubPut(sub_put())]);
        round_trip(changes(), vec![Record::SubDel(sub_del())]);
        round_trip(changes(), vec![Record::AorApps(aor_apps())]);
        round_trip(
            Header::new(Kind::Digest, 4, 5, 6),
            vec![Record::Digest(DigestRec { session: 1, cursor: 2, max_bytes: 3, sums: vec![0, u64::MAX, 7] })],
        );
        round_trip(
            changes(),
            vec![
                Record::SubDel(sub_del()),
                Record::AorApps(aor_apps()),
                Record::SubPut(sub_put()),
            ],
        );
        round_trip(changes(), vec![]);
        round_trip(
            Header::new(Kind::SyncReq, 9, 8, 7),
            vec![Record::SyncReq(SyncReq {
                session: 0x1234_5678,
                cursor: 0,
                max_bytes: 30_000,
            })],
        );
        round_trip(
            Header::new(Kind::SyncChunk, 1, 2, 3),
            vec![
                Record::SubPut(sub_put()),
                Record::AorApps(aor_apps()),
                Record::SyncChunk(SyncChunk {
                    session: 5,
                    next_cursor: SYNC_DONE,
                }),
            ],
        );
        round_trip(
            Header::new(Kind::SyncChunk, 1, 2, 3),
            vec![Record::SyncChunk(SyncChunk {
                session: 5,
                next_cursor: 12,
            })],
        );
    }

    #[test]
    fn edge_values_round_trip() {
        let mut s = sub_put();
        s.sub.index = -1;
        s.sub.expires = i64::MIN;
        s.sub.state = SubState::TerminatedTimeout;
        s.sub.event = EventType::CallInfo;
        s.sub.aor = b"";
        s.sub.notify_cseq = u32::MAX;
        s.ver = ver(u64::MAX, u32::MAX);
        let mut s0 = s.clone();
        s0.sub.index = 0;
        let mut s_max = s.clone();
        s_max.sub.index = i32::MAX;
        let mut a = aor_apps();
        a.shared = false;
        a.apps.clear();
        a.tombstones.clear();
        let mut b = aor_apps();
        for (i, st) in AppearanceState::ALL.into_iter().enumerate() {
            let mut x = app(100 + i as u32);
            x.state = st;
            x.flags = u8::MAX;
            x.mtime = i64::MIN;
            x.ctime = i64::MAX;
            b.apps.push(x);
        }
        let mut h = changes();
        h.flags = 0xa5a5;
        round_trip(
            h,
            vec![
                Record::SubPut(s),
                Record::SubPut(s0),
                Record::SubPut(s_max),
                Record::AorApps(a),
                Record::AorApps(b),
            ],
        );
    }

    #[test]
    fn wire_layout_is_as_documented() {
        let bytes = encode(
            &Header::new(Kind::SyncReq, 0x0403_0201, 0x0807_0605, 0x0c0b_0a09),
            &[Record::SyncReq(SyncReq {
                session: 1,
                cursor: 2,
                max_bytes: 0x0001_0000,
            })],
        )
        .unwrap();
        #[rustfmt::skip]
        let want: &[u8] = &[
            b'S', b'C', b'A', b'R', 1, 2, 0, 0,
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            4, 12, 0, 0, 0,
            1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0,
        ];
        assert_eq!(bytes, want);

        // strings: u16 length then bytes; Ver: ms u64 then node u32
        let bytes = encode(
            &changes(),
            &[Record::SubDel(SubDel {
                aor: b"ab",
                event: EventType::LineSeize,
                subscriber: b"c",
                ver: ver(0x0102, 3),
            })],
        )
        .unwrap();
        #[rustfmt::skip]
        let want: &[u8] = &[
            2, 20, 0, 0, 0,
            2, 0, b'a', b'b', 2, 1, 0, b'c',
            2, 1, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0,
        ];
        assert_eq!(&bytes[HEADER_LEN..], want);
    }

    #[test]
    fn digest_layout_and_checks() {
        let d = Record::Digest(DigestRec { session: 1, cursor: 2, max_bytes: 3, sums: vec![0x0102] });
        let bytes = encode(&Header::new(Kind::Digest, 1, 2, 3), std::slice::from_ref(&d)).unwrap();
        #[rustfmt::skip]
        let want: &[u8] = &[
            6, 22, 0, 0, 0,
            1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0,
            1, 0, 2, 1, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&bytes[HEADER_LEN..], want);
        // a count that runs past the record, a sum cut short
        let mut cut = want[RECORD_HEADER_LEN..].to_vec();
        cut.pop();
        assert!(decode(&raw(4, &[(REC_DIGEST, &cut)])).is_err());
        let mut more = want[RECORD_HEADER_LEN..].to_vec();
        more[12] = 2;
        assert!(decode(&raw(4, &[(REC_DIGEST, &more)])).is_err());
        // exactly one DIGEST in a DIGEST message, and nowhere else
        assert!(decode(&raw(4, &[])).is_err());
        assert!(decode(&raw(1, &[(REC_DIGEST, &want[RECORD_HEADER_LEN..])])).is_err());
        assert!(encode(&Header::new(Kind::Digest, 1, 2, 3), &[d.clone(), d]).is_err());
    }

    /// A message assembled by hand: `(type, payload)` records after a
    /// header of `kind`.
    fn raw(kind: u8, records: &[(u8, &[u8])]) -> Vec<u8> {
        let mut v = b"SCAR".to_vec();
        v.extend_from_slice(&[PROTO, kind, 0, 0]);
        v.extend_from_slice(&[0; 12]);
        for (code, payload) in records {
            v.push(*code);
            v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            v.extend_from_slice(payload);
        }
        v
    }

    /// The payload of a record, as the encoder writes it.
    fn payload_of(record: Record<'_>) -> Vec<u8> {
        let kind = match record {
            Record::SyncReq(_) => Kind::SyncReq,
            Record::SyncChunk(_) => Kind::SyncChunk,
            _ => Kind::Changes,
        };
        let bytes = encode(&Header::new(kind, 1, 1, 1), &[record]).unwrap();
        bytes[HEADER_LEN + RECORD_HEADER_LEN..].to_vec()
    }

    fn sub_put_payload() -> Vec<u8> {
        payload_of(Record::SubPut(sub_put()))
    }

    // offsets in a SUB_PUT payload
    fn sub_put_event_at() -> usize {
        2 + sub_put().sub.aor.len()
    }
    fn sub_put_state_at() -> usize {
        sub_put_event_at() + 1 + 2 + sub_put().sub.subscriber.len() + 8
    }
    fn sub_put_index_at() -> usize {
        sub_put_state_at() + 1
    }

    #[test]
    fn rejects_bad_magic() {
        let mut m = encode(&changes(), &[Record::SubDel(sub_del())]).unwrap();
        m[0] = b's';
        assert_eq!(decode(&m), Err(Error::BadMagic));
        assert_eq!(
            decode(b"{\"json\": true, \"padding\": 0}"),
            Err(Error::BadMagic)
        );
    }

    #[test]
    fn rejects_unknown_proto_and_kind() {
        let mut m = raw(1, &[]);
        m[4] = 9;
        assert_eq!(decode(&m), Err(Error::UnknownProto(9)));
        m[4] = 0;
        assert_eq!(decode(&m), Err(Error::UnknownProto(0)));
        assert_eq!(decode(&raw(0, &[])), Err(Error::UnknownKind(0)));
        assert_eq!(decode(&raw(5, &[])), Err(Error::UnknownKind(5)));
        // and the encoder will not write another version
        let mut h = changes();
        h.proto = 2;
        assert_eq!(encode(&h, &[]), Err(Error::UnknownProto(2)));
    }

    #[test]
    fn rejects_short_header_and_every_truncation() {
        assert_eq!(decode(b""), Err(Error::ShortHeader { len: 0 }));
        assert_eq!(decode(b"SCAR"), Err(Error::ShortHeader { len: 4 }));
        let first = Record::SubPut(sub_put());
        let boundaries = [HEADER_LEN, HEADER_LEN + first.encoded_len()];
        let m = encode(&changes(), &[first, Record::AorApps(aor_apps())]).unwrap();
        for cut in 0..m.len() {
            let d = decode(&m[..cut]);
            if boundaries.contains(&cut) {
                // a cut between records leaves a shorter valid message
                assert!(d.is_ok(), "cut at {cut}: {d:?}");
                continue;
            }
            let e = d.unwrap_err();
            if cut < HEADER_LEN {
                assert_eq!(e, Error::ShortHeader { len: cut });
            } else {
                // a cut record header, or a record length past the end
                assert!(
                    matches!(e, Error::Truncated { .. } | Error::RecordOverrun { .. }),
                    "cut at {cut}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_record_header_cut_short() {
        let mut m = raw(1, &[]);
        m.extend_from_slice(&[REC_SUB_DEL, 1, 0]);
        assert_eq!(
            decode(&m),
            Err(Error::Truncated {
                what: "record length",
                offset: HEADER_LEN + 1
            })
        );
    }

    #[test]
    fn rejects_length_overrun() {
        let p = payload_of(Record::SubDel(sub_del()));
        let mut m = raw(1, &[(REC_SUB_DEL, &p)]);
        let len = p.len() as u32 + 1;
        m[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            decode(&m),
            Err(Error::RecordOverrun {
                record: REC_SUB_DEL,
                offset: HEADER_LEN,
                len,
                left: p.len()
            })
        );
        // an absurd length on an unknown record type is caught as well
        let mut m = raw(1, &[]);
        m.push(200);
        m.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&m),
            Err(Error::RecordOverrun {
                record: 200,
                len: u32::MAX,
                ..
            })
        ));
    }

    #[test]
    fn rejects_string_length_past_its_record() {
        // the record is complete but its aor claims more than it holds
        let mut p = payload_of(Record::SubDel(sub_del()));
        p[0..2].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(
            decode(&raw(1, &[(REC_SUB_DEL, &p)])),
            Err(Error::Truncated {
                what: "aor",
                offset: HEADER_LEN + RECORD_HEADER_LEN + 2
            })
        );
        // a record too short for its fixed fields
        assert!(matches!(
            decode(&raw(2, &[(REC_SYNC_REQ, &[0; 11])])),
            Err(Error::Truncated {
                what: "max_bytes",
                ..
            })
        ));
        // an appearance count larger than the record holds
        let mut a = aor_apps();
        a.apps.clear();
        a.tombstones.clear();
        let mut p = payload_of(Record::AorApps(a));
        let at = p.len() - 4;
        p[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            decode(&raw(1, &[(REC_AOR_APPS, &p)])),
            Err(Error::Truncated {
                what: "appearance index",
                ..
            })
        ));
    }

    #[test]
    fn rejects_trailing_bytes_in_a_record() {
        let mut p = payload_of(Record::SubDel(sub_del()));
        p.push(0);
        assert_eq!(
            decode(&raw(1, &[(REC_SUB_DEL, &p)])),
            Err(Error::TrailingBytes {
                record: REC_SUB_DEL,
                offset: HEADER_LEN,
                extra: 1
            })
        );
        assert!(matches!(
            decode(&raw(2, &[(REC_SYNC_REQ, &[0; 13])])),
            Err(Error::TrailingBytes {
                record: REC_SYNC_REQ,
                extra: 1,
                ..
            })
        ));
    }

    #[test]
    fn rejects_out_of_range_event() {
        for bad in [0u8, 3, 255] {
            let mut p = sub_put_payload();
            p[sub_put_event_at()] = bad;
            assert_eq!(
                decode(&raw(1, &[(REC_SUB_PUT, &p)])),
                Err(Error::BadEvent(bad))
            );
        }
        let mut p = payload_of(Record::SubDel(sub_del()));
        p[2 + sub_del().aor.len()] = 0;
        assert_eq!(
            decode(&raw(1, &[(REC_SUB_DEL, &p)])),
            Err(Error::BadEvent(0))
        );
    }

    #[test]
    fn rejects_unknown_subscription_state() {
        let mut p = sub_put_payload();
        p[sub_put_state_at()] = 9;
        assert_eq!(
            decode(&raw(1, &[(REC_SUB_PUT, &p)])),
            Err(Error::BadSubState(9))
        );
    }

    #[test]
    fn rejects_unknown_appearance_state() {
        let mut a = aor_apps();
        a.apps.truncate(1);
        let mut p = payload_of(Record::AorApps(a.clone()));
        // aor, shared, shared ver, count, index, then the state
        let at = 2 + a.aor.len() + 1 + 12 + 2 + 4;
        assert_eq!(p[at], AppearanceState::Held as u8);
        for bad in [8u8, 254] {
            p[at] = bad;
            assert_eq!(
                decode(&raw(1, &[(REC_AOR_APPS, &p)])),
                Err(Error::BadAppearanceState(bad))
            );
        }
    }

    #[test]
    fn rejects_index_out_of_range() {
        // appearance index 0
        let mut a = aor_apps();
        a.apps[0].index = 0;
        a.tombstones.clear();
        let e = Error::BadIndex {
            what: "appearance index",
            value: 0,
        };
        assert_eq!(encode(&changes(), &[Record::AorApps(a.clone())]), Err(e));
        a.apps[0].index = 1;
        let mut p = payload_of(Record::AorApps(a.clone()));
        let at = 2 + a.aor.len() + 1 + 12 + 2;
        p[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode(&raw(1, &[(REC_AOR_APPS, &p)])), Err(e));
        // appearance index over i32::MAX ("index <= 0" once converted)
        p[at..at + 4].copy_from_slice(&(MAX_APPEARANCE_INDEX + 1).to_le_bytes());
        assert_eq!(
            decode(&raw(1, &[(REC_AOR_APPS, &p)])),
            Err(Error::BadIndex {
                what: "appearance index",
                value: i64::from(MAX_APPEARANCE_INDEX) + 1
            })
        );

        // tombstone index 0: the tombstone is the last 28 bytes
        let mut p = payload_of(Record::AorApps(aor_apps()));
        let at = p.len() - TOMBSTONE_LEN;
        p[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            decode(&raw(1, &[(REC_AOR_APPS, &p)])),
            Err(Error::BadIndex {
                what: "tombstone index",
                value: 0
            })
        );

        // a subscription's index may be -1 or 0 (none), not below
        let mut p = sub_put_payload();
        let at = sub_put_index_at();
        p[at..at + 4].copy_from_slice(&(-2i32).to_le_bytes());
        let e = Error::BadIndex {
            what: "subscription appearance index",
            value: -2,
        };
        assert_eq!(decode(&raw(1, &[(REC_SUB_PUT, &p)])), Err(e));
        let mut s = sub_put();
        s.sub.index = i32::MIN;
        assert!(matches!(
            encode(&changes(), &[Record::SubPut(s)]),
            Err(Error::BadIndex { value, .. }) if value == i64::from(i32::MIN)
        ));
    }

    #[test]
    fn rejects_shared_flag_other_than_0_or_1() {
        let mut p = payload_of(Record::AorApps(aor_apps()));
        p[2 + aor_apps().aor.len()] = 2;
        assert_eq!(
            decode(&raw(1, &[(REC_AOR_APPS, &p)])),
            Err(Error::BadFlag {
                what: "shared flag",
                value: 2
            })
        );
    }

    #[test]
    fn rejects_records_foreign_to_the_kind() {
        let req = payload_of(Record::SyncReq(SyncReq {
            session: 1,
            cursor: 2,
            max_bytes: 3,
        }));
        let chunk = [0u8; 8];
        let del = payload_of(Record::SubDel(sub_del()));
        assert_eq!(
            decode(&raw(1, &[(REC_SYNC_REQ, &req)])),
            Err(Error::UnexpectedRecord {
                kind: Kind::Changes,
                record: REC_SYNC_REQ
            })
        );
        assert_eq!(
            decode(&raw(3, &[(REC_SYNC_CHUNK, &chunk), (REC_SUB_DEL, &del)])),
            Err(Error::UnexpectedRecord {
                kind: Kind::SyncChunk,
                record: REC_SUB_DEL
            })
        );
        assert_eq!(
            decode(&raw(2, &[])),
            Err(Error::MissingRecord {
                kind: Kind::SyncReq,
                record: REC_SYNC_REQ
            })
        );
        assert_eq!(
            decode(&raw(3, &[(REC_SUB_PUT, &sub_put_payload())])),
            Err(Error::MissingRecord {
                kind: Kind::SyncChunk,
                record: REC_SYNC_CHUNK
            })
        );
        assert_eq!(
            decode(&raw(2, &[(REC_SYNC_REQ, &req), (REC_SYNC_REQ, &req)])),
            Err(Error::DuplicateRecord {
                kind: Kind::SyncReq,
                record: REC_SYNC_REQ
            })
        );

        // the builder keeps to the same rules
        let mut b = Builder::new(&changes()).unwrap();
        assert!(matches!(
            b.push(&Record::SyncChunk(SyncChunk {
                session: 1,
                next_cursor: 2
            })),
            Err(Error::UnexpectedRecord { .. })
        ));
        assert!(b.is_empty());
        let b = Builder::new(&Header::new(Kind::SyncChunk, 1, 1, 1)).unwrap();
        assert!(matches!(b.finish(), Err(Error::MissingRecord { .. })));
        let mut b = Builder::new(&Header::new(Kind::SyncReq, 1, 1, 1)).unwrap();
        let r = Record::SyncReq(SyncReq {
            session: 1,
            cursor: 0,
            max_bytes: 1,
        });
        b.push(&r).unwrap();
        assert!(matches!(b.push(&r), Err(Error::DuplicateRecord { .. })));
        assert_eq!(b.record_count(), 1);
        assert!(decode(&b.finish().unwrap()).is_ok());
    }

    #[test]
    fn never_returns_part_of_a_message() {
        // a good record followed by a bad one: nothing comes back
        let good = sub_put_payload();
        let mut bad = sub_put_payload();
        bad[sub_put_state_at()] = 200;
        assert_eq!(
            decode(&raw(1, &[(REC_SUB_PUT, &good), (REC_SUB_PUT, &bad)])),
            Err(Error::BadSubState(200))
        );
    }

    #[test]
    fn skips_unknown_record_types() {
        let del = payload_of(Record::SubDel(sub_del()));
        let m = raw(
            1,
            &[
                (0, b""),
                (REC_SUB_DEL, &del),
                (99, b"anything at all, \xff\x00"),
                (255, &[7; 300]),
            ],
        );
        let d = decode(&m).unwrap();
        assert_eq!(d.records, vec![Record::SubDel(sub_del())]);
        assert_eq!(d.skipped, 3);
        // in any kind of message
        let m = raw(2, &[(7, b"x"), (REC_SYNC_REQ, &[0; 12])]);
        assert_eq!(decode(&m).unwrap().skipped, 1);
    }

    /// A `CHANGES` message of exactly `len` bytes, padded with an unknown
    /// record.
    fn padded(len: usize) -> Vec<u8> {
        let pad = vec![0u8; len - HEADER_LEN - RECORD_HEADER_LEN];
        let m = raw(1, &[(100, &pad)]);
        assert_eq!(m.len(), len);
        m
    }

    #[test]
    fn decoder_refuses_over_64_kib() {
        assert!(decode(&padded(MAX_MESSAGE_LEN)).is_ok());
        assert_eq!(
            decode(&padded(MAX_MESSAGE_LEN + 1)),
            Err(Error::TooLarge {
                len: MAX_MESSAGE_LEN + 1
            })
        );
        // checked before anything else
        assert_eq!(
            decode(&vec![0u8; 100_000]),
            Err(Error::TooLarge { len: 100_000 })
        );
    }

    #[test]
    fn builder_refuses_to_grow_over_64_kib() {
        let mut b = Builder::new(&changes()).unwrap();
        let r = Record::AorApps(aor_apps());
        let step = r.encoded_len();
        let mut n = 0;
        loop {
            let before = b.len();
            match b.push(&r) {
                Ok(()) => n += 1,
                Err(e) => {
                    assert_eq!(e, Error::TooLarge { len: before + step });
                    assert_eq!(b.len(), before, "a refused record leaves no trace");
                    assert!(b.room() < step);
                    break;
                }
            }
        }
        assert_eq!(n, (MAX_MESSAGE_LEN - HEADER_LEN) / step);
        assert_eq!(b.record_count(), n);
        // the caller carries on in a new message
        let m = b.finish().unwrap();
        assert!(m.len() <= MAX_MESSAGE_LEN);
        assert_eq!(decode(&m).unwrap().records.len(), n);
        let mut next = Builder::new(&changes()).unwrap();
        next.push(&r).unwrap();

        // a message filled to exactly the limit is accepted on both sides
        let mut s = sub_put();
        let mut empty_aor = s.clone();
        empty_aor.sub.aor = b"";
        let fixed = Record::SubPut(empty_aor).encoded_len();
        let big = vec![b'r'; MAX_MESSAGE_LEN - HEADER_LEN - fixed];
        s.sub.aor = &big;
        let exact = encode(&changes(), &[Record::SubPut(s.clone())]).unwrap();
        assert_eq!(exact.len(), MAX_MESSAGE_LEN);
        assert_eq!(
            decode(&exact).unwrap().records,
            vec![Record::SubPut(s.clone())]
        );
        let bigger = vec![b'r'; big.len() + 1];
        s.sub.aor = &bigger;
        assert_eq!(
            encode(&changes(), &[Record::SubPut(s)]),
            Err(Error::TooLarge {
                len: MAX_MESSAGE_LEN + 1
            })
        );
    }

    #[test]
    fn encoder_refuses_overlong_strings() {
        let long = vec![b'x'; MAX_STR_LEN + 1];
        let mut s = sub_put();
        s.sub.record_route = &long;
        assert_eq!(
            encode(&changes(), &[Record::SubPut(s)]),
            Err(Error::StringTooLong {
                what: "record_route",
                len: MAX_STR_LEN + 1
            })
        );
        let mut a = app(1);
        a.prev_dialog.to_tag = &long;
        let r = Record::AorApps(AorApps {
            apps: vec![a],
            ..aor_apps()
        });
        assert!(matches!(
            r.validate(),
            Err(Error::StringTooLong {
                what: "prev_to_tag",
                ..
            })
        ));
    }

    #[test]
    fn errors_read_well_in_logs() {
        let cases = [
            (Error::BadMagic, "not an sca_rs cluster message (bad magic)"),
            (
                Error::UnknownProto(9),
                "unknown protocol version 9 (this node speaks 1)",
            ),
            (
                Error::TooLarge { len: 70_000 },
                "message of 70000 bytes is over the limit of 65536",
            ),
            (
                Error::TrailingBytes {
                    record: 2,
                    offset: 20,
                    extra: 3,
                },
                "3 bytes left over at the end of the SUB_DEL record at offset 20",
            ),
            (
                Error::BadIndex {
                    what: "appearance index",
                    value: 0,
                },
                "appearance index 0 is out of range",
            ),
            (
                Error::UnexpectedRecord {
                    kind: Kind::Changes,
                    record: 4,
                },
                "SYNC_REQ record (type 4) does not belong in a CHANGES message",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }
}
