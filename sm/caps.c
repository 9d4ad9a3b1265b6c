/* caps.c — XEP-0115 entity capabilities for PEP notifications: which
 * features a presence's <c hash ver node/> stands for.
 *
 * One cache per sm (by "hash:ver"), backed by Redis `caps:<hash>:<ver>`
 * (the features joined by "\n", kept 30 days) so the cluster asks each
 * hash once. A miss here asks Redis; a miss there sends ONE disco#info
 * query (from the account whose contact showed the caps, to the full JID
 * that showed them, node `node#ver`); its answer is verified (§5.1
 * verification string, SHA-1) and only then cached here and in Redis. A
 * hash that does not verify is remembered as bad in this sm (never asked
 * again, logged once: `caps_unverified`) and never cached in Redis. Only
 * hash='sha-1' is verified (the one every client sends); other hashes count
 * as unknown caps (no notifications). */
#include "pep.h"
#include "log.h"

#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdlib.h>
#include <string.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_XDATA "jabber:x:data"
#define CAPS_TTL_S 2592000              /* Redis: 30 days (a hash never changes meaning) */
#define CAPS_QUERY_RETRY_S 30.0         /* an unanswered query may be sent again */
#define CAPS_MAX 10000                  /* entries cached in one sm */
#define CAPS_ID_PREFIX "sbcaps-"

struct caps_entry {
    char *key;                          /* "hash:ver" (hash key) */
    enum caps_state state;
    char **feat;                        /* sorted, KNOWN only */
    int nfeat;
    char qid[24];                       /* id of the disco#info query sent, "" none */
    char *jid;                          /* asked (or to ask) */
    char *owner;                        /* asked from */
    char *cnode;                        /* the caps node */
    double asked;                       /* sb_now() when the query went out */
    struct sm_core *core;
    UT_hash_handle hh;
};

static struct caps_entry *caps_cache;
static unsigned caps_count;

/* ---- the verification string (XEP-0115 §5.1) --------------------------------------- */

struct caps_ident {
    const char *cat, *type, *lang, *name;
};

static int ident_cmp(const void *a, const void *b)
{
    const struct caps_ident *x = a, *y = b;
    int r = strcmp(x->cat, y->cat);
    if (!r)
        r = strcmp(x->type, y->type);
    if (!r)
        r = strcmp(x->lang, y->lang);
    if (!r)
        r = strcmp(x->name, y->name);
    return r;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *attr_or_empty(const struct xml_node *n, const char *name)
{
    const char *v = xml_attr(n, name);
    return v ? v : "";
}

/* The text of a form field's <value/> children, each into vals (strings
 * owned by the returned buffer area). */
struct caps_form {
    char *type;                         /* FORM_TYPE value, owned */
    const struct xml_node *x;
};

static int form_cmp(const void *a, const void *b)
{
    return strcmp(((const struct caps_form *)a)->type, ((const struct caps_form *)b)->type);
}

static int field_cmp(const void *a, const void *b)
{
    const struct xml_node *x = *(const struct xml_node *const *)a;
    const struct xml_node *y = *(const struct xml_node *const *)b;
    return strcmp(attr_or_empty(x, "var"), attr_or_empty(y, "var"));
}

/* Field values sorted, each followed by '<'. */
static sb_rc caps_field_values(const struct xml_node *f, struct sb_buf *s)
{
    int n = 0;
    for (const struct xml_node *v = xml_first_elem(f); v; v = xml_next_elem(v))
        n += !strcmp(v->name, "value");
    char **vals = calloc((size_t)n + 1, sizeof *vals);
    if (!vals)
        return SB_ERROR;
    int k = 0;
    sb_rc rc = SB_OK;
    struct sb_buf t = SB_BUF_INIT;
    for (const struct xml_node *v = xml_first_elem(f); v && rc == SB_OK; v = xml_next_elem(v)) {
        if (strcmp(v->name, "value"))
            continue;
        xml_text(v, &t);
        if (!(vals[k++] = strdup(t.data ? t.data : "")))
            rc = SB_ERROR;
    }
    sb_buf_free(&t);
    if (rc == SB_OK) {
        qsort(vals, (size_t)k, sizeof *vals, str_cmp);
        for (int i = 0; i < k; i++) {
            sb_buf_adds(s, vals[i]);
            sb_buf_adds(s, "<");
        }
    }
    for (int i = 0; i < k; i++)
        free(vals[i]);
    free(vals);
    return rc;
}

static sb_rc caps_form_string(const struct caps_form *fm, struct sb_buf *s)
{
    int n = 0;
    for (const struct xml_node *f = xml_first_elem(fm->x); f; f = xml_next_elem(f))
        n += !strcmp(f->name, "field");
    const struct xml_node **fields = calloc((size_t)n + 1, sizeof *fields);
    if (!fields)
        return SB_ERROR;
    int k = 0;
    for (const struct xml_node *f = xml_first_elem(fm->x); f; f = xml_next_elem(f))
        if (!strcmp(f->name, "field") && strcmp(attr_or_empty(f, "var"), "FORM_TYPE"))
            fields[k++] = f;
    qsort(fields, (size_t)k, sizeof *fields, field_cmp);
    sb_buf_adds(s, fm->type);
    sb_buf_adds(s, "<");
    sb_rc rc = SB_OK;
    for (int i = 0; i < k && rc == SB_OK; i++) {
        sb_buf_adds(s, attr_or_empty(fields[i], "var"));
        sb_buf_adds(s, "<");
        rc = caps_field_values(fields[i], s);
    }
    free(fields);
    return rc;
}

/* The FORM_TYPE of an extended-info form, or NULL (the form is skipped). */
static char *caps_form_type(const struct xml_node *x)
{
    for (const struct xml_node *f = xml_first_elem(x); f; f = xml_next_elem(f)) {
        if (strcmp(f->name, "field") || strcmp(attr_or_empty(f, "var"), "FORM_TYPE"))
            continue;
        const struct xml_node *v = xml_child(f, "value", NULL);
        struct sb_buf t = SB_BUF_INIT;
        if (v)
            xml_text(v, &t);
        char *r = v ? strdup(t.data ? t.data : "") : NULL;
        sb_buf_free(&t);
        return r;
    }
    return NULL;
}

static sb_rc caps_forms(const struct xml_node *q, struct sb_buf *s)
{
    int n = 0;
    for (const struct xml_node *x = xml_first_elem(q); x; x = xml_next_elem(x))
        n += !strcmp(x->name, "x") && !strcmp(attr_or_empty(x, "xmlns"), NS_XDATA);
    if (!n)
        return SB_OK;
    struct caps_form *forms = calloc((size_t)n, sizeof *forms);
    if (!forms)
        return SB_ERROR;
    int k = 0;
    for (const struct xml_node *x = xml_first_elem(q); x; x = xml_next_elem(x)) {
        if (strcmp(x->name, "x") || strcmp(attr_or_empty(x, "xmlns"), NS_XDATA))
            continue;
        char *t = caps_form_type(x);
        if (t)
            forms[k++] = (struct caps_form){t, x};
    }
    qsort(forms, (size_t)k, sizeof *forms, form_cmp);
    sb_rc rc = SB_OK;
    for (int i = 0; i < k && rc == SB_OK; i++) {
        if (i && !strcmp(forms[i].type, forms[i - 1].type))
            rc = SB_ERROR;              /* §5.4: two forms of one FORM_TYPE */
        else
            rc = caps_form_string(&forms[i], s);
    }
    for (int i = 0; i < k; i++)
        free(forms[i].type);
    free(forms);
    return rc;
}

/* Identities and features of q sorted into s; SB_ERROR on duplicates. */
static sb_rc caps_ids_features(const struct xml_node *q, struct sb_buf *s)
{
    int ni = 0, nf = 0;
    for (const struct xml_node *c = xml_first_elem(q); c; c = xml_next_elem(c)) {
        ni += !strcmp(c->name, "identity");
        nf += !strcmp(c->name, "feature");
    }
    struct caps_ident *ids = calloc((size_t)ni + 1, sizeof *ids);
    const char **fs = calloc((size_t)nf + 1, sizeof *fs);
    sb_rc rc = ids && fs ? SB_OK : SB_ERROR;
    int ki = 0, kf = 0;
    for (const struct xml_node *c = xml_first_elem(q); c && rc == SB_OK; c = xml_next_elem(c)) {
        if (!strcmp(c->name, "identity"))
            ids[ki++] = (struct caps_ident){attr_or_empty(c, "category"), attr_or_empty(c, "type"),
                                            attr_or_empty(c, "xml:lang"), attr_or_empty(c, "name")};
        else if (!strcmp(c->name, "feature"))
            fs[kf++] = attr_or_empty(c, "var");
    }
    if (rc == SB_OK) {
        qsort(ids, (size_t)ki, sizeof *ids, ident_cmp);
        qsort(fs, (size_t)kf, sizeof *fs, str_cmp);
        for (int i = 0; i < ki && rc == SB_OK; i++) {
            if (i && !ident_cmp(&ids[i], &ids[i - 1]))
                rc = SB_ERROR;
            sb_buf_printf(s, "%s/%s/%s/%s<", ids[i].cat, ids[i].type, ids[i].lang, ids[i].name);
        }
        for (int i = 0; i < kf && rc == SB_OK; i++) {
            if (i && !strcmp(fs[i], fs[i - 1]))
                rc = SB_ERROR;
            sb_buf_adds(s, fs[i]);
            sb_buf_adds(s, "<");
        }
    }
    free(ids);
    free(fs);
    return rc;
}

sb_rc sm_caps_hash_sha1(const struct xml_node *query, char *out, size_t cap)
{
    struct sb_buf s = SB_BUF_INIT;
    sb_rc rc = caps_ids_features(query, &s);
    if (rc == SB_OK)
        rc = caps_forms(query, &s);
    if (rc == SB_OK && (!s.data || cap < BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1))
        rc = SB_ERROR;
    if (rc == SB_OK) {
        struct sha1_ctx ctx;
        uint8_t dig[SHA1_DIGEST_SIZE];
        sha1_init(&ctx);
        sha1_update(&ctx, s.len, (const uint8_t *)s.data);
        sha1_digest(&ctx, sizeof dig, dig);
        base64_encode_raw(out, sizeof dig, dig);
        out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
    }
    sb_buf_free(&s);
    return rc;
}

/* ---- the cache --------------------------------------------------------------------- */

static void entry_clear_features(struct caps_entry *e)
{
    for (int i = 0; i < e->nfeat; i++)
        free(e->feat[i]);
    free(e->feat);
    e->feat = NULL;
    e->nfeat = 0;
}

static void entry_free(struct caps_entry *e)
{
    HASH_DEL(caps_cache, e);
    caps_count--;
    entry_clear_features(e);
    free(e->key);
    free(e->jid);
    free(e->owner);
    free(e->cnode);
    free(e);
}

void sm_caps_stop(void)
{
    struct caps_entry *e, *tmp;
    HASH_ITER(hh, caps_cache, e, tmp)
        entry_free(e);
}

/* Features from "\n"-joined text (Redis) or a verified query: sorted. */
static sb_rc entry_set_features(struct caps_entry *e, const char *joined)
{
    entry_clear_features(e);
    int n = 1;
    for (const char *p = joined; *p; p++)
        n += *p == '\n';
    if (!(e->feat = calloc((size_t)n, sizeof *e->feat)))
        return SB_ERROR;
    const char *p = joined;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len && !(e->feat[e->nfeat++] = strndup(p, len)))
            return SB_ERROR;
        p += len + (nl ? 1 : 0);
    }
    qsort(e->feat, (size_t)e->nfeat, sizeof *e->feat, str_cmp);
    return SB_OK;
}

int sm_caps_has(const char *key, const char *var)
{
    struct caps_entry *e = NULL;
    if (key)
        HASH_FIND_STR(caps_cache, key, e);
    if (!e || e->state != CAPS_KNOWN)
        return 0;
    return bsearch(&var, e->feat, (size_t)e->nfeat, sizeof *e->feat, str_cmp) != NULL;
}

static sb_rc caps_send_query(struct caps_entry *e)
{
    char bare[ENV_STR_MAX + 1], rnd[13];
    const char *colon = strchr(e->key, ':');
    const char *slash = strchr(e->jid, '/');
    if (!slash || (size_t)(slash - e->jid) >= sizeof bare)
        return SB_ERROR;
    memcpy(bare, e->jid, (size_t)(slash - e->jid));
    bare[slash - e->jid] = '\0';
    sb_random_id(rnd, 12);
    rnd[12] = '\0';
    snprintf(e->qid, sizeof e->qid, CAPS_ID_PREFIX "%s", rnd);
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_adds(&b, "<iq type='get' id='");
    sb_buf_adds(&b, e->qid);
    sb_buf_adds(&b, "' from='");
    xml_escape_attr(&b, e->owner, strlen(e->owner));
    sb_buf_adds(&b, "' to='");
    xml_escape_attr(&b, e->jid, strlen(e->jid));
    sb_buf_adds(&b, "'><query xmlns='" NS_DISCO_INFO "' node='");
    xml_escape_attr(&b, e->cnode, strlen(e->cnode));
    sb_buf_adds(&b, "#");
    xml_escape_attr(&b, colon + 1, strlen(colon + 1));
    sb_buf_adds(&b, "'/></iq>");
    sb_rc rc = b.data ? sm_send_raw(e->core, bare, e->owner, b.data, b.len) : SB_ERROR;
    sb_buf_free(&b);
    e->asked = sb_now();
    log_debug("caps_query", "key=%s jid=%s", sb_log_q(e->key), sb_log_q(e->jid));
    return rc;
}

static void caps_on_redis(redisReply *r, void *arg)
{
    struct caps_entry *e = arg;
    if (r && r->type == REDIS_REPLY_STRING && e->state == CAPS_PENDING) {
        if (entry_set_features(e, r->str) == SB_OK) {
            e->state = CAPS_KNOWN;
            sm_pep_caps_known(e->core, e->key);
            return;
        }
    }
    if (e->state == CAPS_PENDING && !e->qid[0])
        caps_send_query(e);             /* not in Redis (or Redis away): ask once */
}

static sb_rc entry_set_str(char **dst, const char *v)
{
    char *s = strdup(v);
    if (!s)
        return SB_ERROR;
    free(*dst);
    *dst = s;
    return SB_OK;
}

enum caps_state sm_caps_lookup(struct sm_core *c, const char *key, const char *cnode,
                               const char *jid, const char *owner)
{
    struct caps_entry *e = NULL;
    HASH_FIND_STR(caps_cache, key, e);
    if (e) {
        if (e->state == CAPS_PENDING && e->qid[0] && sb_now() - e->asked > CAPS_QUERY_RETRY_S &&
            entry_set_str(&e->jid, jid) == SB_OK && entry_set_str(&e->owner, owner) == SB_OK &&
            entry_set_str(&e->cnode, cnode) == SB_OK)
            caps_send_query(e);         /* the first one asked never answered */
        return e->state;
    }
    if (strncmp(key, "sha-1:", 6) || caps_count >= CAPS_MAX)
        return CAPS_UNKNOWN;
    if (!(e = calloc(1, sizeof *e)) || !(e->key = strdup(key)) || !(e->jid = strdup(jid)) ||
        !(e->owner = strdup(owner)) || !(e->cnode = strdup(cnode))) {
        if (e) {
            free(e->key);
            free(e->jid);
            free(e->owner);
        }
        free(e);
        return CAPS_UNKNOWN;
    }
    e->state = CAPS_PENDING;
    e->core = c;
    HASH_ADD_KEYPTR(hh, caps_cache, e->key, strlen(e->key), e);
    caps_count++;
    if (SM_RCMD(c, caps_on_redis, e, "GET caps:%s", key) != SB_OK)
        caps_send_query(e);
    return CAPS_PENDING;
}

static void caps_on_stored(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("caps_store_failed", "detail=%s",
                 sb_log_q(r && r->str ? r->str : "redis unavailable"));
}

/* A verified answer: features into the entry and into Redis. */
static void caps_learn(struct caps_entry *e, const struct xml_node *q)
{
    struct sb_buf all = SB_BUF_INIT;
    for (const struct xml_node *f = xml_first_elem(q); f; f = xml_next_elem(f)) {
        if (strcmp(f->name, "feature") || !xml_attr(f, "var"))
            continue;
        if (all.len)
            sb_buf_adds(&all, "\n");
        sb_buf_adds(&all, xml_attr(f, "var"));
    }
    if (entry_set_features(e, all.data ? all.data : "") == SB_OK) {
        e->state = CAPS_KNOWN;
        SM_RCMD(e->core, caps_on_stored, NULL, "SET caps:%s %b EX %d", e->key,
                all.data ? all.data : "", all.len, CAPS_TTL_S);
        sm_pep_caps_known(e->core, e->key);
    }
    sb_buf_free(&all);
}

sb_rc sm_caps_answer(struct sm_job *j)
{
    if (!j->id || strncmp(j->id, CAPS_ID_PREFIX, strlen(CAPS_ID_PREFIX)))
        return SB_DECLINED;
    struct caps_entry *e, *tmp, *found = NULL;
    HASH_ITER(hh, caps_cache, e, tmp)
        if (e->state == CAPS_PENDING && !strcmp(e->qid, j->id))
            found = e;
    if (!found || strcmp(j->from, found->jid))
        return SB_OK;                   /* stale, or not from whom we asked: dropped */
    e = found;
    const struct xml_node *q = xml_child(j->st, "query", NS_DISCO_INFO);
    if (strcmp(j->type, "result") || !q) {
        log_info("caps_query_failed", "key=%s jid=%s", sb_log_q(e->key), sb_log_q(e->jid));
        entry_free(e);                  /* a later presence may ask again */
        return SB_OK;
    }
    char got[40] = "";
    if (sm_caps_hash_sha1(q, got, sizeof got) != SB_OK || strcmp(got, strchr(e->key, ':') + 1)) {
        e->state = CAPS_BAD;
        e->qid[0] = '\0';
        log_warn("caps_unverified", "key=%s jid=%s computed=%s", sb_log_q(e->key),
                 sb_log_q(e->jid), sb_log_q(got[0] ? got : "-"));
        return SB_OK;
    }
    caps_learn(e, q);
    return SB_OK;
}
