/*
 * Unit tests for the resource engine (app/src/api/engine.c) without HTTP:
 * the checks a declaration must pass (each refusal, on a copy of a valid
 * declaration broken in one way), the validation of bodies against the
 * declared fields (the contract's messages), and the SQL built for each
 * dialect, both as text and run against a real SQLite database migrated
 * with Kiln's own migrations (the black-box suites run it on PostgreSQL).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#include "api/engine.h"
#include "api/resource.h"
#include "core/arena.h"
#include "store/db.h"
#include "store/migrate.h"

extern const struct kiln_resource kiln_resource_notes, kiln_resource_projects,
    kiln_resource_tasks;

static kiln_arena *arena;

static int setup(void **state)
{
    (void)state;
    arena = kiln_arena_new(64 * 1024);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kiln_arena_free(arena);
    return 0;
}

/* ---- declaration checks ---- */

static void test_the_declared_resources_pass(void **state)
{
    (void)state;
    char err[256] = "";
    assert_int_equal(kiln_resources_check(err, sizeof err), 0);
    assert_true(kiln_resources_count >= 3);
    assert_ptr_equal(kiln_resource_find("tasks"), &kiln_resource_tasks);
    assert_null(kiln_resource_find("nope"));
}

static bool in_cascade(const struct kiln_resource *of, const struct kiln_resource *r)
{
    const struct kiln_resource *const *c;
    size_t n = kiln_resource_cascade(of, &c);
    for (size_t i = 0; i < n; i++)
        if (c[i] == r)
            return true;
    return false;
}

/* For every declaration in the build (gen-check's scratch build adds a
 * chain labels -> tasks -> projects): a resource that references X is in
 * X's cascade, and in the cascade of every resource whose cascade holds X. */
static void test_a_delete_knows_what_its_cascade_removes(void **state)
{
    (void)state;
    assert_true(in_cascade(&kiln_resource_projects, &kiln_resource_tasks));
    assert_false(in_cascade(&kiln_resource_tasks, &kiln_resource_projects));
    for (size_t i = 0; i < kiln_resources_count; i++)
        for (size_t f = 0; f < kiln_resources[i]->nfields; f++) {
            const struct kiln_resource *r = kiln_resources[i];
            if (r->fields[f].type != KILN_REFERENCE || !strcmp(r->fields[f].ref, r->name))
                continue;
            const struct kiln_resource *x = kiln_resource_find(r->fields[f].ref);
            if (!in_cascade(x, r))
                fail_msg("%s references %s but is not in its cascade", r->name, x->name);
            for (size_t j = 0; j < kiln_resources_count; j++)
                if (in_cascade(kiln_resources[j], x) && kiln_resources[j] != r &&
                    !in_cascade(kiln_resources[j], r))
                    fail_msg("%s is in %s's cascade, but %s (which references it) is not",
                             x->name, kiln_resources[j]->name, r->name);
        }
}

static const char *const two[] = { "a", "b", NULL };
static const char *const none[] = { NULL };

/* One way to break a declaration, and the words its refusal must hold. */
struct breakage {
    const char *what;
    struct kiln_field field;     /* replaces the only field */
    void (*mutate)(struct kiln_resource *r);
    const char *want;
};

static void bad_name(struct kiln_resource *r) { r->name = "Bad-Name"; }
static void no_code(struct kiln_resource *r) { r->not_found_code = NULL; }
static void page_default_over_max(struct kiln_resource *r)
{
    r->page_default = 200;
    r->page_max = 100;
}
static void cached_unpaged(struct kiln_resource *r)
{
    r->page_default = r->page_max = 0;
    r->cache = true;
}
static void unknown_order(struct kiln_resource *r) { r->order = "nowhere DESC"; }
static void sideways_order(struct kiln_resource *r) { r->order = "inserted_at SIDEWAYS"; }
static void no_search_max(struct kiln_resource *r) { r->search_max = 0; }
static const struct kiln_action bad_action = { .name = "archive", .field = "missing",
                                               .value = "1" };
static void action_without_field(struct kiln_resource *r)
{
    r->actions = &bad_action;
    r->nactions = 1;
}

static const struct breakage breakages[] = {
    { "a name that is no identifier", { .name = "title", .type = KILN_TEXT }, bad_name,
      "name must be a lower-case SQL identifier" },
    { "no not-found code", { .name = "title", .type = KILN_TEXT }, no_code, "not_found_code" },
    { "a page default over the cap", { .name = "title", .type = KILN_TEXT },
      page_default_over_max, "page_default" },
    { "a cache on an unpaged list", { .name = "title", .type = KILN_TEXT }, cached_unpaged,
      "only paged lists are cached" },
    { "an order naming no column", { .name = "title", .type = KILN_TEXT }, unknown_order,
      "names no column" },
    { "an order in no direction", { .name = "title", .type = KILN_TEXT }, sideways_order,
      "ASC or DESC" },
    { "search with no bound", { .name = "title", .type = KILN_TEXT, .flags = KILN_SEARCH },
      no_search_max, "search_max" },
    { "an action setting no field", { .name = "title", .type = KILN_TEXT },
      action_without_field, "action archive sets no declared field" },
    { "a field called like a standard column", { .name = "user_id", .type = KILN_TEXT }, NULL,
      "field user_id is a name the engine uses" },
    { "a query word as a field", { .name = "sort", .type = KILN_TEXT }, NULL,
      "field sort is a name the engine uses" },
    { "a field name in capitals", { .name = "Title", .type = KILN_TEXT }, NULL,
      "must be a lower-case SQL identifier" },
    { "an enum with no values", { .name = "kind", .type = KILN_ENUM, .values = none }, NULL,
      "enum field kind has no values" },
    { "an enum default outside its values",
      { .name = "kind", .type = KILN_ENUM, .values = two, .def = "c" }, NULL,
      "default \"c\" is not one of its values" },
    { "a reference to nothing", { .name = "owner_ref", .type = KILN_REFERENCE, .ref = "ghosts" },
      NULL, "references \"ghosts\", which is not declared" },
    { "text bounds upside down", { .name = "title", .type = KILN_TEXT, .min_len = 5, .max_len = 2 },
      NULL, "min_len above max_len" },
    { "integer bounds upside down",
      { .name = "n", .type = KILN_INTEGER, .flags = KILN_BOUNDED, .min = 5, .max = 2 }, NULL,
      "min above max" },
    { "bounds on text", { .name = "title", .type = KILN_TEXT, .flags = KILN_BOUNDED }, NULL,
      "bounds are for integers" },
    { "a searchable integer", { .name = "n", .type = KILN_INTEGER, .flags = KILN_SEARCH }, NULL,
      "only text fields are searchable" },
    { "a json filter", { .name = "doc", .type = KILN_JSON, .flags = KILN_FILTER }, NULL,
      "a json field cannot be a filter" },
    { "null stores a default that is not there",
      { .name = "title", .type = KILN_TEXT, .flags = KILN_NULL_IS_DEFAULT }, NULL,
      "null stores the default, but there is none" },
    { "required and read-only",
      { .name = "title", .type = KILN_TEXT, .flags = KILN_REQUIRED | KILN_READ_ONLY }, NULL,
      "both required and read-only" },
};

static void test_each_broken_declaration_is_refused_by_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(breakages); i++) {
        const struct breakage *b = &breakages[i];
        struct kiln_field field = b->field;
        struct kiln_resource r = {
            .name = "things", .singular = "thing", .fields = &field, .nfields = 1,
            .not_found_code = "thing_not_found", .not_found_message = "Thing not found",
            .page_default = 50, .page_max = 100, .order = "inserted_at DESC",
            .search_max = 255,
        };
        char err[256] = "";
        /* the unbroken form passes (the reference case aside, which has
         * nothing valid to point at) */
        if (b->mutate) {
            assert_int_equal(kiln_resource_check(&r, err, sizeof err), 0);
            b->mutate(&r);
        }
        if (kiln_resource_check(&r, err, sizeof err) == 0)
            fail_msg("%s: accepted", b->what);
        if (!strstr(err, b->want))
            fail_msg("%s: \"%s\" does not say \"%s\"", b->what, err, b->want);
        if (!strstr(err, r.name ? r.name : "") && b->mutate != bad_name)
            fail_msg("%s: \"%s\" does not name the resource", b->what, err);
    }
}

/* ---- validation ---- */

struct verdict {
    bool ok;
    const char *missing;
    json_t *details;
    struct kiln_values v;
};

static struct verdict validate(const struct kiln_resource *r, const char *body, bool create)
{
    json_t *in = json_loads(body, JSON_ALLOW_NUL, NULL);
    assert_non_null(in);
    struct verdict out = { 0 };
    struct res_errors e = { 0 };
    out.ok = kiln_resource_input(arena, r, in, create, &out.v, &e, &out.missing);
    out.details = e.details;
    json_decref(in);
    return out;
}

static const char *message(const struct verdict *v, const char *field)
{
    return json_string_value(json_array_get(json_object_get(v->details, field), 0));
}

static void test_create_fills_defaults_and_requires_what_is_required(void **state)
{
    (void)state;
    struct verdict v = validate(&kiln_resource_notes, "{\"title\": \"t\"}", true);
    assert_true(v.ok);
    assert_string_equal(v.v.values[0], "t");
    assert_string_equal(v.v.values[1], "");  /* content's default */
    assert_string_equal(v.v.values[2], "0"); /* archived */
    v = validate(&kiln_resource_notes, "{}", true);
    assert_false(v.ok);
    assert_string_equal(message(&v, "title"), "can't be blank");
    json_decref(v.details);
    /* content: null is its default (the original's changeset) */
    v = validate(&kiln_resource_notes, "{\"title\": \"t\", \"content\": null}", true);
    assert_true(v.ok);
    assert_string_equal(v.v.values[1], "");
    /* description: null is NULL */
    v = validate(&kiln_resource_projects, "{\"name\": \"p\", \"description\": null}", true);
    assert_true(v.ok);
    assert_true(v.v.set[1]);
    assert_null(v.v.values[1]);
}

static void test_update_touches_only_what_is_present(void **state)
{
    (void)state;
    struct verdict v = validate(&kiln_resource_tasks, "{\"status\": \"done\"}", false);
    assert_true(v.ok);
    for (size_t f = 0; f < kiln_resource_tasks.nfields; f++)
        assert_int_equal(v.v.set[f], f == 3);
    assert_string_equal(v.v.values[3], "done");
}

static void test_the_contract_messages(void **state)
{
    (void)state;
    struct {
        const struct kiln_resource *r;
        const char *body;
        const char *field, *want;
    } cases[] = {
        { &kiln_resource_notes, "{\"title\": \"\"}", "title", "can't be blank" },
        { &kiln_resource_notes, "{\"title\": \" \\t \"}", "title", "can't be blank" },
        { &kiln_resource_notes, "{\"title\": null}", "title", "can't be blank" },
        { &kiln_resource_notes, "{\"title\": 5}", "title", "is invalid" },
        { &kiln_resource_notes, "{\"title\": \"a\\u0000b\"}", "title", "is invalid" },
        { &kiln_resource_notes, "{\"archived\": null}", "archived", "is invalid" },
        { &kiln_resource_notes, "{\"archived\": \"true\"}", "archived", "is invalid" },
        { &kiln_resource_tasks, "{\"status\": \"later\"}", "status", "is invalid" },
        { &kiln_resource_tasks, "{\"status\": null}", "status", "can't be blank" },
        { &kiln_resource_tasks, "{\"due_date\": \"2026-02-30\"}", "due_date", "is invalid" },
        { &kiln_resource_tasks, "{\"project_id\": null}", "project_id", "is invalid" },
        { &kiln_resource_tasks, "{\"project_id\": 7}", "project_id", "is invalid" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct verdict v = validate(cases[i].r, cases[i].body, false);
        if (v.ok || !message(&v, cases[i].field) ||
            strcmp(message(&v, cases[i].field), cases[i].want))
            fail_msg("%s: %s: got \"%s\", want \"%s\"", cases[i].r->name, cases[i].body,
                     v.ok ? "(accepted)" : message(&v, cases[i].field), cases[i].want);
        json_decref(v.details);
    }
    /* lengths count characters: 255 two-byte characters fit a 255 title */
    char body[1024] = "{\"title\": \"";
    for (int i = 0; i < 255; i++)
        strcat(body, "\xc3\xa9");
    strcat(body, "\"}");
    struct verdict v = validate(&kiln_resource_notes, body, false);
    assert_true(v.ok);
    body[strlen(body) - 2] = '\0';
    strcat(body, "\xc3\xa9\"}");
    v = validate(&kiln_resource_notes, body, false);
    assert_false(v.ok);
    assert_string_equal(message(&v, "title"), "should be at most 255 character(s)");
    json_decref(v.details);
}

static void test_a_required_reference_is_missing_before_anything_else(void **state)
{
    (void)state;
    struct verdict v = validate(&kiln_resource_tasks, "{\"title\": 5}", true);
    assert_false(v.ok);
    assert_non_null(v.missing);
    assert_string_equal(v.missing, "project_id");
    assert_null(v.details);
    /* any string passes validation: a non-UUID names no project, a 404 */
    v = validate(&kiln_resource_tasks, "{\"project_id\": \"x\", \"title\": \"t\"}", true);
    assert_true(v.ok);
    assert_string_equal(v.v.values[0], "x");
}

/* ---- SQL ---- */

static struct kiln_values values_of(const struct kiln_resource *r, const char *const *set)
{
    struct kiln_values v;
    v.values = kiln_arena_alloc(arena, r->nfields * sizeof *v.values);
    v.set = kiln_arena_alloc(arena, r->nfields * sizeof *v.set);
    for (size_t f = 0; f < r->nfields; f++) {
        v.values[f] = set[f];
        v.set[f] = set[f] != NULL;
    }
    return v;
}

static void test_insert_sql_per_dialect(void **state)
{
    (void)state;
    const char *const note[] = { "t", "", "0" };
    struct kiln_values v = values_of(&kiln_resource_notes, note);
    const char *want = "INSERT INTO notes (id, user_id, inserted_at, updated_at, title, content, "
                       "archived) VALUES ($1, $2, $3, $3, $4, $5, $6) RETURNING id, title, "
                       "content, archived, inserted_at, updated_at";
    assert_string_equal(kiln_sql_insert(arena, &kiln_resource_notes, KILN_DB_SQLITE, &v), want);
    assert_string_equal(kiln_sql_insert(arena, &kiln_resource_notes, KILN_DB_POSTGRES, &v), want);

    const char *const task[] = { "00000000-0000-4000-8000-000000000001", "t", NULL, "todo",
                                 NULL };
    v = values_of(&kiln_resource_tasks, task);
    const char *pg = kiln_sql_insert(arena, &kiln_resource_tasks, KILN_DB_POSTGRES, &v);
    assert_string_equal(pg,
                        "INSERT INTO tasks (id, user_id, inserted_at, updated_at, project_id, "
                        "title, status) SELECT $1, $2, $3, $3, $4, $5, $6 WHERE 1 = 1 AND "
                        "EXISTS (SELECT 1 FROM projects WHERE projects.id = $4 AND "
                        "projects.user_id = $2 FOR KEY SHARE) RETURNING id, project_id, title, "
                        "details, status, due_date, inserted_at, updated_at");
    const char *lite = kiln_sql_insert(arena, &kiln_resource_tasks, KILN_DB_SQLITE, &v);
    assert_null(strstr(lite, "FOR KEY SHARE"));
    assert_non_null(strstr(lite, "EXISTS (SELECT 1 FROM projects"));
}

/* Creates combined: request m's parameters are the single create's,
 * shifted by m * width, and its event and audit row are joined to its own
 * row by id. */
static void test_insert_many_sql(void **state)
{
    (void)state;
    const char *const note[] = { "t", "", "0" };
    struct kiln_values v = values_of(&kiln_resource_notes, note);
    assert_int_equal(kiln_sql_insert_width(&kiln_resource_notes, &v), 9);
    assert_string_equal(
        kiln_sql_insert_many(arena, &kiln_resource_notes, &v, 2),
        "WITH v (id, owner, ip, ua, rid) AS (VALUES ($1::uuid, $2::uuid, $7::text, $8::text, "
        "$9::text), ($10::uuid, $11::uuid, $16::text, $17::text, $18::text)), w AS (INSERT INTO "
        "notes (id, user_id, inserted_at, updated_at, title, content, archived) VALUES ($1, $2, "
        "$3, $3, $4, $5, $6), ($10, $11, $12, $12, $13, $14, $15) RETURNING id, title, content, "
        "archived, inserted_at, updated_at), e AS (INSERT INTO events (tx, resource, action, "
        "row_id, owner, data) SELECT pg_current_xact_id()::text::bigint, 'notes', 'created', "
        "w.id, v.owner, row_to_json(w)::text FROM w JOIN v ON v.id = w.id), a AS (INSERT INTO "
        "audit (actor, action, target, ip, user_agent, request_id) SELECT v.owner, "
        "'notes.created', 'notes/' || w.id, v.ip, v.ua, v.rid FROM w JOIN v ON v.id = w.id) "
        "SELECT * FROM w");
    /* Only the fields set are columns: a title alone is 7 a request. */
    const char *const title_only[] = { "t", NULL, NULL };
    v = values_of(&kiln_resource_notes, title_only);
    assert_int_equal(kiln_sql_insert_width(&kiln_resource_notes, &v), 7);
    const char *sql = kiln_sql_insert_many(arena, &kiln_resource_notes, &v, 3);
    assert_non_null(strstr(sql, "($15::uuid, $16::uuid, $19::text, $20::text, $21::text))"));
    assert_non_null(strstr(sql, "(id, user_id, inserted_at, updated_at, title) VALUES ($1, $2, "
                                "$3, $3, $4), ($8, $9, $10, $10, $11), ($15, $16, $17, $17, $18) "
                                "RETURNING"));
}

static void test_update_sql_per_dialect(void **state)
{
    (void)state;
    const char *const set[] = { "00000000-0000-4000-8000-000000000001", NULL, NULL, "done",
                                NULL };
    struct kiln_values v = values_of(&kiln_resource_tasks, set);
    assert_string_equal(kiln_sql_update(arena, &kiln_resource_tasks, KILN_DB_POSTGRES, &v),
                        "UPDATE tasks SET project_id = $3, status = $4, updated_at = $5 WHERE "
                        "id = $1 AND user_id = $2 AND EXISTS (SELECT 1 FROM projects WHERE "
                        "projects.id = $3 AND projects.user_id = $2 FOR KEY SHARE) RETURNING "
                        "id, project_id, title, details, status, due_date, inserted_at, "
                        "updated_at");
    /* no reference written: no EXISTS */
    const char *const title[] = { NULL, "x", NULL, NULL, NULL };
    v = values_of(&kiln_resource_tasks, title);
    assert_null(strstr(kiln_sql_update(arena, &kiln_resource_tasks, KILN_DB_POSTGRES, &v),
                       "EXISTS"));
}

static void test_list_sql(void **state)
{
    (void)state;
    bool archived[] = { false, false, true };
    assert_string_equal(
        kiln_sql_list(arena, &kiln_resource_notes, archived, true, "inserted_at", "DESC"),
        "SELECT id, title, content, archived, inserted_at, updated_at, (SELECT count(*) FROM "
        "notes WHERE user_id = $1 AND archived = $2 AND (lower(title) LIKE lower(CAST($3 AS "
        "TEXT)) ESCAPE '\\' OR lower(content) LIKE lower(CAST($3 AS TEXT)) ESCAPE '\\')) AS "
        "total FROM notes WHERE user_id = $1 AND archived = $2 AND (lower(title) LIKE "
        "lower(CAST($3 AS TEXT)) ESCAPE '\\' OR lower(content) LIKE lower(CAST($3 AS TEXT)) "
        "ESCAPE '\\') ORDER BY inserted_at DESC, id DESC LIMIT $4 OFFSET $5");
    /* the list bench/notes.sh gives pgbench (it checks this text is here) */
    assert_string_equal(
        kiln_sql_list(arena, &kiln_resource_notes, archived, false, "inserted_at", "DESC"),
        "SELECT id, title, content, archived, inserted_at, updated_at, (SELECT count(*) FROM "
        "notes WHERE user_id = $1 AND archived = $2) AS total FROM notes WHERE user_id = $1 "
        "AND archived = $2 ORDER BY inserted_at DESC, id DESC LIMIT $3 OFFSET $4");
    assert_string_equal(kiln_sql_count(arena, &kiln_resource_notes, archived, false),
                        "SELECT count(*) FROM notes WHERE user_id = $1 AND archived = $2");
    bool status_only[] = { false, false, false, true, false };
    assert_string_equal(kiln_sql_list(arena, &kiln_resource_tasks, status_only, false, "title",
                                      "ASC"),
                        "SELECT id, project_id, title, details, status, due_date, inserted_at, "
                        "updated_at FROM tasks WHERE user_id = $1 AND status = $2 ORDER BY "
                        "title ASC, id ASC");
}

/* The statements run on SQLite with Kiln's migrations: parameters in the
 * documented order, a reference to another user's project writes nothing. */
static void test_the_sql_runs_on_sqlite(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-engine-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/k.db", dir);
    struct kiln_db_config cfg = { .dialect = KILN_DB_SQLITE, .path = path };
    struct kiln_db *db = kiln_db_open(&cfg);
    char err[256];
    size_t applied;
    assert_int_equal(kiln_migrate(db, NULL, NULL, &applied, err, sizeof err), 0);
    const char *alice = "00000000-0000-4000-8000-0000000000a1";
    const char *bob = "00000000-0000-4000-8000-0000000000b0";
    const char *project = "00000000-0000-4000-8000-0000000000c1";
    struct kiln_db_rows rows;
    const char *now = "2026-12-07T00:00:00.000000Z";
    for (int u = 0; u < 2; u++) {
        kiln_str p[2] = { kiln_str_c(u ? bob : alice), kiln_str_c(now) };
        assert_int_equal(kiln_db_query(db, arena,
                                       "INSERT INTO users (id, email, name, inserted_at, "
                                       "updated_at) VALUES ($1, $1, $1, $2, $2)",
                                       p, 2, &rows),
                         0);
    }
    const char *const proj[] = { "P", NULL, "0" };
    struct kiln_values v = values_of(&kiln_resource_projects, proj);
    /* id, owner, now, name, archived (description is not set) */
    kiln_str pp[5] = { kiln_str_c(project), kiln_str_c(alice), kiln_str_c(now), kiln_str_c("P"),
                       kiln_str_c("0") };
    assert_int_equal(kiln_db_query(db, arena,
                                   kiln_sql_insert(arena, &kiln_resource_projects,
                                                   KILN_DB_SQLITE, &v),
                                   pp, 5, &rows),
                     0);
    assert_int_equal(rows.nrows, 1);
    const char *const task[] = { project, "T", NULL, "todo", "2026-12-31" };
    v = values_of(&kiln_resource_tasks, task);
    const char *sql = kiln_sql_insert(arena, &kiln_resource_tasks, KILN_DB_SQLITE, &v);
    for (int u = 0; u < 2; u++) {
        /* id, owner, now, then the fields set: project_id, title, status,
         * due_date (details is not) */
        kiln_str tp[7] = { kiln_str_c(u ? "00000000-0000-4000-8000-0000000000d2"
                                        : "00000000-0000-4000-8000-0000000000d1"),
                           kiln_str_c(u ? bob : alice), kiln_str_c(now), kiln_str_c(project),
                           kiln_str_c("T"), kiln_str_c("todo"), kiln_str_c("2026-12-31") };
        assert_int_equal(kiln_db_query(db, arena, sql, tp, 7, &rows), 0);
        /* bob cannot put a task in alice's project */
        assert_int_equal(rows.nrows, u ? 0 : 1);
    }
    bool status_only[] = { false, false, false, true, false };
    kiln_str lp[2] = { kiln_str_c(alice), kiln_str_c("todo") };
    assert_int_equal(kiln_db_query(db, arena,
                                   kiln_sql_list(arena, &kiln_resource_tasks, status_only, false,
                                                 "inserted_at", "DESC"),
                                   lp, 2, &rows),
                     0);
    assert_int_equal(rows.nrows, 1);
    kiln_db_close(db);
    unlink(path);
    rmdir(dir);
}

/* The event's data is built by PostgreSQL from the declaration: for every
 * type, with values and with NULLs, it is the JSON the API answers (built
 * in C from the same row). Needs KILN_TEST_PG_URL; skipped without. */
static void test_the_event_json_on_postgres_is_the_api_json(void **state)
{
    (void)state;
    const char *url = getenv("KILN_TEST_PG_URL");
    if (!url) {
        skip();
        return;
    }
    static const char *const kinds[] = { "a", "b", NULL };
    static const struct kiln_field fields[] = {
        { .name = "t", .type = KILN_TEXT, .flags = KILN_NULLABLE },
        { .name = "n", .type = KILN_INTEGER, .flags = KILN_NULLABLE },
        { .name = "b", .type = KILN_BOOLEAN, .flags = KILN_NULLABLE },
        { .name = "d", .type = KILN_DATE, .flags = KILN_NULLABLE },
        { .name = "ts", .type = KILN_TIMESTAMP, .flags = KILN_NULLABLE },
        { .name = "u", .type = KILN_UUID, .flags = KILN_NULLABLE },
        { .name = "e", .type = KILN_ENUM, .flags = KILN_NULLABLE, .values = kinds },
        { .name = "j", .type = KILN_JSON, .flags = KILN_NULLABLE },
    };
    static const struct kiln_resource every = { .name = "every", .singular = "every",
                                                .fields = fields, .nfields = 8 };
    struct kiln_db_config cfg = { .dialect = KILN_DB_POSTGRES, .conninfo = url,
                                  .connect_timeout_s = 5, .query_timeout_ms = 5000 };
    struct kiln_db *db = kiln_db_open(&cfg);
    static const char *const rows_sql[] = {
        "'00000000-0000-4000-8000-000000000001'::uuid AS id, E'quote \" back \\\\ nl \\n "
        "tab \\t ctl \\u0001 \u00e9\u2603 \U0001F600'::text AS t, -9007199254740993::bigint AS n, "
        "true AS b, '2026-02-28'::date AS d, '2026-12-07 01:02:03.000004+00'::timestamptz AS "
        "ts, '00000000-0000-4000-8000-0000000000ff'::uuid AS u, 'b'::text AS e, "
        "'{\"k\": [1, \"x\\ny\", null, {\"z\": 1.5}]}'::jsonb AS j, "
        "'1999-12-31 23:59:59.999999+00'::timestamptz AS inserted_at, "
        "'2026-12-07 00:00:00+00'::timestamptz AS updated_at",
        "'00000000-0000-4000-8000-000000000002'::uuid AS id, NULL::text AS t, NULL::bigint AS "
        "n, NULL::boolean AS b, NULL::date AS d, NULL::timestamptz AS ts, NULL::uuid AS u, "
        "NULL::text AS e, NULL::jsonb AS j, now() AS inserted_at, now() AS updated_at",
    };
    for (size_t i = 0; i < 2; i++) {
        const char *sql = kiln_arena_sprintf(arena, "SELECT w.*, %s FROM (SELECT %s) w",
                                             kiln_sql_row_json(arena, &every, "w"), rows_sql[i]);
        struct kiln_db_rows rows;
        int err = kiln_db_query(db, arena, sql, NULL, 0, &rows);
        if (err)
            fail_msg("%s", kiln_db_last_error(db));
        assert_int_equal(rows.nrows, 1);
        kiln_buf b, shown;
        kiln_buf_init(&b, 1 << 20);
        kiln_buf_init(&shown, 1 << 20);
        kiln_resource_append_json(&every, &b, &rows, 0);
        kiln_str stored = kiln_db_text(&rows, 0, 11);
        assert_true(kiln_resource_event_json_of(&every, stored, &shown));
        kiln_str from_sql = { shown.p, shown.len };
        json_error_t e;
        json_t *api = json_loadb(b.p, b.len, 0, &e);
        json_t *event = json_loadb(from_sql.p, from_sql.len, 0, &e);
        if (!api || !event || !json_equal(api, event))
            fail_msg("row %zu:\n  API:   %.*s\n  event: %.*s", i, (int)b.len, b.p,
                     (int)from_sql.len, from_sql.p);
        /* and the members in the same (declaration) order */
        const char *ka, *ke;
        void *ia = json_object_iter(api), *ie = json_object_iter(event);
        for (; ia && ie; ia = json_object_iter_next(api, ia), ie = json_object_iter_next(event, ie)) {
            ka = json_object_iter_key(ia);
            ke = json_object_iter_key(ie);
            if (strcmp(ka, ke))
                fail_msg("row %zu: member %s where the API has %s", i, ke, ka);
        }
        assert_true(!ia && !ie);
        json_decref(api);
        json_decref(event);
        kiln_buf_free(&b);
        kiln_buf_free(&shown);
    }
    kiln_db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_declared_resources_pass),
        cmocka_unit_test(test_a_delete_knows_what_its_cascade_removes),
        cmocka_unit_test(test_each_broken_declaration_is_refused_by_name),
        cmocka_unit_test(test_create_fills_defaults_and_requires_what_is_required),
        cmocka_unit_test(test_update_touches_only_what_is_present),
        cmocka_unit_test(test_the_contract_messages),
        cmocka_unit_test(test_a_required_reference_is_missing_before_anything_else),
        cmocka_unit_test(test_insert_sql_per_dialect),
        cmocka_unit_test(test_insert_many_sql),
        cmocka_unit_test(test_update_sql_per_dialect),
        cmocka_unit_test(test_list_sql),
        cmocka_unit_test(test_the_sql_runs_on_sqlite),
        cmocka_unit_test(test_the_event_json_on_postgres_is_the_api_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
