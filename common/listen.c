/* listen.c — listening sockets that pause instead of spinning when the
 * process runs out of descriptors (listen.h). */
#define _GNU_SOURCE              /* accept4 */
#include "listen.h"
#include "log.h"
#include "tlsconn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#define LISTEN_PAUSE 1.0
#define LISTEN_BATCH 64

static void listen_resume(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sb_listen *ls = w->data;
    if (ls->on)
        for (int i = 0; i < ls->n; i++)
            ev_io_start(loop, &ls->lis[i].w);
}

static void listen_pause(struct sb_listen *ls, int err)
{
    if (!ls->pauses++)
        log_warn("accept_paused", "error=%s pause_s=%.0f", sb_log_q(strerror(err)), LISTEN_PAUSE);
    for (int i = 0; i < ls->n; i++)
        ev_io_stop(ls->loop, &ls->lis[i].w);
    ev_timer_set(&ls->pause, LISTEN_PAUSE, 0.);
    ev_timer_start(ls->loop, &ls->pause);
}

static void listen_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sb_listen *ls = w->data;
    int tag = ls->lis[0].tag;
    for (int i = 0; i < ls->n; i++)
        if (&ls->lis[i].w == w)
            tag = ls->lis[i].tag;
    for (int i = 0; i < LISTEN_BATCH && ls->on; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                listen_pause(ls, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                     errno != ECONNABORTED)
                log_warn("accept_failed", "error=%s", sb_log_q(strerror(errno)));
            return;
        }
        if (ls->pauses) {
            log_info("accept_resumed", "paused=%ld", ls->pauses);
            ls->pauses = 0;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ls->accepted(fd, &ss, tag, ls->ud);
    }
}

void sb_listen_init(struct sb_listen *ls, struct ev_loop *loop, sb_listen_cb cb, void *ud)
{
    memset(ls, 0, sizeof *ls);
    ls->loop = loop;
    ls->accepted = cb;
    ls->ud = ud;
    ev_timer_init(&ls->pause, listen_resume, LISTEN_PAUSE, 0.);
    ls->pause.data = ls;
}

sb_rc sb_listen_add(struct sb_listen *ls, const char *addr, int port, int backlog, int tag)
{
    if (ls->n >= SB_LISTEN_MAX)
        return SB_ERROR;
    int fd = tlsconn_listen(addr, port, backlog);
    if (fd < 0)
        return SB_ERROR;
    ev_io_init(&ls->lis[ls->n].w, listen_accept_cb, fd, EV_READ);
    ls->lis[ls->n].w.data = ls;
    ls->lis[ls->n].tag = tag;
    ls->n++;
    return SB_OK;
}

void sb_listen_start(struct sb_listen *ls)
{
    ls->on = 1;
    if (!ev_is_active(&ls->pause))
        listen_resume(ls->loop, &ls->pause, 0);
}

void sb_listen_close(struct sb_listen *ls)
{
    ls->on = 0;
    if (!ls->loop)
        return;                  /* never initialised */
    ev_timer_stop(ls->loop, &ls->pause);
    for (int i = 0; i < ls->n; i++) {
        ev_io_stop(ls->loop, &ls->lis[i].w);
        close(ls->lis[i].w.fd);
    }
    ls->n = 0;
}
