/*
 * kiln_job_done_sql: the runner's own "done" statement, renumbered for a
 * job that ends itself inside its last statement (jobs.h). The black-box
 * webhook tests run it on PostgreSQL; this checks the text and the
 * parameters for any first number, without a database.
 */
#include "test_util.h"

#include "core/arena.h"
#include "jobs/jobs.h"

static void test_renumbered_from_first(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(4096);
    struct kiln_job_run job = { .id = 42, .attempt = 3 };
    const size_t firsts[] = { 1, 8, 10, 98 };
    for (size_t i = 0; i < ARRAY_LEN(firsts); i++) {
        size_t f = firsts[i];
        kiln_str p[3];
        const char *sql = kiln_job_done_sql(a, &job, f, p);
        char want[64];
        snprintf(want, sizeof want, "WHERE id = $%zu AND locked_by = $%zu AND attempts = $%zu ",
                 f, f + 1, f + 2);
        if (!strstr(sql, want))
            fail_msg("first %zu: no \"%s\" in %s", f, want, sql);
        assert_non_null(strstr(sql, "UPDATE jobs SET state = 'done'"));
        assert_non_null(strstr(sql, "AND state = 'running'"));
        /* Nothing else numbered: exactly three parameters. */
        size_t dollars = 0;
        for (const char *s = sql; *s; s++)
            dollars += *s == '$';
        assert_int_equal(dollars, 3);
        assert_kstr_eq(p[0], "42");
        assert_kstr_eq(p[2], "3");
        assert_non_null(p[1].p); /* this instance ("" before kiln_jobs_start) */
    }
    kiln_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renumbered_from_first),
    };
    return cmocka_run_group_tests_name("jobs/done_sql", tests, NULL, NULL);
}
