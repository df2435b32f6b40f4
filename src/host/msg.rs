//! Safe access to a SIP message (`struct sip_msg`) during a script call.
//!
//! Header values are returned as byte slices into Kamailio's message
//! buffer, valid while the script function runs. Parsing of SCA-specific
//! values (Call-Info, Event, Expires, ...) is done by `sca_core::parse`; the
//! host's own parsers are used for From/To/Contact, as the C module does.

use crate::host::kstr::as_bytes;
use crate::host::sys;

pub const SIP_REQUEST: i16 = 1;
pub const SIP_REPLY: i16 = 2;

pub struct SipMsg<'a> {
    raw: &'a mut sys::sip_msg,
}

/// A parsed From/To header.
pub struct NameAddr<'a> {
    pub uri: &'a [u8],
    pub tag: &'a [u8],
    pub body: &'a [u8],
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

impl<'a> SipMsg<'a> {
    /// # Safety
    /// `p` is the message Kamailio passed to the current callback, alive
    /// and not used elsewhere for the returned lifetime.
    pub unsafe fn from_raw(p: *mut sys::sip_msg) -> Option<Self> {
        // SAFETY: [I2] per the function contract.
        unsafe { p.as_mut() }.map(|raw| SipMsg { raw })
    }

    /// The same message with a shorter lifetime (for values that borrow
    /// from locals of the current call).
    pub fn reborrow(&mut self) -> SipMsg<'_> {
        SipMsg { raw: &mut *self.raw }
    }

    pub fn as_ptr(&mut self) -> *mut sys::sip_msg {
        self.raw
    }

    pub fn is_request(&self) -> bool {
        self.raw.first_line.type_ == SIP_REQUEST
    }

    /// Request method (empty for a reply).
    pub fn method(&self) -> &'a [u8] {
        if !self.is_request() {
            return &[];
        }
        // SAFETY: [I2] for a request, `request` is the active union member and
        // its strs point into the message buffer.
        unsafe { as_bytes(&self.raw.first_line.u.request.method) }
    }

    /// Reply status code (0 for a request).
    pub fn status(&self) -> u32 {
        if self.is_request() {
            return 0;
        }
        // SAFETY: [I2] for a reply, `reply` is the active union member.
        unsafe { self.raw.first_line.u.reply.statuscode }
    }

    /// The Request-URI as the script sees it now ($ru: rewritten or not).
    /// Valid for the message's lifetime even across
    /// [`SipMsg::rewrite_ruri`], which keeps the buffer this may point to
    /// until the entry point returns.
    pub fn ruri(&self) -> &'a [u8] {
        if !self.is_request() {
            return &[];
        }
        // SAFETY: [I2] new_uri is set by the core when the R-URI was rewritten;
        // else the first line's URI, both inside message-lifetime buffers.
        unsafe {
            let nu = as_bytes(&self.raw.new_uri);
            if !nu.is_empty() {
                nu
            } else {
                as_bytes(&self.raw.first_line.u.request.uri)
            }
        }
    }

    /// Parse every header (Kamailio's HDR_EOH_F). Err on a malformed message.
    pub fn parse_all(&mut self) -> Result<(), ()> {
        let eoh: sys::hdr_flags_t = 1 << sys::_hdr_types_t_HDR_EOH_T;
        // SAFETY: [I2] raw is a valid message; the core parser is re-entrant per message.
        if unsafe { sys::parse_headers(self.raw, eoh, 0) } < 0 {
            Err(())
        } else {
            Ok(())
        }
    }

    fn hdr(&self, h: *mut sys::hdr_field) -> Option<&'a sys::hdr_field> {
        // SAFETY: [I2] header pointers of sip_msg are NULL or point to parsed
        // headers that live as long as the message.
        unsafe { h.as_ref() }
    }

    fn hdr_body(&self, h: *mut sys::hdr_field) -> Option<&'a [u8]> {
        // SAFETY: [I2] a hdr_field's body points into the message buffer.
        self.hdr(h).map(|h| trim(unsafe { as_bytes(&h.body) }))
    }

    /// Every header, in order: (name, body).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut cur: *mut sys::hdr_field = self.raw.headers;
        core::iter::from_fn(move || {
            // SAFETY: [I2] the header list is NULL-terminated, built by the parser.
            let h = unsafe { cur.as_ref() }?;
            cur = h.next;
            // SAFETY: [I2] name and body point into the message buffer.
            Some(unsafe { (as_bytes(&h.name), trim(as_bytes(&h.body))) })
        })
    }

    /// Bodies of all headers called `name` (case-insensitive; `short` is the
    /// compact form, if any).
    pub fn headers_named<'n>(
        &self,
        name: &'n [u8],
        short: Option<&'n [u8]>,
    ) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.headers().filter_map(move |(n, b)| {
            let n = trim(n);
            (n.eq_ignore_ascii_case(name) || short.is_some_and(|s| n.eq_ignore_ascii_case(s)))
                .then_some(b)
        })
    }

    pub fn call_id(&self) -> Option<&'a [u8]> {
        self.hdr_body(self.raw.callid).filter(|b| !b.is_empty())
    }

    pub fn event(&self) -> Option<&'a [u8]> {
        self.hdr_body(self.raw.event)
    }

    pub fn expires(&self) -> Option<&'a [u8]> {
        self.hdr_body(self.raw.expires)
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(&'a [u8], &'a [u8])> {
        let b = self.hdr_body(self.raw.cseq)?;
        let mut it = b.split(|c| c.is_ascii_whitespace()).filter(|p| !p.is_empty());
        Some((it.next()?, it.next().unwrap_or(&[])))
    }

    /// Bodies of the headers the parser typed `ty`, in order, from `first`
    /// (the message's pointer to the first of them, or the head of the
    /// header list) on: an integer compare per header instead of a name's.
    fn headers_of_type(&self, first: *mut sys::hdr_field, ty: sys::hdr_types_t) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut cur = first;
        core::iter::from_fn(move || loop {
            // SAFETY: [I2] the header list is NULL-terminated, built by the parser.
            let h = unsafe { cur.as_ref() }?;
            cur = h.next;
            if h.type_ == ty {
                // SAFETY: [I2] a hdr_field's body points into the message buffer.
                return Some(trim(unsafe { as_bytes(&h.body) }));
            }
        })
    }

    /// The first Call-Info header's body (headers parsed).
    pub fn call_info(&self) -> Option<&'a [u8]> {
        self.headers_of_type(self.raw.headers, sys::_hdr_types_t_HDR_CALLINFO_T).next()
    }

    /// All Record-Route header bodies joined with ", " (RFC 3261 12.1.1
    /// route set order as received).
    pub fn record_route_set(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for b in self.headers_of_type(self.raw.record_route, sys::_hdr_types_t_HDR_RECORDROUTE_T) {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(b);
        }
        out
    }

    /// The parsed From header (parsed on demand).
    pub fn from(&mut self) -> Option<NameAddr<'a>> {
        // SAFETY: [I2] raw is valid; parse_from_header stores the result in the message.
        if self.raw.from.is_null() || unsafe { sys::parse_from_header(self.raw) } < 0 {
            return None;
        }
        let h = self.hdr(self.raw.from)?;
        // SAFETY: [I2] after a successful parse, `parsed` is a to_body that lives
        // with the message.
        let tb = unsafe { (h.parsed as *const sys::to_body).as_ref() }?;
        Some(Self::name_addr(tb))
    }

    /// The parsed To header (parsed on demand).
    pub fn to(&mut self) -> Option<NameAddr<'a>> {
        // SAFETY: [I2] as for from().
        if self.raw.to.is_null() || unsafe { sys::parse_to_header(self.raw) } < 0 {
            return None;
        }
        let h = self.hdr(self.raw.to)?;
        // SAFETY: [I2] after a successful parse, `parsed` is a to_body.
        let tb = unsafe { (h.parsed as *const sys::to_body).as_ref() }?;
        if tb.error != 1 {
            return None; // PARSE_OK is 1
        }
        Some(Self::name_addr(tb))
    }

    fn name_addr(tb: &'a sys::to_body) -> NameAddr<'a> {
        // SAFETY: [I2] to_body strs point into the message buffer.
        unsafe {
            NameAddr { uri: as_bytes(&tb.uri), tag: as_bytes(&tb.tag_value), body: as_bytes(&tb.body) }
        }
    }

    /// URI of the first Contact, through the core's Contact parser.
    /// Err(()) for a malformed Contact or `*`; Ok(None) when absent.
    pub fn contact_uri(&mut self) -> Result<Option<&'a [u8]>, ()> {
        if self.raw.contact.is_null() {
            return Ok(None);
        }
        // SAFETY: [I2] contact is a parsed header of this message.
        if unsafe { sys::parse_contact(self.raw.contact) } < 0 {
            return Err(());
        }
        let h = self.hdr(self.raw.contact).ok_or(())?;
        // SAFETY: [I2] parse_contact stored a contact_body in `parsed`.
        let cb = unsafe { (h.parsed as *const sys::contact_body).as_ref() }.ok_or(())?;
        if cb.star != 0 {
            return Err(());
        }
        // SAFETY: [I2] contacts is NULL or a parsed contact list of this message.
        let c = unsafe { cb.contacts.as_ref() }.ok_or(())?;
        // SAFETY: [I2] uri points into the message buffer.
        let uri = unsafe { as_bytes(&c.uri) };
        if uri.is_empty() {
            return Err(());
        }
        Ok(Some(uri))
    }

    /// The message body (empty if none).
    pub fn body(&mut self) -> &'a [u8] {
        // SAFETY: [I2] get_body returns a pointer into the message buffer or NULL.
        let p = unsafe { sys::get_body(self.raw) };
        if p.is_null() {
            return &[];
        }
        let start = p as usize;
        let buf = self.raw.buf as usize;
        let len = self.raw.len as usize;
        if start < buf || start > buf + len {
            return &[];
        }
        // SAFETY: [I2] [p, buf+len) lies inside the message buffer.
        unsafe { core::slice::from_raw_parts(p as *const u8, buf + len - start) }
    }
}

/// Message changes (lumps): applied when Kamailio forwards the message.
impl<'a> SipMsg<'a> {
    /// Remove every Call-Info header; how many.
    pub fn remove_call_info_headers(&mut self) -> Result<usize, ()> {
        // SAFETY: [I2] raw is the current message; the shim parses all headers
        // first and adds delete lumps for headers of this type.
        let n = unsafe { sys::sca_rs_remove_headers(self.raw, sys::_hdr_types_t_HDR_CALLINFO_T) };
        usize::try_from(n).map_err(|_| ())
    }

    /// Add a header line (CRLF-terminated) at the end of the headers.
    pub fn add_header(&mut self, line: &[u8]) -> Result<(), ()> {
        let len = i32::try_from(line.len()).map_err(|_| ())?;
        // SAFETY: [I2] the shim copies `line` into pkg memory owned by the lump.
        if unsafe { sys::sca_rs_add_header(self.raw, line.as_ptr().cast(), len) } < 0 {
            Err(())
        } else {
            Ok(())
        }
    }

    /// Send the request to `uri` (and only there: other branches dropped).
    ///
    /// The previous R-URI buffer stays allocated until the outermost entry
    /// point of this process returns ([`release_detached`]), so a slice
    /// from an earlier [`SipMsg::ruri`] (which has the message's lifetime)
    /// never dangles (SAFETY.md I2).
    pub fn rewrite_ruri(&mut self, uri: &[u8]) -> Result<(), ()> {
        let s = crate::host::kstr::from_bytes(uri);
        let mut old: *mut core::ffi::c_char = core::ptr::null_mut();
        // SAFETY: [I2] self.raw is the message of the current call; the
        // shim copies the URI into a new new_uri buffer and hands the old
        // one (pkg memory of this process, or NULL) to us.
        let rc = unsafe { sys::sca_rs_rewrite_ruri(self.raw, &s, &mut old) };
        if !old.is_null() {
            DETACHED.with(|d| d.borrow_mut().push(old));
        }
        if rc < 0 { Err(()) } else { Ok(()) }
    }

    /// The method a message is about: the request method, or for a reply
    /// the CSeq method.
    pub fn cseq_method(&self) -> &'a [u8] {
        if self.is_request() {
            self.method()
        } else {
            self.cseq().map(|(_, m)| m).unwrap_or(&[])
        }
    }
}

/// Is branch flag `flag` set for the current message (branch 0)?
pub fn bflag_set(flag: i32) -> bool {
    // SAFETY: [I2] reads the core's per-process branch flags.
    (0..32).contains(&flag) && unsafe { sys::sca_rs_isbflagset(flag) } != 0
}

thread_local! {
    /// R-URI buffers [`SipMsg::rewrite_ruri`] replaced, still possibly
    /// viewed by slices of the running entry point.
    static DETACHED: core::cell::RefCell<Vec<*mut core::ffi::c_char>> =
        const { core::cell::RefCell::new(Vec::new()) };
}

/// Free the R-URI buffers replaced during the entry point that is
/// returning (called by the panic guard when the outermost entry point of
/// this process ends: no message view of it is left).
pub(crate) fn release_detached() {
    let v = DETACHED.with(|d| core::mem::take(&mut *d.borrow_mut()));
    for p in v {
        // SAFETY: [I2] a new_uri buffer rewrite_uri allocated with
        // pkg_malloc in this process, detached from the message by the
        // shim, freed once (taken from the list); the entry point whose
        // slices could view it has returned.
        unsafe { sys::sca_rs_pkg_free(p.cast()) };
    }
}
