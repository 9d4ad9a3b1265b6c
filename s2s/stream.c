/* stream.c — the XML stream of one server-to-server connection (RFC 6120
 * §4): our stream header, stream errors, parser errors, restarts, and
 * handing each header and top-level element to in.c or out.c by direction.
 * Names are kept as written by the parser, so namespaces are recognised
 * by xmlns attributes or by the prefixes servers bind on the stream
 * (`db:` for dialback, `stream:` for the stream namespace). */
#include "s2s.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static struct sb_buf stream_out;

static void stream_on_open(void *ud, struct xml_node *hdr);
static void stream_on_stanza(void *ud, struct xml_node *n);
static void stream_on_close(void *ud);

static const struct xml_stream_cb stream_cbs = {
    stream_on_open, stream_on_stanza, stream_on_close,
};

sb_rc s2s_stream_new(struct s2s_conn *c)
{
    c->xs = xml_stream_new(&s2s.cfg.limits, &stream_cbs, c);
    return c->xs ? SB_OK : SB_ERROR;
}

void s2s_stream_input(struct s2s_conn *c, const char *data, size_t len)
{
    c->flags |= S2S_F_IN_FEED;
    sb_rc rc = xml_stream_feed(c->xs, data, len);
    c->flags &= ~S2S_F_IN_FEED;
    if (rc == SB_ERROR && c->state != S2S_S_CLOSING) {
        enum xml_err e = xml_stream_error(c->xs);
        s2s_stream_error(c, xml_err_stream_cond(e), xml_err_name(e));
    }
}

void s2s_stream_restart(struct s2s_conn *c)
{
    if (c->flags & S2S_F_IN_FEED)
        xml_stream_restart(c->xs);
    else
        xml_stream_reset(c->xs);
    c->flags &= ~S2S_F_HDR_SENT;
}

/* Our header: initiating (out) names from/to; responding (in) adds the id
 * and echoes the peer's `from` as `to` when it gave one. */
void s2s_stream_send_header(struct s2s_conn *c)
{
    struct sb_buf *b = &stream_out;
    sb_buf_reset(b);
    sb_buf_adds(b, "<?xml version='1.0'?><stream:stream xmlns='" S2S_NS_SERVER
                   "' xmlns:stream='" S2S_NS_STREAM "' xmlns:db='" S2S_NS_DB "'");
    if (c->dir == S2S_IN) {
        sb_buf_printf(b, " id='%s'", c->sid);
    }
    if (c->local) {
        sb_buf_adds(b, " from='");
        xml_escape_attr(b, c->local, strlen(c->local));
        sb_buf_adds(b, "'");
    }
    if (c->remote) {
        sb_buf_adds(b, " to='");
        xml_escape_attr(b, c->remote, strlen(c->remote));
        sb_buf_adds(b, "'");
    }
    sb_buf_adds(b, " version='1.0' xml:lang='en'>");
    c->flags |= S2S_F_HDR_SENT;
    s2s_conn_write(c, b->data, b->len);
}

void s2s_stream_error(struct s2s_conn *c, const char *cond, const char *why)
{
    if (c->state == S2S_S_CLOSING)
        return;
    sb_log(c->flags & S2S_F_REFUSED ? SB_LOG_DEBUG : SB_LOG_INFO, "stream_error",
           "peer=%s dir=%s remote=%s cond=%s detail=%s", c->peer,
             s2s_dir_name(c->dir), c->remote ? c->remote : "-", cond,
             why ? why : "-");
    if (c->state == S2S_S_TLS_HANDSHAKE || c->state == S2S_S_CONNECTING) {
        s2s_conn_close(c, cond);
        return;
    }
    if (!(c->flags & S2S_F_HDR_SENT) && c->dir == S2S_COMP) {
        s2s_comp_send_header(c);
    } else if (!(c->flags & S2S_F_HDR_SENT)) {
        if (!*c->sid)
            sb_random_id(c->sid, 20);
        s2s_stream_send_header(c);
    }
    struct sb_buf *b = &stream_out;
    sb_buf_reset(b);
    sb_buf_printf(b, "<stream:error><%s xmlns='" S2S_NS_STREAMS "'/></stream:error>"
                     "</stream:stream>", cond);
    s2s_conn_write(c, b->data, b->len);
    s2s_conn_close(c, cond);
}

static void stream_on_open(void *ud, struct xml_node *hdr)
{
    struct s2s_conn *c = ud;
    if (c->state == S2S_S_CLOSING)
        return;
    if (c->dir == S2S_COMP) {                 /* its own namespace and checks */
        s2s_comp_header(c, hdr);
        return;
    }
    const char *cond = s2s_stream_check_header(hdr);
    if (cond) {
        s2s_stream_error(c, cond, "bad-header");
        return;
    }
    if (c->dir == S2S_IN) {
        s2s_in_header(c, hdr);
        return;
    }
    const char *id = xml_attr(hdr, "id");
    snprintf(c->sid, sizeof c->sid, "%s", id ? id : "");
    if (!id || !*id || strlen(id) >= sizeof c->sid) {
        s2s_stream_error(c, "invalid-id", "peer-stream-id");
        return;
    }
    if (xml_attr(hdr, "xmlns:db"))
        c->flags |= S2S_F_FEAT_DB;
    c->state = S2S_S_WAIT_FEATURES;
}

static void stream_on_close(void *ud)
{
    struct s2s_conn *c = ud;
    if (c->state == S2S_S_CLOSING)
        return;
    if (c->flags & S2S_F_HDR_SENT)
        s2s_conn_writes(c, "</stream:stream>");
    s2s_conn_close(c, "peer-closed");
}

static void stream_on_stanza(void *ud, struct xml_node *n)
{
    struct s2s_conn *c = ud;
    if (c->state == S2S_S_CLOSING)
        return;
    if (!strcmp(s2s_local_name(n->name), "error") && s2s_elem_ns(n, S2S_NS_STREAM)) {
        struct xml_node *e = xml_first_elem(n);
        log_info("peer_stream_error", "peer=%s remote=%s cond=%s", c->peer,
                 c->remote ? c->remote : "-", e ? e->name : "-");
        s2s_conn_close(c, "peer-stream-error");
        return;
    }
    if (c->dir == S2S_OUT)
        s2s_out_element(c, n);
    else if (c->dir == S2S_COMP)
        s2s_comp_element(c, n);
    else
        s2s_in_element(c, n);
}
