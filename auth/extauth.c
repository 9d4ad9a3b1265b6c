/* extauth.c — passwords checked by an external program speaking the line
 * protocol of ejabberd's extauth scripts, so existing scripts work as
 * they are: each request is a 2-byte big-endian length and
 * `auth:User:Server:Password`, `isuser:User:Server` or
 * `setpass:User:Server:Password`; the answer is a 2-byte length (2) and a
 * 2-byte 0 or 1. One request at a time per process, so a domain runs
 * `extauth_instances` copies of `extauth_program` side by side, on pipes
 * watched by the libev loop (never blocking it). A copy that does not
 * answer within `extauth_timeout` seconds is killed (its request and
 * nothing else fails with -1: temporary-auth-failure); a copy that dies
 * or is killed is started again after a back-off (0.5 s doubling to 30 s,
 * back to 0.5 s once it answers). Pools are per program command line and
 * live as long as the process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "auth-int.h"

#define EXT_MAX_INST     16
#define EXT_MAX_QUEUE    1024     /* waiting requests per pool */
#define EXT_BACKOFF_MIN  0.5
#define EXT_BACKOFF_MAX  30.0
#define EXT_MAX_FIELD    1023     /* bytes of one user/server/password */

struct ext_req {
    struct ext_req *next;
    auth_check_cb cb;
    void *arg;
    double deadline;              /* given up if still waiting for a copy */
    size_t len;
    uint8_t msg[];                /* the framed request */
};

struct ext_pool;

struct ext_inst {
    struct ext_pool *pool;
    int idx;
    pid_t pid;                    /* 0: not running */
    pid_t dead;                   /* killed, not reaped yet */
    int wfd, rfd;                 /* its stdin (we write), its stdout (we read) */
    ev_io rio;
    ev_timer tmo;                 /* the answer's deadline */
    ev_timer restart;
    double backoff;
    struct ext_req *cur;          /* in flight, or NULL */
    uint8_t rbuf[4];
    size_t rlen;
};

struct ext_pool {
    struct ext_pool *next;
    struct ev_loop *loop;
    char *program;
    int n;
    double timeout;
    struct ext_inst inst[EXT_MAX_INST];
    struct ext_req *head, **tail;
    size_t queued;
    ev_timer expire;              /* drops requests that waited too long */
};

static struct ext_pool *ext_pools;

static void ext_answer(struct ext_req *rq, int result)
{
    auth_check_cb cb = rq->cb;
    void *arg = rq->arg;
    memset(rq->msg, 0, rq->len);          /* the password */
    free(rq);
    cb(arg, result);
}

static void ext_start(struct ext_inst *in);
static void ext_dispatch(struct ext_pool *p);

/* Stop a copy (dead or hung) and start it again after the back-off. */
static void ext_down(struct ext_inst *in, const char *why)
{
    struct ext_pool *p = in->pool;

    if (in->pid) {
        kill(-in->pid, SIGKILL);      /* its process group (ext_start) */
        kill(in->pid, SIGKILL);
        if (waitpid(in->pid, NULL, WNOHANG) == 0)
            in->dead = in->pid;       /* reaped before the restart */
        log_warn("extauth_down", "program=%s instance=%d pid=%d reason=%s restart_in=%.1f",
                 sb_log_q(p->program), in->idx, (int)in->pid, why, in->backoff);
    }
    ev_io_stop(p->loop, &in->rio);
    ev_timer_stop(p->loop, &in->tmo);
    if (in->wfd >= 0)
        close(in->wfd);
    if (in->rfd >= 0)
        close(in->rfd);
    in->wfd = in->rfd = -1;
    in->pid = 0;
    in->rlen = 0;
    ev_timer_stop(p->loop, &in->restart);
    ev_timer_set(&in->restart, in->backoff, 0);
    ev_timer_start(p->loop, &in->restart);
    in->backoff = in->backoff * 2 > EXT_BACKOFF_MAX ? EXT_BACKOFF_MAX : in->backoff * 2;
    struct ext_req *rq = in->cur;
    in->cur = NULL;
    if (rq)
        ext_answer(rq, -1);
    ext_dispatch(p);                  /* no copy left: the queue fails now */
}

static void ext_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ext_inst *in = w->data;
    ssize_t n = read(in->rfd, in->rbuf + in->rlen, sizeof in->rbuf - in->rlen);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        ext_down(in, n == 0 ? "exited" : "read-error");
        return;
    }
    in->rlen += (size_t)n;
    if (in->rlen < sizeof in->rbuf)
        return;
    in->rlen = 0;
    if (!in->cur || in->rbuf[0] != 0 || in->rbuf[1] != 2 || in->rbuf[2] != 0 || in->rbuf[3] > 1) {
        ext_down(in, in->cur ? "bad-reply" : "unasked-reply");
        return;
    }
    struct ext_req *rq = in->cur;
    in->cur = NULL;
    ev_timer_stop(loop, &in->tmo);
    in->backoff = EXT_BACKOFF_MIN;    /* it works */
    ext_answer(rq, in->rbuf[3]);
    ext_dispatch(in->pool);
}

static void ext_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ext_inst *in = w->data;
    log_warn("extauth_timeout", "program=%s instance=%d timeout=%.1f",
             sb_log_q(in->pool->program), in->idx, in->pool->timeout);
    ext_down(in, "timeout");
}

static void ext_restart_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ext_inst *in = w->data;
    if (in->dead && waitpid(in->dead, NULL, WNOHANG) != 0)
        in->dead = 0;
    ext_start(in);
    ext_dispatch(in->pool);
}

/* fork + exec the program through /bin/sh (a command line: the program and
 * its arguments, run with `exec`). */
static void ext_start(struct ext_inst *in)
{
    struct ext_pool *p = in->pool;
    int to[2], from[2];

    if (pipe2(to, O_CLOEXEC) != 0)
        goto fail;
    if (pipe2(from, O_CLOEXEC) != 0) {
        close(to[0]);
        close(to[1]);
        goto fail;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(to[0]);
        close(to[1]);
        close(from[0]);
        close(from[1]);
        goto fail;
    }
    if (pid == 0) {
        dup2(to[0], 0);
        dup2(from[1], 1);
        close_range(3, ~0U, 0);       /* no client sockets in the script */
        signal(SIGPIPE, SIG_DFL);
        /* A script stuck in a request must not outlive the front-end that
         * started it: its own process group (ext_down kills the group, so
         * whatever it forked goes too), a death signal when the front-end
         * dies, and `exec` so the signal reaches the program, not only the
         * shell. The buffer is on the stack: no malloc after fork. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);              /* the parent died before prctl */
        char cmd[4096];
        if (snprintf(cmd, sizeof cmd, "exec %s", p->program) >= (int)sizeof cmd)
            _exit(127);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    fcntl(from[0], F_SETFL, O_NONBLOCK);
    in->pid = pid;
    in->wfd = to[1];
    in->rfd = from[0];
    in->rlen = 0;
    ev_io_set(&in->rio, in->rfd, EV_READ);
    ev_io_start(p->loop, &in->rio);
    log_info("extauth_started", "program=%s instance=%d pid=%d", sb_log_q(p->program), in->idx,
             (int)pid);
    return;
fail:
    log_warn("extauth_start_failed", "program=%s instance=%d error=%s", sb_log_q(p->program),
             in->idx, sb_log_q(strerror(errno)));
    in->pid = 0;
    ev_timer_set(&in->restart, in->backoff, 0);
    ev_timer_start(p->loop, &in->restart);
    in->backoff = in->backoff * 2 > EXT_BACKOFF_MAX ? EXT_BACKOFF_MAX : in->backoff * 2;
}

/* Hand the request to an idle copy: the pipe is empty (the previous
 * answer came), so a request this small is written whole. */
static void ext_send(struct ext_inst *in, struct ext_req *rq)
{
    in->cur = rq;
    ssize_t n = write(in->wfd, rq->msg, rq->len);
    if (n != (ssize_t)rq->len) {
        ext_down(in, "write-error");
        return;
    }
    ev_timer_set(&in->tmo, in->pool->timeout, 0);
    ev_timer_start(in->pool->loop, &in->tmo);
}

static int ext_any_up(const struct ext_pool *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->inst[i].pid)
            return 1;
    return 0;
}

static struct ext_req *ext_pop(struct ext_pool *p)
{
    struct ext_req *rq = p->head;
    if (rq) {
        p->head = rq->next;
        if (!p->head)
            p->tail = &p->head;
        p->queued--;
    }
    return rq;
}

static void ext_dispatch(struct ext_pool *p)
{
    if (!ext_any_up(p)) {
        struct ext_req *rq;
        while ((rq = ext_pop(p)))
            ext_answer(rq, -1);        /* every copy down: fail now, not later */
        return;
    }
    for (int i = 0; i < p->n && p->head; i++) {
        struct ext_inst *in = &p->inst[i];
        if (in->pid && !in->cur)
            ext_send(in, ext_pop(p));
    }
    if (p->head && !ev_is_active(&p->expire)) {
        ev_timer_set(&p->expire, p->timeout / 2, p->timeout / 2);
        ev_timer_start(p->loop, &p->expire);
    } else if (!p->head) {
        ev_timer_stop(p->loop, &p->expire);
    }
}

/* Requests behind slow copies wait a bounded time too. */
static void ext_expire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ext_pool *p = w->data;
    double now = ev_now(loop);
    while (p->head && p->head->deadline <= now) {
        log_warn("extauth_queue_timeout", "program=%s queued=%zu", sb_log_q(p->program),
                 p->queued);
        ext_answer(ext_pop(p), -1);
    }
    if (!p->head)
        ev_timer_stop(loop, w);
}

static struct ext_pool *ext_pool_get(struct ev_loop *loop, const char *domain)
{
    const char *prog = sb_config_str_in("domain", domain, "extauth_program", "");
    if (!prog[0])
        return NULL;
    for (struct ext_pool *p = ext_pools; p; p = p->next)
        if (p->loop == loop && !strcmp(p->program, prog))
            return p;
    struct ext_pool *p = calloc(1, sizeof(*p));
    if (!p || !(p->program = strdup(prog))) {
        free(p);
        return NULL;
    }
    long n = strtol(sb_config_str_in("domain", domain, "extauth_instances", "1"), NULL, 10);
    p->n = n < 1 ? 1 : n > EXT_MAX_INST ? EXT_MAX_INST : (int)n;
    p->timeout = strtod(sb_config_str_in("domain", domain, "extauth_timeout", "5"), NULL);
    if (!(p->timeout > 0))
        p->timeout = 5;
    p->loop = loop;
    p->tail = &p->head;
    ev_init(&p->expire, ext_expire_cb);
    p->expire.data = p;
    for (int i = 0; i < p->n; i++) {
        struct ext_inst *in = &p->inst[i];
        in->pool = p;
        in->idx = i;
        in->wfd = in->rfd = -1;
        in->backoff = EXT_BACKOFF_MIN;
        ev_init(&in->rio, ext_read_cb);
        ev_init(&in->tmo, ext_timeout_cb);
        ev_init(&in->restart, ext_restart_cb);
        in->rio.data = in->tmo.data = in->restart.data = in;
        ext_start(in);
    }
    p->next = ext_pools;
    ext_pools = p;
    return p;
}

/* A field may not carry the separator of its own position: ':' in the
 * user or server would shift the fields (ejabberd's scripts split on the
 * first two). The password is last and taken whole. */
static int ext_field_ok(const char *s, int last)
{
    return strlen(s) <= EXT_MAX_FIELD && (last || !strchr(s, ':'));
}

sb_rc auth_extauth_call(struct ev_loop *loop, const char *domain, const char *op,
                        const char *user, const char *password, auth_check_cb cb, void *arg)
{
    struct ext_pool *p = loop ? ext_pool_get(loop, domain) : NULL;

    if (!p || !ext_field_ok(user, 0) || !ext_field_ok(domain, 0) ||
        (password && !ext_field_ok(password, 1)))
        return SB_ERROR;
    if (p->queued >= EXT_MAX_QUEUE || !ext_any_up(p)) {
        log_warn("extauth_unavailable", "program=%s queued=%zu up=%d", sb_log_q(p->program),
                 p->queued, ext_any_up(p));
        return SB_ERROR;
    }
    size_t body = strlen(op) + 1 + strlen(user) + 1 + strlen(domain) +
                  (password ? 1 + strlen(password) : 0);
    struct ext_req *rq = malloc(sizeof(*rq) + body + 3);
    if (!rq)
        return SB_ERROR;
    rq->msg[0] = (uint8_t)(body >> 8);
    rq->msg[1] = (uint8_t)body;
    snprintf((char *)rq->msg + 2, body + 1, "%s:%s:%s%s%s", op, user, domain,
             password ? ":" : "", password ? password : "");
    rq->len = body + 2;
    rq->cb = cb;
    rq->arg = arg;
    rq->next = NULL;
    rq->deadline = ev_now(loop) + 2 * p->timeout;
    *p->tail = rq;
    p->tail = &rq->next;
    p->queued++;
    ext_dispatch(p);
    return SB_OK;
}
