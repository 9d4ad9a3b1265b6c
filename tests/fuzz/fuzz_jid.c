/* fuzz_jid.c — JID parsing and stringprep (common/jid.c). Checks what must
 * hold for every input: a JID that parses prints back to a string that
 * parses to the same three parts (preparation is idempotent), the bare and
 * full forms agree with the fast non-preparing split, and each part's
 * profile applied again to a prepared part changes nothing. */
#include "fuzz.h"
#include "jid.h"

static struct jid j1, j2;
static char full[JID_FULL_MAX + 1], full2[JID_FULL_MAX + 1], bare[JID_BARE_MAX + 1];
static char fast[JID_BARE_MAX + 1], part[JID_PART_MAX + 1];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet();
        init = 1;
    }
    if (size > 4 * JID_FULL_MAX)
        return 0;
    char *s = malloc(size + 1);
    FUZZ_CHECK(s);
    memcpy(s, data, size);
    s[size] = '\0';

    /* The single profiles: prep(prep(x)) == prep(x). */
    sb_rc (*const prep[3])(const char *, char *) = {jid_nodeprep, jid_nameprep, jid_resourceprep};
    for (int i = 0; i < 3; i++) {
        if (prep[i](s, part) == SB_OK) {
            FUZZ_CHECK(strlen(part) <= JID_PART_MAX);
            char again[JID_PART_MAX + 1];
            FUZZ_CHECK(prep[i](part, again) == SB_OK);
            FUZZ_CHECK(strcmp(part, again) == 0);
        }
    }

    /* The fast split never writes past its buffer and agrees on a
     * non-JID by returning -1 or a bare part no longer than the input. */
    long fl = jid_bare_of(s, fast, sizeof fast);
    FUZZ_CHECK(fl < 0 || (size_t)fl == strlen(fast));

    if (jid_parse(&j1, s) == SB_OK) {
        FUZZ_CHECK(*j1.domain);
        FUZZ_CHECK(strlen(j1.node) <= JID_PART_MAX && strlen(j1.domain) <= JID_PART_MAX &&
                   strlen(j1.resource) <= JID_PART_MAX);
        jid_full(&j1, full);
        jid_bare(&j1, bare);
        /* Idempotence: the prepared form parses to itself. */
        FUZZ_CHECK(jid_parse(&j2, full) == SB_OK);
        FUZZ_CHECK(strcmp(j1.node, j2.node) == 0);
        FUZZ_CHECK(strcmp(j1.domain, j2.domain) == 0);
        FUZZ_CHECK(strcmp(j1.resource, j2.resource) == 0);
        jid_full(&j2, full2);
        FUZZ_CHECK(strcmp(full, full2) == 0);
        /* The hot path's split of a prepared JID is its bare form. */
        long n = jid_bare_of(full, fast, sizeof fast);
        FUZZ_CHECK(n >= 0 && strcmp(fast, bare) == 0);
        FUZZ_CHECK(strncmp(full, bare, strlen(bare)) == 0);
    }
    free(s);
    return 0;
}
