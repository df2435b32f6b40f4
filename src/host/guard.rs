//! The panic boundary. Every `extern "C"` entry point of the module runs
//! its body through [`guard`]: a panic is caught, logged, and turned into
//! an error return. A panic must never unwind into Kamailio's C frames (it
//! would abort the worker and with it the whole server).
//!
//! Kamailio reads 0 from a script function as "drop the message", so the
//! error value is -1, never 0.

use std::panic::{self, AssertUnwindSafe};
use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// Entry points running in this process (nested ones included).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Run `f`; on panic log it and return `on_panic`.
///
/// `AssertUnwindSafe`: after a panic the module's shared state is only
/// what the store's guards left, and guards release their locks on unwind.
pub fn guard_or<R>(entry: &str, on_panic: R, f: impl FnOnce() -> R) -> R {
    // entry points nest (an sl reply sent by a script function runs the sl
    // reply callback): per-call resources are released by the outermost
    DEPTH.with(|d| d.set(d.get() + 1));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    if DEPTH.with(|d| {
        d.set(d.get() - 1);
        d.get() == 0
    }) {
        crate::host::msg::release_detached();
    }
    match r {
        Ok(r) => r,
        Err(_) => {
            // the hook already logged message and location
            crate::lm_crit!("{entry}: internal error (panic caught), request failed");
            on_panic
        }
    }
}

/// For script functions, fixups and init callbacks: -1 on panic.
pub fn guard(entry: &str, f: impl FnOnce() -> i32) -> i32 {
    guard_or(entry, -1, f)
}

/// Send panic messages to Kamailio's log instead of stderr (which a
/// daemonised Kamailio has closed).
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let loc = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            crate::lm_crit!("panic at {loc}: {msg}");
        }));
    });
}
