/* redis.c — sbctl's Redis: one synchronous hiredis connection from the
 * [cluster] keys the processes use (redis_host, redis_port, redis_user,
 * redis_password(_file)), with a connect and a command timeout so a Redis
 * that is down or frozen makes a command fail, never hang. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "config.h"
#include "domains.h"
#include "sasl.h"
#include "sbctl.h"

#define SBCTL_REDIS_TIMEOUT_MS 2000

redisContext *sbctl_redis_connect(char *err, size_t cap)
{
    char pw[1024];
    const char *host = sb_config_str("redis_host", "127.0.0.1");
    int port = (int)sb_config_int("redis_port", 6379);
    long ms = sb_config_int("redis_timeout_ms", SBCTL_REDIS_TIMEOUT_MS);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (sb_config_secret("redis_password", pw, sizeof pw) == SB_ERROR) {
        snprintf(err, cap, "cannot read the Redis password (redis_password_file)");
        return NULL;
    }
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        snprintf(err, cap, "cannot connect to Redis at %s:%d: %s", host, port,
                 c ? c->errstr : "out of memory");
        redisFree(c);
        memset(pw, 0, sizeof pw);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (pw[0]) {
        const char *user = sb_config_str("redis_user", NULL);
        redisReply *r = user && *user ? redisCommand(c, "AUTH %s %s", user, pw)
                                      : redisCommand(c, "AUTH %s", pw);
        int ok = r && r->type == REDIS_REPLY_STATUS;
        snprintf(err, cap, "Redis at %s:%d refused AUTH: %s", host, port,
                 r && r->str ? r->str : c->errstr);
        if (r)
            freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            c = NULL;
        }
    }
    memset(pw, 0, sizeof pw);
    return c;
}

redisContext *sbctl_redis(void)
{
    char err[512];
    redisContext *c = sbctl_redis_connect(err, sizeof err);
    if (!c)
        sbctl_err("%s", err);
    return c;
}

redisReply *sbctl_redis_cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r) {
        sbctl_err("Redis: %s", c->errstr[0] ? c->errstr : "no answer");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        sbctl_err("Redis: %s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int sbctl_domains_publish(const char *what)
{
    char err[512];
    redisContext *c = sbctl_redis_connect(err, sizeof err);
    redisReply *r = c ? redisCommand(c, "PUBLISH %s %s", SB_DOMAINS_CHANNEL, what) : NULL;
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        sbctl_err("warning: could not tell the processes (%s); they pick the change up within "
                  "30 s", c ? (r && r->str ? r->str : c->errstr) : err);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok ? 0 : -1;
}

/* The front-ends' credential caches (auth/sasl.h) forget bare's keys. A
 * front-end that misses it (its Redis connection was down) forgets
 * everything when it subscribes again; one that stays connected to Redis
 * while sbctl cannot reach it would keep serving the old keys, but only
 * while PostgreSQL cannot answer it: say so. */
int sbctl_credentials_forget(const char *bare)
{
    char err[512], msg[600];
    snprintf(msg, sizeof msg, "forget %s", bare);     /* one argument */
    redisContext *c = sbctl_redis_connect(err, sizeof err);
    redisReply *r = c ? redisCommand(c, "PUBLISH %s %s", AUTH_CACHE_CHANNEL, msg) : NULL;
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        sbctl_err("warning: could not tell the front-ends to forget the cached credentials of "
                  "%s (%s); they serve them only while PostgreSQL cannot answer", bare,
                  c ? (r && r->str ? r->str : c->errstr) : err);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok ? 0 : -1;
}
