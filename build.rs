//! Build script of sca_rs: the `kamailio-sys` layer.
//!
//! - finds the Kamailio headers fetched by `make setup` (scripts/setup.sh)
//!   and the compile defines derived from the same source's Makefiles;
//! - refuses to build when they are missing or belong to another Kamailio
//!   than the one installed (`kamailio -v`);
//! - compiles the C shim (`shim/shim.c`) with exactly those defines, so the
//!   module's version and compile-flag strings match the Debian binary;
//! - checks the compile-flag string against `kamailio -v` right here, so a
//!   mismatch is a build error rather than a module that Kamailio rejects;
//! - runs bindgen over `shim/wrapper.h` with the same defines.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fail(msg: &str) -> ! {
    eprintln!("\nsca_rs build error: {msg}\n");
    panic!("sca_rs build error: {msg}");
}

fn read(path: &Path, what: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| {
        fail(&format!(
            "cannot read {what} at {}: {e}.\n\
             The Kamailio headers are fetched by the project's set-up: run `make setup` \
             (as root) or set SCA_RS_KAMAILIO_HEADERS to a directory made by scripts/setup.sh.",
            path.display()
        ))
    })
}

/// `kamailio -v` of the installed binary (KAMAILIO_BIN overrides the name).
fn kamailio_v() -> String {
    let bin = env::var("KAMAILIO_BIN").unwrap_or_else(|_| "kamailio".into());
    let out = Command::new(&bin).arg("-v").output().unwrap_or_else(|e| {
        fail(&format!(
            "cannot run `{bin} -v` ({e}): the module is built for the installed Kamailio; \
             run `make setup` to install it"
        ))
    });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The string literal(s) following `marker` in preprocessor output,
/// concatenated as the C compiler would.
fn literal_after(expanded: &str, marker: &str) -> Option<String> {
    let start = expanded.find(marker)? + marker.len();
    let rest = &expanded[start..];
    let end = rest.find(';')?;
    let mut out = String::new();
    let mut in_str = false;
    // skip the preprocessor's own `# line "file"` markers
    let text: String = rest[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for c in text.chars() {
        match (in_str, c) {
            (false, '"') => in_str = true,
            (true, '"') => in_str = false,
            (true, c) => out.push(c),
            _ => {}
        }
    }
    Some(out)
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let hdr = env::var("SCA_RS_KAMAILIO_HEADERS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("kamailio-headers"));

    println!("cargo:rerun-if-env-changed=SCA_RS_KAMAILIO_HEADERS");
    println!("cargo:rerun-if-env-changed=KAMAILIO_BIN");
    println!("cargo:rerun-if-changed=shim");
    println!("cargo:rerun-if-changed={}", hdr.join("VERSION").display());
    println!("cargo:rerun-if-changed={}", hdr.join("cdefs.txt").display());

    // ---- the headers must be those of the installed Kamailio
    let hdr_version = read(&hdr.join("VERSION"), "the Kamailio headers' VERSION");
    let hdr_version = hdr_version.trim();
    let upstream = hdr_version.split('-').next().unwrap_or(hdr_version);
    let kv = kamailio_v();
    let installed = kv
        .lines()
        .find_map(|l| l.strip_prefix("version: kamailio "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| fail(&format!("cannot read the version from `kamailio -v`:\n{kv}")));
    if installed != upstream {
        fail(&format!(
            "kamailio-headers/ are from Kamailio {hdr_version} but the installed kamailio is \
             {installed}; run `make setup` again to fetch matching headers"
        ));
    }
    let flags_line = kv
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or_else(|| fail("no `flags:` line in `kamailio -v`"))
        .trim_end()
        .to_string();

    let defs: Vec<String> = read(&hdr.join("cdefs.txt"), "the derived compile defines")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let versionval: u32 = defs
        .iter()
        .find_map(|d| d.strip_prefix("-DVERSIONVAL="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fail("kamailio-headers/cdefs.txt holds no -DVERSIONVAL: run `make setup` again"));
    // Version cfgs for the few places where Rust code differs between
    // Kamailio versions (layouts and static-inline APIs are handled in the
    // shim with `#if VERSIONVAL` against the target's own headers).
    for (cfg, min) in [("kamailio_ge_5_8", 5_008_000), ("kamailio_ge_6_0", 6_000_000), ("kamailio_ge_6_1", 6_001_000)] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if versionval >= min {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
    println!("cargo:rustc-env=SCA_RS_KAMAILIO_VERSIONVAL={versionval}");

    let shim = root.join("shim");
    let mut cc = cc::Build::new();
    // -isystem: Kamailio's own headers warn under -Wextra; our shim must not.
    cc.flag("-isystem").flag(hdr.to_string_lossy().as_ref()).include(&shim).define("MOD_NAME", "\"sca_rs\"");
    for d in &defs {
        cc.flag(d);
    }
    cc.flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-sign-compare")
        .flag_if_supported("-Wno-missing-field-initializers");

    // ---- the module's compile flags must equal the binary's, byte for byte.
    // Read from the shim itself as the preprocessor expands it: the string
    // depends on the headers included before it (6.1's memory headers add
    // DBG_*_MALLOC), so a probe of ver_defs.h alone can differ from what
    // the module carries.
    let expanded = cc.clone().file(shim.join("shim.c")).expand();
    let expanded = String::from_utf8_lossy(&expanded);
    let ours = literal_after(&expanded, "sca_rs_compile_flags[] =")
        .unwrap_or_else(|| fail("cannot expand SER_COMPILE_FLAGS in shim/shim.c with the derived defines"));
    // The loader compares with SER_COMPILE_FLAGS as expanded in its
    // sr_module.c, and every module Debian ships for that Kamailio carries
    // exactly that string. `kamailio -v` prints it as expanded in ver.c,
    // which is the same up to 6.0; in 6.1 ver.c includes the memory headers
    // first and adds DBG_QM_MALLOC, DBG_F_MALLOC, DBG_TLSF_MALLOC that no
    // module has. So: the string of the target's own sl.so when there is
    // one (what the loader demonstrably accepts), else the -v line.
    let reference_module = env::var("KAMAILIO_MPATH")
        .ok()
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("dpkg").args(["-L", "kamailio"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.ends_with("/kamailio/modules"))
                .map(PathBuf::from)
        })
        .map(|d| d.join("sl.so"))
        .filter(|p| p.exists());
    println!("cargo:rerun-if-env-changed=KAMAILIO_MPATH");
    match &reference_module {
        Some(so) => {
            let bytes = fs::read(so).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", so.display())));
            let needle = [&b"\0"[..], ours.as_bytes(), &b"\0"[..]].concat();
            if !bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                let theirs: Vec<String> = bytes
                    .split(|b| *b == 0)
                    .filter(|s| s.starts_with(b"USE_TCP") || s.starts_with(b"USE_"))
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .filter(|s| s.contains(", "))
                    .collect();
                fail(&format!(
                    "the derived defines give other compile flags than the modules of the target kamailio:\n  \
                     module:   {ours}\n  {}: {}\n  kamailio -v: {flags_line}\n\
                     Kamailio would refuse to load the module. Run `make setup` again.",
                    so.display(),
                    theirs.join(" | ")
                ));
            }
        }
        None if ours != flags_line => fail(&format!(
            "the derived defines give other compile flags than the installed kamailio:\n  \
             module:   {ours}\n  kamailio: {flags_line}\n\
             Kamailio would refuse to load the module. Run `make setup` again."
        )),
        None => {}
    }
    let version = literal_after(&expanded, "sca_rs_full_version[] =").unwrap_or_default();
    println!("cargo:rustc-env=SCA_RS_KAMAILIO_VERSION={version}");

    cc.file(shim.join("shim.c")).compile("sca_rs_shim");

    // ---- libsrdb1: Kamailio's generic DB API. Up to 5.8 (the Makefile
    // build) it lives in a shared library that modules link (as Debian's
    // sca.so does), found next to the installed kamailio's libraries;
    // RUNPATH lets dlopen find it. Kamailio 6's CMake build links it into
    // the kamailio binary itself: nothing to link then.
    let srdb_dir = env::var("SCA_RS_KAMAILIO_LIBDIR").map(PathBuf::from).ok().or_else(|| {
        let out = Command::new("dpkg").args(["-L", "kamailio"]).output();
        out.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.ends_with("/libsrdb1.so.1"))
                .and_then(|l| Path::new(l).parent().map(Path::to_path_buf))
        })
    });
    match srdb_dir {
        Some(dir) if dir.join("libsrdb1.so.1").exists() => {
            // link against the soname itself: the unversioned .so symlink may be absent
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-arg-cdylib=-l:libsrdb1.so.1");
            // RUNPATH as the loader sees it where Kamailio runs: for another
            // Debian suite (scripts/suite.sh) the library is linked from that
            // suite's root but found at the suite's usual path inside it
            let runpath = env::var("SCA_RS_KAMAILIO_RUNPATH").unwrap_or_else(|_| dir.display().to_string());
            println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,{runpath}");
        }
        _ if versionval >= 6_000_000 => {}
        Some(dir) => fail(&format!("no libsrdb1.so.1 in {}", dir.display())),
        None => fail("cannot find libsrdb1.so.1 of the installed kamailio (dpkg -L kamailio)"),
    }
    println!("cargo:rerun-if-env-changed=SCA_RS_KAMAILIO_LIBDIR");
    println!("cargo:rerun-if-env-changed=SCA_RS_KAMAILIO_RUNPATH");

    // ---- bindings
    let mut b = bindgen::Builder::default()
        .header(shim.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", hdr.display()))
        .clang_arg(format!("-I{}", shim.display()))
        .clang_arg("-DMOD_NAME=\"sca_rs\"")
        .use_core()
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for d in defs.iter().filter(|d| d.starts_with("-D")) {
        b = b.clang_arg(d);
    }
    for t in [
        "sip_msg", "hdr_field", "to_body", "to_param", "contact_body", "contact_t", "rpc_t",
        "rpc_export_t", "rpc_export", "module_exports", "cmd_export_t", "param_export_t",
        "sr_kemi_t", "sr_kemi_val_t", "str", "gen_lock_t", "sca_rs_dialog", "sip_uri",
        "event_t", "rr_t", "action_u_t", "hdr_types_t", "request_method",
        "db_func_t", "db1_con_t", "db1_res_t", "db_id", "db_pooling_t", "db_val_t", "db_row_t", "db_type_t", "db_key_t", "db_op_t",
        // keepalive: the API of modules/keepalive/api.h
        "keepalive_api", "keepalive_api_t", "ka_dest_t", "_ka_dest", "ka_statechanged_f", "ka_response_f",
        "bind_keepalive_f",
    ] {
        b = b.allowlist_type(t);
    }
    // keepalive: response callbacks get tm's tmcb_params, passed through untouched
    b = b.opaque_type("tmcb_params");
    for f in [
        "parse_headers", "parse_from_header", "parse_to_header", "parse_uri", "parse_contact",
        "parse_event", "add_lump_rpl2", "register_timer", "sr_kemi_modules_add",
        "rpc_register_array", "get_ticks", "sca_rs_.*", "find_export", "parse_sip_msg_uri",
        "parse_rr_body", "free_rr", "get_body", "parse_to", "get_ticks_raw",
        "db_bind_mod", "db_check_table_version", "db_table_version", "fork_basic_timer",
        "register_basic_timers", "new_db_id", "free_db_id",
        "fixup_igp_null", "fixup_spve_null", "fixup_free_igp_null", "fixup_free_spve_null",
        // keepalive
        "fixup_spve_all", "fixup_free_spve_all",

    ] {
        b = b.allowlist_function(f);
    }
    for v in [
        "sca_rs_.*", "process_no", "my_pid", "server_id", "(REQUEST|FAILURE|TM_ONREPLY|BRANCH|ONSEND|CORE_ONREPLY|ONREPLY|EVENT|ANY|LOCAL|BRANCH_FAILURE)_ROUTE",
        "PARAM_(STRING|INT|STR|VAR)", "SR_KEMIP_(NONE|INT|STR)", "LUMP_RPL_HDR", "PROC_(MAIN|TIMER|RPC|INIT|SIPINIT|TCP_MAIN)", "PARSE_OK", "DB_CAP_.*", "OP_(EQ|LT|LEQ|GT|GEQ|NEQ)",
    ] {
        b = b.allowlist_var(v);
    }
    let bindings = b
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen failed over shim/wrapper.h: {e}")));
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));
}
