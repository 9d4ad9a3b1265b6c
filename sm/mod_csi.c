/* mod_csi.c — XEP-0352 client state indication, the sm's half. The
 * front-end (c2s/csi.c) turns the client's <inactive/> and <active/> into
 * the control `csi` (aux full JID, body `inactive` or `active`) on the
 * user's queue, so the change is ordered with everything else the user's
 * sessions get. While a session is inactive, sm_deliver_raw offers each
 * stanza for it here first:
 *   presence (available or unavailable)   held, one per sender full JID
 *   a chat state with no <body/>          held, one per sender full JID
 *     (XEP-0085)
 *   anything else (a message with a body, an iq, a subscription request,
 *   an error, a carbon copy)              delivered at once, after the held
 *                                         stanzas from the same bare JID, so
 *                                         one contact's stanzas keep their order
 * A newer held stanza of the same sender and kind replaces the older one
 * and takes its place at the end: on <active/> the held stanzas leave in
 * the order their latest versions arrived. Holding happens before XEP-0198
 * numbering (mod_sm.c), so a stanza dropped by coalescing never took a
 * number. The buffer is bounded per session (`[sm] csi_max_held` stanzas,
 * `csi_max_bytes` bytes): at the bound everything held is delivered and
 * holding starts again. The inactive flag is kept in sess:{bare} (flag
 * `i`), so an sm taking the user over goes on holding; the held stanzas
 * themselves are delivered when the record is dropped here. A resumed
 * stream (XEP-0198) starts active (XEP-0352 §5): held stanzas follow the
 * resent queue. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* memmem */
#endif
#include "sm.h"
#include "config.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define CSI_MAX_HELD 256
#define CSI_MAX_BYTES (256 * 1024)
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"
#define NS_CARBONS "urn:xmpp:carbons:2"

enum csi_kind { CSI_URGENT, CSI_PRESENCE, CSI_CHATSTATE };

struct csi_ent {
    struct csi_ent *next;
    uint8_t kind;
    size_t len;
    char *from;                 /* points into data, after the body */
    char data[];                /* body NUL, from NUL */
};

struct sm_csi {
    struct csi_ent *head, *tail;
    long n;
    size_t bytes;
};

void sm_csi_free(struct sm_csi *h)
{
    if (!h)
        return;
    for (struct csi_ent *e = h->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    free(h);
}

static int csi_has(const char *body, size_t len, const char *what)
{
    return memmem(body, len, what, strlen(what)) != NULL;
}

/* The value of attribute `name` in body's start tag, or NULL; *n its length.
 * Our serialiser escapes '>' in values, so the tag ends at the first one. */
static const char *csi_attr(const char *body, size_t len, const char *name, size_t *n)
{
    const char *gt = memchr(body, '>', len);
    size_t tl = gt ? (size_t)(gt - body) : len, nl = strlen(name);
    for (const char *p = body; (p = memchr(p, ' ', tl - (size_t)(p - body))); p++) {
        const char *v = p + 1 + nl;
        if ((size_t)(v - body) + 2 > tl || memcmp(p + 1, name, nl) || v[0] != '=' ||
            (v[1] != '\'' && v[1] != '"'))
            continue;
        const char *end = memchr(v + 2, v[1], tl - (size_t)(v + 2 - body));
        if (!end)
            return NULL;
        *n = (size_t)(end - v - 2);
        return v + 2;
    }
    return NULL;
}

/* Without parsing: only the start tag and a few substrings are looked at. */
static enum csi_kind csi_kind_of(const char *body, size_t len)
{
    size_t n = 0;
    if (len > 9 && !memcmp(body, "<presence", 9)) {
        const char *t = csi_attr(body, len, "type", &n);
        return !t || (n == 11 && !memcmp(t, "unavailable", 11)) ? CSI_PRESENCE : CSI_URGENT;
    }
    if (len > 8 && !memcmp(body, "<message", 8)) {
        const char *t = csi_attr(body, len, "type", &n);
        if ((t && n == 5 && !memcmp(t, "error", 5)) || csi_has(body, len, "<body") ||
            csi_has(body, len, NS_CARBONS))
            return CSI_URGENT;
        return csi_has(body, len, NS_CHATSTATES) ? CSI_CHATSTATE : CSI_URGENT;
    }
    return CSI_URGENT;
}

static size_t csi_bare_len(const char *jid)
{
    const char *slash = strchr(jid, '/');
    return slash ? (size_t)(slash - jid) : strlen(jid);
}

static void csi_unlink(struct sm_csi *h, struct csi_ent *prev, struct csi_ent *e)
{
    if (prev)
        prev->next = e->next;
    else
        h->head = e->next;
    if (h->tail == e)
        h->tail = prev;
    h->n--;
    h->bytes -= e->len;
}

/* Deliver and drop the held stanzas `match` selects (all when bare is NULL). */
static void csi_flush(struct sm_core *c, struct sm_session *s, const char *bare, size_t blen)
{
    struct sm_csi *h = s->csi;
    struct csi_ent *prev = NULL, *e = h ? h->head : NULL, *next;
    for (; e; e = next) {
        next = e->next;
        if (bare && (csi_bare_len(e->from) != blen || memcmp(e->from, bare, blen))) {
            prev = e;
            continue;
        }
        csi_unlink(h, prev, e);
        sm_deliver_now(c, s, e->from, e->data, e->len);
        free(e);
    }
}

int sm_csi_hold(struct sm_core *c, struct sm_session *s, const char *from,
                const char *body, size_t len)
{
    enum csi_kind kind = csi_kind_of(body, len);
    from = from ? from : "";
    if (kind == CSI_URGENT) {
        csi_flush(c, s, from, csi_bare_len(from));
        return 0;
    }
    struct sm_csi *h = s->csi;
    if (!h && !(h = s->csi = calloc(1, sizeof *h)))
        return 0;
    for (struct csi_ent *prev = NULL, *e = h->head; e; prev = e, e = e->next)
        if (e->kind == kind && !strcmp(e->from, from)) {    /* last one wins */
            csi_unlink(h, prev, e);
            free(e);
            break;
        }
    if (h->n >= sb_config_int("csi_max_held", CSI_MAX_HELD) ||
        h->bytes + len > (size_t)sb_config_int("csi_max_bytes", CSI_MAX_BYTES)) {
        log_info("csi_buffer_full", "res=%s held=%ld bytes=%zu", sb_log_q(s->resource), h->n,
                 h->bytes);
        csi_flush(c, s, NULL, 0);
        return 0;
    }
    size_t flen = strlen(from);
    struct csi_ent *e = malloc(sizeof *e + len + flen + 2);
    if (!e)
        return 0;
    e->next = NULL;
    e->kind = (uint8_t)kind;
    e->len = len;
    memcpy(e->data, body, len);
    e->data[len] = '\0';
    e->from = e->data + len + 1;
    memcpy(e->from, from, flen + 1);
    if (h->tail)
        h->tail->next = e;
    else
        h->head = e;
    h->tail = e;
    h->n++;
    h->bytes += len;
    return 1;
}

void sm_csi_activate(struct sm_core *c, struct sm_user *u, struct sm_session *s, int store)
{
    int was = s->inactive;
    s->inactive = 0;
    csi_flush(c, s, NULL, 0);
    sm_csi_free(s->csi);
    s->csi = NULL;
    if (was && store)
        sm_session_store(c, u, s);
}

/* control csi: aux = the session's full JID, sid its stream, body the state. */
static sb_rc csi_control(struct sm_job *j, const char *op)
{
    if (strcmp(op, "csi"))
        return SB_DECLINED;
    struct sm_session *s = j->user ? sm_user_session(j->user, sm_job_sender_resource(j)) : NULL;
    if (!s || strcmp(s->sid, j->sid)) {
        log_info("csi_no_session", "jid=%s sid=%s", sb_log_q(j->aux), j->sid);
        return SB_OK;
    }
    if (!strcmp(j->body, "inactive")) {
        if (!s->inactive) {
            s->inactive = 1;
            sm_session_store(j->core, j->user, s);
        }
    } else if (!strcmp(j->body, "active")) {
        sm_csi_activate(j->core, j->user, s, 1);
    } else {
        log_warn("csi_bad_state", "jid=%s state=%s", sb_log_q(j->aux), sb_log_q(j->body));
        return SB_OK;
    }
    log_debug("csi_state", "jid=%s state=%s", sb_log_q(j->aux), j->body);
    return SB_OK;
}

const struct sm_module sm_mod_csi = {
    .name = "csi",
    .handle_control = csi_control,
};
