/* listen.h — a process's listening TCP sockets on the libev loop (sb-c2s,
 * sb-bosh, sb-s2s): each readiness accepts up to 64 connections and hands
 * every new descriptor (non-blocking, close-on-exec, TCP_NODELAY) to the
 * owner. Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) the
 * listening socket stays readable, so instead of spinning on it every
 * listener of the set is paused for a second and then tried again; the
 * first pause of an episode is logged (`accept_paused`), the end of it too
 * (`accept_resumed paused=N`, the number of pauses). */
#ifndef SB_LISTEN_H
#define SB_LISTEN_H

#include <ev.h>
#include <sys/socket.h>
#include "sb.h"

#define SB_LISTEN_MAX 4

/* fd is the owner's from now on; tag is the one given to sb_listen_add. */
typedef void (*sb_listen_cb)(int fd, const struct sockaddr_storage *peer, int tag, void *ud);

struct sb_listen {
    struct ev_loop *loop;
    sb_listen_cb accepted;
    void *ud;
    int n;
    struct {
        ev_io w;
        int tag;
    } lis[SB_LISTEN_MAX];
    ev_timer pause;
    long pauses;              /* pauses in the current episode (0: none) */
    int on;                   /* started and not stopped */
};

void sb_listen_init(struct sb_listen *ls, struct ev_loop *loop, sb_listen_cb cb, void *ud);
/* Bind and listen on addr:port ("" or NULL: any); not accepting yet. */
sb_rc sb_listen_add(struct sb_listen *ls, const char *addr, int port, int backlog, int tag);
/* Accept on every socket of the set (again after sb_listen_pause). */
void sb_listen_start(struct sb_listen *ls);
/* Stop accepting and close every socket (a draining or stopping process). */
void sb_listen_close(struct sb_listen *ls);

#endif
