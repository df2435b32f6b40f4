//! The module's link-level contract with Debian's kamailio binary: every
//! symbol sca_rs.so needs from its host is exported by kamailio or by the
//! modules it requires (tm, sl), and the loader's entry points are there.
//! A symbol that only exists as a macro in Kamailio 5.6 headers (e.g.
//! `fixup_get_svalue`) would otherwise surface as "undefined symbol" at
//! `loadmodule` time only.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::kamailio::{kamailio_executable, kamailio_file, mpath, ScaModule};

fn nm(args: &[&str], file: &str) -> Vec<String> {
    let out = Command::new("nm").args(args).arg(file).output().expect("run nm (binutils)");
    assert!(out.status.success(), "nm {args:?} {file}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

#[test]
fn every_undefined_symbol_is_provided_by_kamailio_tm_or_sl() {
    let module = ScaModule::Rust.loadmodule_path();
    let module = module.to_str().expect("utf-8 path");
    let mut provided: HashSet<String> = HashSet::new();
    let mut providers = vec![kamailio_executable().display().to_string()];
    for m in ["tm.so", "sl.so"] {
        providers.push(format!("{}/{m}", mpath()));
    }
    // and the module's own NEEDED libraries that its RUNPATH finds
    // (libsrdb1), as the dynamic loader resolves them
    let dynamic = Command::new("readelf").args(["-d", module]).output().expect("run readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout).into_owned();
    let bracketed = |l: &str| l.split('[').nth(1).and_then(|r| r.split(']').next()).map(String::from);
    let runpaths: Vec<String> = dynamic
        .lines()
        .filter(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .filter_map(bracketed)
        .flat_map(|p| p.split(':').map(String::from).collect::<Vec<_>>())
        .collect();
    for lib in dynamic.lines().filter(|l| l.contains("(NEEDED)")).filter_map(bracketed) {
        if let Some(found) = runpaths
            .iter()
            .map(|d| kamailio_file(d).join(&lib))
            .find(|p| p.exists())
        {
            providers.push(found.display().to_string());
        }
    }
    for p in &providers {
        for l in nm(&["-D", "--defined-only"], p) {
            if let Some(name) = l.split_whitespace().nth(2) {
                provided.insert(name.to_string());
            }
        }
    }
    let mut missing = Vec::new();
    for l in nm(&["-D", "--undefined-only"], module) {
        let mut f = l.split_whitespace();
        let (kind, name) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        // versioned symbols come from libc/libgcc; weak ones may stay unresolved
        if name.contains('@') || kind == "w" || kind == "v" {
            continue;
        }
        if !provided.contains(name) {
            missing.push(name.to_string());
        }
    }
    assert!(missing.is_empty(), "{module} needs symbols no host provides: {missing:?}");
}

#[test]
fn loader_entry_points_are_exported() {
    let module = ScaModule::Rust.loadmodule_path();
    let defined: HashSet<String> = nm(&["-D", "--defined-only"], module.to_str().expect("utf-8 path"))
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect();
    for s in ["exports", "module_version", "module_flags", "mod_register"] {
        assert!(defined.contains(s), "{s} is not exported by {}", module.display());
    }
}
