/* fuzz_config.c — the INI parser (common/config.c) through its real entry
 * point: the input is written to a file, loaded, looked up and reloaded.
 * Checks: a file that loaded once loads again the same (reload succeeds and
 * answers the same), lookups never fail on what was parsed. Secrets are not
 * read (a `*_file` key could name any file of the machine). */
#include "fuzz.h"
#include "config.h"

#include <unistd.h>

static char path[64];

static void each(const char *section, const char *value, void *ud)
{
    (*(int *)ud)++;
    FUZZ_CHECK(section && value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!*path) {
        fuzz_quiet();
        /* /dev/shm when there is one: a disk write per execution made this
         * the slowest target (0.2 M executions a minute). */
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/sb-fuzz-config-%ld.ini", dir, (long)getpid());
    }
    if (size > 65536)
        return 0;
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f);
    FUZZ_CHECK(fwrite(data, 1, size, f) == size);
    fclose(f);
    static const char *const keys[] = {"port", "listen", "redis", "routers", "max_stanza",
                                       "allow_plain_without_tls", "a", "x", ""};
    if (sb_config_load(path, "c2s", "c2s1") == SB_OK) {
        const char *before[SB_ARRAY_LEN(keys)];
        for (size_t i = 0; i < SB_ARRAY_LEN(keys); i++) {
            before[i] = sb_config_str(keys[i], NULL);
            (void)sb_config_int(keys[i], 7);
            (void)sb_config_bool(keys[i], 0);
            (void)sb_config_str_section("cluster", keys[i], NULL);
            int n = 0;
            sb_config_each_key(keys[i], each, &n);
        }
        (void)sb_config_routers();
        FUZZ_CHECK(sb_config_reload() == SB_OK);
        for (size_t i = 0; i < SB_ARRAY_LEN(keys); i++) {
            const char *after = sb_config_str(keys[i], NULL);
            FUZZ_CHECK((before[i] == NULL) == (after == NULL));
            FUZZ_CHECK(!after || strcmp(before[i], after) == 0);
        }
    }
    sb_config_free();
    return 0;
}
