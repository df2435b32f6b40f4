//! To-tag prefixes shared by every subscription that has them.
//!
//! The To-tag of a subscription's dialog is ours: Kamailio's sl module
//! makes it as `<32 hex digits>.<8 hex digits>` (5.6; `-` as the separator
//! elsewhere), where the 32 digits (an MD5 of sl's signature and the first
//! listening socket) are the same in every reply of this Kamailio, and the
//! rest a CRC of the request's Via. So a stored subscription keeps only the suffix
//! and the number of its prefix in a small table of such prefixes, kept
//! once for the whole store: 33 bytes less per subscription.
//!
//! To-tags of another shape (a DB written by another server, a peer
//! node's, any other UA's) are kept whole when their prefix does not fit
//! in the table ([`SLOTS`] prefixes: this node's, its peers' and an old
//! address's); nothing about a tag is lost either way: the full tag is
//! rebuilt byte for byte on read ([`ToTag`]).
//!
//! The table is set once per prefix and never changes afterwards, so a
//! prefix number stored in a subscription means the same bytes in every
//! process for as long as the table exists. In the module the table lives
//! in shared memory ([`install`], in `mod_init`, before fork); without
//! [`install`] (unit tests) a process-local one is used.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

/// Length of the shared prefix: 32 hex digits and the separator (`.` or
/// `-`).
pub const PREFIX_LEN: usize = 33;
/// Prefixes the table holds (numbered 1 to `SLOTS`; 0 is "none").
pub const SLOTS: usize = 7;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

struct Entry {
    state: AtomicU8,
    bytes: UnsafeCell<[u8; PREFIX_LEN]>,
}

/// The table of shared prefixes (a few hundred bytes, in shared memory in
/// the module).
pub struct TagPrefixes {
    entries: [Entry; SLOTS],
}

// SAFETY: [I21] an entry's bytes are written only by the one process that
// moved its state from EMPTY to WRITING, before it publishes them with a
// Release store of READY; they are read only after an Acquire load saw
// READY, and never written again.
unsafe impl Sync for TagPrefixes {}

impl Default for TagPrefixes {
    fn default() -> Self {
        Self::new()
    }
}

/// Does `tag` start like an sl To-tag (32 hex digits, then `.` or `-`)?
fn has_prefix_shape(tag: &[u8]) -> bool {
    tag.len() >= PREFIX_LEN
        && matches!(tag[PREFIX_LEN - 1], b'.' | b'-')
        && tag[..PREFIX_LEN - 1].iter().all(u8::is_ascii_hexdigit)
}

impl TagPrefixes {
    pub const fn new() -> Self {
        TagPrefixes {
            entries: [const {
                Entry {
                    state: AtomicU8::new(EMPTY),
                    bytes: UnsafeCell::new([0; PREFIX_LEN]),
                }
            }; SLOTS],
        }
    }

    /// The prefix numbered `n` (1 to [`SLOTS`]), if it is set.
    pub fn get(&self, n: u8) -> Option<&[u8]> {
        let e = self.entries.get(usize::from(n).checked_sub(1)?)?;
        if e.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: [I21] READY was seen with Acquire: the bytes are written
        // and will not change again.
        Some(unsafe { &*e.bytes.get() })
    }

    /// Split `tag` into (prefix number, the rest) when its prefix is in the
    /// table or can be added to it; None: keep it whole.
    pub fn split<'t>(&self, tag: &'t [u8]) -> Option<(u8, &'t [u8])> {
        if !has_prefix_shape(tag) {
            return None;
        }
        let (head, rest) = tag.split_at(PREFIX_LEN);
        for (i, e) in self.entries.iter().enumerate() {
            let n = (i + 1) as u8;
            match e.state.load(Ordering::Acquire) {
                READY if self.get(n) == Some(head) => return Some((n, rest)),
                // (losing the race: another process claimed it meanwhile; it
                // may be writing this very prefix, but do not wait for it)
                EMPTY
                    if e.state
                        .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Acquire)
                        .is_ok() =>
                {
                    // SAFETY: [I21] this process won EMPTY -> WRITING: nobody
                    // else writes these bytes, and nobody reads them before
                    // READY.
                    unsafe { (*e.bytes.get()).copy_from_slice(head) };
                    e.state.store(READY, Ordering::Release);
                    return Some((n, rest));
                }
                _ => {}
            }
        }
        None
    }

    /// Any prefix set (or being set)?
    fn used(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.state.load(Ordering::Acquire) != EMPTY)
    }
}

/// The process-local table, for when none was installed (unit tests).
static LOCAL: TagPrefixes = TagPrefixes::new();
static INSTALLED: AtomicPtr<TagPrefixes> = AtomicPtr::new(core::ptr::null_mut());

/// Use `t` (in shared memory, for every process forked afterwards) as the
/// table from now on. Refused (false) once a table is installed, or when
/// the process-local table is in use already: prefix numbers stored so far
/// would change their meaning.
pub fn install(t: &'static TagPrefixes) -> bool {
    if LOCAL.used() {
        return false;
    }
    INSTALLED
        .compare_exchange(
            core::ptr::null_mut(),
            t as *const TagPrefixes as *mut TagPrefixes,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
}

/// The table in use.
pub fn table() -> &'static TagPrefixes {
    let p = INSTALLED.load(Ordering::Acquire);
    if p.is_null() {
        &LOCAL
    } else {
        // SAFETY: [I21] only install() sets the pointer, from a &'static.
        unsafe { &*p }
    }
}

/// A stored To-tag: a shared prefix (maybe empty) and the rest, read as
/// one byte string.
#[derive(Clone, Copy)]
pub struct ToTag<'a> {
    prefix: &'a [u8],
    rest: &'a [u8],
}

impl<'a> ToTag<'a> {
    pub(crate) fn new(prefix: &'a [u8], rest: &'a [u8]) -> Self {
        ToTag { prefix, rest }
    }

    pub fn len(&self) -> usize {
        self.prefix.len() + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tag in one piece when it is stored so (no shared prefix).
    pub fn contiguous(&self) -> Option<&'a [u8]> {
        self.prefix.is_empty().then_some(self.rest)
    }

    /// Appends the whole tag to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix);
        out.extend_from_slice(self.rest);
    }

    /// The whole tag, borrowed when stored in one piece, else rebuilt in
    /// `buf`.
    pub fn in_buf<'b>(&self, buf: &'b mut Vec<u8>) -> &'b [u8]
    where
        'a: 'b,
    {
        match self.contiguous() {
            Some(t) => t,
            None => {
                buf.clear();
                self.write_to(buf);
                buf
            }
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.write_to(&mut v);
        v
    }
}

impl PartialEq<[u8]> for ToTag<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        other.len() == self.len()
            && other.starts_with(self.prefix)
            && &other[self.prefix.len()..] == self.rest
    }
}

impl PartialEq<&[u8]> for ToTag<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        *self == **other
    }
}

impl core::fmt::Debug for ToTag<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// as Kamailio 5.6's sl makes them
    const SL: &[u8] = b"9575f611751ecf79aab75be446a1af16.410fcb9f";

    #[test]
    fn splits_sl_tags_and_keeps_others_whole() {
        let t = TagPrefixes::new();
        let (n, rest) = t.split(SL).expect("sl shape");
        assert_eq!((n, rest), (1, &b"410fcb9f"[..]));
        assert_eq!(t.get(1), Some(&SL[..PREFIX_LEN]));
        // the same prefix again: the same number
        let other = b"9575f611751ecf79aab75be446a1af16.77aa9";
        assert_eq!(t.split(other), Some((1, &b"77aa9"[..])));
        // exactly the prefix: an empty rest
        assert_eq!(t.split(&SL[..PREFIX_LEN]), Some((1, &b""[..])));
        // the other separator: another prefix
        assert_eq!(
            t.split(b"9575f611751ecf79aab75be446a1af16-1f2e"),
            Some((2, &b"1f2e"[..]))
        );
        for whole in [
            &b""[..],
            b"tt",
            b"9575f611751ecf79aab75be446a1af16",
            b"9575f611751ecf79aab75be446a1af16x1f2e",
            b"9575f611751ecf79aab75be446a1af1g.1f2e",
            b"as-9575f611751ecf79aab75be446a1af16.1f2e",
        ] {
            assert_eq!(t.split(whole), None, "{:?}", String::from_utf8_lossy(whole));
        }
        assert_eq!((t.get(0), t.get(3), t.get(200)), (None, None, None));
    }

    #[test]
    fn a_full_table_keeps_new_prefixes_whole() {
        let t = TagPrefixes::new();
        let tags: Vec<Vec<u8>> = (0..SLOTS + 2)
            .map(|i| format!("{i:032x}-{i}").into_bytes())
            .collect();
        for (i, tag) in tags.iter().enumerate() {
            let got = t.split(tag);
            if i < SLOTS {
                assert_eq!(got, Some(((i + 1) as u8, format!("{i}").as_bytes())));
            } else {
                assert_eq!(got, None, "no room for prefix {i}");
            }
        }
        // the known ones still split
        assert_eq!(t.split(&tags[3]).map(|(n, _)| n), Some(4));
    }

    #[test]
    fn a_to_tag_reads_as_its_bytes() {
        let t = ToTag::new(&SL[..PREFIX_LEN], &SL[PREFIX_LEN..]);
        assert_eq!(t.len(), SL.len());
        assert_eq!(t.to_vec(), SL);
        assert!(t == *SL);
        assert!(t != SL[1..]);
        assert!(t != b"9575f611751ecf79aab75be446a1af16.410fcb9e"[..]);
        assert_eq!(t.contiguous(), None);
        let mut buf = Vec::new();
        assert_eq!(t.in_buf(&mut buf), SL);
        let whole = ToTag::new(b"", b"tt");
        assert_eq!(whole.contiguous(), Some(&b"tt"[..]));
        assert!(whole == b"tt"[..]);
        let mut unused = Vec::new();
        assert_eq!(whole.in_buf(&mut unused), b"tt");
        assert!(unused.is_empty(), "borrowed, not copied");
    }

    #[test]
    fn racing_processes_agree_on_one_number_per_prefix() {
        let t = TagPrefixes::new();
        let got: Vec<(usize, u8)> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4)
                .map(|k| {
                    let t = &t;
                    sc.spawn(move || {
                        (0..200)
                            .filter_map(|i| {
                                t.split(format!("{:032x}-{k}", i % 3).as_bytes())
                                    .map(|(n, _)| (i % 3, n))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect()
        });
        let mut seen = std::collections::HashMap::new();
        for (p, n) in got {
            assert_eq!(t.get(n).expect("set"), format!("{p:032x}-").as_bytes());
            assert_eq!(*seen.entry(n).or_insert(p), p, "a number means one prefix");
        }
    }
}
