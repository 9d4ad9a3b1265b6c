/* xml.h — XML for XMPP: an Expat-based stream parser that yields one
 * stanza tree at a time, a one-shot document parser, tree helpers and a
 * serialiser with correct escaping.
 *
 * Names are kept as written (no namespace processing): `stream:stream`,
 * `xmlns` and `xmlns:*` are ordinary attributes. RFC 6120 restricted XML is
 * enforced: DTDs, comments, processing instructions and entity declarations
 * are errors. Trees live in an arena owned by the stream (valid only during
 * the on_stanza callback) or by an xml_doc. */
#ifndef SB_XML_H
#define SB_XML_H

#include "sb.h"
#include "buf.h"

struct xml_attr {
    const char *name;
    const char *value;
};

/* An element (name != NULL) or a text node (name == NULL, text/text_len). */
struct xml_node {
    const char *name;
    struct xml_attr *attrs;
    int nattrs, attrs_cap;
    struct xml_node *parent, *children, *last_child, *next;
    const char *text;
    size_t text_len;
};

enum xml_err {
    XML_ERR_NONE = 0,
    XML_ERR_SYNTAX,       /* → stream error not-well-formed */
    XML_ERR_RESTRICTED,   /* DTD, comment, PI → restricted-xml */
    XML_ERR_TOO_BIG,      /* stanza over max_stanza bytes → policy-violation */
    XML_ERR_TOO_DEEP,     /* nesting over max_depth → policy-violation */
    XML_ERR_NOMEM,
};
const char *xml_err_name(enum xml_err e);
/* The RFC 6120 stream error condition for a parser error (the table above;
 * not-well-formed for anything else). */
const char *xml_err_stream_cond(enum xml_err e);
/* RFC 6120 §4.7.5: a stream `version` of 1.0 or later (major ≥ 1). */
int xml_stream_version_ok(const char *v);

struct xml_limits {
    size_t max_stanza;   /* bytes of one top-level stanza; default 262144 */
    int max_depth;       /* element depth inside a stanza; default 32 */
};
#define XML_LIMITS_DEFAULT {262144, 32}

/* ---- arena-backed documents ------------------------------------------- */
struct xml_arena;
struct xml_doc {
    struct xml_arena *arena;
    struct xml_node *root;
};

/* Parse one complete element. NULL on error (err set when non-NULL). */
struct xml_doc *xml_doc_parse(const char *buf, size_t len,
                              const struct xml_limits *lim, enum xml_err *err);
/* An empty document whose root is a new element `name`. */
struct xml_doc *xml_doc_new(const char *name);
void xml_doc_free(struct xml_doc *d);

/* ---- tree helpers (nodes allocated from the doc's arena) --------------- */
const char *xml_attr(const struct xml_node *n, const char *name);
/* Set or replace an attribute; value copied. */
sb_rc xml_set_attr(struct xml_doc *d, struct xml_node *n, const char *name, const char *value);
void xml_del_attr(struct xml_node *n, const char *name);
/* First child element with this name (and xmlns attr when ns != NULL). */
struct xml_node *xml_child(const struct xml_node *n, const char *name, const char *ns);
/* First child element of any name. */
struct xml_node *xml_first_elem(const struct xml_node *n);
struct xml_node *xml_next_elem(const struct xml_node *n);
/* Concatenated text of direct text children into out (cleared first). */
void xml_text(const struct xml_node *n, struct sb_buf *out);
struct xml_node *xml_add_child(struct xml_doc *d, struct xml_node *parent, const char *name);
sb_rc xml_add_text(struct xml_doc *d, struct xml_node *parent, const char *text, size_t len);
/* Take n (and its subtree) out of its parent's children (its memory stays
 * in the arena). */
void xml_unlink(struct xml_node *n);
/* Deep-copy a subtree (from any arena) under parent in d. */
struct xml_node *xml_copy_into(struct xml_doc *d, struct xml_node *parent, const struct xml_node *src);

/* ---- serialising --------------------------------------------------------- */
sb_rc xml_escape_text(struct sb_buf *out, const char *s, size_t len);  /* & < > */
sb_rc xml_escape_attr(struct sb_buf *out, const char *s, size_t len);  /* & < > " ' */
/* Append the element and its subtree. */
sb_rc xml_serialize(const struct xml_node *n, struct sb_buf *out);
/* A stanza again with `from` (and `to` unless NULL) set by us in place of
 * what it said, every other attribute kept except an `xmlns` equal to
 * drop_ns ("*": any xmlns; NULL: keep it): how a front-end, s2s or the
 * component listener stamps what it forwards. */
sb_rc xml_serialize_stamped(const struct xml_node *st, const char *from, const char *to,
                            const char *drop_ns, struct sb_buf *b);
/* Append only the start tag `<name a='v'...>` (for stream headers). */
sb_rc xml_serialize_open(const struct xml_node *n, struct sb_buf *out);

/* ---- stream parser ------------------------------------------------------- */
struct xml_stream;

struct xml_stream_cb {
    /* The stream header. `hdr` is an element with attributes, no children. */
    void (*on_open)(void *ud, struct xml_node *hdr);
    /* One complete depth-1 element. The tree is freed when this returns. */
    void (*on_stanza)(void *ud, struct xml_node *stanza);
    /* </stream:stream> received. */
    void (*on_close)(void *ud);
};

struct xml_stream *xml_stream_new(const struct xml_limits *lim,
                                  const struct xml_stream_cb *cb, void *ud);
void xml_stream_free(struct xml_stream *s);

/* Feed bytes. Callbacks run inside. Returns
 *   SB_OK     all consumed
 *   SB_DONE   a callback asked for a restart or stop; the rest of buf was
 *             dropped and (restart) the parser is ready for a new header
 *   SB_ERROR  bad XML: xml_stream_error() tells which (stream stays failed)
 * Whitespace between stanzas (keepalives) is ignored. */
sb_rc xml_stream_feed(struct xml_stream *s, const char *buf, size_t len);
enum xml_err xml_stream_error(const struct xml_stream *s);
/* From inside a callback: after the current element, reset for a new
 * stream header (RFC 6120 stream restart after STARTTLS / SASL). */
void xml_stream_restart(struct xml_stream *s);
/* From inside a callback: stop parsing; further feeds return SB_DONE. */
void xml_stream_stop(struct xml_stream *s);
/* Reset now (outside callbacks). */
void xml_stream_reset(struct xml_stream *s);
/* 1 when the stream is open and between stanzas with nothing buffered (no
 * partial element): the parser may be freed and a new one primed with a
 * header later without losing input (c2s frees idle parsers). */
int xml_stream_idle(const struct xml_stream *s);

#endif
