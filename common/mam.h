/* mam.h — XEP-0313 (MAM v2) shared by the user archive (sm/mod_mam.c) and
 * the room archive (muc/mam.c), both in PostgreSQL `archive`
 * (005_archive.sql; a room's rows have domain = its service, username =
 * its node): the query form and XEP-0059 RSM parser, XEP-0082 timestamps,
 * the archiving preferences rule, the rows of a batched INSERT, the SQL of a
 * query and its page of results. No I/O here (the callers run the SQL), so
 * unit tests reach all of it. */
#ifndef SB_MAM_H
#define SB_MAM_H

#include "sb.h"
#include "xml.h"
#include "buf.h"
#include "jid.h"
#include <libpq-fe.h>

#define MAM_NS "urn:xmpp:mam:2"
#define MAM_NS_EXT "urn:xmpp:mam:2#extended"
#define MAM_NS_FULLTEXT "urn:xmpp:fulltext:0"
#define MAM_NS_RSM "http://jabber.org/protocol/rsm"
#define MAM_NS_SID "urn:xmpp:sid:0"

#define MAM_PAGE_DEFAULT 50      /* items when the client gives no <max/> */
#define MAM_PAGE_MAX 250         /* a bigger <max/> is capped to this */
#define MAM_IDS_MAX 250          /* values of the `ids` field */
#define MAM_ID_MAX 64            /* bytes of one id the client names */

/* One parsed query. Strings are owned (mam_query_free); NULL = absent. */
struct mam_query {
    char *queryid;
    char *with;                 /* a JID as given (bare or full) */
    int has_start, has_end;
    double start, end;          /* seconds since the epoch */
    char *before_id, *after_id; /* form fields */
    char **ids;                 /* `ids` values */
    int nids;
    char *fulltext;             /* {urn:xmpp:fulltext:0}fulltext, non-empty */
    long max;                   /* RSM <max/>, capped; default MAM_PAGE_DEFAULT */
    char *rsm_after;            /* RSM <after/> */
    char *rsm_before;           /* RSM <before/>: "" = the last page */
    unsigned flip : 1;          /* <flip-page/> */
};

/* Parse <query xmlns='urn:xmpp:mam:2'> (its form and RSM set). SB_OK, or
 * SB_ERROR with *cond set to the stanza error condition:
 *   bad-request              a form of another FORM_TYPE, a malformed value
 *                            (date, JID, max), an id that is too long
 *   feature-not-implemented  a field we do not know, RSM <index/>
 * and *why to a short word for the log line. */
sb_rc mam_query_parse(const struct xml_node *q, struct mam_query *out,
                         const char **cond, const char **why);
void mam_query_free(struct mam_query *q);

/* XEP-0082 DateTime `CCYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)` → seconds since
 * the epoch. SB_ERROR when malformed. */
sb_rc mam_parse_time(const char *s, double *out);
/* The other way: `2024-01-31T12:00:00.123Z` into out (32 bytes). */
void mam_format_time(double t, char out[32]);

/* Archiving preferences of one user (XEP-0313 §7), as cached in the sm. */
enum mam_mode { MAM_UNSET = 0, MAM_ALWAYS, MAM_NEVER, MAM_ROSTER };
struct mam_prefs {
    enum mam_mode mode;      /* UNSET: [sm] mam_default */
    char **always, **never;     /* bare JIDs, owned */
    int nalways, nnever;
};
enum mam_mode mam_mode_parse(const char *s);    /* UNSET if unknown */
const char *mam_mode_name(enum mam_mode m);
/* Is a message with bare JID `with` archived? A JID in `never` is not; in
 * `always` it is; else the mode (UNSET → dflt): roster → in_roster (-1 =
 * not known: the answer is then -1, load the roster and ask again). The
 * SQL function archive_wanted (deploy/migrations/005) applies the same
 * rule for the copies it decides. */
int mam_wanted(const struct mam_prefs *p, enum mam_mode dflt, const char *with,
                  int in_roster);
sb_rc mam_prefs_add(struct mam_prefs *p, int always, const char *jid);
void mam_prefs_clear(struct mam_prefs *p);

/* ---- writing: rows of one multi-row INSERT (a PostgreSQL array per column) ---- */
enum { MAM_C_DOM, MAM_C_USER, MAM_C_SID, MAM_C_WBARE, MAM_C_WRES, MAM_C_OUT, MAM_C_TS,
       MAM_C_STANZA, MAM_C_BODY, MAM_C_CHECKED, MAM_NCOLS };
struct mam_batch {
    struct sb_buf col[MAM_NCOLS];
    long n;
};
/* $1..$10 the columns, $11 the full-text configuration, $12 the default
 * mode for rows not `checked` (archive_wanted() decides those). */
extern const char MAM_INSERT_SQL[];
#define MAM_INSERT_NPARAMS 12
/* One row. checked: the owner's preferences were applied already. */
void mam_batch_row(struct mam_batch *b, const char *domain, const char *user, const char *sid,
                   const char *with_bare, const char *with_res, int outgoing, double ts,
                   const char *stanza, size_t slen, const char *body, size_t blen, int checked);
/* Close the arrays and point p[0..11] at them (SB_ERROR: out of memory). */
sb_rc mam_batch_params(struct mam_batch *b, const char *fts, const char *dflt,
                       const char *p[MAM_INSERT_NPARAMS]);
void mam_batch_clear(struct mam_batch *b);
void mam_batch_free(struct mam_batch *b);

/* ---- querying -------------------------------------------------------------------- */
/* The SQL of one query of the archive of (domain, user); the strings it
 * points to (q, domain, user, fts) must outlive the pgev_query call. */
struct mam_sql {
    struct sb_buf where, bounds, refs, ids, sql;
    const char *p[16];
    char num[4][32];
    char wbare[JID_BARE_MAX + 1];
    int np, nnum, nrefs;
};
void mam_sql_build(struct mam_sql *s, const struct mam_query *m, const char *domain,
                   const char *user, const char *fts, int desc);
void mam_sql_free(struct mam_sql *s);

/* A page of results from the rows of mam_sql_build's query: each
 * <message to from><result><forwarded/></result></message> through emit,
 * then the <fin/> into fin. SB_ERROR with *cond (item-not-found: an id
 * named is not in the archive; internal-server-error). */
struct mam_page {
    const char *to, *from;              /* of the result messages */
    const char *queryid;                /* NULL: none */
    long max;
    unsigned desc : 1, flip : 1;
};
typedef sb_rc (*mam_emit_fn)(void *ud, const struct sb_buf *msg);
sb_rc mam_page_reply(const struct mam_page *pg, PGresult *res, mam_emit_fn emit, void *ud,
                     struct sb_buf *fin, int *items, long *count, const char **cond);

/* iq get <query/>: the fields a query form may hold (XEP-0313 §5.1.1). */
extern const char MAM_FORM[];

#endif
