//! Differential SCA scenarios (tests/common/scenarios.rs) against Debian's
//! C `sca.so` (the reference) and our `sca_rs.so`.
//!
//! * `c_<name>` runs the scenario with the C module and compares the
//!   rendered result with `tests/golden/scenario_<name>.txt`
//!   (`UPDATE_GOLDEN=1` rewrites the file from this run).
//! * `rust_<name>` runs it with our module and compares with the same
//!   golden file after [`mask_known_deviations`] on both sides, or, for a
//!   scenario where sca_rs deliberately behaves differently, with the
//!   reviewed `tests/golden/scenario_<name>.sca_rs.txt` (each difference
//!   from the C golden is documented in docs/compat.md;
//!   `UPDATE_GOLDEN_RUST=1` rewrites it from this run, to be reviewed).
//!
//! Numbers after `expires=` / `left=` may differ by up to
//! `scenarios::EXPIRES_TOLERANCE` seconds (see `scenarios::equivalent`).
//!
//! Run: `cargo test --release -p sca_rs --test sca_core_diff` (all),
//! `... c_` (C only), `... rust_full_call` (one).

mod common;

use std::path::PathBuf;

use common::kamailio::{golden_file, kamailio_major_minor, ScaModule};
use common::scenarios::{self, ScenarioResult};

const RESULT_BEGIN: &str = "##### normalized result (compared on every run) #####\n";
const RAW_BEGIN: &str = "##### raw messages and log of the recorded run (reference only) #####\n";

/// The C module's golden: the one of the Kamailio version under test when
/// its C module behaves differently from 5.6's (see golden_file).
fn golden_path(name: &str) -> PathBuf {
    golden_file(&format!("scenario_{name}.txt"), false)
}

/// sca_rs's own golden for a scenario where it deviates from C on purpose.
fn rust_golden_path(name: &str, for_write: bool) -> PathBuf {
    golden_file(&format!("scenario_{name}.sca_rs.txt"), for_write)
}

/// The compared section of a golden file.
fn golden_result(name: &str) -> String {
    golden_result_at(&golden_path(name), name)
}

fn golden_result_at(path: &std::path::Path, name: &str) -> String {
    let path = path.to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {} ({e}); run `UPDATE_GOLDEN=1 cargo test --release -p sca_rs --test sca_core_diff c_{name}` to create it",
            path.display()
        )
    });
    let start = text
        .find(RESULT_BEGIN)
        .unwrap_or_else(|| panic!("no result section in {}", path.display()))
        + RESULT_BEGIN.len();
    let end = text
        .find(RAW_BEGIN)
        .unwrap_or_else(|| panic!("no raw section in {}", path.display()));
    text[start..end].trim_end_matches('\n').to_string() + "\n"
}

fn write_golden(r: &ScenarioResult) {
    let path = golden_file(&format!("scenario_{}.txt", r.name), true);
    std::fs::create_dir_all(path.parent().expect("golden dir")).expect("create tests/golden");
    let text = format!(
        "# Scenario {name}: {desc}.\n\
         # Debian Kamailio {kv} with the C sca.so, tests/common/cfg.rs SCA_CFG.\n\
         # Written by `UPDATE_GOLDEN=1 cargo test --release -p sca_rs --test sca_core_diff c_{name}`.\n\
         # Compared: the normalized result below (expires=/left= numbers within +-{tol} s).\n\n\
         {RESULT_BEGIN}{result}\n{RAW_BEGIN}{raw}",
        name = r.name,
        kv = kamailio_major_minor(),
        desc = r.description,
        tol = scenarios::EXPIRES_TOLERANCE,
        result = r.render(),
        raw = r.raw,
    );
    std::fs::write(&path, text).expect("write golden file");
    eprintln!("wrote {}", path.display());
}

fn run_c(name: &str) {
    let f = scenario(name);
    let r = f(ScaModule::C);
    let rendered = r.render();
    eprintln!("scenario {name} (C sca.so):\n{rendered}");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        write_golden(&r);
        return;
    }
    if let Err(diff) = scenarios::equivalent(&golden_result(name), &rendered) {
        panic!(
            "scenario {name} with the C module differs from {} (- golden, + this run):\n{diff}",
            golden_path(name).display()
        );
    }
}

/// The shared mask (tests/common/flows.rs), with the trailing newline the
/// golden comparison expects.
fn mask_known_deviations(t: &str) -> String {
    common::flows::mask_known_deviations(t) + "\n"
}

fn run_rust(name: &str) {
    let f = scenario(name);
    let r = f(ScaModule::Rust);
    let rendered = r.render();
    eprintln!("scenario {name} (sca_rs.so):\n{rendered}");
    let own = rust_golden_path(name, std::env::var_os("UPDATE_GOLDEN_RUST").is_some());
    if std::env::var_os("UPDATE_GOLDEN_RUST").is_some() {
        let text = format!(
            "# Scenario {name} with sca_rs.so: where it differs from the C module's\n\
             # scenario_{name}.txt, docs/compat.md says why. Reviewed, not generated blindly:\n\
             # written by `UPDATE_GOLDEN_RUST=1 cargo test --release -p sca_rs --test sca_core_diff rust_{name}`.\n\n\
             {RESULT_BEGIN}{rendered}\n{RAW_BEGIN}{raw}",
            raw = r.raw
        );
        std::fs::write(&own, text).expect("write sca_rs golden");
        eprintln!("wrote {}", own.display());
        return;
    }
    if own.exists() {
        let want = golden_result_at(&own, name);
        if let Err(diff) = scenarios::equivalent(&want, &rendered) {
            panic!("scenario {name}: sca_rs differs from its reviewed golden {} (- golden, + this run):\n{diff}", own.display());
        }
        return;
    }
    let want = mask_known_deviations(&golden_result(name));
    let got = mask_known_deviations(&rendered);
    if let Err(diff) = scenarios::equivalent(&want, &got) {
        panic!(
            "scenario {name}: sca_rs differs from the C module's golden {} after masking known deviations (- C, + sca_rs):\n{diff}",
            golden_path(name).display()
        );
    }
}

fn scenario(name: &str) -> fn(ScaModule) -> ScenarioResult {
    scenarios::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

macro_rules! scenario_tests {
    ($($name:ident: $c:ident, $rust:ident;)*) => {$(
        #[test]
        fn $c() {
            run_c(stringify!($name));
        }

        #[test]
        fn $rust() {
            run_rust(stringify!($name));
        }
    )*};
}

scenario_tests! {
    subscribe_unsubscribe_expiry: c_subscribe_unsubscribe_expiry, rust_subscribe_unsubscribe_expiry;
    line_seize_contention: c_line_seize_contention, rust_line_seize_contention;
    full_call: c_full_call, rust_full_call;
    rejected_call: c_rejected_call, rust_rejected_call;
    cancelled_call: c_cancelled_call, rust_cancelled_call;
    hold_and_retrieve: c_hold_and_retrieve, rust_hold_and_retrieve;
    held_private: c_held_private, rust_held_private;
    malformed_call_info: c_malformed_call_info, rust_malformed_call_info;
    race_seize: c_race_seize, rust_race_seize;
    stale_seize_purge: c_stale_seize_purge, rust_stale_seize_purge;
}

#[test]
fn every_scenario_has_tests() {
    let listed = [
        "subscribe_unsubscribe_expiry",
        "line_seize_contention",
        "full_call",
        "rejected_call",
        "cancelled_call",
        "hold_and_retrieve",
        "held_private",
        "malformed_call_info",
        "race_seize",
        "stale_seize_purge",
    ];
    let all: Vec<&str> = scenarios::ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(all, listed);
}

#[test]
fn tolerant_comparison() {
    use scenarios::{equivalent, lines_equivalent_within, EXPIRES_TOLERANCE};
    // the native tolerance (a memcheck run widens it: SCA_RS_EXPIRES_TOLERANCE)
    let lines_equivalent = |a: &str, b: &str| lines_equivalent_within(a, b, EXPIRES_TOLERANCE);
    assert!(lines_equivalent(
        "  Subscription-State: active;expires=598",
        "  Subscription-State: active;expires=600"
    ));
    assert!(!lines_equivalent(
        "  Subscription-State: active;expires=590",
        "  Subscription-State: active;expires=600"
    ));
    assert!(!lines_equivalent_within("  x expires=584", "  x expires=600", 15));
    assert!(lines_equivalent_within("  x expires=585", "  x expires=600", 15));
    assert!(lines_equivalent("100 <A1> call-info left=-1 terminated", "100 <A1> call-info left=0 terminated"));
    assert!(!lines_equivalent("  Expires: 598", "  Expires: 600"), "only expires=/left= are tolerant");
    assert!(!lines_equivalent("a expires=1", "b expires=1"));
    assert!(equivalent("x\ny\n", "x\ny\n").is_ok());
    let d = equivalent("x\ny\nz\n", "x\nY\nz\n").expect_err("differs");
    assert!(d.contains("- y") && d.contains("+ Y"), "{d}");
    assert_eq!(
        mask_known_deviations("  Subscription-State: active;expires=30\n  Subscription-State: terminated\n"),
        "  Subscription-State: active\n  Subscription-State: terminated\n"
    );
}
