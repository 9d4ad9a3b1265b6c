/* certs.c — see certs.h. A pair is a certificate chain and its private key
 * as gnutls_pcert_st/gnutls_privkey_t, handed to gnutls by a retrieve
 * callback, so one credential (one set of trust anchors) serves every
 * domain and nothing is parsed during a handshake. */
#include "certs.h"
#include "config.h"
#include "domains.h"
#include "log.h"

#include <gnutls/abstract.h>
#include <gnutls/x509.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CERTS_CHAIN_MAX 16
#define CERTS_PATH_MAX  4096

struct cert_pair {
    struct cert_pair *next;          /* the retired list */
    gnutls_pcert_st chain[CERTS_CHAIN_MAX];
    unsigned int n;
    gnutls_privkey_t key;
};

struct cert_entry {
    char *domain;                    /* nameprepped, as served */
    char *file;                      /* the certificate file, for logs */
    struct cert_pair *pair;
};

static struct cert_pair *certs_default;
static struct cert_entry *certs_tab;     /* sorted by domain */
static size_t certs_n;
/* Replaced pairs: running sessions may point into them (see certs.h). */
static struct cert_pair *certs_retired;
static char *certs_dir;              /* cert_dir, "" none */

static void pair_free(struct cert_pair *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->n; i++)
        gnutls_pcert_deinit(&p->chain[i]);
    if (p->key)
        gnutls_privkey_deinit(p->key);
    free(p);
}

static void pair_retire(struct cert_pair *p)
{
    if (!p)
        return;
    p->next = certs_retired;
    certs_retired = p;
}

/* 0 when the private key belongs to the first certificate of the chain. */
static int pair_match(const struct cert_pair *p)
{
    unsigned char a[64], b[64];
    size_t al = sizeof a, bl = sizeof b;
    gnutls_pubkey_t pub;
    int r = gnutls_pubkey_init(&pub);
    if (r < 0)
        return r;
    r = gnutls_pubkey_import_privkey(pub, p->key, 0, 0);
    if (r >= 0)
        r = gnutls_pubkey_get_key_id(pub, GNUTLS_KEYID_USE_SHA256, a, &al);
    if (r >= 0)
        r = gnutls_pubkey_get_key_id(p->chain[0].pubkey, GNUTLS_KEYID_USE_SHA256, b, &bl);
    gnutls_pubkey_deinit(pub);
    if (r < 0)
        return r;
    return al == bl && memcmp(a, b, al) == 0 ? 0 : GNUTLS_E_CERTIFICATE_KEY_MISMATCH;
}

/* Read one pair; NULL after one log line naming the file and the error
 * (`kept` says what stays in force instead). */
static struct cert_pair *pair_load(const char *domain, const char *cert, const char *key,
                                   const char *kept)
{
    gnutls_datum_t cd = {NULL, 0}, kd = {NULL, 0};
    const char *file = cert;
    struct cert_pair *p = calloc(1, sizeof *p);
    int r = p ? gnutls_load_file(cert, &cd) : GNUTLS_E_MEMORY_ERROR;
    if (r >= 0) {
        p->n = CERTS_CHAIN_MAX;
        r = gnutls_pcert_list_import_x509_raw(p->chain, &p->n, &cd, GNUTLS_X509_FMT_PEM,
                                              GNUTLS_X509_CRT_LIST_SORT);
        if (r < 0)
            p->n = 0;
    }
    if (r >= 0) {
        file = key;
        r = gnutls_load_file(key, &kd);
    }
    if (r >= 0)
        r = gnutls_privkey_init(&p->key);
    if (r >= 0)
        r = gnutls_privkey_import_x509_raw(p->key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (r >= 0)
        r = pair_match(p);
    gnutls_free(cd.data);
    if (kd.data) {
        gnutls_memset(kd.data, 0, kd.size);
        gnutls_free(kd.data);
    }
    if (r >= 0)
        return p;
    log_error("tls_cert_failed", "domain=%s file=%s error=%s kept=%s", domain ? domain : "-",
              file, sb_log_q(gnutls_strerror(r)), kept);
    pair_free(p);
    return NULL;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cert_entry *)a)->domain, ((const struct cert_entry *)b)->domain);
}

static struct cert_entry *certs_entry(const char *domain)
{
    struct cert_entry k = {(char *)domain, NULL, NULL};
    return certs_n ? bsearch(&k, certs_tab, certs_n, sizeof k, entry_cmp) : NULL;
}

/* The files of domain's own pair into cert/key: 1, or 0 when it has none. */
static int certs_files(const char *domain, char *cert, char *key, size_t cap)
{
    char sec[300];
    snprintf(sec, sizeof sec, "domain.%s", domain);
    const char *c = sb_config_str_section(sec, "cert", NULL);
    if (c && *c) {
        const char *k = sb_config_str_section(sec, "key", NULL);
        snprintf(cert, cap, "%s", c);
        snprintf(key, cap, "%s", k && *k ? k : c);
        return 1;
    }
    /* A name that could leave the directory is never a file name. */
    if (!certs_dir || !*certs_dir || *domain == '.' || strchr(domain, '/'))
        return 0;
    snprintf(cert, cap, "%s/%s.pem", certs_dir, domain);
    if (access(cert, F_OK) != 0)
        return 0;
    snprintf(key, cap, "%s/%s.key", certs_dir, domain);
    if (access(key, F_OK) != 0)
        snprintf(key, cap, "%s", cert);   /* chain and key in one file */
    return 1;
}

static void certs_tab_free(struct cert_entry *tab, size_t n, int retire)
{
    for (size_t i = 0; i < n; i++) {
        if (retire)
            pair_retire(tab[i].pair);
        else
            pair_free(tab[i].pair);
        free(tab[i].domain);
        free(tab[i].file);
    }
    free(tab);
}

/* One served domain into the new table at *k: its pair read again (reread),
 * or kept from the old table, or read for the first time. */
static void certs_sync_one(const char *domain, int reread, struct cert_entry *tab, size_t *k,
                           int *failed)
{
    static char cert[CERTS_PATH_MAX], key[CERTS_PATH_MAX];
    struct cert_entry *o = certs_entry(domain);
    struct cert_pair *p = NULL;
    const char *file = NULL;
    if (o && !reread) {
        p = o->pair;                  /* files are read on SIGHUP, not here */
        file = o->file;
    } else if (certs_files(domain, cert, key, sizeof cert)) {
        p = pair_load(domain, cert, key, o ? "previous" : "default");
        file = cert;
        if (p) {
            log_info("tls_cert", "domain=%s file=%s", domain, cert);
        } else {
            (*failed)++;
            if (o)
                p = o->pair, file = o->file;   /* a broken new file: the old pair stays */
        }
    }
    if (!p)
        return;                        /* the default pair serves it */
    char *d = strdup(domain), *f = strdup(file);
    if (!d || !f) {
        free(d);
        free(f);
        log_error("tls_cert_nomem", "domain=%s", domain);
        if (!o || p != o->pair)
            pair_free(p);
        return;
    }
    if (o && p == o->pair)
        o->pair = NULL;                /* moved to the new table */
    tab[*k] = (struct cert_entry){d, f, p};
    (*k)++;
}

/* Rebuild the table for the served domains. */
static void certs_sync(int reread)
{
    const char *csv = sb_domains_csv();
    size_t cap = *csv ? 1 : 0;
    for (const char *p = csv; *p; p++)
        cap += *p == ',';
    struct cert_entry *tab = cap ? calloc(cap, sizeof *tab) : NULL;
    if (cap && !tab) {
        log_error("tls_cert_nomem", "domains=%zu", cap);
        return;
    }
    size_t k = 0;
    int failed = 0;
    for (const char *p = csv; *p;) {
        size_t len = strcspn(p, ",");
        char name[256];
        if (len > 0 && len < sizeof name) {
            memcpy(name, p, len);
            name[len] = '\0';
            certs_sync_one(name, reread, tab, &k, &failed);
        }
        p += len + (p[len] == ',');
    }
    if (k > 1)
        qsort(tab, k, sizeof *tab, entry_cmp);
    certs_tab_free(certs_tab, certs_n, 1);   /* pairs not moved: retired */
    certs_tab = tab;
    certs_n = k;
    if (reread || failed)
        log_info("tls_certs", "domains=%zu own=%zu failed=%d dir=%s", cap, k, failed,
                 certs_dir && *certs_dir ? certs_dir : "-");
}

static sb_rc certs_set(char **slot, const char *v)
{
    char *n = strdup(v ? v : "");
    if (!n)
        return SB_ERROR;
    free(*slot);
    *slot = n;
    return SB_OK;
}

sb_rc sb_certs_load(const char *cert, const char *key, const char *dir)
{
    struct cert_pair *p = pair_load(NULL, cert, key, certs_default ? "previous" : "none");
    if (!p)
        return SB_ERROR;
    if (certs_set(&certs_dir, dir) != SB_OK) {
        pair_free(p);
        return SB_ERROR;
    }
    pair_retire(certs_default);
    certs_default = p;
    certs_sync(1);
    return SB_OK;
}

void sb_certs_domains_changed(void)
{
    if (certs_default)
        certs_sync(0);
}

int sb_certs_count(void)
{
    return (int)certs_n;
}

/* gnutls asks for our certificate (server: after the ClientHello, SNI
 * parsed; client: on the peer's CertificateRequest). */
static int certs_retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca_rdn, int nreqs,
                          const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                          gnutls_pcert_st **pcert, unsigned int *pcert_length,
                          gnutls_privkey_t *privkey)
{
    (void)req_ca_rdn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
    const char *want = gnutls_session_get_ptr(s);
    char sni[256];
    if (!want) {
        size_t len = sizeof sni;
        unsigned int type = 0;
        if (gnutls_server_name_get(s, sni, &len, &type, 0) == GNUTLS_E_SUCCESS &&
            type == GNUTLS_NAME_DNS && len < sizeof sni) {
            sni[len] = '\0';
            for (char *c = sni; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            if (len && sni[len - 1] == '.')
                sni[len - 1] = '\0';  /* an absolute name */
            want = sni;
        }
    }
    const struct cert_entry *e = want && *want ? certs_entry(want) : NULL;
    const struct cert_pair *p = e ? e->pair : certs_default;
    if (!p) {
        *pcert = NULL;
        *pcert_length = 0;
        *privkey = NULL;
        return 0;                     /* no certificate: a server handshake fails */
    }
    *pcert = (gnutls_pcert_st *)p->chain;
    *pcert_length = p->n;
    *privkey = p->key;
    return 0;
}

void sb_certs_attach(gnutls_certificate_credentials_t cred)
{
    gnutls_certificate_set_retrieve_function2(cred, certs_retrieve);
}

void sb_certs_session_domain(gnutls_session_t s, const char *domain)
{
    gnutls_session_set_ptr(s, (void *)domain);
}

void sb_certs_free(void)
{
    certs_tab_free(certs_tab, certs_n, 0);
    certs_tab = NULL;
    certs_n = 0;
    pair_free(certs_default);
    certs_default = NULL;
    while (certs_retired) {
        struct cert_pair *p = certs_retired;
        certs_retired = p->next;
        pair_free(p);
    }
    free(certs_dir);
    certs_dir = NULL;
}
