/* xml.c — Expat stream parser, arena-backed trees and the serialiser.
 *
 * Memory: every tree lives in an arena, a list of chunks with a bump
 * pointer. Resetting an arena frees every chunk but the first, so an idle
 * stream keeps one small chunk and Expat's own state, and a parsed
 * document (xml_doc_parse) costs one malloc for the common case.
 *
 * Limits: stanza size is enforced on the bytes fed, not on what Expat has
 * reported, so a stanza that never completes (one giant start tag or text
 * node arriving a byte at a time) is refused as soon as it crosses the
 * limit. `mark` is the byte index where the current top-level unit (the
 * stream header, a stanza, or keepalive whitespace) began; we never hand
 * Expat more than max_stanza bytes past it.
 *
 * Input: the bytes of an open markup token (a start tag, a reference)
 * wait in the stream until a byte that may end the token arrives, so
 * Expat 2.5 scans each token about once however it is split (xs_lex). */
#include "xml.h"
#include "log.h"

#include <expat.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---------------------------------------------------------------- */

struct xml_chunk {
    struct xml_chunk *prev;
    size_t size, used;
    _Alignas(16) char data[];
};

struct xml_arena {
    struct xml_chunk *cur;   /* newest chunk; `first` is at the end of the list */
    struct xml_chunk *first; /* allocated together with the arena */
    size_t bytes;            /* the first allocation (counted in sb_mem_owned) */
};

#define XML_STREAM_CHUNK 1024   /* idle streams keep just this much */
#define XML_CHUNK_MAX (64 * 1024)
#define XML_HEADER_MAX 4096     /* prolog + stream header, at least */

/* One allocation holds the arena header, an optional prefix object of
 * `prefix` bytes (the xml_doc) and the first chunk. */
static struct xml_arena *xml_arena_new(size_t first_size, size_t prefix, void **prefix_out)
{
    prefix = (prefix + 15) & ~(size_t)15;
    size_t head = (sizeof(struct xml_arena) + 15) & ~(size_t)15;
    size_t bytes = head + prefix + sizeof(struct xml_chunk) + first_size;
    char *mem = malloc(bytes);
    if (!mem)
        return NULL;
    struct xml_arena *a = (struct xml_arena *)mem;
    a->bytes = bytes;
    sb_mem_owned += bytes;
    if (prefix_out)
        *prefix_out = mem + head;
    a->first = (struct xml_chunk *)(mem + head + prefix);
    a->first->prev = NULL;
    a->first->size = first_size;
    a->first->used = 0;
    a->cur = a->first;
    return a;
}

static void xml_arena_reset(struct xml_arena *a)
{
    while (a->cur != a->first) {
        struct xml_chunk *c = a->cur;
        a->cur = c->prev;
        sb_mem_owned -= sizeof *c + c->size;
        free(c);
    }
    a->first->used = 0;
}

static void xml_arena_free(struct xml_arena *a)
{
    if (!a)
        return;
    xml_arena_reset(a);
    sb_mem_owned -= a->bytes;
    free(a);
}

static void *xml_arena_alloc(struct xml_arena *a, size_t n, size_t align)
{
    struct xml_chunk *c = a->cur;
    size_t off = (c->used + align - 1) & ~(align - 1);
    if (off <= c->size && n <= c->size - off) {
        c->used = off + n;
        return c->data + off;
    }
    size_t size = c->size * 2;
    if (size < 4096)
        size = 4096;
    if (size > XML_CHUNK_MAX)
        size = XML_CHUNK_MAX;
    if (size < n * 2)
        size = n * 2;   /* growing text: amortise the copies */
    struct xml_chunk *nc = malloc(sizeof *nc + size);
    if (!nc)
        return NULL;
    sb_mem_owned += sizeof *nc + size;
    nc->prev = c;
    nc->size = size;
    nc->used = n;
    a->cur = nc;
    return nc->data;
}

/* Grow the most recent allocation p (old bytes) by add bytes, in place when
 * it is at the top of the current chunk, else by copying. */
static void *xml_arena_grow(struct xml_arena *a, void *p, size_t old, size_t add)
{
    struct xml_chunk *c = a->cur;
    if ((char *)p + old == c->data + c->used && add <= c->size - c->used) {
        c->used += add;
        return p;
    }
    void *np = xml_arena_alloc(a, old + add, 1);
    if (np)
        memcpy(np, p, old);
    return np;
}

static char *xml_arena_strndup(struct xml_arena *a, const char *s, size_t n)
{
    char *p = xml_arena_alloc(a, n + 1, 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static char *xml_arena_strdup(struct xml_arena *a, const char *s)
{
    return xml_arena_strndup(a, s, strlen(s));
}

/* ---- nodes ---------------------------------------------------------------- */

static struct xml_node *xml_node_alloc(struct xml_arena *a)
{
    struct xml_node *n = xml_arena_alloc(a, sizeof *n, _Alignof(struct xml_node));
    if (n)
        memset(n, 0, sizeof *n);
    return n;
}

static void xml_node_append(struct xml_node *parent, struct xml_node *n)
{
    n->parent = parent;
    if (!parent)
        return;
    if (parent->last_child)
        parent->last_child->next = n;
    else
        parent->children = n;
    parent->last_child = n;
}

/* A new element with Expat's name/value attribute list copied. */
static struct xml_node *xml_elem_from_expat(struct xml_arena *a, const char *name,
                                            const char **atts)
{
    struct xml_node *n = xml_node_alloc(a);
    if (!n || !(n->name = xml_arena_strdup(a, name)))
        return NULL;
    int count = 0;
    while (atts[count * 2])
        count++;
    if (count == 0)
        return n;
    n->attrs = xml_arena_alloc(a, (size_t)count * sizeof *n->attrs, _Alignof(struct xml_attr));
    if (!n->attrs)
        return NULL;
    for (int i = 0; i < count; i++) {
        n->attrs[i].name = xml_arena_strdup(a, atts[i * 2]);
        n->attrs[i].value = xml_arena_strdup(a, atts[i * 2 + 1]);
        if (!n->attrs[i].name || !n->attrs[i].value)
            return NULL;
    }
    n->nattrs = n->attrs_cap = count;
    return n;
}

/* Append text to parent, merging with a text node just before it. */
static sb_rc xml_append_text(struct xml_arena *a, struct xml_node *parent,
                             const char *s, size_t len)
{
    struct xml_node *last = parent->last_child;
    if (last && !last->name) {
        /* text is stored NUL-terminated: grow over the old terminator */
        char *t = xml_arena_grow(a, (char *)last->text, last->text_len + 1, len);
        if (!t)
            return SB_ERROR;
        memcpy(t + last->text_len, s, len);
        last->text = t;
        last->text_len += len;
        t[last->text_len] = '\0';
        return SB_OK;
    }
    struct xml_node *n = xml_node_alloc(a);
    if (!n)
        return SB_ERROR;
    char *t = xml_arena_strndup(a, s, len);
    if (!t)
        return SB_ERROR;
    n->text = t;
    n->text_len = len;
    xml_node_append(parent, n);
    return SB_OK;
}

/* ---- the parser state shared by streams and one-shot documents ---------- */

enum xs_state {
    XS_RUNNING,
    XS_RESTART,   /* a callback asked for a restart */
    XS_STOP,      /* a callback asked to stop, or the stream is over */
    XS_CLOSED,    /* </stream:stream> seen */
    XS_FAILED,
};

struct xml_stream {
    XML_Parser p;
    struct xml_stream_cb cb;
    void *ud;
    struct xml_limits lim;
    struct xml_arena *arena;
    struct xml_node *root, *cur;  /* stanza (or document) being built */
    int depth;                    /* open elements, stream root included */
    int base;                     /* 1 in stream mode (the root is the header), 0 for docs */
    enum xml_err err;
    enum xs_state state;
    long long fed, mark;          /* byte indexes since the last parser reset */
    int in_feed, free_pending;
    /* Bytes of an open markup token held back from Expat (see xs_lex). */
    struct sb_buf held;
    size_t held_counted;          /* held.cap as counted in sb_mem_owned */
    unsigned char lex, lex_n;     /* xs_lex state and its small counter */
};

const char *xml_err_name(enum xml_err e)
{
    switch (e) {
    case XML_ERR_NONE: return "none";
    case XML_ERR_SYNTAX: return "syntax";
    case XML_ERR_RESTRICTED: return "restricted";
    case XML_ERR_TOO_BIG: return "too-big";
    case XML_ERR_TOO_DEEP: return "too-deep";
    case XML_ERR_NOMEM: return "nomem";
    }
    return "unknown";
}

const char *xml_err_stream_cond(enum xml_err e)
{
    switch (e) {
    case XML_ERR_RESTRICTED: return "restricted-xml";
    case XML_ERR_TOO_BIG:
    case XML_ERR_TOO_DEEP:   return "policy-violation";
    case XML_ERR_NOMEM:      return "resource-constraint";
    default:                 return "not-well-formed";
    }
}

int xml_stream_version_ok(const char *v)
{
    if (!v || !*v)
        return 0;
    char *end;
    long major = strtol(v, &end, 10);
    return end != v && *end == '.' && major >= 1;
}

static void xs_fail(struct xml_stream *s, enum xml_err e)
{
    if (s->state != XS_RUNNING)
        return;
    s->err = e;
    s->state = XS_FAILED;
    XML_StopParser(s->p, XML_FALSE);
}

static void xs_set_mark(struct xml_stream *s)
{
    s->mark = (long long)XML_GetCurrentByteIndex(s->p) + XML_GetCurrentByteCount(s->p);
}

static void xs_start(void *ud, const char *name, const char **atts)
{
    struct xml_stream *s = ud;
    if (s->state != XS_RUNNING)
        return;
    int level = ++s->depth - s->base;   /* 1 = stanza/document root */
    if (level > s->lim.max_depth) {
        xs_fail(s, XML_ERR_TOO_DEEP);
        return;
    }
    struct xml_node *n = xml_elem_from_expat(s->arena, name, atts);
    if (!n) {
        xs_fail(s, XML_ERR_NOMEM);
        return;
    }
    if (level <= 0) {               /* the stream header */
        xs_set_mark(s);
        if (s->cb.on_open)
            s->cb.on_open(s->ud, n);
        xml_arena_reset(s->arena);
        return;
    }
    if (level == 1)
        s->root = n;
    else
        xml_node_append(s->cur, n);
    s->cur = n;
}

static void xs_end(void *ud, const char *name)
{
    struct xml_stream *s = ud;
    if (s->state != XS_RUNNING)
        return;
    int level = s->depth-- - s->base;
    if (level <= 0) {               /* </stream:stream> */
        s->state = XS_CLOSED;
        XML_StopParser(s->p, XML_FALSE);
        if (s->cb.on_close)
            s->cb.on_close(s->ud);
        return;
    }
    if (level > 1) {
        s->cur = s->cur->parent;
        return;
    }
    if (s->base == 0)               /* document complete: keep the tree */
        return;
    xs_set_mark(s);
    struct xml_node *stanza = s->root;
    s->root = s->cur = NULL;
    if (s->cb.on_stanza)
        s->cb.on_stanza(s->ud, stanza);
    xml_arena_reset(s->arena);
}

static int xs_is_space(const char *t, int len)
{
    for (int i = 0; i < len; i++)
        if (t[i] != ' ' && t[i] != '\t' && t[i] != '\r' && t[i] != '\n')
            return 0;
    return 1;
}

static void xs_text(void *ud, const char *t, int len)
{
    struct xml_stream *s = ud;
    if (s->state != XS_RUNNING)
        return;
    if (s->depth - s->base < 1) {
        /* Between stanzas: keepalive whitespace. Other text there has no
         * meaning in XMPP; it is dropped like whitespace. */
        if (!xs_is_space(t, len))
            log_debug("xml_text_between_stanzas", "bytes=%d", len);
        xs_set_mark(s);
        return;
    }
    if (xml_append_text(s->arena, s->cur, t, (size_t)len) != SB_OK)
        xs_fail(s, XML_ERR_NOMEM);
}

/* RFC 6120 §11.1: none of these may appear in an XMPP stream. */
static void xs_restricted(struct xml_stream *s)
{
    xs_fail(s, XML_ERR_RESTRICTED);
}
static void xs_on_doctype(void *ud, const char *n, const char *sys, const char *pub, int internal)
{
    xs_restricted(ud);
}
static void xs_on_comment(void *ud, const char *data)
{
    xs_restricted(ud);
}
static void xs_on_pi(void *ud, const char *target, const char *data)
{
    xs_restricted(ud);
}
static void xs_on_entity(void *ud, const char *name, int pe, const char *value, int vlen,
                         const char *base, const char *sys, const char *pub, const char *notation)
{
    xs_restricted(ud);
}

/* Expat salts its attribute hash tables against hash flooding; left to
 * itself it draws a new salt (arc4random, getenv) on every parse start,
 * that is on every stanza the sm parses. One secret random salt per
 * process protects the same and costs nothing per stanza. */
static unsigned long xs_salt(void)
{
    static unsigned long salt;
    while (!salt)
        sb_random(&salt, sizeof salt);
    return salt;
}

static void xs_install(struct xml_stream *s)
{
    XML_SetHashSalt(s->p, xs_salt());
    XML_SetUserData(s->p, s);
    XML_SetElementHandler(s->p, xs_start, xs_end);
    XML_SetCharacterDataHandler(s->p, xs_text);
    XML_SetStartDoctypeDeclHandler(s->p, xs_on_doctype);
    XML_SetCommentHandler(s->p, xs_on_comment);
    XML_SetProcessingInstructionHandler(s->p, xs_on_pi);
    XML_SetEntityDeclHandler(s->p, xs_on_entity);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
    /* Deferral would hold back a stanza fed in small pieces. */
    XML_SetReparseDeferralEnabled(s->p, XML_FALSE);
#endif
}

static void xs_held_free(struct xml_stream *s)
{
    sb_buf_free(&s->held);
    sb_mem_sync(&s->held_counted, 0);
}

static void xs_reset_state(struct xml_stream *s)
{
    xs_held_free(s);
    s->lex = s->lex_n = 0;
    XML_ParserReset(s->p, "UTF-8");
    xs_install(s);
    xml_arena_reset(s->arena);
    s->root = s->cur = NULL;
    s->depth = 0;
    s->err = XML_ERR_NONE;
    s->state = XS_RUNNING;
    s->fed = s->mark = 0;
}

static enum xml_err xs_expat_err(struct xml_stream *s)
{
    enum XML_Error e = XML_GetErrorCode(s->p);
    log_debug("xml_syntax", "error=%s line=%lu col=%lu", sb_log_q(XML_ErrorString(e)),
              (unsigned long)XML_GetCurrentLineNumber(s->p),
              (unsigned long)XML_GetCurrentColumnNumber(s->p));
    return e == XML_ERROR_NO_MEMORY ? XML_ERR_NOMEM : XML_ERR_SYNTAX;
}

static struct xml_limits xs_limits(const struct xml_limits *lim)
{
    struct xml_limits l = XML_LIMITS_DEFAULT;
    if (lim) {
        if (lim->max_stanza)
            l.max_stanza = lim->max_stanza;
        if (lim->max_depth > 0)
            l.max_depth = lim->max_depth;
    }
    return l;
}

/* ---- stream parser -------------------------------------------------------- */

/* expat's own memory for a stream parser (its state, the input it holds
 * while an element is incomplete), counted in sb_mem_owned: each block
 * carries its size in front. */
#define XS_MM_HEAD 16
static void *xs_mm_malloc(size_t n)
{
    char *p = malloc(n + XS_MM_HEAD);
    if (!p)
        return NULL;
    *(size_t *)p = n;
    sb_mem_owned += n;
    return p + XS_MM_HEAD;
}

static void xs_mm_free(void *q)
{
    if (!q)
        return;
    char *p = (char *)q - XS_MM_HEAD;
    sb_mem_owned -= *(size_t *)p;
    free(p);
}

static void *xs_mm_realloc(void *q, size_t n)
{
    if (!q)
        return xs_mm_malloc(n);
    char *p = (char *)q - XS_MM_HEAD;
    size_t old = *(size_t *)p;
    char *np = realloc(p, n + XS_MM_HEAD);
    if (!np)
        return NULL;
    *(size_t *)np = n;
    sb_mem_owned += n - old;
    return np + XS_MM_HEAD;
}

static const XML_Memory_Handling_Suite xs_mm = {xs_mm_malloc, xs_mm_realloc, xs_mm_free};

struct xml_stream *xml_stream_new(const struct xml_limits *lim,
                                  const struct xml_stream_cb *cb, void *ud)
{
    struct xml_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->lim = xs_limits(lim);
    if (cb)
        s->cb = *cb;
    s->ud = ud;
    s->base = 1;
    s->arena = xml_arena_new(XML_STREAM_CHUNK, 0, NULL);
    s->p = XML_ParserCreate_MM("UTF-8", &xs_mm, NULL);
    if (!s->arena || !s->p) {
        xml_stream_free(s);
        return NULL;
    }
    xs_install(s);
    return s;
}

static void xs_destroy(struct xml_stream *s)
{
    xs_held_free(s);
    if (s->p)
        XML_ParserFree(s->p);
    xml_arena_free(s->arena);
    free(s);
}

void xml_stream_free(struct xml_stream *s)
{
    if (!s)
        return;
    if (s->in_feed) {
        /* Freed from inside a callback: finish the feed first. */
        s->free_pending = 1;
        if (s->state == XS_RUNNING)
            s->state = XS_STOP;
        XML_StopParser(s->p, XML_FALSE);
        return;
    }
    xs_destroy(s);
}

enum xml_err xml_stream_error(const struct xml_stream *s)
{
    return s->err;
}

void xml_stream_restart(struct xml_stream *s)
{
    if (!s->in_feed) {
        xml_stream_reset(s);
        return;
    }
    if (s->state == XS_RUNNING || s->state == XS_CLOSED) {
        s->state = XS_RESTART;
        XML_StopParser(s->p, XML_FALSE);
    }
}

void xml_stream_stop(struct xml_stream *s)
{
    if (s->state == XS_FAILED)
        return;
    s->state = XS_STOP;
    if (s->in_feed)
        XML_StopParser(s->p, XML_FALSE);
}

void xml_stream_reset(struct xml_stream *s)
{
    xs_reset_state(s);
}

int xml_stream_idle(const struct xml_stream *s)
{
    return s->state == XS_RUNNING && s->depth == s->base && s->root == NULL &&
           s->mark == s->fed && s->held.len == 0;
}

/* Bytes the current unit may still take before it is over max_stanza. */
static long long xs_room(const struct xml_stream *s)
{
    /* Before the stream header is complete the unit is the prolog plus the
     * header, which may be longer than a tiny configured stanza limit. */
    size_t limit = s->lim.max_stanza;
    if (s->depth == 0 && limit < XML_HEADER_MAX)
        limit = XML_HEADER_MAX;
    return s->mark + (long long)limit - s->fed;
}

/* Feed at most what keeps the current unit within max_stanza. */
static sb_rc xs_feed_slice(struct xml_stream *s, const char *buf, size_t len, size_t *used)
{
    long long room = xs_room(s);
    if (room <= 0) {
        s->err = XML_ERR_TOO_BIG;
        s->state = XS_FAILED;
        return SB_ERROR;
    }
    size_t n = (unsigned long long)room < len ? (size_t)room : len;
    if (n > INT_MAX / 2)
        n = INT_MAX / 2;
    s->fed += (long long)n;
    *used = n;
    if (XML_Parse(s->p, buf, (int)n, XML_FALSE) == XML_STATUS_OK)
        return SB_OK;
    switch (s->state) {
    case XS_RUNNING:
        s->err = xs_expat_err(s);
        s->state = XS_FAILED;
        return SB_ERROR;
    case XS_FAILED:
        return SB_ERROR;
    case XS_CLOSED:
        return SB_OK;   /* we stopped Expat ourselves at the end of the stream */
    case XS_RESTART:
    case XS_STOP:
        return SB_DONE;
    }
    return SB_ERROR;
}

/* Expat 2.5 (no reparse deferral) scans a token it holds incomplete from
 * its start again on every XML_Parse call: a start tag of max_stanza bytes
 * trickled in one-byte reads costs max_stanza²/2 byte scans (seconds of
 * CPU per connection; found by tests/fuzz). So the bytes of an open
 * markup token are held here until a byte arrives that may end it, and
 * Expat scans each token about once. The lexer only has to be right for
 * well-formed XML, and only in one direction: it may say "no token open"
 * too often (Expat then sees the bytes at once, as before), never when
 * Expat could report an event, so a complete stanza is never held back.
 * Malformed input held back fails when the token ends or at max_stanza.
 * Text and CDATA content are never held: Expat reports them as they come. */
enum xs_lex_state {
    XL_TEXT,      /* content or prolog outside markup: nothing held */
    XL_LT,        /* after '<' */
    XL_TAG,       /* start or end tag: ends at '>' outside quotes */
    XL_QUOTE,     /* attribute value; lex_n is the quote */
    XL_REF,       /* entity or character reference: ends at ';' */
    XL_BANG,      /* after '<!' */
    XL_BANG_DASH, /* after '<!-' */
    XL_COMMENT,   /* ends at '-->'; lex_n counts dashes */
    XL_PI,        /* PI or XML declaration: ends at '?>'; lex_n = saw '?' */
    XL_CDATA,     /* CDATA section (not held): ends at ']]>'; lex_n counts ']' */
    XL_DECL,      /* other '<!' markup (DOCTYPE: restricted, never valid here) */
};

static int xs_lex_holds(unsigned char st)
{
    return st != XL_TEXT && st != XL_CDATA;
}

/* Comments end at "-->", CDATA at "]]>": two of `twice`, then '>'. lex_n
 * counts the run of `twice` (at most 2). */
static void xs_lex_close2(struct xml_stream *s, unsigned char c, unsigned char twice)
{
    if (c == '>' && s->lex_n >= 2)
        s->lex = XL_TEXT;
    else
        s->lex_n = c == twice ? (s->lex_n < 2 ? s->lex_n + 1 : 2) : 0;
}

static void xs_lex_byte(struct xml_stream *s, unsigned char c)
{
    switch (s->lex) {
    case XL_TEXT:
        if (c == '<')
            s->lex = XL_LT;
        else if (c == '&' && s->depth > 0)
            s->lex = XL_REF;
        return;
    case XL_LT:
        s->lex = c == '!' ? XL_BANG : c == '?' ? XL_PI : c == '>' ? XL_TEXT : XL_TAG;
        s->lex_n = 0;
        return;
    case XL_TAG:
        if (c == '>')
            s->lex = XL_TEXT;
        else if (c == '\'' || c == '"')
            s->lex = XL_QUOTE, s->lex_n = c;
        return;
    case XL_QUOTE:
        if (c == s->lex_n)
            s->lex = XL_TAG;
        return;
    case XL_REF:
        if (c == ';' || c == '<' || c == '&' || c == '>' || c == ' ' || c == '\t' ||
            c == '\r' || c == '\n') {
            s->lex = XL_TEXT;
            if (c == '<' || c == '&')
                xs_lex_byte(s, c);
        }
        return;
    case XL_BANG:
        s->lex = c == '-' ? XL_BANG_DASH : c == '[' ? XL_CDATA : XL_DECL;
        s->lex_n = 0;
        return;
    case XL_BANG_DASH:
        s->lex = c == '-' ? XL_COMMENT : XL_DECL;
        s->lex_n = 0;
        return;
    case XL_COMMENT:
        xs_lex_close2(s, c, '-');
        return;
    case XL_PI:
        if (c == '>' && s->lex_n)
            s->lex = XL_TEXT;
        else
            s->lex_n = c == '?';
        return;
    case XL_CDATA:
        xs_lex_close2(s, c, ']');
        return;
    case XL_DECL:
        if (c == '>')
            s->lex = XL_TEXT;
        return;
    }
}

/* Lex buf: the length of its longest prefix after which no token is open
 * (0 when a token stays open through all of it). */
static size_t xs_lex(struct xml_stream *s, const char *buf, size_t len)
{
    size_t ready = 0, i = 0;
    while (i < len) {
        if (s->lex == XL_TEXT) {
            /* Text and attribute values are the bulk: skip them with memchr. */
            const char *lt = memchr(buf + i, '<', len - i);
            size_t end = lt ? (size_t)(lt - buf) : len;
            const char *amp = s->depth > 0 ? memchr(buf + i, '&', end - i) : NULL;
            if (amp)
                end = (size_t)(amp - buf);
            ready = end;
            if (end == len)
                break;
            i = end;
        } else if (s->lex == XL_QUOTE) {
            const char *q = memchr(buf + i, s->lex_n, len - i);
            if (!q)
                break;
            i = (size_t)(q - buf);
        }
        xs_lex_byte(s, (unsigned char)buf[i++]);
        if (!xs_lex_holds(s->lex))
            ready = i;
    }
    return ready;
}

static sb_rc xs_feed_all(struct xml_stream *s, const char *buf, size_t len)
{
    sb_rc rc = SB_OK;
    while (len > 0 && rc == SB_OK && s->state == XS_RUNNING) {
        size_t used = 0;
        rc = xs_feed_slice(s, buf, len, &used);
        buf += used;
        len -= used;
    }
    return rc;
}

static sb_rc xs_hold(struct xml_stream *s, const char *buf, size_t len)
{
    sb_rc rc = sb_buf_add(&s->held, buf, len);
    sb_mem_sync(&s->held_counted, s->held.cap);
    if (rc != SB_OK)
        xs_fail(s, XML_ERR_NOMEM);
    return rc;
}

/* What the held bytes and buf would make the current unit: still within
 * max_stanza? At the limit everything goes to Expat, and xs_feed_slice
 * refuses what is over it exactly as without holding. */
static int xs_may_hold(const struct xml_stream *s, size_t len)
{
    long long room = xs_room(s);
    return room > 0 && (unsigned long long)s->held.len + len < (unsigned long long)room;
}

static sb_rc xs_feed_lexed(struct xml_stream *s, const char *buf, size_t len)
{
    int was_open = xs_lex_holds(s->lex);
    size_t ready = xs_lex(s, buf, len);
    if (!xs_may_hold(s, len))
        ready = len;
    else if (ready == 0 && was_open)
        return xs_hold(s, buf, len);     /* still inside the token */
    sb_rc rc;
    if (s->held.len) {
        /* The held token and what ends it, in one call. */
        rc = sb_buf_add(&s->held, buf, ready);
        struct sb_buf h = s->held;
        s->held = (struct sb_buf)SB_BUF_INIT;
        if (rc == SB_OK)
            rc = xs_feed_all(s, h.data, h.len);
        else
            xs_fail(s, XML_ERR_NOMEM);
        sb_buf_free(&h);
        sb_mem_sync(&s->held_counted, 0);
    } else {
        rc = xs_feed_all(s, buf, ready);
    }
    if (rc != SB_OK || s->state != XS_RUNNING || ready == len)
        return rc;
    return xs_hold(s, buf + ready, len - ready);   /* an open token's first bytes */
}

sb_rc xml_stream_feed(struct xml_stream *s, const char *buf, size_t len)
{
    switch (s->state) {
    case XS_FAILED: return SB_ERROR;
    case XS_STOP:
    case XS_CLOSED: return SB_DONE;
    default: break;
    }
    s->in_feed = 1;
    sb_rc rc = xs_feed_lexed(s, buf, len);
    s->in_feed = 0;
    if (s->free_pending) {
        xs_destroy(s);
        return SB_DONE;
    }
    if (s->state == XS_RESTART) {
        xs_reset_state(s);
        return SB_DONE;
    }
    if (s->state == XS_STOP)
        return SB_DONE;
    return rc;
}

/* ---- one-shot documents --------------------------------------------------- */

/* One Expat parser per thread, reset for each document: creating a parser
 * costs several mallocs, and the sm parses every stanza it receives. But
 * Expat's name tables keep the size the biggest document gave them, and
 * every reset walks them whole: after one 190 KB stanza of 20,000
 * attribute names, each small stanza took 128 µs instead of 1.5 (found by
 * tests/fuzz, fuzz_ws). A document over XML_DOC_PARSER_KEEP bytes (at most
 * some hundreds of names) gets a fresh parser afterwards instead. */
static __thread XML_Parser xml_doc_parser;
#define XML_DOC_PARSER_KEEP 4096

static struct xml_doc *xml_doc_alloc(size_t first_size)
{
    void *pre;
    struct xml_arena *a = xml_arena_new(first_size, sizeof(struct xml_doc), &pre);
    if (!a)
        return NULL;
    struct xml_doc *d = pre;
    d->arena = a;
    d->root = NULL;
    return d;
}

struct xml_doc *xml_doc_parse(const char *buf, size_t len,
                              const struct xml_limits *lim, enum xml_err *err)
{
    struct xml_stream s;
    enum xml_err dummy;
    if (!err)
        err = &dummy;
    *err = XML_ERR_NONE;
    memset(&s, 0, sizeof s);
    s.lim = xs_limits(lim);
    if (len > s.lim.max_stanza || len > INT_MAX / 2) {
        *err = XML_ERR_TOO_BIG;
        return NULL;
    }
    if (!xml_doc_parser && !(xml_doc_parser = XML_ParserCreate("UTF-8"))) {
        *err = XML_ERR_NOMEM;
        return NULL;
    }
    /* Trees take a few times the text size; one chunk fits most stanzas. */
    struct xml_doc *d = xml_doc_alloc(len * 3 + 512);
    if (!d) {
        *err = XML_ERR_NOMEM;
        return NULL;
    }
    s.p = xml_doc_parser;
    s.arena = d->arena;
    XML_ParserReset(s.p, "UTF-8");
    xs_install(&s);
    enum XML_Status st = XML_Parse(s.p, buf, (int)len, XML_TRUE);
    if (st != XML_STATUS_OK || s.state != XS_RUNNING || !s.root) {
        *err = s.err != XML_ERR_NONE ? s.err : xs_expat_err(&s);
        xml_doc_free(d);
        d = NULL;
    } else {
        d->root = s.root;
    }
    if (len > XML_DOC_PARSER_KEEP) {
        XML_ParserFree(xml_doc_parser);
        xml_doc_parser = NULL;
    }
    return d;
}

struct xml_doc *xml_doc_new(const char *name)
{
    struct xml_doc *d = xml_doc_alloc(512);
    if (!d)
        return NULL;
    d->root = xml_node_alloc(d->arena);
    if (!d->root || !(d->root->name = xml_arena_strdup(d->arena, name))) {
        xml_doc_free(d);
        return NULL;
    }
    return d;
}

void xml_doc_free(struct xml_doc *d)
{
    if (d)
        xml_arena_free(d->arena);   /* the doc lives inside the arena block */
}

/* ---- tree helpers ------------------------------------------------------------ */

const char *xml_attr(const struct xml_node *n, const char *name)
{
    if (!n)
        return NULL;
    for (int i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0)
            return n->attrs[i].value;
    return NULL;
}

sb_rc xml_set_attr(struct xml_doc *d, struct xml_node *n, const char *name, const char *value)
{
    char *v = xml_arena_strdup(d->arena, value);
    if (!v)
        return SB_ERROR;
    for (int i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0) {
            n->attrs[i].value = v;
            return SB_OK;
        }
    if (n->nattrs == n->attrs_cap) {
        int cap = n->attrs_cap ? n->attrs_cap * 2 : 4;
        struct xml_attr *na = xml_arena_alloc(d->arena, (size_t)cap * sizeof *na,
                                              _Alignof(struct xml_attr));
        if (!na)
            return SB_ERROR;
        if (n->nattrs)
            memcpy(na, n->attrs, (size_t)n->nattrs * sizeof *na);
        n->attrs = na;
        n->attrs_cap = cap;
    }
    char *nm = xml_arena_strdup(d->arena, name);
    if (!nm)
        return SB_ERROR;
    n->attrs[n->nattrs].name = nm;
    n->attrs[n->nattrs].value = v;
    n->nattrs++;
    return SB_OK;
}

void xml_del_attr(struct xml_node *n, const char *name)
{
    for (int i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0) {
            memmove(&n->attrs[i], &n->attrs[i + 1], (size_t)(n->nattrs - i - 1) * sizeof *n->attrs);
            n->nattrs--;
            return;
        }
}

void xml_unlink(struct xml_node *n)
{
    struct xml_node *p = n->parent, *prev = NULL;
    if (!p)
        return;
    for (struct xml_node *c = p->children; c && c != n; c = c->next)
        prev = c;
    if (prev)
        prev->next = n->next;
    else if (p->children == n)
        p->children = n->next;
    else
        return;                         /* not among its parent's children */
    if (p->last_child == n)
        p->last_child = prev;
    n->parent = n->next = NULL;
}

/* The namespace in effect: the nearest xmlns attribute up the tree. */
static const char *xml_ns_of(const struct xml_node *n)
{
    for (; n; n = n->parent) {
        const char *ns = xml_attr(n, "xmlns");
        if (ns)
            return ns;
    }
    return NULL;
}

struct xml_node *xml_child(const struct xml_node *n, const char *name, const char *ns)
{
    for (struct xml_node *c = xml_first_elem(n); c; c = xml_next_elem(c)) {
        if (strcmp(c->name, name) != 0)
            continue;
        if (!ns)
            return c;
        const char *cns = xml_ns_of(c);
        if (cns && strcmp(cns, ns) == 0)
            return c;
    }
    return NULL;
}

struct xml_node *xml_first_elem(const struct xml_node *n)
{
    if (!n)
        return NULL;
    struct xml_node *c = n->children;
    while (c && !c->name)
        c = c->next;
    return c;
}

struct xml_node *xml_next_elem(const struct xml_node *n)
{
    if (!n)
        return NULL;
    struct xml_node *c = n->next;
    while (c && !c->name)
        c = c->next;
    return c;
}

void xml_text(const struct xml_node *n, struct sb_buf *out)
{
    sb_buf_reset(out);
    if (!n)
        return;
    for (const struct xml_node *c = n->children; c; c = c->next)
        if (!c->name)
            sb_buf_add(out, c->text, c->text_len);
}

struct xml_node *xml_add_child(struct xml_doc *d, struct xml_node *parent, const char *name)
{
    struct xml_node *n = xml_node_alloc(d->arena);
    if (!n || !(n->name = xml_arena_strdup(d->arena, name)))
        return NULL;
    xml_node_append(parent, n);
    return n;
}

sb_rc xml_add_text(struct xml_doc *d, struct xml_node *parent, const char *text, size_t len)
{
    struct xml_node *n = xml_node_alloc(d->arena);
    if (!n)
        return SB_ERROR;
    char *t = xml_arena_strndup(d->arena, text, len);
    if (!t)
        return SB_ERROR;
    n->text = t;
    n->text_len = len;
    xml_node_append(parent, n);
    return SB_OK;
}

/* parent may be NULL: the copy is then detached (e.g. to become d->root). */
struct xml_node *xml_copy_into(struct xml_doc *d, struct xml_node *parent, const struct xml_node *src)
{
    struct xml_arena *a = d->arena;
    struct xml_node *n = xml_node_alloc(a);
    if (!n)
        return NULL;
    if (!src->name) {
        char *t = xml_arena_strndup(a, src->text, src->text_len);
        if (!t)
            return NULL;
        n->text = t;
        n->text_len = src->text_len;
        xml_node_append(parent, n);
        return n;
    }
    if (!(n->name = xml_arena_strdup(a, src->name)))
        return NULL;
    if (src->nattrs > 0) {
        n->attrs = xml_arena_alloc(a, (size_t)src->nattrs * sizeof *n->attrs, _Alignof(struct xml_attr));
        if (!n->attrs)
            return NULL;
        for (int i = 0; i < src->nattrs; i++) {
            n->attrs[i].name = xml_arena_strdup(a, src->attrs[i].name);
            n->attrs[i].value = xml_arena_strdup(a, src->attrs[i].value);
            if (!n->attrs[i].name || !n->attrs[i].value)
                return NULL;
        }
        n->nattrs = n->attrs_cap = src->nattrs;
    }
    for (const struct xml_node *c = src->children; c; c = c->next)
        if (!xml_copy_into(d, n, c))
            return NULL;
    xml_node_append(parent, n);
    return n;
}

/* ---- serialiser -------------------------------------------------------------- */

static sb_rc xml_escape(struct sb_buf *out, const char *s, size_t len, int attr)
{
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        /* \r would be normalised away by the reader in text and
         * attributes, \t and \n in attributes: keep them as references. */
        case '\r': rep = "&#13;"; break;
        case '"': rep = attr ? "&quot;" : NULL; break;
        case '\'': rep = attr ? "&apos;" : NULL; break;
        case '\t': rep = attr ? "&#9;" : NULL; break;
        case '\n': rep = attr ? "&#10;" : NULL; break;
        default: rep = NULL;
        }
        if (!rep)
            continue;
        if (sb_buf_add(out, s + run, i - run) != SB_OK || sb_buf_adds(out, rep) != SB_OK)
            return SB_ERROR;
        run = i + 1;
    }
    return sb_buf_add(out, s + run, len - run);
}

sb_rc xml_escape_text(struct sb_buf *out, const char *s, size_t len)
{
    return xml_escape(out, s, len, 0);
}

sb_rc xml_escape_attr(struct sb_buf *out, const char *s, size_t len)
{
    return xml_escape(out, s, len, 1);
}

static sb_rc xml_put_start(const struct xml_node *n, struct sb_buf *out)
{
    if (sb_buf_add(out, "<", 1) != SB_OK || sb_buf_adds(out, n->name) != SB_OK)
        return SB_ERROR;
    for (int i = 0; i < n->nattrs; i++) {
        const struct xml_attr *a = &n->attrs[i];
        if (sb_buf_add(out, " ", 1) != SB_OK || sb_buf_adds(out, a->name) != SB_OK ||
            sb_buf_add(out, "='", 2) != SB_OK ||
            xml_escape_attr(out, a->value, strlen(a->value)) != SB_OK ||
            sb_buf_add(out, "'", 1) != SB_OK)
            return SB_ERROR;
    }
    return SB_OK;
}

sb_rc xml_serialize_open(const struct xml_node *n, struct sb_buf *out)
{
    if (!n || !n->name || xml_put_start(n, out) != SB_OK)
        return SB_ERROR;
    return sb_buf_add(out, ">", 1);
}

sb_rc xml_serialize(const struct xml_node *n, struct sb_buf *out)
{
    if (!n)
        return SB_ERROR;
    if (!n->name)
        return xml_escape_text(out, n->text, n->text_len);
    if (xml_put_start(n, out) != SB_OK)
        return SB_ERROR;
    if (!n->children)
        return sb_buf_add(out, "/>", 2);
    if (sb_buf_add(out, ">", 1) != SB_OK)
        return SB_ERROR;
    for (const struct xml_node *c = n->children; c; c = c->next)
        if (xml_serialize(c, out) != SB_OK)
            return SB_ERROR;
    if (sb_buf_add(out, "</", 2) != SB_OK || sb_buf_adds(out, n->name) != SB_OK)
        return SB_ERROR;
    return sb_buf_add(out, ">", 1);
}

sb_rc xml_serialize_stamped(const struct xml_node *st, const char *from, const char *to,
                            const char *drop_ns, struct sb_buf *b)
{
    sb_buf_reset(b);
    sb_buf_adds(b, "<");
    sb_buf_adds(b, st->name);
    for (int i = 0; i < st->nattrs; i++) {
        const struct xml_attr *a = &st->attrs[i];
        if (!strcmp(a->name, "from") || !strcmp(a->name, "to") ||
            (drop_ns && !strcmp(a->name, "xmlns") &&
             (!strcmp(drop_ns, "*") || !strcmp(a->value, drop_ns))))
            continue;
        sb_buf_printf(b, " %s='", a->name);
        xml_escape_attr(b, a->value, strlen(a->value));
        sb_buf_adds(b, "'");
    }
    sb_buf_adds(b, " from='");
    xml_escape_attr(b, from, strlen(from));
    sb_buf_adds(b, "'");
    if (to) {
        sb_buf_adds(b, " to='");
        xml_escape_attr(b, to, strlen(to));
        sb_buf_adds(b, "'");
    }
    if (!st->children)
        return sb_buf_adds(b, "/>");
    sb_buf_adds(b, ">");
    for (const struct xml_node *ch = st->children; ch; ch = ch->next)
        if (xml_serialize(ch, b) != SB_OK)
            return SB_ERROR;
    sb_buf_printf(b, "</%s>", st->name);
    return b->data ? SB_OK : SB_ERROR;
}
