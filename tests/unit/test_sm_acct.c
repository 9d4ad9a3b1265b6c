/* test_sm_acct.c — the per-account cache of the sm (sm/acct.c): XEP-0191
 * JID matching, blocklist and blocked-by edits, who may query an account. The sm
 * core is replaced by the few functions acct.c calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "../../sm/acct.c"
#include "../../common/mam.c"
#include "../../sm/pep.c"

/* ---- fakes for what acct.c uses from the core ---------------------------------- */
void sm_user_loaded(struct sm_user *u, int ok) {}
sb_rc sm_pg_query(struct sm_core *c, const char *sql, int nparams,
                  const char *const *params, pgev_cb cb, void *arg)
{
    return SB_ERROR;
}
sb_rc sm_pg_read(struct sm_core *c, const char *sql, int nparams,
                 const char *const *params, pgev_cb cb, void *arg)
{
    return SB_ERROR;
}
const char SM_IM_ACCT_SQL[] = "";
int sm_im_preloading(const struct sm_user *u) { return 0; }
void sm_im_preload_rows(struct sm_user *u, PGresult *res) {}
int sm_is_local_domain(const struct sm_core *c, const char *domain)
{
    return !strcmp(domain, "localhost");
}

/* The roster (im.h): one contact, carol, subscribed to the user's presence
 * (from); dave only asked. */
static struct sm_im_item carol = {.jid = "carol@localhost", .state = SM_SUB_FROM, .in_roster = 1};
static struct sm_im_item dave = {.jid = "dave@localhost", .state = SM_SUB_TO | SM_SUB_PEND_IN,
                                 .in_roster = 1};
static sb_rc im_ready_rc = SB_OK;
sb_rc sm_im_ready(struct sm_job *j, const struct sm_module *m)
{
    return im_ready_rc;
}
struct sm_im_item *sm_im_find(struct sm_im *im, const char *jid)
{
    if (!strcmp(jid, carol.jid))
        return &carol;
    return !strcmp(jid, dave.jid) ? &dave : NULL;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_bare_item_matches_every_resource_of_that_account(void **st)
{
    assert_true(sm_acct_jid_match("bob@localhost", "bob@localhost"));
    assert_true(sm_acct_jid_match("bob@localhost", "bob@localhost/phone"));
    assert_false(sm_acct_jid_match("bob@localhost", "bobby@localhost/phone"));
    assert_false(sm_acct_jid_match("bob@localhost", "bob@localhost.evil/x"));
}

static void test_full_item_matches_only_that_resource(void **st)
{
    assert_true(sm_acct_jid_match("bob@localhost/phone", "bob@localhost/phone"));
    assert_false(sm_acct_jid_match("bob@localhost/phone", "bob@localhost/desk"));
    assert_false(sm_acct_jid_match("bob@localhost/phone", "bob@localhost"));
}

static void test_domain_item_matches_everything_at_that_domain(void **st)
{
    assert_true(sm_acct_jid_match("evil.example", "evil.example"));
    assert_true(sm_acct_jid_match("evil.example", "x@evil.example/r"));
    assert_true(sm_acct_jid_match("evil.example", "evil.example/r"));
    assert_false(sm_acct_jid_match("evil.example", "x@good.example/evil.example"));
    assert_false(sm_acct_jid_match("evil.example", "x@sub.evil.example"));
    /* '@' inside a resource is not a node separator. */
    assert_true(sm_acct_jid_match("evil.example", "evil.example/a@b"));
    assert_false(sm_acct_jid_match("", "anything"));
}

static void test_blocklist_edits_are_idempotent(void **st)
{
    struct sm_acct a = {0};
    assert_int_equal(sm_acct_block_add(&a, "bob@localhost"), SB_OK);
    assert_int_equal(sm_acct_block_add(&a, "bob@localhost"), SB_OK);
    assert_int_equal(sm_acct_block_add(&a, "evil.example"), SB_OK);
    assert_int_equal(a.nblock, 2);
    assert_true(sm_acct_blocks(&a, "bob@localhost/x"));
    assert_true(sm_acct_blocks(&a, "eve@evil.example/x"));
    sm_acct_block_del(&a, "bob@localhost");
    assert_false(sm_acct_blocks(&a, "bob@localhost/x"));
    sm_acct_block_clear(&a);
    assert_false(sm_acct_blocks(&a, "eve@evil.example/x"));
    free(a.block);
}

static void test_blocked_by_names_owner_and_target(void **st)
{
    struct sm_acct a = {0};
    assert_int_equal(sm_acct_by_add(&a, "alice@localhost", "bob@localhost/phone"), SB_OK);
    assert_int_equal(sm_acct_by_add(&a, "alice@localhost", "bob@localhost/phone"), SB_OK);
    assert_int_equal(a.nby, 1);
    assert_true(sm_acct_blocked_by(&a, "alice@localhost", "bob@localhost/phone"));
    assert_false(sm_acct_blocked_by(&a, "alice@localhost", "bob@localhost/desk"));
    assert_false(sm_acct_blocked_by(&a, "carol@localhost", "bob@localhost/phone"));
    sm_acct_by_del(&a, "alice@localhost", "bob@localhost/phone");
    assert_false(sm_acct_blocked_by(&a, "alice@localhost", "bob@localhost/phone"));
    free(a.by);
}

static void test_split_rejects_what_is_not_node_at_domain(void **st)
{
    char node[16];
    const char *dom;
    assert_int_equal(sm_acct_split("alice@localhost", node, sizeof node, &dom), SB_OK);
    assert_string_equal(node, "alice");
    assert_string_equal(dom, "localhost");
    assert_int_equal(sm_acct_split("localhost", node, sizeof node, &dom), SB_ERROR);
    assert_int_equal(sm_acct_split("@localhost", node, sizeof node, &dom), SB_ERROR);
    assert_int_equal(sm_acct_split("a@b/c", node, sizeof node, &dom), SB_ERROR);
    assert_int_equal(sm_acct_split("averyveryverylongnode@x", node, sizeof node, &dom), SB_ERROR);
}

static void test_only_the_user_and_subscribed_contacts_may_query(void **st)
{
    struct sm_user u = {.bare = "bob@localhost"};
    struct sm_job j = {.user = &u, .from = "bob@localhost/x"};
    im_ready_rc = SB_ERROR;                 /* the own account needs no roster */
    assert_int_equal(sm_acct_authorize(&j, NULL), SB_OK);
    im_ready_rc = SB_OK;
    j.from = "carol@localhost/r";
    assert_int_equal(sm_acct_authorize(&j, NULL), SB_OK);
    j.from = "dave@localhost/r";            /* bob receives dave's, not the reverse */
    assert_int_equal(sm_acct_authorize(&j, NULL), SB_DECLINED);
    j.from = "mallory@localhost/r";
    assert_int_equal(sm_acct_authorize(&j, NULL), SB_DECLINED);
    j.from = "";
    assert_int_equal(sm_acct_authorize(&j, NULL), SB_DECLINED);
    j.from = "carol@localhost/r";
    im_ready_rc = SB_AGAIN;                 /* roster loading: the job waits */
    assert_int_equal(sm_acct_authorize(&j, NULL), SB_AGAIN);
    im_ready_rc = SB_OK;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bare_item_matches_every_resource_of_that_account),
        cmocka_unit_test(test_full_item_matches_only_that_resource),
        cmocka_unit_test(test_domain_item_matches_everything_at_that_domain),
        cmocka_unit_test(test_blocklist_edits_are_idempotent),
        cmocka_unit_test(test_blocked_by_names_owner_and_target),
        cmocka_unit_test(test_split_rejects_what_is_not_node_at_domain),
        cmocka_unit_test(test_only_the_user_and_subscribed_contacts_may_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
