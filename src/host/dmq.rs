//! Kamailio's `dmq` module (distributed message queue): binding its API,
//! registering the `sca_rs` peer, and sending KDMQ requests. The callbacks
//! dmq makes (a peer's request, a reply to ours, its init callback) are
//! `sca_rs_dmq_on_*` in `src/module/cluster.rs`; the shim calls them.

use core::ffi::c_void;

use crate::host::kstr;
use crate::host::sys;

/// Bind dmq and register the `sca_rs` peer (mod_init, before fork).
/// Returns dmq's `server_address`: this node's address.
pub fn init() -> Result<Vec<u8>, String> {
    let mut uri = sys::str_ { s: core::ptr::null_mut(), len: 0 };
    // SAFETY: [I1] mod_init, main process; the shim fills `uri` with a pointer
    // into dmq's modparam storage, which lives as long as the process.
    let rc = unsafe { sys::sca_rs_dmq_init(&mut uri) };
    match rc {
        0 => {
            // SAFETY: [I1] as above; copied at once.
            Ok(unsafe { kstr::as_bytes(&uri) }.to_vec())
        }
        -2 => Err("dmq peer \"sca_rs\" is already registered".into()),
        -3 => Err("dmq has no server_address: set modparam(\"dmq\", \"server_address\", ...)".into()),
        _ => Err("cannot bind the dmq API: load dmq.so (and tm.so, sl.so before it) before sca_rs.so".into()),
    }
}

/// A node as dmq hands it to a reply callback; only valid during that call.
#[derive(Clone, Copy)]
pub struct NodeRef(*mut c_void);

impl NodeRef {
    /// # Safety
    /// `p` is the node pointer of the reply callback being run (or null).
    pub unsafe fn from_raw(p: *mut c_void) -> Option<NodeRef> {
        (!p.is_null()).then_some(NodeRef(p))
    }
}

/// The node argument of `sca_rs_dmq_on_reply` (an entry point's parameter
/// type, created only by C): NULL or dmq's node for that reply [I2].
#[repr(transparent)]
pub struct NodeArg(*mut c_void);

impl NodeArg {
    /// The node, for use during the callback only.
    pub fn get(&self) -> Option<NodeRef> {
        (!self.0.is_null()).then_some(NodeRef(self.0))
    }
}

/// Broadcast `body` to every active node; `tag` comes back to
/// `sca_rs_dmq_on_reply` with each node's final reply.
pub fn bcast(body: &[u8], tag: usize) -> Result<(), ()> {
    let b = kstr::from_bytes(body);
    // SAFETY: [I9] dmq (through tm) copies the body before returning; the tag
    // is an integer carried as a pointer and never dereferenced.
    let rc = unsafe { sys::sca_rs_dmq_bcast(&b, tag as *mut c_void) };
    if rc < 0 { Err(()) } else { Ok(()) }
}

/// Send `body` to `node` (inside the reply callback that handed it over).
pub fn send(body: &[u8], node: NodeRef, tag: usize) -> Result<(), ()> {
    let b = kstr::from_bytes(body);
    // SAFETY: [I9] as bcast; `node` is valid for the callback we are in.
    let rc = unsafe { sys::sca_rs_dmq_send(&b, node.0, tag as *mut c_void) };
    if rc < 0 { Err(()) } else { Ok(()) }
}

/// A copy of `bytes` in pkg memory, as dmq wants a reply body (it frees
/// it); None when pkg memory is exhausted.
pub fn pkg_copy(bytes: &[u8]) -> Option<sys::str_> {
    if bytes.is_empty() || bytes.len() > i32::MAX as usize {
        return None;
    }
    // SAFETY: [I12] plain allocation of bytes.len() bytes.
    let p = unsafe { sys::sca_rs_pkg_malloc(bytes.len()) } as *mut u8;
    if p.is_null() {
        return None;
    }
    // SAFETY: [I12] p has room for bytes.len() bytes and does not overlap `bytes`.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    Some(sys::str_ { s: p as *mut _, len: bytes.len() as i32 })
}
