/* sca_rs C shim: the small part of the host layer that must be C because it
 * wraps Kamailio macros, variadic functions and static-inline API loaders.
 * Compiled by build.rs with exactly the defines Debian's kamailio was built
 * with. Everything here is called from src/host/. */
#ifndef SCA_RS_SHIM_H
#define SCA_RS_SHIM_H

#include <stddef.h>
#include "core/str.h"
#include "core/locking.h"

struct sip_msg;

/* the loader's version checks: SER_FULL_VERSION / SER_COMPILE_FLAGS */
extern const char sca_rs_full_version[];
extern const char sca_rs_compile_flags[];

/* logging: the message is data, never a format string */
int sca_rs_log_enabled(int level);
void sca_rs_log(int level, const char *prefix, const char *func,
		const char *msg, int len);

/* shared memory */
void *sca_rs_shm_malloc(size_t size);
void sca_rs_shm_free(void *p);
/* free bytes now; bytes in all (0 when unknown) */
unsigned long sca_rs_shm_available(void);
unsigned long sca_rs_shm_total(void);
/* pkg memory (per process) */
void *sca_rs_pkg_malloc(size_t size);
void sca_rs_pkg_free(void *p);

/* locks: a gen_lock_t that lives in shared memory */
size_t sca_rs_gen_lock_size(void);
int sca_rs_lock_init(gen_lock_t *l);
void sca_rs_lock_get(gen_lock_t *l);
/* 0 when taken, -1 when someone holds it (never waits) */
int sca_rs_lock_try(gen_lock_t *l);
void sca_rs_lock_release(gen_lock_t *l);
void sca_rs_lock_destroy(gen_lock_t *l);

/* sl: stateless (or transaction-aware) replies */
int sca_rs_sl_bind(void);
int sca_rs_sl_reply(struct sip_msg *msg, int code, const str *reason);
int sca_rs_sl_get_totag(struct sip_msg *msg, str *totag);

/* tm: in-dialog requests (NOTIFY) */
int sca_rs_tm_bind(void);
struct sca_rs_dialog {
	str call_id;
	str local_tag;   /* our To-tag from the 202 */
	str remote_tag;  /* subscriber's From-tag */
	unsigned int local_cseq;
	str remote_target; /* R-URI: subscriber contact */
	str local_uri;   /* From */
	str remote_uri;  /* To */
	str route_set;   /* Record-Route body as received, may be empty */
};
/* Sends METHOD within the dialog. On a final reply (or timeout) calls
 * sca_rs_tm_reply(cb_param, status) in the process that receives it.
 * Returns <0 on error. */
int sca_rs_tm_request_within(const str *method, const str *headers,
		const str *body, const struct sca_rs_dialog *d, void *cb_param);
/* implemented in Rust */
void sca_rs_tm_reply(void *cb_param, int status);

/* call-state hooks: tm callbacks on an INVITE transaction, the sl reply
 * callback. Each calls back into Rust (implemented in src/module/). */
int sca_rs_tm_register_invite_cbs(struct sip_msg *req, int caller_shared);
void sca_rs_on_e2e_ack(struct sip_msg *ack);
void sca_rs_on_response_ready(struct sip_msg *req, int code);
int sca_rs_sl_register_reply_cb(void);
void sca_rs_on_sl_reply(struct sip_msg *req, int code);

/* message changes through lumps: remove every header of a type; add a
 * header line (CRLF-terminated, copied to pkg memory) before the end of
 * the header section */
int sca_rs_remove_headers(struct sip_msg *msg, int hdr_type);
int sca_rs_add_header(struct sip_msg *msg, const char *hdr, int len);
/* rewrite the R-URI and drop extra branches */
/* the R-URI buffer before the rewrite (new_uri.s, pkg memory, or NULL) is
 * detached into *detached instead of being freed or overwritten: Rust may
 * still view it; it pkg_frees it when the entry point returns */
int sca_rs_rewrite_ruri(struct sip_msg *msg, const str *uri, char **detached);
int sca_rs_isbflagset(int flag);
/* fixed-up parameters (fixup_get_[is]value are macros in 5.6) */
int sca_rs_fixup_get_ivalue(struct sip_msg *msg, void *gp, int *val);
int sca_rs_fixup_get_svalue(struct sip_msg *msg, void *gp, str *val);

/* AVPs named in modparams (from_uri_avp / to_uri_avp): parsed once in
 * mod_init from a spec like "$avp(sca_from)" */
struct sca_rs_avp {
	int set;
	unsigned int type; /* avp_flags_t: wide enough for every version */
	/* avp_name_t (int_str) storage */
	long name_n;
	str name_s;
};
int sca_rs_avp_parse(const str *spec, struct sca_rs_avp *out);
/* 0 and *val set when the AVP has a string value, -1 otherwise */
int sca_rs_avp_get(const struct sca_rs_avp *a, str *val);
int sca_rs_avp_put(const struct sca_rs_avp *a, const str *val);
void sca_rs_avp_del(const struct sca_rs_avp *a);

/* rpc: variadic helpers (Rust can call variadic pointers, but a few fixed
 * shapes here keep the Rust side simple and type-checked) */

/* ------------------------------------------------------------ keepalive */
/* OPTIONS ping to uri (also the To), From: from, through tm; the final
 * outcome calls sca_rs_ka_on_reply(param, code, local, ps) in the process
 * that gets it (local: tm's own reply, e.g. 408 timeout). <0: not sent. */
int sca_rs_ka_ping(const str *uri, const str *from, void *param);
/* the same over a route set (a stored Record-Route, "<uri>, <uri>"):
 * leading entries that are this server are skipped, the first other one
 * is the next hop and all of them go in a Route header */
int sca_rs_ka_ping_routed(
		const str *uri, const str *from, const str *route_set, void *param);
/* implemented in Rust; ps is the struct tmcb_params * of the callback */
void sca_rs_ka_on_reply(void *param, int code, int local, void *ps);
/* a core timer (slow timer process) calling sca_rs_ka_on_tick(), which
 * returns the milliseconds until the next call */
int sca_rs_ka_timer_start(unsigned int first_ms);
unsigned int sca_rs_ka_on_tick(void);
/* event_route[name]: its index, or -1 when the config has none */
int sca_rs_ka_route_lookup(const char *name);
/* run event route rt on a faked message whose $ru is uri */
int sca_rs_ka_run_route(int rt, const str *uri);
/* 0: got the lock; -1: somebody holds it */

/* ------------------------------------------------------------ dmq */
/* Bind dmq's API (dmq.so must be loaded before sca_rs.so) and register the
 * peer "sca_rs"; *self_uri gets dmq's server_address (dmq's memory, valid
 * for the life of the process). 0 ok; -1 no dmq API; -2 the peer id is
 * taken; -3 dmq has no server_address. */
int sca_rs_dmq_init(str *self_uri);
/* KDMQ with body to every active node / to node (the opaque node of a
 * sca_rs_dmq_on_reply call, only during that call); the final reply calls
 * sca_rs_dmq_on_reply(param, ...). 0: handed to tm. */
int sca_rs_dmq_bcast(const str *body, void *param);
int sca_rs_dmq_send(const str *body, void *node, void *param);
/* implemented in Rust: a peer's KDMQ (set *code and *reason, a static
 * string; *reply_body pkg memory or nothing), a reply to ours (body only
 * for a 200), dmq's init callback (a node list arrived) */
void sca_rs_dmq_on_request(const str *body, const str *content_type,
		const str *from_uri, int *code, const char **reason, str *reply_body);
void sca_rs_dmq_on_reply(
		void *param, int code, const str *body, const str *node_uri, void *node);
int sca_rs_dmq_on_init(void);

/* ------------------------------------------------------------ counters */
/* Kamailio's counters (core/counters.h), registered in mod_init (before
 * counters_prefork_init): a per-process counter (*id set, 0 on error), and
 * a gauge whose value is read by calling sca_rs_gauge_read(key) in the
 * process that asks (kex's stats.*, cnt.*, xhttp_prom). 0 ok, -1 error. */
int sca_rs_counter_register(unsigned short *id, const char *group,
		const char *name, const char *doc);
int sca_rs_gauge_register(const char *group, const char *name,
		const char *doc, unsigned int key);
/* counter_add (static inline): this process's row; nothing when id is 0
 * or the counters are not (or no longer) set up */
void sca_rs_counter_add(unsigned short id, int v);
/* implemented in Rust */
long sca_rs_gauge_read(unsigned int key);

#endif
