/* mam.h — the parts of XEP-0313 (MAM v2) that need no I/O, so that unit
 * tests reach them: the query form and XEP-0059 RSM parser, XEP-0082
 * timestamps, and the archiving preferences rule. mod_mam.c does the rest
 * (archive writes, SQL, replies). */
#ifndef SB_SM_MAM_H
#define SB_SM_MAM_H

#include "sb.h"
#include "xml.h"

#define SM_NS_MAM "urn:xmpp:mam:2"
#define SM_NS_MAM_EXT "urn:xmpp:mam:2#extended"
#define SM_NS_FULLTEXT "urn:xmpp:fulltext:0"
#define SM_NS_RSM "http://jabber.org/protocol/rsm"
#define SM_NS_SID "urn:xmpp:sid:0"

#define SM_MAM_PAGE_DEFAULT 50      /* items when the client gives no <max/> */
#define SM_MAM_PAGE_MAX 250         /* a bigger <max/> is capped to this */
#define SM_MAM_IDS_MAX 250          /* values of the `ids` field */
#define SM_MAM_ID_MAX 64            /* bytes of one id the client names */

/* One parsed query. Strings are owned (sm_mam_query_free); NULL = absent. */
struct sm_mam_query {
    char *queryid;
    char *with;                 /* a JID as given (bare or full) */
    int has_start, has_end;
    double start, end;          /* seconds since the epoch */
    char *before_id, *after_id; /* form fields */
    char **ids;                 /* `ids` values */
    int nids;
    char *fulltext;             /* {urn:xmpp:fulltext:0}fulltext, non-empty */
    long max;                   /* RSM <max/>, capped; default SM_MAM_PAGE_DEFAULT */
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
sb_rc sm_mam_query_parse(const struct xml_node *q, struct sm_mam_query *out,
                         const char **cond, const char **why);
void sm_mam_query_free(struct sm_mam_query *q);

/* XEP-0082 DateTime `CCYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)` → seconds since
 * the epoch. SB_ERROR when malformed. */
sb_rc sm_mam_parse_time(const char *s, double *out);
/* The other way: `2024-01-31T12:00:00.123Z` into out (32 bytes). */
void sm_mam_format_time(double t, char out[32]);

/* Archiving preferences of one user (XEP-0313 §7), as cached in the sm. */
enum sm_mam_mode { SM_MAM_UNSET = 0, SM_MAM_ALWAYS, SM_MAM_NEVER, SM_MAM_ROSTER };
struct sm_mam_prefs {
    enum sm_mam_mode mode;      /* UNSET: [sm] mam_default */
    char **always, **never;     /* bare JIDs, owned */
    int nalways, nnever;
};
enum sm_mam_mode sm_mam_mode_parse(const char *s);    /* UNSET if unknown */
const char *sm_mam_mode_name(enum sm_mam_mode m);
/* Is a message with bare JID `with` archived? A JID in `never` is not; in
 * `always` it is; else the mode (UNSET → dflt): roster → in_roster (-1 =
 * not known: the answer is then -1, load the roster and ask again). The
 * SQL function archive_wanted (deploy/migrations/005) applies the same
 * rule for the copies it decides. */
int sm_mam_wanted(const struct sm_mam_prefs *p, enum sm_mam_mode dflt, const char *with,
                  int in_roster);
sb_rc sm_mam_prefs_add(struct sm_mam_prefs *p, int always, const char *jid);
void sm_mam_prefs_clear(struct sm_mam_prefs *p);

#endif
