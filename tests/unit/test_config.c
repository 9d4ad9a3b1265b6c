/* test_config.c — lookup order: env, [kind.instance], [kind], [cluster],
 * default; value parsing; bad files refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static char cfg_path[64];

static const char cfg_text[] =
    "# cluster file\n"
    "[cluster]\n"
    "router = tcp://127.0.0.1:15555\n"
    "shared = from-cluster\n"
    "log_level = warn\n"
    "postgres = host=x password=a#b\n"
    "; other comment\n"
    "[c2s]\n"
    "port = 5222\n"
    "shared = from-kind\n"
    "inst_only = from-kind\n"
    "tls = yes  # inline comment\n"
    "bad_int = 12x\n"
    "hex = 0x10\n"
    "[c2s.c2s2]\n"
    "port = 5242\n"
    "inst_only = from-instance\n"
    "[sm]\n"
    "port = 7777\n"
    "max-items = 9\n";

static int setup(void **st)
{
    strcpy(cfg_path, "/tmp/sb_test_config_XXXXXX");
    int fd = mkstemp(cfg_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, cfg_text, sizeof cfg_text - 1), (ssize_t)(sizeof cfg_text - 1));
    close(fd);
    sb_log_init("test", SB_LOG_ERROR);
    return 0;
}

static int teardown(void **st)
{
    unlink(cfg_path);
    sb_config_free();
    return 0;
}

static void test_config_instance_section_beats_kind_section(void **st)
{
    assert_int_equal(sb_config_load(cfg_path, "c2s", "c2s2"), SB_OK);
    assert_int_equal(sb_config_int("port", 0), 5242);
    assert_string_equal(sb_config_str("inst_only", NULL), "from-instance");
    assert_int_equal(sb_config_load(cfg_path, "c2s", "c2s1"), SB_OK);
    assert_int_equal(sb_config_int("port", 0), 5222);
    assert_string_equal(sb_config_str("inst_only", NULL), "from-kind");
}

static void test_config_kind_section_beats_cluster(void **st)
{
    assert_int_equal(sb_config_load(cfg_path, "c2s", "c2s1"), SB_OK);
    assert_string_equal(sb_config_str("shared", NULL), "from-kind");
    assert_string_equal(sb_config_str("router", NULL), "tcp://127.0.0.1:15555");
    assert_int_equal(sb_config_load(cfg_path, "router", NULL), SB_OK);
    assert_string_equal(sb_config_str("shared", NULL), "from-cluster");
}

static void test_config_default_when_key_absent(void **st)
{
    assert_int_equal(sb_config_load(cfg_path, "c2s", "c2s1"), SB_OK);
    assert_string_equal(sb_config_str("nope", "dflt"), "dflt");
    assert_null(sb_config_str("nope", NULL));
    assert_int_equal(sb_config_int("nope", 42), 42);
    assert_int_equal(sb_config_bool("nope", 1), 1);
}

static void test_config_env_overrides_every_section(void **st)
{
    assert_int_equal(sb_config_load(cfg_path, "c2s", "c2s2"), SB_OK);
    setenv("SB_C2S_PORT", "6000", 1);
    setenv("SB_C2S_ROUTER", "tcp://env", 1);
    assert_int_equal(sb_config_int("port", 0), 6000);
    assert_string_equal(sb_config_str("router", NULL), "tcp://env");
    unsetenv("SB_C2S_PORT");
    unsetenv("SB_C2S_ROUTER");
    assert_int_equal(sb_config_int("port", 0), 5242);
}

static void test_config_env_name_maps_dash_and_dot_to_underscore(void **st)
{
    assert_int_equal(sb_config_load(cfg_path, "sm", "sm1"), SB_OK);
    assert_int_equal(sb_config_int("max-items", 0), 9);
    setenv("SB_SM_MAX_ITEMS", "11", 1);
    assert_int_equal(sb_config_int("max-items", 0), 11);
    unsetenv("SB_SM_MAX_ITEMS");
}

static void test_config_env_cluster_overrides_cluster_section_only(void **st)
{
    assert_int_equal(sb_config_load(cfg_path, "c2s", "c2s1"), SB_OK);
    setenv("SB_CLUSTER_SHARED", "from-env-cluster", 1);
    setenv("SB_CLUSTER_ROUTER", "tcp://env-cluster", 1);
    assert_string_equal(sb_config_str("shared", NULL), "from-kind");
    assert_string_equal(sb_config_str("router", NULL), "tcp://env-cluster");
    unsetenv("SB_CLUSTER_SHARED");
    unsetenv("SB_CLUSTER_ROUTER");
}

static void test_config_env_works_without_file(void **st)
{
    assert_int_equal(sb_config_load(NULL, "c2s", "c2s1"), SB_OK);
    setenv("SB_C2S_PORT", "6001", 1);
    assert_int_equal(sb_config_int("port", 5), 6001);
    unsetenv("SB_C2S_PORT");
    assert_int_equal(sb_config_int("port", 5), 5);
}

static void test_config_str_in_reads_other_kind(void **st)
{
    assert_int_equal(sb_config_load(cfg_path, "sm", "sm1"), SB_OK);
    assert_string_equal(sb_config_str_in("c2s", "c2s2", "port", NULL), "5242");
    assert_string_equal(sb_config_str_in("c2s", NULL, "port", NULL), "5222");
    assert_string_equal(sb_config_str_in("c2s", "c2s9", "router", NULL), "tcp://127.0.0.1:15555");
    assert_string_equal(sb_config_str("port", NULL), "7777");
}

static void test_config_values_parse_bool_int_and_comments(void **st)
{
    assert_int_equal(sb_config_load(cfg_path, "c2s", "c2s1"), SB_OK);
    assert_int_equal(sb_config_bool("tls", 0), 1);
    assert_int_equal(sb_config_int("bad_int", -1), -1);
    assert_int_equal(sb_config_int("hex", 0), 16);
    assert_string_equal(sb_config_str("postgres", NULL), "host=x password=a#b");
    setenv("SB_C2S_TLS", "off", 1);
    assert_int_equal(sb_config_bool("tls", 1), 0);
    setenv("SB_C2S_TLS", "maybe", 1);
    assert_int_equal(sb_config_bool("tls", 1), 1);
    unsetenv("SB_C2S_TLS");
}

static void test_config_missing_file_is_an_error(void **st)
{
    assert_int_equal(sb_config_load("/nonexistent/sb.ini", "c2s", "c2s1"), SB_ERROR);
}

static void test_config_syntax_error_is_refused(void **st)
{
    char path[] = "/tmp/sb_test_bad_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char bad[] = "[c2s]\nport 5222\n";
    assert_int_equal(write(fd, bad, sizeof bad - 1), (ssize_t)(sizeof bad - 1));
    close(fd);
    assert_int_equal(sb_config_load(path, "c2s", "c2s1"), SB_ERROR);
    unlink(path);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_config_reload_reads_new_values_and_keeps_old_strings(void **st)
{
    char path[64];
    strcpy(path, "/tmp/sb_test_reload_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "[c2s]\nmax_rate = 100\ncert = /a.pem\n");
    assert_int_equal(sb_config_load(path, "c2s", "c2s1"), SB_OK);
    const char *old_cert = sb_config_str("cert", NULL);
    write_file(path, "[c2s]\nmax_rate = 200\ncert = /b.pem\n");
    assert_int_equal(sb_config_reload(), SB_OK);
    assert_int_equal(sb_config_int("max_rate", 0), 200);
    assert_string_equal(sb_config_str("cert", NULL), "/b.pem");
    assert_string_equal(old_cert, "/a.pem");      /* still readable after reload */
    write_file(path, "[c2s\nmax_rate = 300\n");  /* broken: the old table stays */
    assert_int_equal(sb_config_reload(), SB_ERROR);
    assert_int_equal(sb_config_int("max_rate", 0), 200);
    unlink(path);
    assert_int_equal(sb_config_reload(), SB_ERROR);   /* gone: same */
    assert_string_equal(sb_config_str("cert", NULL), "/b.pem");
    sb_config_free();
}


/* A secret comes from <key>_file (newline stripped) before <key>; none is
 * SB_DONE; an empty or unreadable file is an error, never "no password". */
static void test_config_secret_from_file_or_value(void **st)
{
    char out[64], pw[] = "/tmp/sb_test_secret_XXXXXX";
    int fd = mkstemp(pw);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sb_config_load(cfg_path, "c2s", "c2s1"), SB_OK);
    assert_int_equal(sb_config_secret("redis_password", out, sizeof out), SB_DONE);
    assert_string_equal(out, "");
    setenv("SB_CLUSTER_REDIS_PASSWORD", "inline", 1);
    assert_int_equal(sb_config_secret("redis_password", out, sizeof out), SB_OK);
    assert_string_equal(out, "inline");
    write_file(pw, "s3cret\n");
    setenv("SB_CLUSTER_REDIS_PASSWORD_FILE", pw, 1);
    assert_int_equal(sb_config_secret("redis_password", out, sizeof out), SB_OK);
    assert_string_equal(out, "s3cret");
    write_file(pw, "\n");
    assert_int_equal(sb_config_secret("redis_password", out, sizeof out), SB_ERROR);
    write_file(pw, "0123456789012345678901234567890123456789012345678901234567890123456789");
    assert_int_equal(sb_config_secret("redis_password", out, sizeof out), SB_ERROR);
    unlink(pw);
    assert_int_equal(sb_config_secret("redis_password", out, sizeof out), SB_ERROR);
    unsetenv("SB_CLUSTER_REDIS_PASSWORD_FILE");
    unsetenv("SB_CLUSTER_REDIS_PASSWORD");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_instance_section_beats_kind_section),
        cmocka_unit_test(test_config_kind_section_beats_cluster),
        cmocka_unit_test(test_config_default_when_key_absent),
        cmocka_unit_test(test_config_env_overrides_every_section),
        cmocka_unit_test(test_config_env_name_maps_dash_and_dot_to_underscore),
        cmocka_unit_test(test_config_env_cluster_overrides_cluster_section_only),
        cmocka_unit_test(test_config_env_works_without_file),
        cmocka_unit_test(test_config_str_in_reads_other_kind),
        cmocka_unit_test(test_config_values_parse_bool_int_and_comments),
        cmocka_unit_test(test_config_missing_file_is_an_error),
        cmocka_unit_test(test_config_syntax_error_is_refused),
        cmocka_unit_test(test_config_reload_reads_new_values_and_keeps_old_strings),
        cmocka_unit_test(test_config_secret_from_file_or_value),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
