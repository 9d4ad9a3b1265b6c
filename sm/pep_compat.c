/* pep_compat.c — the older stores kept in step with PEP, for clients that
 * only know them:
 *
 *   XEP-0398  the avatar (XEP-0084, urn:xmpp:avatar:metadata + :data) and
 *             the vCard's PHOTO (XEP-0153): a metadata publish writes the
 *             PHOTO (the info without url, its data item from the cache,
 *             SHA-1 checked); a vCard set with a PHOTO publishes data then
 *             metadata (id = SHA-1 hex of the image). Own available
 *             presence, broadcast or directed, gets the hash as
 *             <x xmlns='vcard-temp:x:update'><photo>…</photo></x> unless
 *             it carries a <photo/> of its own.
 *   XEP-0411  XEP-0048 bookmarks in private storage (storage:bookmarks) and
 *             the XEP-0402 node urn:xmpp:bookmarks:1: a PEP write rewrites
 *             the private storage:bookmarks row from the node's items; a
 *             private set publishes every conference (whitelist, max) and
 *             retracts the ones no longer there.
 *
 * Conversions run on the user's queue after the write that caused them
 * (the iq is already answered), through sm_pep_publish_as (no iq answer,
 * so no conversion back: nothing loops). */
#include "acct.h"
#include "pep.h"
#include "log.h"

#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdlib.h>
#include <string.h>

#define NS_VCARD_UPDATE "vcard-temp:x:update"
#define NS_BOOKMARKS1 "storage:bookmarks"

static const char PRIVATE_BOOKMARKS_SQL[] =
    "INSERT INTO private_storage (domain, username, namespace, data) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (domain, username, namespace)"
    " DO UPDATE SET data = EXCLUDED.data, updated_at = now()";

static const struct pep_item *compat_last(struct sm_user *u, const char *node)
{
    struct pep_node *n = sm_pep_node(sm_pep_of(u), node);
    return n && n->nitems ? &n->items[n->nitems - 1] : NULL;
}

/* A stored payload parsed (free with xml_doc_free), or NULL. */
static struct xml_doc *compat_parse(const char *payload)
{
    return payload ? xml_doc_parse(payload, strlen(payload), NULL, NULL) : NULL;
}

/* Base64 text without the whitespace vCards wrap it with, decoded to
 * check it; the SHA-1 hex of the bytes into hex (41). Returns the clean
 * base64 (malloc'd) or NULL when it is not base64. */
static char *compat_b64_sha1(const char *text, char *hex, size_t *bytes)
{
    size_t n = strlen(text), k = 0;
    char *clean = malloc(n + 1);
    uint8_t *raw = malloc(BASE64_DECODE_LENGTH(n) + 1);
    if (!clean || !raw)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n", text[i]))
            clean[k++] = text[i];
    clean[k] = '\0';
    struct base64_decode_ctx ctx;
    size_t out = BASE64_DECODE_LENGTH(k);
    base64_decode_init(&ctx);
    if (!k || !base64_decode_update(&ctx, &out, raw, k, clean) || !base64_decode_final(&ctx))
        goto fail;
    uint8_t dig[SHA1_DIGEST_SIZE];
    struct sha1_ctx sc;
    sha1_init(&sc);
    sha1_update(&sc, out, raw);
    sha1_digest(&sc, sizeof dig, dig);
    for (int i = 0; i < SHA1_DIGEST_SIZE; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    *bytes = out;
    free(raw);
    return clean;
fail:
    free(clean);
    free(raw);
    return NULL;
}

/* ---- XEP-0398: PEP → vCard --------------------------------------------------------------- */

static sb_rc compat_avatar_to_vcard(struct sm_job *j)
{
    const struct pep_item *meta = compat_last(j->user, SM_NS_AVATAR_META);
    struct xml_doc *md = meta ? compat_parse(meta->payload) : NULL;
    const struct xml_node *info = NULL;
    for (const struct xml_node *c = md && md->root ? xml_first_elem(md->root) : NULL; c;
         c = xml_next_elem(c))
        if (!strcmp(c->name, "info") && !xml_attr(c, "url") && xml_attr(c, "id")) {
            info = c;
            break;
        }
    sb_rc rc = SB_OK;
    struct pep_node *dn = sm_pep_node(sm_pep_of(j->user), SM_NS_AVATAR_DATA);
    struct pep_item *data = info && dn ? sm_pep_item(dn, xml_attr(info, "id")) : NULL;
    struct xml_doc *dd = data ? compat_parse(data->payload) : NULL;
    struct sb_buf t = SB_BUF_INIT;
    if (info && !dd) {
        log_info("avatar_vcard_skipped", "jid=%s id=%s reason=no-data", sb_log_q(j->user->bare),
                 sb_log_q(xml_attr(info, "id")));
    } else if (dd && dd->root) {
        char hex[41];
        size_t bytes = 0;
        xml_text(dd->root, &t);
        char *b64 = t.data ? compat_b64_sha1(t.data, hex, &bytes) : NULL;
        if (!b64 || strcasecmp(hex, xml_attr(info, "id"))) {
            log_info("avatar_vcard_skipped", "jid=%s id=%s reason=hash-mismatch",
                     sb_log_q(j->user->bare), sb_log_q(xml_attr(info, "id")));
        } else {
            const char *type = xml_attr(info, "type");
            rc = sm_vcard_photo_set(j, type && *type ? type : "image/png", b64) == SB_AGAIN
                     ? SB_AGAIN : SB_OK;
        }
        free(b64);
    }
    sb_buf_free(&t);
    xml_doc_free(dd);
    xml_doc_free(md);
    return rc;
}

/* ---- XEP-0398: vCard → PEP --------------------------------------------------------------- */

struct compat_avatar {
    char id[41];
    char *meta;                         /* the metadata payload, published second */
};

static void compat_avatar_meta_done(struct sm_job *j, int ok, void *arg)
{
    struct compat_avatar *a = arg;
    if (ok)
        log_info("avatar_from_vcard", "jid=%s id=%s", sb_log_q(j->key), a->id);
    free(a->meta);
    free(a);
    sm_job_done(j);
}

static void compat_avatar_data_done(struct sm_job *j, int ok, void *arg)
{
    struct compat_avatar *a = arg;
    if (ok && sm_pep_publish_as(j, SM_NS_AVATAR_META, a->id, a->meta, PEP_ACCESS_PRESENCE, 1,
                                compat_avatar_meta_done, a) == SB_AGAIN)
        return;
    free(a->meta);
    free(a);
    sm_job_done(j);
}

sb_rc sm_pep_compat_vcard_set(struct sm_job *j, const struct xml_node *vcard)
{
    const struct xml_node *photo = j->user ? xml_child(vcard, "PHOTO", NULL) : NULL;
    const struct xml_node *bin = photo ? xml_child(photo, "BINVAL", NULL) : NULL;
    const struct xml_node *tn = photo ? xml_child(photo, "TYPE", NULL) : NULL;
    if (!bin)
        return SB_OK;
    struct sb_buf t = SB_BUF_INIT, ty = SB_BUF_INIT, b = SB_BUF_INIT;
    struct compat_avatar *a = calloc(1, sizeof *a);
    size_t bytes = 0;
    xml_text(bin, &t);
    if (tn)
        xml_text(tn, &ty);
    char *b64 = a && t.data ? compat_b64_sha1(t.data, a->id, &bytes) : NULL;
    const struct pep_item *cur = compat_last(j->user, SM_NS_AVATAR_META);
    sb_rc rc = SB_OK;
    if (!b64 || (cur && !strcmp(cur->id, a->id)))
        goto out;                       /* not an image, or the avatar already */
    sb_buf_adds(&b, "<metadata xmlns='" SM_NS_AVATAR_META "'><info id='");
    sb_buf_adds(&b, a->id);
    sb_buf_printf(&b, "' bytes='%zu' type='", bytes);
    xml_escape_attr(&b, ty.data && *ty.data ? ty.data : "image/png",
                    ty.data && *ty.data ? ty.len : 9);
    sb_buf_adds(&b, "'/></metadata>");
    a->meta = (char *)b.data;
    b = (struct sb_buf)SB_BUF_INIT;
    sb_buf_adds(&b, "<data xmlns='" SM_NS_AVATAR_DATA "'>");
    sb_buf_adds(&b, b64);
    sb_buf_adds(&b, "</data>");
    if (a->meta && b.data &&
        sm_pep_publish_as(j, SM_NS_AVATAR_DATA, a->id, (char *)b.data, PEP_ACCESS_PRESENCE, 1,
                          compat_avatar_data_done, a) == SB_AGAIN) {
        a = NULL;
        rc = SB_AGAIN;
    } else {
        log_warn("avatar_from_vcard_failed", "jid=%s", sb_log_q(j->user->bare));
    }
out:
    if (a) {
        free(a->meta);
        free(a);
    }
    free(b64);
    sb_buf_free(&t);
    sb_buf_free(&ty);
    sb_buf_free(&b);
    return rc;
}

/* ---- XEP-0398 §4: the hash in presence ------------------------------------------------- */

void sm_pep_compat_presence(struct sm_job *j)
{
    const struct pep_item *meta = compat_last(j->user, SM_NS_AVATAR_META);
    if (!meta || !j->doc)
        return;
    struct xml_node *x = xml_child(j->st, "x", NS_VCARD_UPDATE);
    if (x && xml_child(x, "photo", NULL))
        return;                         /* the client's own word (empty: "none") */
    int has_info = strstr(meta->payload, "<info") != NULL;
    if (x)
        xml_unlink(x);
    struct xml_node *nx = xml_add_child(j->doc, j->st, "x");
    struct xml_node *ph = nx && xml_set_attr(j->doc, nx, "xmlns", NS_VCARD_UPDATE) == SB_OK
                              ? xml_add_child(j->doc, nx, "photo") : NULL;
    if (!ph || (has_info && xml_add_text(j->doc, ph, meta->id, strlen(meta->id)) != SB_OK))
        return;
    struct sb_buf b = SB_BUF_INIT;
    if (xml_serialize(j->st, &b) == SB_OK && b.data)
        sm_job_set_body(j, &b);
    sb_buf_free(&b);
}

/* ---- XEP-0411: PEP → private storage ----------------------------------------------------- */

static void compat_private_written(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("bookmarks_compat_failed", "dir=pep-to-private error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
}

/* What XEP-0048 and XEP-0402 conferences share, after the opening
 * attributes: name, autojoin (0048's "1" read as true), nick, password,
 * the end tag. */
static void compat_conference_rest(struct sb_buf *b, const struct xml_node *c)
{
    const char *name = xml_attr(c, "name"), *aj = xml_attr(c, "autojoin");
    if (name) {
        sb_buf_adds(b, " name='");
        xml_escape_attr(b, name, strlen(name));
        sb_buf_adds(b, "'");
    }
    sb_buf_printf(b, " autojoin='%s'>",
                  aj && (!strcmp(aj, "1") || !strcmp(aj, "true")) ? "true" : "false");
    static const char *const kids[] = {"nick", "password"};
    struct sb_buf t = SB_BUF_INIT;
    for (int k = 0; k < 2; k++) {
        const struct xml_node *n = xml_child(c, kids[k], NULL);
        if (!n)
            continue;
        sb_buf_reset(&t);
        xml_text(n, &t);
        sb_buf_printf(b, "<%s>", kids[k]);
        if (t.data)
            xml_escape_text(b, t.data, t.len);
        sb_buf_printf(b, "</%s>", kids[k]);
    }
    sb_buf_adds(b, "</conference>");
    sb_buf_free(&t);
}

/* <conference jid name autojoin><nick/><password/></conference> (0048)
 * from one 0402 item. */
static void compat_conference_0048(struct sb_buf *b, const struct pep_item *it)
{
    struct xml_doc *d = compat_parse(it->payload);
    const struct xml_node *c = d ? d->root : NULL;
    if (!c || strcmp(c->name, "conference")) {
        xml_doc_free(d);
        return;
    }
    sb_buf_adds(b, "<conference jid='");
    xml_escape_attr(b, it->id, strlen(it->id));
    sb_buf_adds(b, "'");
    compat_conference_rest(b, c);
    xml_doc_free(d);
}

/* The private storage:bookmarks row rewritten from the node's items; the
 * one connection keeps it before any later query of this user. */
static void compat_bookmarks_to_private(struct sm_job *j)
{
    char user[ENV_STR_MAX + 1];
    const char *dom;
    if (sm_acct_split(j->user->bare, user, sizeof user, &dom) != SB_OK)
        return;
    struct pep_node *n = sm_pep_node(sm_pep_of(j->user), SM_NS_BOOKMARKS2);
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_adds(&b, "<storage xmlns='" NS_BOOKMARKS1 "'>");
    for (int i = 0; n && i < n->nitems; i++)
        compat_conference_0048(&b, &n->items[i]);
    sb_buf_adds(&b, "</storage>");
    const char *params[4] = {dom, user, NS_BOOKMARKS1, (const char *)b.data};
    if (!b.data || sm_pg_query(j->core, PRIVATE_BOOKMARKS_SQL, 4, params,
                               compat_private_written, NULL) != SB_OK)
        log_warn("bookmarks_compat_failed", "jid=%s dir=pep-to-private", sb_log_q(j->user->bare));
    sb_buf_free(&b);
}

sb_rc sm_pep_compat_after(struct sm_job *j, const char *node)
{
    if (!j->user || !node)
        return SB_OK;
    if (!strcmp(node, SM_NS_BOOKMARKS2)) {
        compat_bookmarks_to_private(j);
        return SB_OK;
    }
    if (!strcmp(node, SM_NS_AVATAR_META))
        return compat_avatar_to_vcard(j);
    return SB_OK;
}

/* ---- XEP-0411: private storage → PEP ----------------------------------------------------- */

/* The writes still to make: items to publish, then ids to retract. */
struct compat_bm {
    char **ids, **payloads;
    int n, next;
    char **gone;
    int ngone, next_gone;
};

static void compat_bm_free(struct compat_bm *m)
{
    for (int i = 0; i < m->n; i++) {
        free(m->ids[i]);
        free(m->payloads[i]);
    }
    for (int i = 0; i < m->ngone; i++)
        free(m->gone[i]);
    free(m->ids);
    free(m->payloads);
    free(m->gone);
    free(m);
}

static void compat_bm_step(struct sm_job *j, int ok, void *arg)
{
    struct compat_bm *m = arg;
    if (!ok)
        log_warn("bookmarks_compat_failed", "jid=%s dir=private-to-pep", sb_log_q(j->key));
    while (ok && m->next < m->n) {
        int i = m->next++;
        if (sm_pep_publish_as(j, SM_NS_BOOKMARKS2, m->ids[i], m->payloads[i],
                              PEP_ACCESS_WHITELIST, -1, compat_bm_step, m) == SB_AGAIN)
            return;
    }
    while (ok && m->next_gone < m->ngone) {
        int i = m->next_gone++;
        if (sm_pep_retract_as(j, SM_NS_BOOKMARKS2, m->gone[i], compat_bm_step, m) == SB_AGAIN)
            return;
    }
    compat_bm_free(m);
    sm_job_done(j);
}

/* One 0048 conference as a 0402 item payload; 0 when unusable. */
static int compat_conference_0402(const struct xml_node *c, struct sb_buf *b)
{
    sb_buf_adds(b, "<conference xmlns='" SM_NS_BOOKMARKS2 "'");
    compat_conference_rest(b, c);
    return b->data != NULL;
}

static int compat_bm_add(struct compat_bm *m, const char *id, char *payload)
{
    char **ni = realloc(m->ids, (size_t)(m->n + 1) * sizeof *ni);
    if (ni)
        m->ids = ni;
    char **np = ni ? realloc(m->payloads, (size_t)(m->n + 1) * sizeof *np) : NULL;
    if (np)
        m->payloads = np;
    if (!ni || !np || !(m->ids[m->n] = strdup(id))) {
        free(payload);
        return -1;
    }
    m->payloads[m->n++] = payload;
    return 0;
}

sb_rc sm_pep_compat_private_set(struct sm_job *j, const struct xml_node *query)
{
    const struct xml_node *st = NULL;
    for (const struct xml_node *c = xml_first_elem(query); c && !st; c = xml_next_elem(c))
        if (!strcmp(c->name, "storage") && !strcmp(xml_attr(c, "xmlns"), NS_BOOKMARKS1))
            st = c;
    if (!st || !j->user)
        return SB_OK;
    struct compat_bm *m = calloc(1, sizeof *m);
    if (!m)
        return SB_OK;
    for (const struct xml_node *c = xml_first_elem(st); c; c = xml_next_elem(c)) {
        const char *jid = xml_attr(c, "jid");
        struct sb_buf b = SB_BUF_INIT;
        if (strcmp(c->name, "conference") || !jid || !*jid || !compat_conference_0402(c, &b)) {
            sb_buf_free(&b);
            continue;
        }
        struct pep_node *n = sm_pep_node(sm_pep_of(j->user), SM_NS_BOOKMARKS2);
        struct pep_item *have = n ? sm_pep_item(n, jid) : NULL;
        if (have && !strcmp(have->payload, (char *)b.data)) {
            sb_buf_free(&b);            /* unchanged: no event */
            continue;
        }
        compat_bm_add(m, jid, (char *)b.data);
    }
    struct pep_node *n = sm_pep_node(sm_pep_of(j->user), SM_NS_BOOKMARKS2);
    for (int i = 0; n && i < n->nitems; i++) {
        int kept = 0;
        for (const struct xml_node *c = xml_first_elem(st); c && !kept; c = xml_next_elem(c))
            kept = !strcmp(c->name, "conference") && xml_attr(c, "jid") &&
                   !strcmp(xml_attr(c, "jid"), n->items[i].id);
        char **ng = kept ? NULL : realloc(m->gone, (size_t)(m->ngone + 1) * sizeof *ng);
        if (ng && (ng[m->ngone] = strdup(n->items[i].id))) {
            m->gone = ng;
            m->ngone++;
        } else if (ng) {
            m->gone = ng;
        }
    }
    if (!m->n && !m->ngone) {
        compat_bm_free(m);
        return SB_OK;
    }
    log_info("bookmarks_from_private", "jid=%s publish=%d retract=%d", sb_log_q(j->user->bare),
             m->n, m->ngone);
    compat_bm_step(j, 1, m);
    return SB_AGAIN;
}
