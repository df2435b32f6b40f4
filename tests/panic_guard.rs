//! The panic boundary, in a real Kamailio: a panic inside
//! `sca_handle_subscribe()` (forced by a test-only build of the module, see
//! the `test-hooks` feature) is caught, logged, answered `500`, returned to
//! the script as -1, and the same worker keeps serving: the
//! slot lock held during the panic was released on unwind.

mod common;

use std::path::PathBuf;

use common::cfg::sca_opts;
use common::kamailio::{Kamailio, ScaModule};
use common::sip::{Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

fn hooks_module() -> PathBuf {
    std::env::var_os("SCA_RS_HOOKS_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::kamailio::repo_root().join("target/hooks/release/libsca_rs.so"))
}

#[test]
fn a_panic_in_a_script_function_fails_the_request_and_the_worker_keeps_serving() {
    let module = hooks_module();
    assert!(
        module.exists(),
        "{} is missing: build it with `cargo build --release -p sca_rs --features test-hooks --target-dir target/hooks` (make test does)",
        module.display()
    );
    // one worker: the request after the panic is served by the same process
    let k = Kamailio::start(
        sca_opts(ScaModule::Rust).children(1).var("SCA_LOADMODULE", &module.display().to_string()),
    );
    let mut ua = Ua::new("A1", "100", k.addr()).expect("UA");
    ua.auto_answer_notify = true;
    let mut d = ua.dialog(AOR);
    let s = ua
        .send_subscribe(&mut d, &Subscribe::new("call-info", 600).header("X-Sca-Rs-Test-Panic", "1"))
        .expect("SUBSCRIBE");
    // the guard answered 500 and returned -1; nothing was stored
    let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("a reply, not silence");
    assert_eq!(r.start_line, "SIP/2.0 500 Server Internal Error", "{}", r.raw);
    assert!(k.wait_for_log("panic at src/module/subscribe.rs", std::time::Duration::from_secs(2)), "{}", k.log_tail(20));
    assert!(k.log().contains("sca_handle_subscribe: internal error (panic caught)"), "{}", k.log_tail(20));

    let mut k = k;
    assert!(k.is_running());
    // the same worker serves the next SUBSCRIBE; the locked slot is free
    let mut d2 = ua.dialog(AOR);
    let s = ua.send_subscribe(&mut d2, &Subscribe::new("call-info", 600)).expect("SUBSCRIBE");
    let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
    assert_eq!(r.status(), Some(202), "{}", r.raw);
    ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY");
    assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), "1 call-info");
    // the slot locked during the panic is usable: the RPC takes its lock
    // (and would hang here if the lock had not been released on unwind)
    assert_eq!(
        k.kamcmd(&["sca.show_appearance", "sip:panic@test"]),
        Err("error: 404 - sip:panic@test is not a shared appearance".to_string())
    );
    let st = k.stop().expect("stops");
    assert!(st.success(), "{st}");
}
