//! AVPs named by modparams (e.g. `$avp(sca_from)`), parsed once in
//! mod_init; read and written per message.

use crate::host::kstr;
use crate::host::sys;

#[derive(Clone, Copy)]
pub struct Avp(sys::sca_rs_avp);

// SAFETY: [I1] the spec is plain data (its name points into the pv cache,
// which lives for the process); it is set before fork and read-only after.
unsafe impl Send for Avp {}
// SAFETY: [I1] see above.
unsafe impl Sync for Avp {}

impl Avp {
    /// Parse `$avp(name)`; Err for anything that is not an AVP spec.
    pub fn parse(spec: &[u8]) -> Result<Avp, String> {
        let s = kstr::from_bytes(spec);
        let mut a = sys::sca_rs_avp::default();
        // SAFETY: [I1] mod_init context; the shim keeps only pv-cache pointers.
        if unsafe { sys::sca_rs_avp_parse(&s, &mut a) } < 0 {
            return Err(format!("'{}' is not an AVP such as $avp(name)", String::from_utf8_lossy(spec)));
        }
        Ok(Avp(a))
    }

    /// The AVP's string value in the current message's context.
    pub fn get(&self) -> Option<Vec<u8>> {
        let mut v = sys::str_ { s: core::ptr::null_mut(), len: 0 };
        // SAFETY: [I2] a parsed spec; the value is copied before returning.
        if unsafe { sys::sca_rs_avp_get(&self.0, &mut v) } < 0 {
            return None;
        }
        // SAFETY: [I2] the AVP value lives in the AVP list during this call.
        Some(unsafe { kstr::as_bytes(&v) }.to_vec())
    }

    pub fn put(&self, v: &[u8]) {
        let s = kstr::from_bytes(v);
        // SAFETY: [I2] add_avp copies the value.
        unsafe { sys::sca_rs_avp_put(&self.0, &s) };
    }

    pub fn del(&self) {
        // SAFETY: [I2] a parsed spec.
        unsafe { sys::sca_rs_avp_del(&self.0) }
    }
}
