/* fuzz_sasl2.c — one XEP-0388 <authenticate/> as c2s reads it
 * (c2s/sasl2_parse.c: user-agent, Bind 2 with inline enables, inline
 * resume, FAST request-token / count / invalidate) and the Bind 2 resource
 * derived from it (c2s_sasl2_resource). Checks: an accepted request has a
 * mechanism of [A-Z0-9-_], bounded fields, a resume with digits only, a
 * FAST request only with a user-agent id; a refusal names a condition; the
 * resource prefix fits the 32 bytes the sm keeps and is stable. */
#include "fuzz.h"
#include "c2s/sasl2.h"

static struct sb_buf text;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet();
        init = 1;
    }
    struct xml_limits lim = {262144, 32};
    enum xml_err err;
    struct xml_doc *d = xml_doc_parse((const char *)data, size, &lim, &err);
    if (!d)
        return 0;
    struct c2s_sasl2_req r;
    const char *cond = NULL;
    const char *why = c2s_sasl2_parse(d->root, &text, &r, &cond);
    if (why) {
        FUZZ_CHECK(cond && (!strcmp(cond, "malformed-request") ||
                            !strcmp(cond, "invalid-mechanism")));
        xml_doc_free(d);
        return 0;
    }
    FUZZ_CHECK(r.mech[0] && strspn(r.mech, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") ==
               strlen(r.mech));
    FUZZ_CHECK(strlen(r.ua) <= SASL2_UA_MAX && strlen(r.tag) <= SASL2_TAG_MAX);
    FUZZ_CHECK(strlen(r.software) < sizeof r.software && strlen(r.device) < sizeof r.device);
    if (r.resume)
        FUZZ_CHECK(r.previd[0] && strspn(r.resume_h, "0123456789") == strlen(r.resume_h));
    if (r.token_mech[0] || r.fast)
        FUZZ_CHECK(r.ua[0]);
    FUZZ_CHECK(r.count >= -1);
    char a[33], b[33];
    int st = c2s_sasl2_resource("user@example.org", r.ua, r.tag, a);
    FUZZ_CHECK(strlen(a) <= 32);
    FUZZ_CHECK(c2s_sasl2_resource("user@example.org", r.ua, r.tag, b) == st && !strcmp(a, b));
    FUZZ_CHECK(st == (r.ua[0] != 0));
    xml_doc_free(d);
    return 0;
}
