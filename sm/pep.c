/* pep.c — the cached PEP nodes and items of one account (pep.h): built
 * from the account query's rows, edited by mod_pep after each write. */
#include "pep.h"
#include "config.h"

#include <stdlib.h>
#include <string.h>

static const char *const access_names[] = {"presence", "open", "whitelist"};

const char *pep_access_name(enum pep_access a)
{
    return (size_t)a < SB_ARRAY_LEN(access_names) ? access_names[a] : "presence";
}

int pep_access_parse(const char *s)
{
    for (size_t i = 0; s && i < SB_ARRAY_LEN(access_names); i++)
        if (!strcmp(s, access_names[i]))
            return (int)i;
    return -1;
}

long sm_pep_max_items(const struct pep_node *n)
{
    long srv = sb_config_int("pep_max_items", 1000);
    if (srv < 1)
        srv = 1;
    return n->max_items < 0 || n->max_items > srv ? srv : n->max_items;
}

static void item_clear(struct pep_item *it)
{
    free(it->id);
    free(it->payload);
}

static void node_clear(struct pep_node *n)
{
    for (int i = 0; i < n->nitems; i++)
        item_clear(&n->items[i]);
    free(n->items);
    free(n->name);
}

void sm_pep_free(struct sm_pep *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nnodes; i++)
        node_clear(&p->nodes[i]);
    free(p->nodes);
    struct pep_peer *pe, *tmp;
    HASH_ITER(hh, p->peers, pe, tmp) {
        HASH_DEL(p->peers, pe);
        free(pe->jid);
        free(pe->caps);
        free(pe);
    }
    free(p);
}

struct pep_node *sm_pep_node(struct sm_pep *p, const char *name)
{
    for (int i = 0; p && i < p->nnodes; i++)
        if (!strcmp(p->nodes[i].name, name))
            return &p->nodes[i];
    return NULL;
}

struct pep_node *sm_pep_node_add(struct sm_pep *p, const char *name)
{
    struct pep_node *n = sm_pep_node(p, name);
    if (n)
        return n;
    if (p->nnodes == p->cap) {
        int ncap = p->cap ? p->cap * 2 : 4;
        void *m = realloc(p->nodes, (size_t)ncap * sizeof *p->nodes);
        if (!m)
            return NULL;
        p->nodes = m;
        p->cap = ncap;
    }
    char *s = strdup(name);
    if (!s)
        return NULL;
    n = &p->nodes[p->nnodes++];
    *n = (struct pep_node){.name = s, .access = PEP_ACCESS_PRESENCE, .persist = 1,
                           .max_items = 1};
    return n;
}

void sm_pep_node_del(struct sm_pep *p, const char *name)
{
    struct pep_node *n = sm_pep_node(p, name);
    if (!n)
        return;
    node_clear(n);
    *n = p->nodes[--p->nnodes];         /* node order carries no meaning */
}

struct pep_item *sm_pep_item(struct pep_node *n, const char *id)
{
    for (int i = 0; n && i < n->nitems; i++)
        if (!strcmp(n->items[i].id, id))
            return &n->items[i];
    return NULL;
}

void sm_pep_item_del(struct pep_node *n, const char *id)
{
    struct pep_item *it = sm_pep_item(n, id);
    if (!it)
        return;
    int i = (int)(it - n->items);
    item_clear(it);
    memmove(&n->items[i], &n->items[i + 1], (size_t)(n->nitems - i - 1) * sizeof *it);
    n->nitems--;
}

/* Keep items ordered by seq (rows arrive in any order). */
static int item_pos(const struct pep_node *n, long long seq)
{
    int i = n->nitems;
    while (i > 0 && n->items[i - 1].seq > seq)
        i--;
    return i;
}

sb_rc sm_pep_item_put(struct pep_node *n, const char *id, const char *payload, long long seq)
{
    char *i_id = strdup(id), *i_pl = strdup(payload);
    if (!i_id || !i_pl)
        goto fail;
    sm_pep_item_del(n, id);
    if (n->nitems == n->cap) {
        int ncap = n->cap ? n->cap * 2 : 2;
        void *m = realloc(n->items, (size_t)ncap * sizeof *n->items);
        if (!m)
            goto fail;
        n->items = m;
        n->cap = ncap;
    }
    int pos = item_pos(n, seq);
    memmove(&n->items[pos + 1], &n->items[pos], (size_t)(n->nitems - pos) * sizeof *n->items);
    n->items[pos] = (struct pep_item){i_id, i_pl, seq};
    n->nitems++;
    return SB_OK;
fail:
    free(i_id);
    free(i_pl);
    return SB_ERROR;
}

sb_rc sm_pep_row(struct sm_pep **pp, char kind, const char *a, const char *b,
                 const char *c, const char *d)
{
    if (!*pp && !(*pp = calloc(1, sizeof **pp)))
        return SB_ERROR;
    struct sm_pep *p = *pp;
    struct pep_node *n = sm_pep_node_add(p, a);
    if (!n)
        return SB_ERROR;
    if (kind == 'q') {
        int acc = pep_access_parse(b);
        n->access = acc < 0 ? PEP_ACCESS_WHITELIST : (enum pep_access)acc;  /* unknown: closed */
        n->persist = c[0] == 't';
        n->max_items = strtol(d, NULL, 10);
        return SB_OK;
    }
    long long seq = strtoll(d, NULL, 10);
    if (seq > p->seq)
        p->seq = seq;
    return sm_pep_item_put(n, b, c, seq);
}
