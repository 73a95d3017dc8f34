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

/* kiln_job_done_many_sql sets exactly what the one-job statement sets
 * (one JOB_DONE_SET), guarded the same way per row of the relation. */
static void test_many_sets_what_one_sets(void **state)
{
    (void)state;
    kiln_arena *a = kiln_arena_new(4096);
    struct kiln_job_run job = { .id = 7, .attempt = 1 };
    kiln_str one[3], many[1];
    const char *sql1 = kiln_job_done_sql(a, &job, 1, one);
    const char *sqlm = kiln_job_done_many_sql(a, "v", "v.ok", 4, many);
    const char *set1 = strstr(sql1, " SET "), *where1 = strstr(sql1, " WHERE ");
    const char *setm = strstr(sqlm, " SET "), *from = strstr(sqlm, " FROM v WHERE ");
    assert_non_null(set1);
    assert_non_null(where1);
    assert_non_null(setm);
    assert_non_null(from);
    if ((size_t)(where1 - set1) != (size_t)(from - setm) || memcmp(set1, setm, (size_t)(where1 - set1)))
        fail_msg("the SET parts differ:\n%s\n%s", sql1, sqlm);
    assert_non_null(strstr(from, "WHERE v.ok AND jobs.id = v.job AND jobs.locked_by = $4 AND "
                                 "jobs.attempts = v.attempt AND jobs.state = 'running'"));
    size_t dollars = 0;
    for (const char *s = sqlm; *s; s++)
        dollars += *s == '$';
    assert_int_equal(dollars, 1);
    assert_non_null(many[0].p);
    /* no condition: every row */
    sqlm = kiln_job_done_many_sql(a, "r", NULL, 2, many);
    assert_non_null(strstr(sqlm, " FROM r WHERE jobs.id = r.job AND jobs.locked_by = $2 "));
    kiln_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renumbered_from_first),
        cmocka_unit_test(test_many_sets_what_one_sets),
    };
    return cmocka_run_group_tests_name("jobs/done_sql", tests, NULL, NULL);
}
