/* main.c — sb-muc start-up, the bus and the helpers every file sends with.
 * It serves `[muc] subdomain`.D for every local domain D (announced in
 * HELLO domains=, so the routers send it those stanzas), parses each
 * stanza once, hands room stanzas to room.c (after the room was loaded from
 * PostgreSQL and Redis, see store.c) and answers the service's own iqs.
 * Every 2 s it lets go of rooms that hash to another instance now (the set
 * of live sb-muc changed): that one reloads them from the stores. sbctl's
 * ADMIN op=room-destroy (routed by the room's JID, so it reaches the
 * instance holding the room) destroys a room as its owner would. */
#include "muc.h"
#include "config.h"
#include "domains.h"
#include "log.h"
#include "proc.h"
#include "route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct muc_srv muc;
static struct sb_proc main_proc;
static struct sb_buf main_buf;

/* ---- sending ------------------------------------------------------------- */

void muc_send(const char *to, const char *from, const char *body, size_t len)
{
    struct env_hdr h;
    env_init(&h, ENV_STANZA, ENV_ROUTE_JID);
    if (jid_bare_of(to, h.key, sizeof h.key) < 0 || strlen(from) >= sizeof h.aux) {
        log_warn("send_unaddressable", "to=%s", sb_log_q(to));
        return;
    }
    snprintf(h.sender, sizeof h.sender, "%s", muc.instance);
    strcpy(h.aux, from);
    if (link_send(muc.link, &h, body, len) != SB_OK)
        log_warn("send_failed", "to=%s", sb_log_q(to));
}

void muc_attr(struct sb_buf *b, const char *name, const char *v)
{
    if (!v)
        return;
    sb_buf_printf(b, " %s='", name);
    xml_escape_attr(b, v, strlen(v));
    sb_buf_adds(b, "'");
}

void muc_error(const struct xml_node *st, const char *from, const char *to, const char *type,
               const char *cond, const char *text)
{
    const char *t = xml_attr(st, "type");
    if ((t && !strcmp(t, "error")) || !from || !*from)
        return;                          /* never an error to an error */
    struct sb_buf *b = &main_buf;
    sb_buf_reset(b);
    sb_buf_printf(b, "<%s type='error'", st->name);
    muc_attr(b, "id", xml_attr(st, "id"));
    muc_attr(b, "from", to);
    muc_attr(b, "to", from);
    sb_buf_adds(b, ">");
    if (!strcmp(st->name, "presence"))
        sb_buf_adds(b, "<x xmlns='" NS_MUC "'/>");
    sb_buf_printf(b, "<error type='%s'><%s xmlns='" NS_STANZAS "'/>", type, cond);
    if (text) {
        sb_buf_adds(b, "<text xmlns='" NS_STANZAS "'>");
        xml_escape_text(b, text, strlen(text));
        sb_buf_adds(b, "</text>");
    }
    sb_buf_printf(b, "</error></%s>", st->name);
    if (b->data)
        muc_send(from, to, b->data, b->len);
}

void muc_presence_error(const char *room_nick, const char *to, const char *type,
                        const char *cond)
{
    struct sb_buf *b = &main_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<presence type='error'");
    muc_attr(b, "from", room_nick);
    muc_attr(b, "to", to);
    sb_buf_printf(b, "><x xmlns='" NS_MUC "'/><error type='%s'><%s xmlns='" NS_STANZAS
                     "'/></error></presence>", type, cond);
    if (b->data)
        muc_send(to, room_nick, b->data, b->len);
}

void muc_iq_result(const struct xml_node *st, const char *from, const char *to,
                   const char *payload, size_t len)
{
    struct sb_buf *b = &main_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<iq type='result'");
    muc_attr(b, "id", xml_attr(st, "id"));
    muc_attr(b, "from", to);
    muc_attr(b, "to", from);
    if (payload && len) {
        sb_buf_adds(b, ">");
        sb_buf_add(b, payload, len);
        sb_buf_adds(b, "</iq>");
    } else {
        sb_buf_adds(b, "/>");
    }
    if (b->data)
        muc_send(from, to, b->data, b->len);
}

void muc_children(struct sb_buf *b, const struct xml_node *n, const char *skip,
                  const char *skip_ns)
{
    for (const struct xml_node *c = n->children; c; c = c->next) {
        if (c->name) {
            const char *ns = xml_attr(c, "xmlns");
            if (!strcmp(c->name, "occupant-id") && ns && !strcmp(ns, NS_OCCUPANT_ID))
                continue;                /* only the service says who is who */
            if (skip && !strcmp(c->name, skip) && ns && !strcmp(ns, skip_ns))
                continue;
        } else if (!c->text_len) {
            continue;
        }
        xml_serialize(c, b);
    }
}

int muc_is_mine(const char *room)
{
    const struct rt_inst *in = rt_pick(link_members(muc.link), "muc", room, strlen(room));
    return !in || !strcmp(in->name, muc.instance);     /* nothing known yet: ours */
}

/* ---- the service itself (conference.DOMAIN) -------------------------------- */

static void main_service_iq(const struct xml_node *st, const char *from, const char *to)
{
    const char *type = xml_attr(st, "type");
    if (!type || (strcmp(type, "get") && strcmp(type, "set")))
        return;
    const struct xml_node *q = xml_first_elem(st);
    const char *ns = q ? xml_attr(q, "xmlns") : NULL;
    if (!q || !ns) {
        muc_error(st, from, to, "modify", "bad-request", NULL);
        return;
    }
    int get = !strcmp(type, "get");
    if (get && !strcmp(ns, "http://jabber.org/protocol/disco#info") && !xml_attr(q, "node")) {
        static const char info[] =
            "<query xmlns='http://jabber.org/protocol/disco#info'>"
            "<identity category='conference' type='text' name='Chatrooms'/>"
            "<feature var='http://jabber.org/protocol/disco#info'/>"
            "<feature var='http://jabber.org/protocol/disco#items'/>"
            "<feature var='" NS_MUC "'/><feature var='" NS_OCCUPANT_ID "'/>"
            "<feature var='urn:xmpp:ping'/></query>";
        muc_iq_result(st, from, to, info, sizeof info - 1);
    } else if (get && !strcmp(ns, "http://jabber.org/protocol/disco#items")) {
        muc_store_public_rooms(st, from, to);
    } else if (get && !strcmp(ns, "urn:xmpp:ping")) {
        muc_iq_result(st, from, to, NULL, 0);
    } else {
        muc_error(st, from, to, "cancel", "service-unavailable", NULL);
    }
}

static void main_service(const struct xml_node *st, const char *from, const char *to)
{
    if (!strcmp(st->name, "iq"))
        main_service_iq(st, from, to);
    else if (!strcmp(st->name, "message"))
        muc_error(st, from, to, "cancel", "service-unavailable", NULL);
    /* presence to the service: nothing to say */
}

/* ---- rooms ------------------------------------------------------------------- */

static struct muc_pend *main_pend_new(const char *aux, const char *body, size_t len)
{
    struct muc_pend *p = calloc(1, sizeof *p);
    if (!p || !(p->aux = strdup(aux ? aux : "")) || !(p->body = malloc(len + 1))) {
        if (p)
            free(p->aux);
        free(p);
        return NULL;
    }
    memcpy(p->body, body, len);
    p->body[len] = '\0';
    p->len = len;
    return p;
}

static void main_pend_free(struct muc_pend *p)
{
    free(p->aux);
    free(p->body);
    free(p);
}

static void main_pend(struct muc_room *r, const char *aux, const char *body, size_t len)
{
    struct muc_pend *p = main_pend_new(aux, body, len);
    if (!p) {
        log_warn("room_queue_failed", "room=%s", sb_log_q(r->jid));
        return;
    }
    *r->pend_tail = p;
    r->pend_tail = &p->next;
}

/* ---- the work queue ---------------------------------------------------------------
 * Every stanza from the bus waits here and is handled from main_work, a
 * slice of [muc] work_slice_ms per loop iteration. A join costs one
 * presence per occupant twice over (XEP-0045 §7.2.3), so a hundred joins
 * into a room of 500 are 100,000 stanzas; handled all at once where the bus
 * delivers them, they held the loop for seconds on a busy machine, the
 * heartbeat HELLO went out late and the instance lost its lease (its rooms
 * moved, the joins in flight were refused). Sliced, the HELLO timer and the
 * hello-acks (read on the same socket as the stanzas) get their turn every
 * slice, and the stanzas keep their order. */

static void main_work_start(void)
{
    if (!ev_is_active(&muc.work_idle))
        ev_idle_start(muc.loop, &muc.work_idle);   /* poll without blocking while work waits */
}

static void main_work_add(struct muc_pend *p)
{
    *muc.work_tail = p;
    muc.work_tail = &p->next;
    if (++muc.work_n > muc.work_peak)
        muc.work_peak = muc.work_n;
    main_work_start();
}

static void main_queue(const char *aux, const char *body, size_t len)
{
    struct muc_pend *p = main_pend_new(aux, body, len);
    if (!p) {
        log_warn("work_queue_failed", "bytes=%zu", len);
        return;
    }
    main_work_add(p);
}

static void main_stanza(const char *aux, const char *body, size_t len);

void muc_room_loaded(struct muc_room *r)
{
    struct muc_pend *p = r->pend;
    r->pend = NULL;
    r->pend_tail = &r->pend;
    if (!r->load_failed) {
        /* Its stanzas go first: everything for the room still queued came after them. */
        int n = 0;
        struct muc_pend **tail = &p;
        for (; *tail; tail = &(*tail)->next)
            n++;
        if (!p)
            return;
        if (!muc.work)
            muc.work_tail = tail;
        *tail = muc.work;
        muc.work = p;
        muc.work_n += n;
        if (muc.work_n > muc.work_peak)
            muc.work_peak = muc.work_n;
        main_work_start();
        return;
    }
    log_warn("room_load_failed", "room=%s", sb_log_q(r->jid));
    HASH_DEL(muc.rooms, r);
    muc_room_free(r);
    while (p) {
        struct muc_pend *next = p->next;
        enum xml_err err;
        struct xml_doc *d = xml_doc_parse(p->body, p->len, &muc.limits, &err);
        if (d) {
            muc_error(d->root, p->aux, xml_attr(d->root, "to"), "wait",
                      "internal-server-error", "the room could not be loaded");
            xml_doc_free(d);
        }
        main_pend_free(p);
        p = next;
    }
}

/* One slice: stanzas until the queue is empty or the slice is used up. */
static void main_work(struct ev_loop *loop, ev_check *w, int revents)
{
    if (!muc.work) {
        if (ev_is_active(&muc.work_idle))
            ev_idle_stop(loop, &muc.work_idle);
        return;
    }
    double start = ev_time(), now = start;
    int n = 0;
    while (muc.work && (n == 0 || now - start < muc.work_slice_s)) {
        struct muc_pend *p = muc.work;
        if (!(muc.work = p->next))
            muc.work_tail = &muc.work;
        muc.work_n--;
        main_stanza(p->aux, p->body, p->len);
        main_pend_free(p);
        n++;
        now = ev_time();
    }
    if (now - start > muc.work_max_s)
        muc.work_max_s = now - start;
    if (!muc.work) {
        ev_idle_stop(loop, &muc.work_idle);
        if (muc.work_peak >= 1000)       /* a storm: say how deep it got, once it is over */
            log_info("work_drained", "peak=%ld longest_slice_ms=%.0f", muc.work_peak,
                     muc.work_max_s * 1000);
        muc.work_peak = 0;
        muc.work_max_s = 0;
        if (muc.stopping)
            muc_stop_check();
    }
}

static void main_work_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    /* Only exists to make the loop poll with a zero timeout: main_work runs. */
}

static void main_work_free(void)
{
    while (muc.work) {
        struct muc_pend *p = muc.work;
        muc.work = p->next;
        main_pend_free(p);
    }
    muc.work_tail = &muc.work;
    muc.work_n = 0;
}

static void main_stanza(const char *aux, const char *body, size_t len)
{
    enum xml_err err;
    struct xml_doc *d = xml_doc_parse(body, len, &muc.limits, &err);
    if (!d) {
        log_warn("stanza_unparsable", "bytes=%zu error=%s", len, xml_err_name(err));
        return;
    }
    struct xml_node *st = d->root;
    const char *from = aux && *aux ? aux : xml_attr(st, "from");
    const char *to = xml_attr(st, "to");
    struct jid tj;
    if (!from || !*from || !to) {
        log_info("stanza_unaddressed", "name=%s", st->name);
        xml_doc_free(d);
        return;
    }
    if (jid_parse(&tj, to) != SB_OK) {
        muc_error(st, from, to, "modify", "jid-malformed", NULL);
        xml_doc_free(d);
        return;
    }
    if (!sb_domains_muc_parent(tj.domain)) {
        muc_error(st, from, to, "cancel", "item-not-found", NULL);
    } else if (!*tj.node) {
        main_service(st, from, to);
    } else {
        char bare[JID_BARE_MAX + 1];
        jid_bare(&tj, bare);
        struct muc_room *r;
        HASH_FIND_STR(muc.rooms, bare, r);
        if (!r) {
            if (!(r = muc_room_new(bare))) {
                muc_error(st, from, to, "wait", "resource-constraint", NULL);
                xml_doc_free(d);
                return;
            }
            HASH_ADD_KEYPTR(hh, muc.rooms, r->jid, strlen(r->jid), r);
            main_pend(r, from, body, len);
            muc_store_load(r);
        } else if (r->loading) {
            main_pend(r, from, body, len);
        } else {
            muc_room_stanza(r, d, from);
        }
    }
    xml_doc_free(d);
}

/* ---- sbctl ----------------------------------------------------------------------- */

static void main_admin_reply(const struct env_hdr *h, const char *answer)
{
    struct env_hdr r;
    env_init(&r, ENV_ADMIN, ENV_ROUTE_INSTANCE);
    snprintf(r.key, sizeof r.key, "%s", h->sender);
    snprintf(r.sender, sizeof r.sender, "%s", muc.instance);
    snprintf(r.op, sizeof r.op, "%s", h->op);
    link_send(muc.link, &r, answer, strlen(answer));
}

struct main_destroy {
    struct env_hdr h;
    char *reason;
};

static void main_destroy_now(struct muc_room *r, const struct env_hdr *h, const char *reason)
{
    int n = r->nocc;
    log_info("room_destroyed", "room=%s by=sbctl occupants=%d", sb_log_q(r->jid), n);
    muc_room_destroy(r, NULL, reason);
    char ans[64];
    snprintf(ans, sizeof ans, "destroyed=1 occupants=%d", n);
    main_admin_reply(h, ans);
}

/* op=room-destroy key=ROOM, body the reason: as the owner's <destroy/>. */
static void main_admin(const struct env_hdr *h, const char *body, size_t len)
{
    if (strcmp(h->op, "room-destroy")) {
        main_admin_reply(h, "error=unknown-op");
        return;
    }
    char reason[512];
    snprintf(reason, sizeof reason, "%.*s", (int)(len < sizeof reason ? len : sizeof reason - 1),
             body);
    struct muc_room *r;
    HASH_FIND_STR(muc.rooms, h->key, r);
    if (r && !r->loading && r->exists) {
        main_destroy_now(r, h, reason);
        return;
    }
    if (r && !r->loading) {
        main_admin_reply(h, "destroyed=0 error=item-not-found");
        return;
    }
    /* Not loaded (or loading): load it, then destroy — through a stanza of
     * our own that waits in its queue like any other. */
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_adds(&b, "<iq type='set' id='sbctl-destroy' to='");
    xml_escape_attr(&b, h->key, strlen(h->key));
    sb_buf_adds(&b, "'><query xmlns='" NS_MUC_OWNER "'><destroy><reason>");
    xml_escape_text(&b, reason, strlen(reason));
    sb_buf_adds(&b, "</reason></destroy></query></iq>");
    char from[ENV_STR_MAX + 1];
    snprintf(from, sizeof from, "sbctl\n%s", h->sender);   /* no JID has a newline */
    if (b.data)
        main_queue(from, b.data, b.len);
    sb_buf_free(&b);
}

int muc_sbctl_destroy(struct muc_room *r, const char *from, const char *reason)
{
    if (strncmp(from, "sbctl\n", 6))
        return 0;
    struct env_hdr h;
    env_init(&h, ENV_ADMIN, ENV_ROUTE_INSTANCE);
    snprintf(h.sender, sizeof h.sender, "%s", from + 6);
    snprintf(h.op, sizeof h.op, "room-destroy");
    if (!r->exists)
        main_admin_reply(&h, "destroyed=0 error=item-not-found");
    else
        main_destroy_now(r, &h, reason);
    return 1;
}

static void main_recv(struct link *l, const struct env_hdr *h, const char *body, size_t len,
                      void *ud)
{
    if (h->kind == ENV_STANZA)
        main_queue(h->aux, body, len);
    else if (h->kind == ENV_ADMIN)
        main_admin(h, body, len);
    else if (h->kind == ENV_BOUNCE)
        log_info("bounced", "reason=%s key=%s", h->op, sb_log_q(h->aux));
}

/* Rooms that hash elsewhere now are the other instance's: drop our copy
 * (everything is in the stores already) so a later move back reloads. */
static void main_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct muc_room *r, *tmp;
    HASH_ITER(hh, muc.rooms, r, tmp) {
        if (r->loading || muc_is_mine(r->jid))
            continue;
        log_info("room_handed_over", "room=%s occupants=%d", sb_log_q(r->jid), r->nocc);
        muc_store_hist_flush(r);            /* the next instance reads it */
        HASH_DEL(muc.rooms, r);
        muc_room_free(r);
    }
}

static void main_hist_flush(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_timer_stop(loop, w);
    muc_store_hist_flush_all();
}

static void main_domains_changed(void *ud)
{
    sb_domains_muc_csv(&muc.hello);
    link_set_domains(muc.link, muc.hello.data ? muc.hello.data : "");
    log_info("services", "domains=%s", muc.hello.data ? muc.hello.data : "");
}

/* ---- the daemon ---------------------------------------------------------------- */

static sb_rc main_configure(void)
{
    muc.limits.max_stanza = (size_t)sb_config_int("max_stanza", 262144);
    muc.limits.max_depth = (int)sb_config_int("max_depth", 32);
    muc.history_max = (int)sb_config_int("history_max", 20);
    muc.max_occupants = (int)sb_config_int("max_occupants", 1000);
    muc.hist_flush_s = sb_config_int("history_flush_ms", 100) / 1e3;
    muc.work_slice_s = sb_config_int("work_slice_ms", 10) / 1e3;
    if (muc.work_slice_s <= 0)
        muc.work_slice_s = 0.001;
    if (muc.hist_flush_s <= 0)
        muc.hist_flush_s = 0.001;
    if (muc.history_max < 0 || muc.history_max > 1000 || muc.max_occupants < 1) {
        log_error("config_invalid", "history_max=%d max_occupants=%d", muc.history_max,
                  muc.max_occupants);
        return SB_ERROR;
    }
    /* XEP-0421 ids must be the same on every instance: a shared secret. */
    if (sb_config_secret("occupant_id_secret", muc.oid_key, sizeof muc.oid_key) != SB_OK ||
        !*muc.oid_key)
        snprintf(muc.oid_key, sizeof muc.oid_key, "%s", sb_config_str("dialback_secret", ""));
    if (strlen(muc.oid_key) < 16) {
        log_error("config_invalid", "key=occupant_id_secret reason=\"set [muc] "
                  "occupant_id_secret or [cluster] dialback_secret (16 characters or more)\"");
        return SB_ERROR;
    }
    return SB_OK;
}

static sb_rc main_open(void)
{
    muc.pg = sb_proc_pg(&main_proc);
    muc.rd = rdev_from_config(muc.loop);
    muc.link = sb_proc_link(&main_proc, main_recv, NULL);
    if (!muc.pg || !muc.rd || !muc.link) {
        log_error("start_failed", "pg=%d redis=%d link=%d", muc.pg != NULL, muc.rd != NULL,
                  muc.link != NULL);
        return SB_ERROR;
    }
    return SB_OK;
}

static void main_started(void)
{
    sb_domains_start(muc.loop, muc.pg, main_domains_changed, NULL);
    ev_timer_init(&muc.sweep, main_sweep, 2., 2.);
    ev_timer_start(muc.loop, &muc.sweep);
    ev_timer_init(&muc.hist_flush, main_hist_flush, 0., muc.hist_flush_s);
    muc.work_tail = &muc.work;
    ev_check_init(&muc.work_check, main_work);
    ev_check_start(muc.loop, &muc.work_check);
    ev_idle_init(&muc.work_idle, main_work_idle);
    muc_mam_start();
    log_info("ready", "subdomain=%s history_max=%d",
             sb_config_str("subdomain", "conference"), muc.history_max);
}

/* Stopping: the history and archive rows still buffered are written
 * first (bounded by the grace). */
void muc_stop_check(void)
{
    if (muc.stopping && !muc.work && !muc_mam_waiting() && !muc_store_pending())
        ev_break(muc.loop, EVBREAK_ALL);
}

static int main_stop(void)
{
    log_info("shutdown", "rooms=%u history_rooms=%d archive_rows=%ld", HASH_COUNT(muc.rooms),
             muc.hist_dirty != NULL, muc_mam_waiting());
    muc.stopping = 1;
    muc_store_hist_flush_all();
    muc_mam_flush(1);
    return muc.work || muc_mam_waiting() || muc_store_pending();
}

static void main_cleanup(void)
{
    ev_timer_stop(muc.loop, &muc.sweep);
    ev_timer_stop(muc.loop, &muc.hist_flush);
    ev_check_stop(muc.loop, &muc.work_check);
    ev_idle_stop(muc.loop, &muc.work_idle);
    main_work_free();
    muc_mam_stop();
    sb_domains_stop();
    struct muc_room *r, *tmp;
    HASH_ITER(hh, muc.rooms, r, tmp) {
        HASH_DEL(muc.rooms, r);
        muc_room_free(r);
    }
    if (muc.rd)
        rdev_free(muc.rd);
    muc.rd = NULL;
    sb_buf_free(&main_buf);
    sb_buf_free(&muc.hello);
}

static const struct sb_proc_daemon main_daemon = {
    .configure = main_configure,
    .open = main_open,
    .started = main_started,
    .stop = main_stop,
    .cleanup = main_cleanup,
    .grace = 2.0,
};

int main(int argc, char **argv)
{
    if (sb_proc_init(&main_proc, argc, argv, "muc") != SB_OK)
        return 2;
    muc.loop = main_proc.loop;
    muc.instance = main_proc.instance;
    return sb_proc_run(&main_proc, &main_daemon);
}
