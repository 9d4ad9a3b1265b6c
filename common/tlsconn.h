/* tlsconn.h — one non-blocking TCP connection on the libev loop, plaintext
 * or GnuTLS (TLS 1.2+ by the priority string), with an output buffer: the
 * wire under c2s client streams and s2s server streams. It finishes
 * outgoing connects, runs handshakes (direct TLS at once; STARTTLS once the
 * queued plaintext, e.g. <proceed/>, is written), reads into one shared
 * buffer and hands the plaintext to its owner, writes without copying when
 * the socket takes the bytes (the rest waits in a buffer that exists only
 * while bytes are pending; writes after the first in one loop iteration are
 * coalesced into one send before the loop blocks), and closes the way a server should: flush,
 * close_notify and shut the write side, then discard what the peer still
 * sends until it closes (lingering close; the owner's timer bounds it).
 * TLS credentials (priority string; certificates: common/certs.h) are made
 * here too.
 *
 * The owner embeds a struct tlsconn and hears back through tlsconn_ops
 * (ud = the owner). A callback may close the connection, but the owner
 * frees it (tlsconn_free) only on a later loop turn. */
#ifndef SB_TLSCONN_H
#define SB_TLSCONN_H

#include <ev.h>
#include <gnutls/gnutls.h>
#include <stdint.h>

#include "sb.h"
#include "buf.h"

struct tlsconn_ops {
    /* Plaintext bytes from the peer (the buffer is reused after return). */
    void (*input)(void *ud, const char *data, size_t len);
    /* The handshake is done: a new stream starts over TLS. */
    void (*secured)(void *ud);
    /* tlsconn_connecting's connect finished: err is 0 or its errno. */
    void (*connected)(void *ud, int err);
    /* The wire is gone: EOF, reset, an IO or TLS error, a failed handshake,
     * or (closing) the peer closed after our goodbye. `why` names it for
     * logs ("eof", "reset", "read-error", "tls-error", "write-error",
     * "tls-write-error", "tls-handshake-failed", "nomem"). Nothing more is
     * read or written; the owner closes without lingering or frees soon. */
    void (*dead)(void *ud, const char *why);
};

/* tlsconn.flags */
#define TLSCONN_F_CONNECTING 0x01  /* outgoing connect in progress */
#define TLSCONN_F_START      0x02  /* session set: handshake once output is written */
#define TLSCONN_F_HANDSHAKE  0x04  /* handshake running */
#define TLSCONN_F_AGAIN      0x08  /* gnutls holds an encrypted record not yet sent */
#define TLSCONN_F_PAUSED     0x10  /* not reading (the owner's byte shaper) */
#define TLSCONN_F_CLOSING    0x20  /* closed by us: flushing, then lingering */
#define TLSCONN_F_SHUT       0x40  /* close_notify sent, write side shut */
#define TLSCONN_F_DEAD       0x80  /* nothing more on the wire */
#define TLSCONN_F_HELD       0x100 /* output held until the loop iteration ends */

struct tlsconn {
    ev_io io;                      /* io.data is the owner (ud) */
    struct ev_loop *loop;
    const struct tlsconn_ops *ops;
    const char *peer;              /* the owner's "ip:port", for logs */
    gnutls_session_t tls;          /* NULL: plaintext */
    struct sb_buf out;             /* pending output; freed once drained */
    size_t out_counted;            /* out.cap as counted in sb_mem_owned */
    int fd;                        /* -1: no socket (the owner's other transports) */
    uint32_t iter;                 /* loop iteration of the last direct write */
    uint16_t flags;                /* TLSCONN_F_* */
};

/* tlsconn_write results. */
enum { TLSCONN_FAILED = -1, TLSCONN_OK = 0, TLSCONN_FULL = 1 };

/* Set up on fd (non-blocking; -1: an inert conn that only frees); nothing
 * is watched until tlsconn_want. */
void tlsconn_init(struct tlsconn *t, struct ev_loop *loop, int fd,
                  const struct tlsconn_ops *ops, void *ud, const char *peer);
/* Watch the socket for what the connection needs now (reading when open). */
void tlsconn_want(struct tlsconn *t);
/* A non-blocking connect() is in progress on fd: ops->connected follows. */
void tlsconn_connecting(struct tlsconn *t);
/* Go over to TLS with session s (transport = fd, see tlsconn_session_new):
 * the handshake starts at once, or once queued output is written. */
void tlsconn_starttls(struct tlsconn *t, gnutls_session_t s);
/* The TLS handshake has completed (records flow encrypted). */
int tlsconn_secure(const struct tlsconn *t);
/* Bytes queued (plus one while gnutls holds a record). */
size_t tlsconn_pending(const struct tlsconn *t);
/* Write now what the socket takes, queue the rest; a second write in the
 * same loop iteration is held and leaves with the others before the loop
 * blocks (one send for a burst). TLSCONN_FULL: the
 * queue would pass max_pending; nothing was taken, the owner decides.
 * TLSCONN_FAILED: ops->dead has run. Dropped silently once dead. */
int tlsconn_write(struct tlsconn *t, const char *data, size_t len, size_t max_pending);
/* Hold the next write of this loop iteration too, as if it were the second:
 * a stream header and the features that follow it leave in one send (one
 * TLS record) instead of two. */
void tlsconn_hold_next(struct tlsconn *t);
/* Queue past any cap (a last stream error before closing). */
void tlsconn_queue(struct tlsconn *t, const char *data, size_t len);
/* Stop reading (byte shaper) / read again, including what TLS holds. */
void tlsconn_pause(struct tlsconn *t);
void tlsconn_resume(struct tlsconn *t);
/* We close: 1 when the wire is already gone (free soon); 0 when flushing
 * and lingering (free once ops->dead says the peer closed, or at the
 * owner's deadline). Before a stream exists (connecting, handshake,
 * <proceed/> still queued) nothing is sent. */
int tlsconn_close(struct tlsconn *t);
/* Stop watching, end the session, close the socket, free the buffer. */
void tlsconn_free(struct tlsconn *t);

/* ---- sockets ------------------------------------------------------------- */
struct sockaddr;
/* A non-blocking listening socket on addr:port ("" or NULL: any), or -1
 * (logged). */
int tlsconn_listen(const char *addr, int port, int backlog);
/* "ip:port" of sa (IPv4/IPv6; "?:0" otherwise) into out, for logs. */
void tlsconn_peer_name(char *out, size_t cap, const struct sockaddr *sa);
/* The key per-address limits count by, from such a name ("ip:port",
 * "[v6]:port"): 16 bytes, IPv4 as v4-mapped IPv6, IPv6 cut to its /64 (a
 * host gets a whole /64); the key as text ("192.0.2.1", "2001:db8::/64")
 * into shown. -1: not an address. */
int tlsconn_addr_key(const char *peer, uint8_t key[16], char *shown, size_t cap);

/* ---- credentials --------------------------------------------------------- */
struct tlsconn_creds {
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
};
/* A certificate credential whose certificates come from the domain table
 * (certs.h: load it first) and a priority cache; logs why not. */
sb_rc tlsconn_creds_init(struct tlsconn_creds *cr, const char *priority);
void tlsconn_creds_free(struct tlsconn_creds *cr);
/* A non-blocking session on fd; role GNUTLS_SERVER or GNUTLS_CLIENT. The
 * caller adds what differs (certificate request, SNI). */
sb_rc tlsconn_session_new(const struct tlsconn_creds *cr, unsigned role, int fd,
                          gnutls_session_t *out);

#endif
