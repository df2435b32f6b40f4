//! Kamailio routing config for SCA tests, modelled on the C module's
//! doc/sca.cfg (minus auth/usrloc: test UAs put the callee's contact in the
//! Request-URI, and the SCA AoR is taken from To/From).
//!
//! Placeholders filled by the harness: `{{PORT}}`, `{{LISTEN_IP}}`,
//! `{{CTL_SOCKET}}`, `{{DB_URL}}`, `{{MPATH}}`, `{{SCA_MODULE}}`,
//! `{{SCA_LOADMODULE}}`, `{{DEBUG}}`, `{{CHILDREN}}`, `{{RUN_DIR}}`; by
//! [`sca_opts`]:
//! `{{SCA_MODPARAMS}}` (extra modparam lines, default none).

use super::kamailio::{KamailioOpts, ScaModule};

pub const SCA_CFG: &str = r#"#!KAMAILIO
# SCA test config (rendered by tests/common/kamailio.rs)

debug={{DEBUG}}
log_stderror=yes
log_prefix="{$mt $hdr(CSeq) $ci} "
fork=yes
children={{CHILDREN}}
# see README, known issues
exit_timeout=8
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no

listen=udp:{{LISTEN_IP}}:{{PORT}}
# requests to sip:user@127.0.0.1 (no port) are for us too
alias=udp:127.0.0.1:5060

mpath="{{MPATH}}"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "maxfwd.so"
loadmodule "ctl.so"
loadmodule "db_sqlite.so"
loadmodule "{{SCA_LOADMODULE}}"

modparam("ctl", "binrpc", "{{CTL_SOCKET}}")

modparam("tm", "failure_reply_mode", 3)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 0)

modparam("{{SCA_MODULE}}", "db_url", "{{DB_URL}}")
{{SCA_MODPARAMS}}

request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}

	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			route(SCA);
			t_relay();
		}
		exit;
	}

	if (has_totag()) {
		route(WITHINDLG);
		exit;
	}

	# absorb retransmissions of initial requests
	t_check_trans();

	if (is_method("SUBSCRIBE")) {
		# exits for call-info / line-seize
		route(SCA);
		sl_send_reply("489", "Bad Event");
		exit;
	}

	remove_hf("Route");
	if (is_method("INVITE")) {
		record_route();
	}

	if (uri == myself) {
		# An SCA phone retrieving a held call sends an INVITE to the shared
		# AoR with a Call-Info header; sca_call_info_update() rewrites the
		# Request-URI to the held callee and adds a Replaces header.
		# (doc/sca.cfg gets there after lookup("location"); this config has
		# no usrloc, so anything still for us afterwards gets the 404.)
		if (is_method("INVITE") && is_present_hf("Call-Info")) {
			t_on_reply("MANAGE_REPLY");
			t_on_failure("MANAGE_FAILURE");
			route(SCA);
			if (!(uri == myself)) {
				if (!t_relay()) {
					sl_reply_error();
				}
				exit;
			}
		}
		sl_send_reply("404", "Not Found");
		exit;
	}

	route(RELAY);
}

route[WITHINDLG] {
	if (loose_route()) {
		route(RELAY);
		exit;
	}
	if (is_method("SUBSCRIBE") && uri == myself) {
		# in-dialog subscribe requests
		route(SCA);
		sl_send_reply("489", "Bad Event");
		exit;
	}
	if (is_method("ACK")) {
		if (t_check_trans()) {
			# stateful ACK, e.g. after a 487
			t_relay();
		}
		exit;
	}
	sl_send_reply("404", "Not here");
}

route[RELAY] {
	if (is_method("INVITE|BYE|SUBSCRIBE|PRACK|REFER|UPDATE")) {
		if (!t_is_set("onreply_route")) t_on_reply("MANAGE_REPLY");
	}
	if (is_method("INVITE")) {
		if (!t_is_set("failure_route")) t_on_failure("MANAGE_FAILURE");
	}

	route(SCA);

	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}

# Shared Call Appearances handling
route[SCA] {
	if (is_method("SUBSCRIBE")) {
		if ($hdr(Event) == "call-info" || $hdr(Event) == "line-seize") {
			sca_handle_subscribe();
			exit;
		}
		return;
	}

	if (!is_method("BYE|CANCEL|INVITE|PRACK|REFER")) {
		return;
	}

	# updates appearance state and NOTIFYs SCA subscribers as necessary;
	# it also removes the Call-Info header, if found.
	sca_call_info_update();
	return;
}

onreply_route[MANAGE_REPLY] {
	if (status =~ "[456][0-9][0-9]") {
		# don't update SCA state here, since there may be failure route
		# processing; update state in the failure route instead.
		return;
	}
	route(SCA);
}

failure_route[MANAGE_FAILURE] {
	if (t_is_canceled()) {
		exit;
	}
	route(SCA);
}
"#;

/// Options for [`SCA_CFG`] with `module`, a DB, and no extra modparams.
pub fn sca_opts(module: ScaModule) -> KamailioOpts {
    KamailioOpts::new(SCA_CFG, module).var("SCA_MODPARAMS", "")
}

/// `modparam("<module>", "<name>", <value>)` line for `{{SCA_MODPARAMS}}`;
/// `value` is inserted as written (quote strings yourself).
pub fn sca_modparam(module: &ScaModule, name: &str, value: &str) -> String {
    format!("modparam(\"{}\", \"{name}\", {value})\n", module.name())
}
