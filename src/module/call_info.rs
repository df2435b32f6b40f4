//! `sca_call_info_update([mask[, to[, from]]])`: appearance state follows
//! the calls of SCA lines (INVITE, its replies and ACK, CANCEL, BYE), and
//! the group is NOTIFYed of every change.
//!
//! The transitions are the C module's (see docs/compat.md for where we
//! differ). Locking: one AoR's slot lock at a time, never two, and never
//! while a reply is sent (sl calls back into this module).

use sca_core::appearance::{DialogRef, StrUpdate, FLAG_CALLEE_PENDING, FLAG_OWNER_PENDING};
use sca_core::change::AnswerError;
use sca_core::model::{EventType, SubState};
use sca_core::parse::appearance::AppearanceState;
use sca_core::parse::callinfo::{self, AppearanceIndex};
use sca_core::parse::{format, sdp, uri};

use crate::host::entry::MsgArg;
use crate::host::log::B;
use crate::host::msg::{bflag_set, NameAddr, SipMsg};
use crate::host::{sl, tm};
use crate::module::params::Config;
use crate::module::{config, effects, metrics, shared, subscribe::now, Shared};
use crate::{entry, lm_dbg, lm_err, lm_info};

pub const SHARED_CALLER: u8 = 1 << 0;
pub const SHARED_CALLEE: u8 = 1 << 1;
pub const SHARED_BOTH: u8 = SHARED_CALLER | SHARED_CALLEE;

/// The Call-Info of the message as the C module keeps it: absent means
/// index 0, state idle; present without state means state unknown.
#[derive(Clone, Copy, Debug)]
struct Ci {
    index: u32,
    state: AppearanceState,
}

impl Ci {
    /// C: `SCA_CALL_INFO_EMPTY`
    fn is_empty(&self) -> bool {
        self.index == 0 && self.state == AppearanceState::Unknown
    }
}

struct Ctx<'m> {
    cfg: &'static Config,
    st: &'static Shared,
    now: i64,
    ci: Ci,
    from: NameAddr<'m>,
    to: NameAddr<'m>,
    from_aor: Vec<u8>,
    to_aor: Vec<u8>,
    contact: &'m [u8],
    call_id: &'m [u8],
    shared: u8,
}

impl Ctx<'_> {
    fn caller(&self) -> bool {
        !self.ci.is_empty() && self.shared & SHARED_CALLER != 0
    }
    fn callee(&self) -> bool {
        !self.ci.is_empty() && self.shared & SHARED_CALLEE != 0
    }
}

// ---------------------------------------------------------------- script API

fn run(m: &mut SipMsg<'_>, mask: i32, to: Option<Vec<u8>>, from: Option<Vec<u8>>) -> i32 {
    let (Some(st), Some(cfg)) = (shared(), config()) else {
        lm_err!("sca_call_info_update called before the module was initialised");
        return -1;
    };
    update(st, cfg, &mut m.reborrow(), mask, to.as_deref(), from.as_deref(), now())
}

entry! {
    script pub fn w_ciu0("sca_call_info_update", msg) {
        run(msg, 0, None, None)
    }
}

entry! {
    script pub fn w_ciu1("sca_call_info_update", msg, p1) {
        let Some(mask) = p1.and_then(|p| p.int(msg)) else {
            lm_err!("sca_call_info_update: cannot get the mask parameter");
            return -1;
        };
        run(msg, mask, None, None)
    }
}

entry! {
    script pub fn w_ciu2("sca_call_info_update", msg, p1, p2) {
        let (Some(mask), Some(to)) = (p1.and_then(|p| p.int(msg)), p2.and_then(|p| p.str(msg))) else {
            lm_err!("sca_call_info_update: cannot get the parameters");
            return -1;
        };
        run(msg, mask, Some(to), None)
    }
}

entry! {
    script pub fn w_ciu3("sca_call_info_update", msg, p1, p2, p3) {
        let params = (p1.and_then(|p| p.int(msg)), p2.and_then(|p| p.str(msg)), p3.and_then(|p| p.str(msg)));
        let (Some(mask), Some(to), Some(from)) = params else {
            lm_err!("sca_call_info_update: cannot get the parameters");
            return -1;
        };
        run(msg, mask, Some(to), Some(from))
    }
}

entry! {
    /// Fixup: parameter 1 is an int (or variable), 2 and 3 strings with
    /// variables.
    fixup pub fn fixup_ciu, fixup_free_ciu("sca_call_info_update fixup") {
        1 => Fixup::Int,
        2 | 3 => Fixup::Str,
    }
}

// ---------------------------------------------------------------- dispatch

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Invite,
    Bye,
    Cancel,
    Prack,
    Refer,
}

fn method_of(m: &[u8]) -> Option<Method> {
    Some(match m {
        b"INVITE" => Method::Invite,
        b"BYE" => Method::Bye,
        b"CANCEL" => Method::Cancel,
        b"PRACK" => Method::Prack,
        b"REFER" => Method::Refer,
        _ => return None,
    })
}

fn is_shared(st: &Shared, aor: &[u8]) -> bool {
    !aor.is_empty() && st.store.lock_aor(aor).is_shared()
}

pub fn update<'m>(
    st: &'static Shared,
    cfg: &'static Config,
    msg: &mut SipMsg<'m>,
    mask: i32,
    to_param: Option<&'m [u8]>,
    from_param: Option<&'m [u8]>,
    now: i64,
) -> i32 {
    let Some(method) = method_of(msg.cseq_method()) else {
        lm_dbg!("sca_call_info_update: nothing to do for {}", B(msg.cseq_method()));
        return 1;
    };
    if msg.parse_all().is_err() {
        lm_err!("header parsing failed: bad request");
        return -1;
    }
    let mask: u8 = match mask {
        0 | 3 => SHARED_BOTH,
        1 => SHARED_CALLER,
        2 => SHARED_CALLEE,
        _ => {
            lm_err!("sca_call_info_update: argument 1: invalid value (0, 1 or 2 expected)");
            return -1;
        }
    };
    let ci_hdr = msg.call_info();
    let ci = match ci_hdr {
        None => Ci { index: 0, state: AppearanceState::Idle },
        Some(v) => match callinfo::parse(v) {
            Ok(c) => Ci {
                index: match c.index {
                    AppearanceIndex::Number(n) => n,
                    AppearanceIndex::Any => 0,
                },
                state: c.state.unwrap_or(AppearanceState::Unknown),
            },
            Err(e) => {
                lm_err!("Bad Call-Info header body: {} ({e})", B(v));
                return -1;
            }
        },
    };
    let Some(mut from) = msg.from() else {
        lm_err!("Bad From header");
        return -1;
    };
    let Some(mut to) = msg.to() else {
        lm_err!("Bad To header");
        return -1;
    };
    // the newer API: the script names the caller / callee URIs; the tags
    // still come from the message
    let from_param = from_param.filter(|f| !f.is_empty());
    let to_param = to_param.filter(|t| !t.is_empty());
    if let Some(f) = from_param {
        from.uri = f;
    }
    if let Some(t) = to_param {
        to.uri = t;
    }
    // the URIs used, for the script (newer Kamailio's from_uri_avp /
    // to_uri_avp)
    for (avp, uri) in [(cfg.from_uri_avp, from.uri), (cfg.to_uri_avp, to.uri)] {
        if let Some(a) = avp {
            a.del();
            a.put(uri);
        }
    }
    // the message's own Contact decides the AoRs; contact_fallback (newer
    // Kamailio) only stands in as the owner when there is none (or a bad one)
    let (contact_opt, contact) = match msg.contact_uri() {
        Ok(Some(c)) => (Some(c), c),
        Ok(None) | Err(()) if cfg.contact_fallback.is_some() => (None, cfg.contact_fallback.as_deref().unwrap_or_default()),
        Ok(None) => (None, &[][..]),
        Err(()) => {
            lm_err!("Bad Contact");
            return -1;
        }
    };
    let aors = if msg.is_request() {
        let f = if from_param.is_some() {
            uri::extract_aor(from.uri).map(|a| a.to_vec())
        } else {
            uri::canonical_aor(from.uri, contact_opt).map(|a| a.into_owned())
        };
        (f, uri::extract_aor(to.uri).map(|a| a.to_vec()))
    } else {
        let t = if to_param.is_some() {
            uri::extract_aor(to.uri).map(|a| a.to_vec())
        } else {
            uri::canonical_aor(to.uri, contact_opt).map(|a| a.into_owned())
        };
        (uri::extract_aor(from.uri).map(|a| a.to_vec()), t)
    };
    let (from_aor, to_aor) = match aors {
        (Ok(f), Ok(t)) => (f, t),
        _ => {
            lm_err!("cannot get AoRs from From {} / To {}", B(from.uri), B(to.uri));
            return -1;
        }
    };
    let Some(call_id) = msg.call_id() else {
        lm_err!("no Call-ID");
        return -1;
    };

    let mut shared_flags = 0;
    if mask & SHARED_CALLER != 0 && is_shared(st, &from_aor) {
        shared_flags |= SHARED_CALLER;
    }
    if mask & SHARED_CALLEE != 0 && is_shared(st, &to_aor) {
        shared_flags |= SHARED_CALLEE;
    }
    if ci_hdr.is_none() {
        // a line without Call-Info and without call-info subscribers is no
        // longer treated as shared (C: sca_appearance_unregister)
        let side = if shared_flags & SHARED_CALLER != 0 && msg.is_request() {
            Some((SHARED_CALLER, &from_aor))
        } else if shared_flags & SHARED_CALLEE != 0 && !msg.is_request() {
            Some((SHARED_CALLEE, &to_aor))
        } else {
            None
        };
        if let Some((flag, aor)) = side {
            let mut g = effects::edit(st, aor, now);
            if !g.entry().is_some_and(|e| e.has_subscribers(EventType::CallInfo)) {
                shared_flags &= !flag;
                if let Some(mut ed) = g.core() {
                    ed.unregister();
                }
            }
        }
    }
    if msg.remove_call_info_headers().is_err() {
        lm_err!("Failed to remove Call-Info header");
        return -1;
    }
    if shared_flags == 0 {
        lm_dbg!("neither {} nor {} are SCA AoRs", B(&from_aor), B(&to_aor));
        return -1;
    }
    let mut cx = Ctx { cfg, st, now, ci, from, to, from_aor, to_aor, contact, call_id, shared: shared_flags };
    metrics::CALL_INFO_UPDATES.inc();
    let rc = match method {
        Method::Invite => invite(&mut cx, msg),
        Method::Bye => bye(&mut cx, msg),
        Method::Cancel => cancel(&mut cx, msg),
        Method::Prack | Method::Refer => 1,
    };
    if rc < 0 {
        lm_err!("Failed to update Call-Info state for {}", B(cx.contact));
    }
    rc
}

// ---------------------------------------------------------------- INVITE

fn invite(cx: &mut Ctx<'_>, msg: &mut SipMsg<'_>) -> i32 {
    if cx.contact.is_empty() {
        lm_dbg!("INVITE without Contact (From {} To {})", B(&cx.from_aor), B(&cx.to_aor));
        return 1;
    }
    if msg.is_request() {
        return invite_request(cx, msg);
    }
    match msg.status() {
        100 => 1,
        180 | 183 => invite_reply_18x(cx),
        200 => invite_reply_200(cx, msg),
        300..=302 => 1,
        _ => invite_reply_error(cx, msg.status()),
    }
}

fn call_is_held(cfg: &Config, msg: &mut SipMsg<'_>) -> bool {
    (cfg.onhold_bflag >= 0 && bflag_set(cfg.onhold_bflag)) || sdp::is_held(msg.body())
}

fn invite_request(cx: &mut Ctx<'_>, msg: &mut SipMsg<'_>) -> i32 {
    if tm::register_invite_callbacks(msg, cx.caller()).is_err() {
        lm_err!("failed to register INVITE callbacks for {}", B(&cx.from_aor));
        return -1;
    }
    if !cx.caller() {
        // the callee side is updated by the reply handlers
        return 1;
    }
    let mut state = AppearanceState::Unknown;
    if call_is_held(cx.cfg, msg) {
        state = if cx.ci.state == AppearanceState::HeldPrivate {
            AppearanceState::HeldPrivate
        } else {
            AppearanceState::Held
        };
    } else if !cx.to.tag.is_empty() {
        // re-INVITE from the line that put the call on hold
        state = AppearanceState::Active;
    } else if let Some(held_state) = retrieval_target(cx) {
        let rc = seize_held_call(cx, msg, held_state);
        if rc <= 0 {
            return rc;
        }
    }

    let d = DialogRef { call_id: cx.call_id, from_tag: cx.from.tag, to_tag: cx.to.tag };
    let mut g = effects::edit(cx.st, &cx.from_aor, cx.now);
    let Some(mut ed) = g.core() else { return 1 };
    let alloc = ed.alloc();
    let idx = cx.ci.index;
    let found = if idx > 0 { Some(idx) } else { ed.entry().apps().iter().find(|a| a.dialog() == d).map(|a| a.index) };
    match found.and_then(|i| ed.app_mut(i)) {
        Some(app) => {
            if state != AppearanceState::Unknown && app.state != state {
                app.set_state(state, cx.now);
            }
            if app.dialog() != d && app.update_strs(&StrUpdate { dialog: Some(d), ..Default::default() }, alloc).is_err() {
                lm_err!("out of shared memory updating {} appearance-index {idx}", B(&cx.from_aor));
            }
        }
        None => lm_err!(
            "Failed to update {} appearance-index {idx} to {}: index not in use",
            B(&cx.from_aor),
            state.as_str()
        ),
    }
    ed.notify_group();
    1
}

/// An INVITE from a group member to the group's own AoR, without To-tag,
/// naming a held appearance: the member retrieves the held call. Returns
/// that appearance's state.
fn retrieval_target(cx: &Ctx<'_>) -> Option<AppearanceState> {
    if cx.ci.is_empty() || !cx.to.tag.is_empty() || cx.from_aor != cx.to_aor {
        return None;
    }
    let g = cx.st.store.lock_aor(&cx.from_aor);
    let state = g.entry()?.apps().get(cx.ci.index)?.state;
    // The C module only treats `held` lines this way, so a retrieval of a
    // `held-private` line was never refused; we answer it 403 as the spec
    // and the C code's own comment intend (docs/compat.md).
    state.is_held().then_some(state)
}

/// Retrieve a held call: re-target the INVITE to the held party with a
/// Replaces header for the held dialog, and move the appearance to the new
/// owner (C: `sca_call_info_seize_held_call`).
fn seize_held_call(cx: &mut Ctx<'_>, msg: &mut SipMsg<'_>, held: AppearanceState) -> i32 {
    if held == AppearanceState::HeldPrivate {
        // reply outside the lock: sl calls back into this module
        let _ = sl::reply(msg, 403, "Forbidden - private call", b"");
        return 0;
    }
    let mut callee = Vec::new();
    let mut replaces = Vec::new();
    let prev;
    {
        let mut g = effects::edit(cx.st, &cx.from_aor, cx.now);
        let alloc = g.alloc();
        let Some(app) = g.core().and_then(|ed| ed.into_app_mut(cx.ci.index)) else {
            lm_err!("no active appearances for {}", B(&cx.from_aor));
            return -1;
        };
        let d = app.dialog();
        if d.call_id.is_empty() || d.from_tag.is_empty() || d.to_tag.is_empty() {
            lm_err!("{} appearance-index {} is not a confirmed dialog: cannot build Replaces", B(&cx.from_aor), app.index);
            return -1;
        }
        callee.extend_from_slice(app.callee());
        replaces.extend_from_slice(b"Replaces: ");
        replaces.extend_from_slice(d.call_id);
        replaces.extend_from_slice(b";to-tag=");
        replaces.extend_from_slice(d.to_tag);
        replaces.extend_from_slice(b";from-tag=");
        replaces.extend_from_slice(d.from_tag);
        replaces.extend_from_slice(b"\r\n");
        prev = (d.call_id.to_vec(), d.to_tag.to_vec());
        let new_dialog = DialogRef { call_id: cx.call_id, from_tag: cx.from.tag, to_tag: cx.to.tag };
        if app
            .update_strs(
                &StrUpdate { owner: Some(cx.contact), dialog: Some(new_dialog), keep_previous: true, ..Default::default() },
                alloc,
            )
            .is_err()
        {
            lm_err!("out of shared memory retrieving {} appearance-index {}", B(&cx.from_aor), cx.ci.index);
            return -1;
        }
        app.flags |= FLAG_OWNER_PENDING;
        app.set_state(AppearanceState::Active, cx.now);
    }
    if callee.is_empty() || msg.rewrite_ruri(&callee).is_err() {
        lm_err!("cannot send the retrieving INVITE to the held party {}", B(&callee));
        return -1;
    }
    if msg.add_header(&replaces).is_err() {
        lm_err!("Failed to add Replaces header {}", B(&replaces));
        return -1;
    }
    lm_info!("{} retrieves held {} appearance-index {} from {}", B(cx.contact), B(&cx.from_aor), cx.ci.index, B(&callee));

    // the held party may itself be an SCA line: its appearance follows
    let mut callee_aor = Vec::new();
    if matches!(uri::build_aor(&callee, &cx.from_aor, &mut callee_aor), Ok(true)) {
        let mut g = effects::edit(cx.st, &callee_aor, cx.now);
        if g.is_shared() {
            let alloc = g.alloc();
            let found = g.core().and_then(|ed| ed.app_index_by_dialog(&prev.0, &prev.1).and_then(|i| ed.into_app_mut(i)));
            match found {
                Some(app) => {
                    app.flags |= FLAG_CALLEE_PENDING;
                    let d = DialogRef { call_id: cx.call_id, from_tag: cx.to.tag, to_tag: cx.from.tag };
                    if app
                        .update_strs(
                            &StrUpdate { callee: Some(cx.contact), dialog: Some(d), keep_previous: true, ..Default::default() },
                            alloc,
                        )
                        .is_err()
                    {
                        lm_err!("out of shared memory updating the held party's appearance");
                    }
                }
                None => lm_err!(
                    "failed to find appearance of {} with dialog {};{}",
                    B(&callee_aor),
                    B(&prev.0),
                    B(&prev.1)
                ),
            }
        }
    }
    1
}

fn invite_reply_18x(cx: &mut Ctx<'_>) -> i32 {
    let state = AppearanceState::Progressing;
    let mut g = effects::edit(cx.st, &cx.from_aor, cx.now);
    if !g.is_shared() {
        return 1;
    }
    let Some(mut ed) = g.core() else { return -1 };
    let owner = match ed.app_by_dialog_mut(cx.call_id, cx.from.tag) {
        None => return -1,
        Some(app) if app.state == state => return 1,
        Some(app) => {
            app.set_state(state, cx.now);
            app.owner().to_vec()
        }
    };
    // the call proceeds: the line-seize has served its purpose
    ed.end_sub(EventType::LineSeize, &owner, SubState::TerminatedNoresource, false);
    ed.notify_group();
    1
}

fn invite_reply_200(cx: &mut Ctx<'_>, msg: &mut SipMsg<'_>) -> i32 {
    let mut rc = -1;
    if cx.callee() && cx.from_aor != cx.to_aor {
        rc = callee_answers(cx);
    }
    if !cx.caller() {
        if rc == 1 {
            notify_aor(cx, &cx.from_aor.clone());
        }
        return rc;
    }
    // P-Asserted-Identity: who answered, as the group knows the callee
    match uri::canonical_aor(cx.to.uri, (!cx.contact.is_empty()).then_some(cx.contact)) {
        Ok(aor) => {
            let mut pai = Vec::with_capacity(64 + aor.len());
            pai.extend_from_slice(b"P-Asserted-Identity: ");
            pai.extend_from_slice(display_of(&cx.to));
            pai.extend_from_slice(b" <");
            pai.extend_from_slice(&aor);
            pai.extend_from_slice(b">\r\n");
            if msg.add_header(&pai).is_err() {
                lm_err!("failed to add P-Asserted-Identity to the reply from {}", B(cx.contact));
            }
        }
        Err(e) => lm_err!("no canonical AoR for {}: {e}", B(cx.to.uri)),
    }

    let d = DialogRef { call_id: cx.call_id, from_tag: cx.from.tag, to_tag: cx.to.tag };
    let mut app_uri = Vec::new();
    if cx.from_aor != cx.to_aor {
        // a new call (not a re-INVITE): show whom the line talks to
        if let Ok(aor) = uri::canonical_aor(cx.to.uri, (!cx.contact.is_empty()).then_some(cx.contact)) {
            let display = display_of(&cx.to);
            format::write_appearance_uri(&mut app_uri, (!display.is_empty()).then_some(display), &aor);
        }
    }
    let mut g = effects::edit(cx.st, &cx.from_aor, cx.now);
    let Some(mut ed) = g.core() else { return 1 };
    // no SCA line involved in this call: the group is told all the same
    match ed.caller_answered(d, cx.contact, (!app_uri.is_empty()).then_some(&app_uri[..]), cx.now) {
        Ok(_) => 1,
        Err(_) => {
            let idx = ed.app_index_by_dialog(cx.call_id, cx.from.tag).unwrap_or(0);
            lm_err!("out of shared memory updating {} appearance-index {idx}", B(&cx.from_aor));
            -1
        }
    }
}

fn display_of<'a>(na: &NameAddr<'a>) -> &'a [u8] {
    // the name-addr's display part, as the core's to_body has it
    let body = na.body;
    match body.iter().position(|&c| c == b'<') {
        Some(p) if p > 0 => body[..p].trim_ascii(),
        _ => &[],
    }
}

/// A shared callee answered: its appearance shows the call (C:
/// `sca_call_info_uri_update`).
fn callee_answers(cx: &mut Ctx<'_>) -> i32 {
    let mut g = effects::edit(cx.st, &cx.to_aor, cx.now);
    if !g.is_shared() {
        return 1;
    }
    let Some(mut ed) = g.core() else { return 1 };
    let d = DialogRef { call_id: cx.call_id, from_tag: cx.from.tag, to_tag: cx.to.tag };
    // an answer may not light up a line above the bound (docs/security.md):
    // checked where the answer would seize a line (no appearance of the call)
    {
        let apps = ed.entry().apps();
        let idx = cx.ci.index;
        if apps.get(idx).is_none() && apps.by_dialog(cx.call_id, cx.from.tag).is_none() {
            let want = if idx > 0 { idx } else { apps.next_free_index() };
            if let Err(r) = sca_core::limits::check_index(&cx.cfg.limits, want) {
                crate::module::limits::refused(&cx.cfg.limits, r, "answer's appearance", cx.contact, &cx.to_aor, cx.now);
                return 1;
            }
        }
    }
    let display = display_of(&cx.from);
    let mut app_uri = Vec::new();
    format::write_appearance_uri(&mut app_uri, (!display.is_empty()).then_some(display), cx.from.uri);
    let idx = cx.ci.index;
    match ed.callee_answered(idx, cx.ci.state, d, cx.contact, cx.from.uri, &app_uri, cx.now) {
        Ok(_) => 1,
        Err(AnswerError::Seize(err)) => {
            lm_err!("failed to seize index {idx} for {}: {err:?}", B(cx.contact));
            -1
        }
        Err(AnswerError::NoMemory) => -1,
    }
}

fn invite_reply_error(cx: &mut Ctx<'_>, status: u32) -> i32 {
    if status == 487 {
        // the CANCEL already released the line
        return 1;
    }
    let mut g = effects::edit(cx.st, &cx.from_aor, cx.now);
    if !g.is_shared() {
        return 1;
    }
    let Some(mut ed) = g.core() else { return 1 };
    if ed.release_by_dialog(cx.call_id, cx.from.tag).is_none() {
        lm_err!("failed to look up dialog for failed INVITE {} from {}", B(cx.to.uri), B(&cx.from_aor));
        return -1;
    }
    1
}

fn notify_aor(cx: &Ctx<'_>, aor: &[u8]) {
    // NOTIFYs only: nothing to replicate, so no cluster snapshot
    effects::notify_group_of(cx.st, cx.cfg, aor, cx.now);
}

// ---------------------------------------------------------------- BYE, CANCEL

/// Release the appearance of this call on `aor` (found by index, else by
/// dialog; `AorEdit::release_call`) and tell the group. `Err` when none was
/// found.
fn release_call(cx: &Ctx<'_>, aor: &[u8], index: u32, tag: &[u8]) -> Result<(), ()> {
    let mut g = effects::edit(cx.st, aor, cx.now);
    let Some(mut ed) = g.core() else { return Err(()) };
    ed.release_call(index, cx.call_id, tag).map(|_| ()).map_err(|_| ())
}

fn bye(cx: &mut Ctx<'_>, msg: &mut SipMsg<'_>) -> i32 {
    if msg.is_request() {
        if cx.caller() && release_call(cx, &cx.from_aor, cx.ci.index, cx.from.tag).is_err() {
            lm_err!("{} dialog leg {};{} is not active", B(&cx.from_aor), B(cx.call_id), B(cx.from.tag));
            return -1;
        }
        if cx.callee() && release_call(cx, &cx.to_aor, 0, cx.to.tag).is_err() {
            lm_info!("no in-use callee appearance for BYE {} from {}", B(&cx.to_aor), B(&cx.from_aor));
        }
    } else if cx.callee() {
        // a backup for what the BYE request did not catch
        let _ = release_call(cx, &cx.to_aor, cx.ci.index, cx.to.tag);
    }
    1
}

fn cancel(cx: &mut Ctx<'_>, msg: &mut SipMsg<'_>) -> i32 {
    if !msg.is_request() {
        return 1;
    }
    if cx.caller() {
        let mut g = effects::edit(cx.st, &cx.from_aor, cx.now);
        if let Some(mut ed) = g.core() {
            ed.release_by_dialog(cx.call_id, cx.from.tag);
        }
    }
    if !cx.to.tag.is_empty() {
        let mut g = effects::edit(cx.st, &cx.to_aor, cx.now);
        if g.is_shared() {
            if let Some(mut ed) = g.core() {
                ed.release_by_dialog(cx.call_id, cx.to.tag);
            }
        }
    }
    1
}

// ---------------------------------------------------------------- callbacks

entry! {
    /// tm: the end-to-end ACK of an INVITE we saw (C:
    /// `sca_call_info_ack_cb`). Called by the shim with the message tm
    /// hands to its callback.
    #[no_mangle]
    c pub fn sca_rs_on_e2e_ack(ack: MsgArg) ["ACK callback"] {
        let (Some(st), Some(cfg)) = (shared(), config()) else { return };
        let mut ack = ack;
        let Some(mut msg) = ack.get() else { return };
        let now = now();
        let contact = msg.contact_uri().ok().flatten();
        let (Some(from), Some(to), Some(call_id)) = (msg.from(), msg.to(), msg.call_id()) else {
            lm_err!("ACK callback: bad From, To or Call-ID");
            return;
        };
        let Ok(from_aor) = uri::canonical_aor(from.uri, contact) else { return };
        let Ok(to_aor) = uri::extract_aor(to.uri) else { return };
        let held = sdp::is_held(msg.body()) || (cfg.onhold_bflag >= 0 && bflag_set(cfg.onhold_bflag));

        {
            let mut g = effects::edit(st, &from_aor, now);
            if g.is_shared() {
                if let Some(mut ed) = g.core() {
                    match ed.app_by_dialog_mut(call_id, from.tag) {
                        None => lm_err!(
                            "ACK callback: no appearance for {} matching call-id <{}> and from-tag <{}>",
                            B(&from_aor),
                            B(call_id),
                            B(from.tag)
                        ),
                        // music on hold: the hold SDP may come in the ACK
                        Some(app) if held => {
                            app.set_state(AppearanceState::Held, now);
                            ed.notify_group();
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        let mut g = effects::edit(st, to_aor, now);
        if !g.is_shared() {
            return;
        }
        if let Some(mut ed) = g.core() {
            ed.confirm_pending(call_id, to.tag, now);
            ed.notify_group();
        }
    }
}

/// A failed INVITE from a shared line, answered locally (t_reply / sl):
/// end the line-seize and free the line.
fn local_error_reply(req: &mut MsgArg, code: i32, also_unlink: bool) {
    if code < 400 {
        return;
    }
    let Some(st) = shared() else { return };
    // the INVITE the reply is for
    let Some(mut msg) = req.get() else { return };
    if msg.method() != b"INVITE" {
        return;
    }
    let now = now();
    let (Some(from), Some(to), Some(call_id)) = (msg.from(), msg.to(), msg.call_id()) else { return };
    let Ok(aor) = uri::extract_aor(from.uri) else { return };
    let mut g = effects::edit(st, aor, now);
    if !g.is_shared() {
        return;
    }
    let Ok(Some(contact)) = msg.contact_uri() else {
        lm_err!("failed to get Contact from request before local reply with {code}");
        return;
    };
    let ended = g.core().and_then(|mut ed| ed.end_sub(EventType::LineSeize, contact, SubState::TerminatedNoresource, true)).is_some();
    if !ended && also_unlink {
        let _ = to;
        if let Some(mut ed) = g.core() {
            ed.release_by_dialog(call_id, from.tag);
        }
    }
}

entry! {
    /// tm: a locally generated reply (t_reply) for an INVITE from a shared
    /// line. Called by the shim with the message tm hands to its callback.
    #[no_mangle]
    c pub fn sca_rs_on_response_ready(req: MsgArg, code: i32) ["t_reply callback"] {
        local_error_reply(&mut { req }, code, true)
    }
}

entry! {
    /// sl: a stateless reply is about to be sent. Called by the shim with
    /// the message sl hands to its callback.
    #[no_mangle]
    c pub fn sca_rs_on_sl_reply(req: MsgArg, code: i32) ["sl reply callback"] {
        // auth challenges are part of a normal call set-up
        if code == 401 || code == 407 {
            return;
        }
        local_error_reply(&mut { req }, code, false)
    }
}
