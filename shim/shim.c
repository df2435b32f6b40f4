/* sca_rs C shim. See shim.h. GPL-2.0-or-later. */
#include <string.h>

#include "core/sr_module.h"
#include "core/ver_defs.h"
#include "core/dprint.h"
#include "core/mem/shm_mem.h"
#include "core/mem/mem.h"
#include "core/locking.h"
#include "core/parser/msg_parser.h"
#include "core/parser/parse_rr.h"
#include "core/data_lump.h"
#include "core/dset.h"
#include "core/mod_fix.h"
#include "core/usr_avp.h"
#include "core/pvar.h"
#include "modules/sl/sl.h"
#include "modules/tm/tm_load.h"

#include "shim.h"

/* Copy a str handed over from Rust field by field, into a zeroed one: a
 * struct assignment would also copy its padding bytes, which Rust leaves
 * uninitialised, and valgrind has seen tm branch on bytes copied that way
 * (docs/reliability.md). */
static void sca_rs_str_from_rust(str *dst, const str *src)
{
	memset(dst, 0, sizeof(*dst));
	if(src != NULL) {
		dst->s = src->s;
		dst->len = src->len;
	}
}

const char sca_rs_full_version[] = SER_FULL_VERSION;
const char sca_rs_compile_flags[] = SER_COMPILE_FLAGS;

/* ------------------------------------------------------------ logging */

int sca_rs_log_enabled(int level)
{
	return get_debug_level(LOG_MNAME, LOG_MNAME_LEN) >= level;
}

void sca_rs_log(int level, const char *prefix, const char *func,
		const char *msg, int len)
{
	LOG_FX(DEFAULT_FACILITY, level, NULL, prefix, func, "%.*s\n", len, msg);
}

/* ------------------------------------------------------------ memory */

void *sca_rs_shm_malloc(size_t size)
{
	return shm_malloc(size);
}

void sca_rs_shm_free(void *p)
{
	shm_free(p);
}

unsigned long sca_rs_shm_available(void)
{
	return shm_available_safe();
}

unsigned long sca_rs_shm_total(void)
{
	struct mem_info mi;

	memset(&mi, 0, sizeof(mi));
	shm_info(&mi);
	return mi.total_size;
}

void *sca_rs_pkg_malloc(size_t size)
{
	return pkg_malloc(size);
}

void sca_rs_pkg_free(void *p)
{
	pkg_free(p);
}

/* ------------------------------------------------------------ locks */

size_t sca_rs_gen_lock_size(void)
{
	return sizeof(gen_lock_t);
}

int sca_rs_lock_init(gen_lock_t *l)
{
	return lock_init(l) == NULL ? -1 : 0;
}

void sca_rs_lock_get(gen_lock_t *l)
{
	lock_get(l);
}

int sca_rs_lock_try(gen_lock_t *l)
{
	return lock_try(l) == 0 ? 0 : -1;
}

void sca_rs_lock_release(gen_lock_t *l)
{
	lock_release(l);
}

void sca_rs_lock_destroy(gen_lock_t *l)
{
	lock_destroy(l);
}

/* ------------------------------------------------------------ sl */

static sl_api_t sca_rs_slb;
static int sca_rs_sl_bound;

int sca_rs_sl_bind(void)
{
	if(sl_load_api(&sca_rs_slb) != 0)
		return -1;
	sca_rs_sl_bound = 1;
	return 0;
}

int sca_rs_sl_reply(struct sip_msg *msg, int code, const str *reason)
{
	str r;

	if(!sca_rs_sl_bound)
		return -1;
	sca_rs_str_from_rust(&r, reason);
	return sca_rs_slb.freply(msg, code, &r);
}

int sca_rs_sl_get_totag(struct sip_msg *msg, str *totag)
{
	if(!sca_rs_sl_bound)
		return -1;
	return sca_rs_slb.get_reply_totag(msg, totag);
}

/* ------------------------------------------------------------ tm */

static struct tm_binds sca_rs_tmb;
static int sca_rs_tm_bound;

int sca_rs_tm_bind(void)
{
	if(load_tm_api(&sca_rs_tmb) != 0)
		return -1;
	sca_rs_tm_bound = 1;
	return 0;
}

static void sca_rs_tm_cb(struct cell *t, int type, struct tmcb_params *ps)
{
	int status = 0;

	if(ps == NULL)
		return;
	if(ps->rpl == FAKED_REPLY)
		status = ps->code > 0 ? ps->code : 408;
	else if(ps->rpl != NULL)
		status = ps->rpl->first_line.u.reply.statuscode;
	else
		status = ps->code;
	sca_rs_tm_reply(ps->param ? *ps->param : NULL, status);
}

int sca_rs_tm_request_within(const str *method, const str *headers,
		const str *body, const struct sca_rs_dialog *d, void *cb_param)
{
	uac_req_t req;
	dlg_t dlg;
	str m, h, b;
	int rc;

	if(!sca_rs_tm_bound)
		return -1;
	memset(&dlg, 0, sizeof(dlg));
	sca_rs_str_from_rust(&dlg.id.call_id, &d->call_id);
	sca_rs_str_from_rust(&dlg.id.loc_tag, &d->local_tag);
	sca_rs_str_from_rust(&dlg.id.rem_tag, &d->remote_tag);
	dlg.loc_seq.value = d->local_cseq;
	dlg.loc_seq.is_set = 1;
	sca_rs_str_from_rust(&dlg.rem_target, &d->remote_target);
	sca_rs_str_from_rust(&dlg.loc_uri, &d->local_uri);
	sca_rs_str_from_rust(&dlg.rem_uri, &d->remote_uri);
	dlg.state = DLG_CONFIRMED;
	sca_rs_str_from_rust(&m, method);
	sca_rs_str_from_rust(&h, headers);
	sca_rs_str_from_rust(&b, body);
	if(d->route_set.len > 0) {
		/* parse_rr_body wants a writable-looking pointer; it does not
		 * modify the buffer */
		if(parse_rr_body(d->route_set.s, d->route_set.len, &dlg.route_set)
				< 0) {
			LM_ERR("cannot parse the stored route set '%.*s'\n",
					d->route_set.len, d->route_set.s);
			return -1;
		}
	}
	set_uac_req(&req, &m, headers ? &h : NULL, body ? &b : NULL, &dlg,
			TMCB_LOCAL_COMPLETED, sca_rs_tm_cb, cb_param);
	rc = sca_rs_tmb.t_request_within(&req);
	if(dlg.route_set)
		free_rr(&dlg.route_set);
	return rc;
}

/* ------------------------------------------------------------ call-state hooks */

static void sca_rs_ack_cb(struct cell *t, int type, struct tmcb_params *ps)
{
	if((type & TMCB_E2EACK_IN) && ps != NULL && ps->req != NULL)
		sca_rs_on_e2e_ack(ps->req);
}

static void sca_rs_response_ready_cb(
		struct cell *t, int type, struct tmcb_params *ps)
{
	if((type & TMCB_RESPONSE_READY) && ps != NULL && ps->req != NULL)
		sca_rs_on_response_ready(ps->req, ps->code);
}

int sca_rs_tm_register_invite_cbs(struct sip_msg *req, int caller_shared)
{
	if(!sca_rs_tm_bound)
		return -1;
	if(sca_rs_tmb.register_tmcb(
			   req, NULL, TMCB_E2EACK_IN, sca_rs_ack_cb, NULL, NULL)
			< 0)
		return -1;
	if(caller_shared
			&& sca_rs_tmb.register_tmcb(req, NULL, TMCB_RESPONSE_READY,
					   sca_rs_response_ready_cb, NULL, NULL)
					   < 0)
		return -1;
	return 0;
}

static void sca_rs_sl_cb(sl_cbp_t *p)
{
	if(p != NULL && p->type == SLCB_REPLY_READY && p->req != NULL)
		sca_rs_on_sl_reply(p->req, p->code);
}

int sca_rs_sl_register_reply_cb(void)
{
	sl_cbelem_t cbe;

	if(!sca_rs_sl_bound)
		return -1;
	memset(&cbe, 0, sizeof(cbe));
	cbe.type = SLCB_REPLY_READY;
	cbe.cbf = (sl_cbf_f)sca_rs_sl_cb;
	return sca_rs_slb.register_cb(&cbe) < 0 ? -1 : 0;
}

/* ------------------------------------------------------------ lumps */

int sca_rs_remove_headers(struct sip_msg *msg, int hdr_type)
{
	struct hdr_field *hf;
	int n = 0;

	if(parse_headers(msg, HDR_EOH_F, 0) < 0)
		return -1;
	for(hf = msg->headers; hf; hf = hf->next) {
		if(hf->type != hdr_type)
			continue;
		if(del_lump(msg, hf->name.s - msg->buf, hf->len, hf->type) == NULL)
			return -1;
		n++;
	}
	return n;
}

int sca_rs_add_header(struct sip_msg *msg, const char *hdr, int len)
{
	struct lump *anchor;
	char *copy;

	if(parse_headers(msg, HDR_EOH_F, 0) < 0 || msg->eoh == NULL)
		return -1;
	anchor = anchor_lump(msg, msg->eoh - msg->buf, 0, HDR_OTHER_T);
	if(anchor == NULL)
		return -1;
	copy = pkg_malloc(len);
	if(copy == NULL)
		return -1;
	memcpy(copy, hdr, len);
	if(insert_new_lump_before(anchor, copy, len, HDR_OTHER_T) == NULL) {
		pkg_free(copy);
		return -1;
	}
	return 0;
}

int sca_rs_rewrite_ruri(struct sip_msg *msg, const str *uri, char **detached)
{
	str u;
	str old;

	sca_rs_str_from_rust(&u, uri);
	*detached = NULL;
	/* drop other branches first: clear_branches() also marks the R-URI
	 * as consumed, and rewrite_uri() makes it the one new branch again */
	clear_branches();
	/* rewrite_uri() frees new_uri, or overwrites it in place when it is
	 * long enough; a slice of it may still be alive in Rust (SAFETY.md I2):
	 * detach it, so that rewrite_uri() allocates a new buffer */
	old = msg->new_uri;
	msg->new_uri.s = NULL;
	msg->new_uri.len = 0;
	if(rewrite_uri(msg, &u) < 0) {
		msg->new_uri = old;
		return -1;
	}
	*detached = old.s;
	ruri_mark_new();
	return 0;
}

int sca_rs_isbflagset(int flag)
{
	return isbflagset(0, (flag_t)flag) == 1;
}

int sca_rs_fixup_get_ivalue(struct sip_msg *msg, void *gp, int *val)
{
	return fixup_get_ivalue(msg, (gparam_p)gp, val);
}

int sca_rs_fixup_get_svalue(struct sip_msg *msg, void *gp, str *val)
{
	return fixup_get_svalue(msg, (gparam_p)gp, val);
}

/* ------------------------------------------------------------ AVPs */

static avp_name_t sca_rs_avp_name(const struct sca_rs_avp *a)
{
	avp_name_t n;

	memset(&n, 0, sizeof(n));
	if(a->type & AVP_NAME_STR)
		n.s = a->name_s;
	else
		n.n = a->name_n;
	return n;
}

int sca_rs_avp_parse(const str *spec, struct sca_rs_avp *out)
{
	pv_spec_t *pv;
	avp_name_t name;
	/* the flags argument's type changed: unsigned short * up to 5.8,
	 * avp_flags_t * (unsigned int) since 6.0 */
#if VERSIONVAL >= 6000000
	avp_flags_t flags = 0;
#else
	unsigned short flags = 0;
#endif
	str sp;

	memset(out, 0, sizeof(*out));
	sca_rs_str_from_rust(&sp, spec);
	pv = pv_cache_get(&sp);
	if(pv == NULL || pv->type != PVT_AVP)
		return -1;
	if(pv_get_avp_name(0, &pv->pvp, &name, &flags) != 0)
		return -1;
	out->type = flags;
	if(flags & AVP_NAME_STR)
		out->name_s = name.s; /* the pv cache keeps the name */
	else
		out->name_n = name.n;
	out->set = 1;
	return 0;
}

int sca_rs_avp_get(const struct sca_rs_avp *a, str *val)
{
	avp_value_t v;

	if(!a->set)
		return -1;
	if(search_first_avp(a->type | AVP_VAL_STR, sca_rs_avp_name(a), &v, 0)
			== NULL)
		return -1;
	*val = v.s;
	return 0;
}

void sca_rs_avp_del(const struct sca_rs_avp *a)
{
	if(a->set)
		delete_avp(a->type | AVP_VAL_STR, sca_rs_avp_name(a));
}

int sca_rs_avp_put(const struct sca_rs_avp *a, const str *val)
{
	avp_value_t v;

	if(!a->set)
		return -1;
	sca_rs_avp_del(a);
	memset(&v, 0, sizeof(v));
	sca_rs_str_from_rust(&v.s, val);
	return add_avp(a->type | AVP_VAL_STR, sca_rs_avp_name(a), v);
}

/* ------------------------------------------------------------ keepalive */
/* Destination monitoring (replaces the C keepalive module). The logic is
 * in Rust (src/keepalive/); here only what needs Kamailio's macros and
 * static-inline helpers: OPTIONS through tm, the tick timer, event routes
 * on a faked message, and a try-lock. */
#include "core/route.h"
#include "core/action.h"
#include "core/fmsg.h"
#include "core/timer.h"
#include "core/timer_ticks.h"
#include "core/forward.h"
#include "core/parser/parse_uri.h"

static void sca_rs_ka_tm_cb(struct cell *t, int type, struct tmcb_params *ps)
{
	int code;
	int local;

	if(ps == NULL)
		return;
	if(ps->rpl == FAKED_REPLY) {
		/* tm ended it: a timeout (408) or another local error */
		code = ps->code > 0 ? ps->code : 408;
		local = 1;
	} else if(ps->rpl != NULL) {
		code = ps->rpl->first_line.u.reply.statuscode;
		local = 0;
	} else {
		code = ps->code > 0 ? ps->code : 500;
		local = 1;
	}
	sca_rs_ka_on_reply(ps->param ? *ps->param : NULL, code, local, ps);
}

/* Send one OPTIONS ping to uri, with extra headers hdrs (or NULL) via
 * next_hop (or none). param is an integer (destination id and ping
 * number), never dereferenced and not freed by tm. */
static int sca_rs_ka_send(const str *uri, const str *from, str *hdrs,
		const str *next_hop, void *param)
{
	uac_req_t uac_r;
	str method = str_init("OPTIONS");
	str ruri, to, fromc, hop;

	if(!sca_rs_tm_bound)
		return -1;
	sca_rs_str_from_rust(&ruri, uri);
	sca_rs_str_from_rust(&to, uri);
	sca_rs_str_from_rust(&fromc, from);
	sca_rs_str_from_rust(&hop, next_hop);
	set_uac_req(&uac_r, &method, hdrs, 0, 0, TMCB_LOCAL_COMPLETED,
			sca_rs_ka_tm_cb, param);
	/* tm copies everything it keeps before returning */
	return sca_rs_tmb.t_request(&uac_r, &ruri, &to, &fromc, &hop);
}

int sca_rs_ka_ping(const str *uri, const str *from, void *param)
{
	return sca_rs_ka_send(uri, from, NULL, NULL, param);
}

/* longest Route header a routed ping carries */
#define SCA_RS_ROUTE_HDR_MAX 4096

int sca_rs_ka_ping_routed(
		const str *uri, const str *from, const str *route_set, void *param)
{
	str next_hop, hdrs;
	rr_t *head = NULL;
	rr_t *rr;
	struct sip_uri pu;
	char buf[SCA_RS_ROUTE_HDR_MAX];
	int len;
	int rc;

	if(route_set == NULL || route_set->len <= 0)
		return sca_rs_ka_ping(uri, from, param);
	if(parse_rr_body(route_set->s, route_set->len, &head) < 0) {
		LM_ERR("cannot parse the stored route set '%.*s'\n", route_set->len,
				route_set->s);
		return -1;
	}
	/* entries that are this server would be consumed by loose routing
	 * here: skip them (what is left is the path to the phone) */
	for(rr = head; rr != NULL; rr = rr->next) {
		memset(&pu, 0, sizeof(pu));
		if(parse_uri(rr->nameaddr.uri.s, rr->nameaddr.uri.len, &pu) < 0)
			break;
		if(check_self(&pu.host, pu.port_no ? pu.port_no : SIP_PORT, pu.proto)
				!= 1)
			break;
	}
	if(rr == NULL) {
		free_rr(&head);
		return sca_rs_ka_ping(uri, from, param);
	}
	next_hop = rr->nameaddr.uri;
	memcpy(buf, "Route: ", 7);
	len = 7;
	for(; rr != NULL; rr = rr->next) {
		if(len + rr->len + 4 > SCA_RS_ROUTE_HDR_MAX) {
			LM_ERR("route set too long to ping over (%d bytes)\n",
					route_set->len);
			free_rr(&head);
			return -1;
		}
		if(len > 7) {
			buf[len++] = ',';
			buf[len++] = ' ';
		}
		memcpy(buf + len, rr->nameaddr.name.s, rr->len);
		len += rr->len;
	}
	buf[len++] = '\r';
	buf[len++] = '\n';
	memset(&hdrs, 0, sizeof(hdrs));
	hdrs.s = buf;
	hdrs.len = len;
	rc = sca_rs_ka_send(uri, from, &hdrs, &next_hop, param);
	free_rr(&head);
	return rc;
}

static ticks_t sca_rs_ka_timer_cb(ticks_t ticks, struct timer_ln *tl, void *p)
{
	unsigned int ms = sca_rs_ka_on_tick();
	ticks_t next = MS_TO_TICKS(ms);

	return next > 0 ? next : 1;
}

int sca_rs_ka_timer_start(unsigned int first_ms)
{
	struct timer_ln *tl;

	tl = timer_alloc();
	if(tl == NULL)
		return -1;
	/* flags 0: runs in the slow timer process, like the C module's */
	timer_init(tl, sca_rs_ka_timer_cb, NULL, 0);
	if(timer_add(tl, MS_TO_TICKS(first_ms)) < 0) {
		timer_free(tl);
		return -1;
	}
	return 0;
}

int sca_rs_ka_route_lookup(const char *name)
{
	int rt;

	rt = route_lookup(&event_rt, (char *)name);
	if(rt < 0 || rt >= event_rt.entries || event_rt.rlist[rt] == NULL)
		return -1;
	return rt;
}

int sca_rs_ka_run_route(int rt, const str *uri)
{
	struct run_act_ctx ctx;
	sip_msg_t *fmsg;
	str saved_ruri;
	str saved_duri;
	char *copy;
	int backup_rt;

	if(rt < 0 || rt >= event_rt.entries || event_rt.rlist[rt] == NULL)
		return -1;
	if(faked_msg_init() < 0)
		return -1;
	fmsg = faked_msg_next();
	/* $ru is the destination: a pkg copy, since the script may rewrite
	 * it (the core then frees the old value) */
	copy = pkg_malloc(uri->len + 1);
	if(copy == NULL)
		return -1;
	memcpy(copy, uri->s, uri->len);
	copy[uri->len] = '\0';
	saved_ruri = fmsg->new_uri;
	saved_duri = fmsg->dst_uri;
	fmsg->new_uri.s = copy;
	fmsg->new_uri.len = uri->len;
	fmsg->parsed_uri_ok = 0;
	fmsg->parsed_orig_ruri_ok = 0;

	backup_rt = get_route_type();
	set_route_type(REQUEST_ROUTE);
	init_run_actions_ctx(&ctx);
	run_top_route(event_rt.rlist[rt], fmsg, &ctx);
	set_route_type(backup_rt);

	/* whatever $ru / $du are now was allocated for this run */
	if(fmsg->new_uri.s != NULL)
		pkg_free(fmsg->new_uri.s);
	fmsg->new_uri = saved_ruri;
	if(fmsg->dst_uri.s != saved_duri.s && fmsg->dst_uri.s != NULL)
		pkg_free(fmsg->dst_uri.s);
	fmsg->dst_uri = saved_duri;
	fmsg->parsed_uri_ok = 0;
	fmsg->parsed_orig_ruri_ok = 0;
	return 0;
}


/* ------------------------------------------------------------ dmq */
#include "core/parser/parse_content.h"
#include "modules/dmq/bind_dmq.h"

static dmq_api_t sca_rs_dmq_api;
static dmq_peer_t *sca_rs_dmq_peer = NULL;
static str sca_rs_dmq_ctype = str_init("application/x-sca-rs");

/* The peer callback: runs in a DMQ worker on a shared-memory clone of
 * the request, which must not be parsed further; dmq sends the reply set
 * in resp with sl and frees resp->body (pkg) afterwards. */
static int sca_rs_dmq_peer_cb(
		struct sip_msg *msg, peer_reponse_t *resp, dmq_node_t *node)
{
	str body = {0, 0};
	str ctype = {0, 0};
	str from = {0, 0};
	str rbody = {0, 0};
	int code = 500;
	const char *reason = "Server Internal Error";

	if(msg->content_length != NULL && get_content_length(msg) > 0) {
		body.s = get_body(msg);
		body.len = body.s ? (int)get_content_length(msg) : 0;
	}
	if(msg->content_type != NULL)
		ctype = msg->content_type->body;
	if(node != NULL)
		from = node->orig_uri;
	else if(msg->from != NULL)
		from = msg->from->body;
	sca_rs_dmq_on_request(&body, &ctype, &from, &code, &reason, &rbody);
	resp->resp_code = code;
	resp->reason.s = (char *)reason;
	resp->reason.len = strlen(reason);
	if(rbody.s != NULL && rbody.len > 0) {
		resp->content_type = sca_rs_dmq_ctype;
		resp->body = rbody;
	} else if(rbody.s != NULL) {
		pkg_free(rbody.s);
	}
	return 0;
}

static int sca_rs_dmq_init_cb(void)
{
	return sca_rs_dmq_on_init();
}

int sca_rs_dmq_init(str *self_uri)
{
	dmq_peer_t p;
	struct sr_module *dmq;
	modparam_t t;
	str *addr;

	memset(self_uri, 0, sizeof(*self_uri));
	dmq = find_module_by_name("dmq");
	if(dmq == NULL)
		return -1;
	if(dmq_load_api(&sca_rs_dmq_api) < 0)
		return -1;
	addr = (str *)find_param_export(dmq, "server_address", PARAM_STR, &t);
	if(addr == NULL || addr->s == NULL || addr->len <= 0)
		return -3;
	*self_uri = *addr;
	memset(&p, 0, sizeof(p));
	p.peer_id.s = "sca_rs";
	p.peer_id.len = 6;
	p.description.s = "sca_rs shared call appearances";
	p.description.len = strlen(p.description.s);
	p.callback = sca_rs_dmq_peer_cb;
	p.init_callback = sca_rs_dmq_init_cb;
	sca_rs_dmq_peer = sca_rs_dmq_api.register_dmq_peer(&p);
	if(sca_rs_dmq_peer == NULL)
		return -2;
	return 0;
}

/* The outcome of a KDMQ we sent: the body of a 200 and the peer's
 * address go to Rust; rpl may be tm's FAKED_REPLY (a timeout). */
static int sca_rs_dmq_resp_cb(
		struct sip_msg *rpl, int code, dmq_node_t *node, void *param)
{
	str body = {0, 0};
	str uri = {0, 0};

	if(code == 200 && rpl != NULL && rpl != FAKED_REPLY
			&& parse_headers(rpl, HDR_EOH_F, 0) != -1
			&& rpl->content_length != NULL && get_content_length(rpl) > 0) {
		body.s = get_body(rpl);
		body.len = body.s ? (int)get_content_length(rpl) : 0;
	}
	if(node != NULL)
		uri = node->orig_uri;
	sca_rs_dmq_on_reply(param, code, &body, &uri, node);
	return 0;
}

static int sca_rs_dmq_out(const str *body, dmq_node_t *node, void *param)
{
	dmq_resp_cback_t cb;
	str b;

	if(sca_rs_dmq_peer == NULL)
		return -1;
	sca_rs_str_from_rust(&b, body);
	memset(&cb, 0, sizeof(cb));
	cb.f = sca_rs_dmq_resp_cb;
	cb.param = param;
	/* dmq copies cb, tm copies the body */
	if(node == NULL)
		return sca_rs_dmq_api.bcast_message(
				sca_rs_dmq_peer, &b, NULL, &cb, 1, &sca_rs_dmq_ctype);
	return sca_rs_dmq_api.send_message(
			sca_rs_dmq_peer, &b, node, &cb, 1, &sca_rs_dmq_ctype);
}

int sca_rs_dmq_bcast(const str *body, void *param)
{
	return sca_rs_dmq_out(body, NULL, param);
}

int sca_rs_dmq_send(const str *body, void *node, void *param)
{
	if(node == NULL)
		return -1;
	return sca_rs_dmq_out(body, (dmq_node_t *)node, param);
}

/* ------------------------------------------------------------ counters */
#include "core/counters.h"

int sca_rs_counter_register(unsigned short *id, const char *group,
		const char *name, const char *doc)
{
	counter_handle_t h;

	if(counter_register(&h, group, name, 0, NULL, NULL, doc, 0) < 0)
		return -1;
	*id = h.id;
	return 0;
}

static counter_val_t sca_rs_gauge_cbk(counter_handle_t h, void *param)
{
	return (counter_val_t)sca_rs_gauge_read((unsigned int)(unsigned long)param);
}

int sca_rs_gauge_register(const char *group, const char *name,
		const char *doc, unsigned int key)
{
	counter_handle_t h;

	if(counter_register(&h, group, name, CNT_F_NO_RESET, sca_rs_gauge_cbk,
			   (void *)(unsigned long)key, doc, 0)
			< 0)
		return -1;
	return 0;
}

void sca_rs_counter_add(unsigned short id, int v)
{
	counter_handle_t h;

	/* id 0: never registered; no table: before init_counters or after
	 * destroy_counters (mod_destroy may run late in shutdown) */
	if(id == 0 || _cnts_vals == NULL)
		return;
	h.id = id;
	counter_add(h, v);
}
