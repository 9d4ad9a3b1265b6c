/* test_upload.c — the XEP-0363 pieces every process shares (common/
 * upload.c): the slot signature against an independent HMAC-SHA256 (Python's
 * hmac), file names and content types a URL and a header can carry, and the
 * directory store: write, commit, read back, refuse twice, sweep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#include "upload.h"

static void test_upload_signature_matches_hmac_sha256(void **st)
{
    char sig[UPLOAD_SIG_HEX + 1];
    upload_sign("0123456789abcdef", "abc/x.png", 5, "text/plain", 1700000000, sig);
    assert_string_equal(sig, "9aa2c7b6ed903b7c3feb7a28f7185896085708da8f6d946e3d26ce5d4b125c44");
    assert_true(upload_sig_ok("0123456789abcdef", "abc/x.png", 5, "text/plain", 1700000000, sig));
    assert_false(upload_sig_ok("0123456789abcdef", "abc/x.png", 6, "text/plain", 1700000000, sig));
    assert_false(upload_sig_ok("0123456789abcdef", "abc/x.png", 5, "text/html", 1700000000, sig));
    assert_false(upload_sig_ok("0123456789abcdef", "abc/x.png", 5, "text/plain", 1700000001, sig));
    assert_false(upload_sig_ok("0123456789abcdeX", "abc/x.png", 5, "text/plain", 1700000000, sig));
    assert_false(upload_sig_ok("0123456789abcdef", "abc/x.png", 5, "text/plain", 1700000000, "00"));
}

static void test_upload_names_are_percent_encoded(void **st)
{
    char out[UPLOAD_ENAME_MAX + 1], big[UPLOAD_NAME_MAX + 2];
    assert_int_equal(upload_name_encode("a b/é.png", out, sizeof out), SB_OK);
    assert_string_equal(out, "a%20b%2F%C3%A9.png");
    assert_true(upload_ename_valid(out, strlen(out)));
    assert_int_equal(upload_name_encode("", out, sizeof out), SB_ERROR);
    assert_int_equal(upload_name_encode("..", out, sizeof out), SB_ERROR);
    assert_int_equal(upload_name_encode("a\nb", out, sizeof out), SB_ERROR);
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(upload_name_encode(big, out, sizeof out), SB_ERROR);
    assert_false(upload_ename_valid("a/b", 3));
    assert_false(upload_ename_valid("a%2", 3));
    assert_false(upload_ename_valid("a%zz", 4));
    assert_true(upload_id_valid("abcdefghijklmnopqrstuvwxyz012345", 32));
    assert_false(upload_id_valid("Abcdefghijklmnopqrstuvwxyz012345", 32));
    assert_false(upload_id_valid("abc", 3));
}

static void test_upload_content_types(void **st)
{
    struct upload_cfg c = {.types = "image/* application/pdf"};
    assert_true(upload_ctype_valid("image/png"));
    assert_true(upload_ctype_valid("text/plain; charset=utf-8"));
    assert_false(upload_ctype_valid("text/plain\r\nX: y"));
    assert_false(upload_ctype_valid("plain"));
    assert_false(upload_ctype_valid("text/"));
    assert_true(upload_type_allowed(&c, "image/png"));
    assert_true(upload_type_allowed(&c, "IMAGE/JPEG"));
    assert_true(upload_type_allowed(&c, "application/pdf"));
    assert_false(upload_type_allowed(&c, "application/pdfx"));
    assert_false(upload_type_allowed(&c, "text/html"));
    c.types = "";
    assert_true(upload_type_allowed(&c, "text/html"));
}

static void test_upload_store_round_trip_and_sweep(void **st)
{
    char dir[] = "/tmp/sb-upload-unit-XXXXXX", ctype[UPLOAD_CTYPE_MAX + 1], buf[16];
    const char *id = "ab345678901234567890123456789012";
    struct upload_put *p = NULL;
    int fd, done = 0;
    off_t off, len;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(upload_store_open(dir, id, "x.txt", "text/plain", &p), SB_OK);
    assert_int_equal(upload_store_write(p, "hello ", 6), SB_OK);
    assert_int_equal(upload_store_get(dir, id, "x.txt", &fd, &off, &len, ctype, sizeof ctype),
                     SB_DECLINED);          /* not there until committed */
    assert_int_equal(upload_store_write(p, "world", 5), SB_OK);
    assert_int_equal(upload_store_commit(p), SB_OK);
    assert_int_equal(upload_store_open(dir, id, "x.txt", "text/plain", &p), SB_DONE);
    assert_int_equal(upload_store_get(dir, id, "y.txt", &fd, &off, &len, ctype, sizeof ctype),
                     SB_DECLINED);          /* the name is part of the URL */
    assert_int_equal(upload_store_get(dir, id, "x.txt", &fd, &off, &len, ctype, sizeof ctype),
                     SB_OK);
    assert_string_equal(ctype, "text/plain");
    assert_int_equal(len, 11);
    assert_int_equal(pread(fd, buf, 11, off), 11);
    assert_memory_equal(buf, "hello world", 11);
    close(fd);

    struct upload_sweep *s = upload_sweep_new(dir);
    assert_int_equal(upload_sweep_step(s, 86400.0, 100, &done), 0);     /* young: kept */
    assert_true(done);
    char path[256];
    snprintf(path, sizeof path, "%s/ab/%s", dir, id);
    struct utimbuf old = {time(NULL) - 2 * 86400, time(NULL) - 2 * 86400};
    assert_int_equal(utime(path, &old), 0);
    long n = 0;
    for (int i = 0; i < 10 && !(n && done); i++)
        n += upload_sweep_step(s, 86400.0, 1, &done);                   /* one entry a step */
    assert_int_equal(n, 1);
    assert_int_not_equal(access(path, F_OK), 0);
    upload_sweep_free(s);
    snprintf(path, sizeof path, "%s/ab", dir);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* A deleted account's file (upload_trash, sb-bosh / sbctl). */
static void test_upload_store_remove(void **st)
{
    char dir[] = "/tmp/sb-upload-unit-XXXXXX", path[256];
    const char *id = "cd345678901234567890123456789012";
    struct upload_put *p = NULL;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(upload_store_remove(dir, id), SB_DECLINED);        /* none yet */
    assert_int_equal(upload_store_remove(dir, "../../etc/passwd"), SB_DECLINED);
    assert_int_equal(upload_store_open(dir, id, "x.txt", "text/plain", &p), SB_OK);
    assert_int_equal(upload_store_write(p, "x", 1), SB_OK);
    assert_int_equal(upload_store_commit(p), SB_OK);
    snprintf(path, sizeof path, "%s/cd/%s", dir, id);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(upload_store_remove(dir, id), SB_OK);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(upload_store_remove(dir, id), SB_DECLINED);        /* twice: gone */
    snprintf(path, sizeof path, "%s/cd", dir);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upload_signature_matches_hmac_sha256),
        cmocka_unit_test(test_upload_names_are_percent_encoded),
        cmocka_unit_test(test_upload_content_types),
        cmocka_unit_test(test_upload_store_round_trip_and_sweep),
        cmocka_unit_test(test_upload_store_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
