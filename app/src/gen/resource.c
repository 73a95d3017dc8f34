/*
 * kiln gen resource NAME FIELD... : a new resource in four files, none of
 * which anything else has to name (docs/RESOURCES.md):
 *
 *   app/src/api/resources/NAME.c           the declaration (api/declare.h);
 *                                          the build registers every file there
 *   app/migrations/postgres/NNNN_NAME.sql  its table, in each dialect, under
 *   app/migrations/sqlite/NNNN_NAME.sql    the next free number
 *   app/tests/http/test_NAME.py            its black-box tests
 *
 * Everything is checked before anything is written: names (lower-case SQL
 * identifiers that neither dialect reads as a keyword in the statements the
 * engine builds, and none the engine reserves), types and options, the
 * declaration itself through kiln_resource_check (what the engine would
 * refuse at start is refused here), references (to a resource this binary
 * serves and the tree declares, or to NAME itself), and that no file,
 * table, index or route of that name exists. Then the four files are
 * created with O_EXCL; if one cannot be, those already made are removed.
 *
 * The references' targets are read from the declarations compiled into
 * this binary (kiln_resource_find), not parsed from C: the tests need a
 * row of each target, and the compiled declaration says exactly which
 * fields its create requires. A target added to the tree but not yet built
 * is refused with "run make first".
 */
#include "gen/resource.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "api/api.h"
#include "api/declare.h"
#include "api/engine.h"
#include "api/resource.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/str.h"
#include "core/uuid.h"
#include "gen/resource_tests.h"

#define NAME_MAX_LEN 63 /* PostgreSQL's identifiers (NAMEDATALEN - 1) */
#define WRAP 96
#define FILE_MAX (16u << 20) /* a file read from the tree */
/* What the generator writes is bounded by its arguments (text bounds are
 * capped below), far under this: a buffer never refuses an append. */
#define OUT_MAX (1u << 30)
/* A text field's min= and max= (characters): the generated tests send
 * values that long, and past the default MAX_REQUEST_BODY_BYTES they
 * would be answered 413 instead of what they test. */
#define TEXT_BOUND_MAX 100000
#define SEARCH_MAX 255
#define PAGE_DEFAULT 50
#define PAGE_MAX 100
#define SEARCH_TOKEN_LEN 8

static const char usage[] =
    "usage: kiln gen resource NAME FIELD... [--singular=S] [--paged | --unpaged] [--cache]\n"
    "                         [--root DIR]\n"
    "\n"
    "Writes a resource that the engine serves, in four new files (docs/RESOURCES.md):\n"
    "  app/src/api/resources/NAME.c           its declaration (hooks go here)\n"
    "  app/migrations/postgres/NNNN_NAME.sql  its table; NNNN is the next number\n"
    "  app/migrations/sqlite/NNNN_NAME.sql\n"
    "  app/tests/http/test_NAME.py            its black-box tests\n"
    "After `make`, kiln serves it on /api/v1/NAME and /api/NAME (list, show, create,\n"
    "update with PUT and PATCH, delete), each row owned by the session's user.\n"
    "\n"
    "NAME   the plural: path segment and table (bookmarks)\n"
    "FIELD  name:type[:option...]   (name: a column and JSON member)\n"
    "\n"
    "types:\n"
    "  text        a string; min=/max= count characters\n"
    "  integer     a 64-bit integer; min=/max= bound its value\n"
    "  boolean     true or false\n"
    "  date        \"YYYY-MM-DD\", a day that exists\n"
    "  timestamp   RFC 3339 in; UTC with microseconds out\n"
    "  uuid        a UUID, stored lower-cased\n"
    "  enum        one of values=a|b|c\n"
    "  json        any JSON value (jsonb on PostgreSQL, text on SQLite)\n"
    "  reference   the id of a row of the same user in another resource:\n"
    "              reference:TARGET or ref=TARGET; TARGET is a resource this kiln\n"
    "              serves, or NAME itself (then nullable). Deleting that row deletes\n"
    "              this one (ON DELETE CASCADE)\n"
    "\n"
    "options:\n"
    "  required    a create must give it (the default: a field is required unless\n"
    "              it is nullable or has a default, as in mix phx.gen.json)\n"
    "  nullable    null is a value; absent on create: its default, else null\n"
    "  default=V   its value when a create leaves it out (not for references);\n"
    "              booleans true/false, timestamps as 2026-01-31T12:00:00.000000Z,\n"
    "              json as JSON. V may hold ':' unless an option follows it\n"
    "  min=N       text: at least N characters (required text: 1 unless given);\n"
    "              integer: at least N\n"
    "  max=N       text: at most N characters; integer: at most N\n"
    "  values=a|b  an enum's values ([A-Za-z0-9_.-], quote the | in a shell)\n"
    "  ref=TARGET  a reference's resource\n"
    "  filter      ?name=value narrows lists to rows equal to it (not json)\n"
    "  search      ?search=term matches it, case-blind substring (text only)\n"
    "  sort        ?sort=name and ?sort=-name order lists by it (not json)\n"
    "\n"
    "flags:\n"
    "  --singular=S  the singular, for messages and the 404 code S_not_found\n"
    "                (default: NAME minus its trailing s)\n"
    "  --paged       lists come in pages: ?limit= (default 50, at most 100),\n"
    "                ?offset=, and meta {count, total, limit, offset} (the default)\n"
    "  --unpaged     lists are the whole list, as {\"data\": [...]}\n"
    "  --cache       lists are cached in the kv store until the next write\n"
    "                (paged lists only)\n"
    "  --root DIR    the Kiln repository to write into (default: the current\n"
    "                directory, which must hold app/src/api/resources)\n"
    "  --help        this help\n"
    "\n"
    "Names are lower-case SQL identifiers (a-z, 0-9, _; at most 63 characters) that\n"
    "are no SQL keyword; a field may not be id, user_id, inserted_at, updated_at,\n"
    "limit, offset, search or sort. Nothing is written unless everything is valid,\n"
    "and no file is ever overwritten.\n"
    "\n"
    "example:\n"
    "  kiln gen resource bookmarks title:text:required:max=200 url:text:required \\\n"
    "      rating:integer:min=1:max=5:default=3:sort read:boolean:default=false:filter \\\n"
    "      'kind:enum:values=article|video:default=article:filter' \\\n"
    "      project_id:reference:projects:nullable:filter\n";

static const char gen_usage[] =
    "usage: kiln gen resource NAME FIELD... (kiln gen resource --help)\n";

/*
 * Words that cannot stand unquoted as a column or table in the statements
 * the engine builds (SELECT lists, WHERE, ORDER BY, INSERT, UPDATE SET,
 * lower(col) LIKE, CREATE INDEX, REFERENCES) on PostgreSQL 15 or SQLite:
 * every word of pg_get_keywords() and of sqlite3_keyword_name() was tried
 * in those statements on both, and these failed on at least one. Sorted
 * for bsearch.
 */
static const char *const KEYWORDS[] = {
    "add", "all", "alter", "analyse", "analyze", "and", "any", "array", "as", "asc",
    "asymmetric", "authorization", "autoincrement", "between", "binary", "both", "case", "cast",
    "check", "collate", "collation", "column", "commit", "concurrently", "constraint", "create",
    "cross", "current_catalog", "current_date", "current_role", "current_schema",
    "current_time", "current_timestamp", "current_user", "default", "deferrable", "delete",
    "desc", "distinct", "do", "drop", "else", "end", "escape", "except", "exists", "false",
    "fetch", "for", "foreign", "freeze", "from", "full", "grant", "group", "having", "if",
    "ilike", "in", "index", "initially", "inner", "insert", "intersect", "into", "is", "isnull",
    "join", "lateral", "leading", "left", "like", "limit", "localtime", "localtimestamp",
    "natural", "not", "nothing", "notnull", "null", "offset", "on", "only", "or", "order",
    "outer", "overlaps", "placing", "primary", "raise", "references", "returning", "right",
    "select", "session_user", "set", "similar", "some", "symmetric", "table", "tablesample",
    "then", "to", "trailing", "transaction", "true", "union", "unique", "update", "user",
    "using", "values", "variadic", "verbose", "when", "where", "window", "with",
};

/* The engine's own columns and query parameters (engine.c's RESERVED). */
static const char *const RESERVED_FIELDS[] = { "id",     "user_id", "inserted_at", "updated_at",
                                               "limit",  "offset",  "search",      "sort",
                                               NULL };

static const struct {
    const char *name;
    enum kiln_field_type type;
    const char *c;       /* the enumerator */
    const char *pg;      /* the column's type: what type_fits() in engine.c accepts */
    const char *sqlite;
} TYPES[] = {
    { "text", KILN_TEXT, "KILN_TEXT", "text", "TEXT" },
    { "integer", KILN_INTEGER, "KILN_INTEGER", "bigint", "INTEGER" },
    { "boolean", KILN_BOOLEAN, "KILN_BOOLEAN", "boolean", "INTEGER" },
    { "date", KILN_DATE, "KILN_DATE", "date", "TEXT" },
    { "timestamp", KILN_TIMESTAMP, "KILN_TIMESTAMP", "timestamptz", "TEXT" },
    { "uuid", KILN_UUID, "KILN_UUID", "uuid", "TEXT" },
    { "enum", KILN_ENUM, "KILN_ENUM", "text", "TEXT" },
    { "json", KILN_JSON, "KILN_JSON", "jsonb", "TEXT" },
    { "reference", KILN_REFERENCE, "KILN_REFERENCE", "uuid", "TEXT" },
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

/* A field as given, on its way to a struct kiln_field. */
struct gfield {
    struct kiln_field f;
    const char *spec;                   /* the argument, for messages */
    const char *type_word;
    bool required, nullable, filter, search, sort;
    bool has_min, has_max;
    int64_t min, max;
    const char *def;                    /* default= as given */
    const char *values;                 /* values= as given */
    const char *ref;
    bool self;                          /* a reference to NAME itself */
    const struct kiln_resource *target; /* a reference's compiled declaration */
};

struct gen {
    kiln_arena *a;
    const char *root;
    const char *name, *singular;
    bool paged, cache;
    struct gfield *fields;
    size_t nfields;
    const char *command; /* the command as typed (less --root), for headers */
    unsigned number;     /* the migrations' */
    /* relations (tables, indexes) the migrations create, and the names
     * of resources the tree's files declare */
    const char **relations, **declared;
    size_t nrelations, ndeclared, caprelations, capdeclared;
    /* the indexes of the new table: names, and their columns */
    const char *idx_order, **idx_filter, **idx_ref;
    char err[1024];
};

static bool fail(struct gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct gen *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    return false;
}

static void push(struct gen *g, const char ***arr, size_t *n, size_t *cap, const char *s)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 32;
        const char **grown = kiln_arena_alloc(g->a, ncap * sizeof *grown);
        if (*n)
            memcpy(grown, *arr, *n * sizeof *grown);
        *arr = grown;
        *cap = ncap;
    }
    (*arr)[(*n)++] = s;
}

static bool in_list(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s))
            return true;
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool keyword(const char *s)
{
    return bsearch(&s, KEYWORDS, sizeof KEYWORDS / sizeof KEYWORDS[0], sizeof KEYWORDS[0],
                   cmp_str) != NULL;
}

/* The engine's identifier() (kiln_resource_check), and no keyword. */
static bool check_name(struct gen *g, const char *what, const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN || !(*s >= 'a' && *s <= 'z'))
        return fail(g, "%s \"%s\" must be a lower-case SQL identifier: a letter a-z, then a-z, "
                       "0-9 or _, at most %d characters", what, s, NAME_MAX_LEN);
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return fail(g, "%s \"%s\" must be a lower-case SQL identifier: a letter a-z, then "
                           "a-z, 0-9 or _, at most %d characters", what, s, NAME_MAX_LEN);
    if (keyword(s))
        return fail(g, "%s \"%s\" is an SQL keyword (PostgreSQL or SQLite would not read it "
                       "as a name)", what, s);
    return true;
}

static bool parse_i64(const char *s, int64_t *out)
{
    bool neg = *s == '-';
    uint64_t u;
    if (!kiln_str_to_u64(kiln_str_c(s + neg), neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX,
                         &u))
        return false;
    *out = !neg ? (int64_t)u : u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    return true;
}

/* Characters (code points) of valid UTF-8. */
static size_t chars_of(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* ---- reading the tree ---- */

static const char *path_of(struct gen *g, const char *rel)
{
    return kiln_arena_sprintf(g->a, "%s/%s", g->root, rel);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* A whole file into the arena, NUL-terminated; NULL when unreadable. */
static char *read_text(struct gen *g, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    kiln_buf b;
    kiln_buf_init(&b, FILE_MAX);
    char chunk[8192];
    size_t n;
    int err = 0;
    while (!err && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        err = kiln_buf_append(&b, chunk, n);
    bool bad = err || ferror(f);
    fclose(f);
    char *out = bad ? NULL : kiln_arena_strndup(g->a, b.p ? b.p : "", b.len);
    kiln_buf_free(&b);
    return out;
}

static bool word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_';
}

/* After the keyword kw at *p (any case, whole word) and the spaces after
 * it: true with *p moved on; false with *p unchanged. */
static bool eat(const char **p, const char *kw)
{
    size_t n = strlen(kw);
    if (strncasecmp(*p, kw, n) || word_char((*p)[n]))
        return false;
    const char *q = *p + n;
    while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
        q++;
    *p = q;
    return true;
}

/* Every table and index a migration creates ("CREATE [UNIQUE] TABLE|INDEX
 * [IF NOT EXISTS] name"; a comment that says so counts too, which only
 * makes the check stricter). PostgreSQL keeps tables and indexes in one
 * namespace, so a new name must differ from all of them. */
static void scan_relations(struct gen *g, const char *text)
{
    const char *p = text;
    while (*p) {
        bool at_word = p == text || !word_char(p[-1]);
        if (!at_word || !eat(&p, "create")) {
            p++;
            continue;
        }
        eat(&p, "unique");
        if (!eat(&p, "table") && !eat(&p, "index"))
            continue;
        if (eat(&p, "if")) {
            eat(&p, "not");
            eat(&p, "exists");
        }
        const char *s = p;
        while (word_char(*p))
            p++;
        if (p > s) {
            char *name = kiln_arena_strndup(g->a, s, (size_t)(p - s));
            for (char *c = name; *c; c++)
                *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
            push(g, &g->relations, &g->nrelations, &g->caprelations, name);
        }
    }
}

/* The migrations of both dialects: the highest number, and the relations
 * they create. */
static bool scan_migrations(struct gen *g)
{
    static const char *const dirs[] = { "app/migrations/postgres", "app/migrations/sqlite" };
    unsigned highest = 0;
    push(g, &g->relations, &g->nrelations, &g->caprelations, "schema_migrations");
    for (size_t d = 0; d < 2; d++) {
        const char *dir = path_of(g, dirs[d]);
        DIR *dh = opendir(dir);
        if (!dh)
            return fail(g, "%s is not there (is %s a Kiln repository?)", dirs[d], g->root);
        struct dirent *e;
        while ((e = readdir(dh))) {
            const char *n = e->d_name;
            size_t len = strlen(n);
            if (len < 10 || strcmp(n + len - 4, ".sql"))
                continue;
            unsigned num = 0;
            bool digits = true;
            for (int i = 0; i < 4; i++) {
                digits &= n[i] >= '0' && n[i] <= '9';
                num = num * 10 + (unsigned)(n[i] - '0');
            }
            if (!digits || n[4] != '_')
                continue;
            if (num > highest)
                highest = num;
            const char *text = read_text(g, kiln_arena_sprintf(g->a, "%s/%s", dir, n));
            if (!text) {
                closedir(dh);
                return fail(g, "cannot read %s/%s: %s", dirs[d], n, strerror(errno));
            }
            scan_relations(g, text);
        }
        closedir(dh);
    }
    if (highest >= 9999)
        return fail(g, "the migrations are numbered up to %u: no 4-digit number is left",
                    highest);
    g->number = highest + 1;
    return true;
}

/* The resource names the tree's declarations give (".name" of each
 * "struct kiln_resource kiln_resource_<file>"). */
static bool scan_declarations(struct gen *g)
{
    const char *dir = path_of(g, "app/src/api/resources");
    DIR *dh = opendir(dir);
    if (!dh)
        return fail(g, "cannot read app/src/api/resources: %s", strerror(errno));
    struct dirent *e;
    bool ok = true;
    while (ok && (e = readdir(dh))) {
        size_t len = strlen(e->d_name);
        if (len < 3 || strcmp(e->d_name + len - 2, ".c"))
            continue;
        const char *text = read_text(g, kiln_arena_sprintf(g->a, "%s/%s", dir, e->d_name));
        if (!text) {
            ok = fail(g, "cannot read app/src/api/resources/%s: %s", e->d_name, strerror(errno));
            break;
        }
        /* the file's name is a declared name in any case (its symbol) */
        push(g, &g->declared, &g->ndeclared, &g->capdeclared,
             kiln_arena_strndup(g->a, e->d_name, len - 2));
        const char *p = strstr(text, "struct kiln_resource kiln_resource_");
        p = p ? strstr(p, ".name = \"") : NULL;
        if (p) {
            p += strlen(".name = \"");
            const char *q = strchr(p, '"');
            if (q)
                push(g, &g->declared, &g->ndeclared, &g->capdeclared,
                     kiln_arena_strndup(g->a, p, (size_t)(q - p)));
        }
    }
    closedir(dh);
    return ok;
}

/* ---- the command line ---- */

static bool option_starts(const char *s)
{
    static const char *const words[] = { "required", "nullable", "filter", "search", "sort",
                                         NULL };
    static const char *const keys[] = { "default=", "min=", "max=", "values=", "ref=", NULL };
    for (const char *const *w = words; *w; w++) {
        size_t n = strlen(*w);
        if (!strncmp(s, *w, n) && (s[n] == ':' || s[n] == '\0'))
            return true;
    }
    for (const char *const *k = keys; *k; k++)
        if (!strncmp(s, *k, strlen(*k)))
            return true;
    return false;
}

static bool set_once(struct gen *g, struct gfield *gf, bool *flag, const char *what)
{
    if (*flag)
        return fail(g, "field %s: %s is given twice", gf->f.name, what);
    *flag = true;
    return true;
}

static bool set_value(struct gen *g, struct gfield *gf, const char **slot, const char *what,
                      const char *v)
{
    if (*slot)
        return fail(g, "field %s: %s= is given twice", gf->f.name, what);
    *slot = v;
    return true;
}

static bool apply_option(struct gen *g, struct gfield *gf, const char *opt)
{
    const char *eq = strchr(opt, '=');
    if (!eq) {
        if (!strcmp(opt, "required"))
            return set_once(g, gf, &gf->required, opt);
        if (!strcmp(opt, "nullable"))
            return set_once(g, gf, &gf->nullable, opt);
        if (!strcmp(opt, "filter"))
            return set_once(g, gf, &gf->filter, opt);
        if (!strcmp(opt, "search"))
            return set_once(g, gf, &gf->search, opt);
        if (!strcmp(opt, "sort"))
            return set_once(g, gf, &gf->sort, opt);
    } else {
        const char *v = eq + 1;
        size_t k = (size_t)(eq - opt);
        if (k == 7 && !strncmp(opt, "default", k))
            return set_value(g, gf, &gf->def, "default", v);
        if (k == 6 && !strncmp(opt, "values", k))
            return set_value(g, gf, &gf->values, "values", v);
        if (k == 3 && !strncmp(opt, "ref", k))
            return set_value(g, gf, &gf->ref, "ref", v);
        if (k == 3 && (!strncmp(opt, "min", k) || !strncmp(opt, "max", k))) {
            bool is_min = opt[1] == 'i';
            bool *has = is_min ? &gf->has_min : &gf->has_max;
            if (*has)
                return fail(g, "field %s: %.3s= is given twice", gf->f.name, opt);
            if (!parse_i64(v, is_min ? &gf->min : &gf->max))
                return fail(g, "field %s: %.3s=%s is not an integer", gf->f.name, opt, v);
            *has = true;
            return true;
        }
    }
    return fail(g, "field %s: unknown option \"%s\" (required, nullable, default=V, min=N, "
                   "max=N, values=a|b, ref=TARGET, filter, search, sort)", gf->f.name, opt);
}

/* name:type[:TARGET][:option...] into gf (options not yet checked). */
static bool parse_field(struct gen *g, const char *spec, struct gfield *gf)
{
    memset(gf, 0, sizeof *gf);
    gf->spec = spec;
    const char *colon = strchr(spec, ':');
    if (!colon)
        return fail(g, "field \"%s\": want name:type[:option...] (kiln gen resource --help)",
                    spec);
    gf->f.name = kiln_arena_strndup(g->a, spec, (size_t)(colon - spec));
    if (!check_name(g, "field", gf->f.name))
        return false;
    const char *p = colon + 1;
    const char *end = strchr(p, ':');
    if (!end)
        end = p + strlen(p);
    gf->type_word = kiln_arena_strndup(g->a, p, (size_t)(end - p));
    size_t t;
    for (t = 0; t < NTYPES; t++)
        if (!strcmp(TYPES[t].name, gf->type_word))
            break;
    if (t == NTYPES)
        return fail(g, "field %s: unknown type \"%s\" (text, integer, boolean, date, timestamp, "
                       "uuid, enum, json, reference)", gf->f.name, gf->type_word);
    gf->f.type = TYPES[t].type;
    p = *end ? end + 1 : end;
    if (*end && !*p)
        return fail(g, "field %s: an empty option at the end of \"%s\"", gf->f.name, spec);
    /* reference:TARGET */
    if (gf->f.type == KILN_REFERENCE && *p && !option_starts(p)) {
        end = strchr(p, ':');
        if (!end)
            end = p + strlen(p);
        gf->ref = kiln_arena_strndup(g->a, p, (size_t)(end - p));
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return fail(g, "field %s: an empty option at the end of \"%s\"", gf->f.name, spec);
    }
    while (*p) {
        if (!strncmp(p, "default=", 8)) {
            /* A default may hold ':' (a timestamp's time): it runs to the
             * first ':' that an option follows. */
            end = p + 8;
            while (*end && !(*end == ':' && option_starts(end + 1)))
                end++;
        } else {
            end = strchr(p, ':');
            if (!end)
                end = p + strlen(p);
        }
        if (end == p)
            return fail(g, "field %s: an empty option in \"%s\"", gf->f.name, spec);
        if (!apply_option(g, gf, kiln_arena_strndup(g->a, p, (size_t)(end - p))))
            return false;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return fail(g, "field %s: an empty option at the end of \"%s\"", gf->f.name, spec);
    }
    return true;
}

/* ---- checking a field ---- */

static bool calendar_date(const char *s)
{
    return strlen(s) == 10 && res_calendar_date(kiln_str_c(s));
}

/* What the engine writes for a timestamp (timestamp_text): UTC,
 * microseconds, so that SQLite's text sorts in time order. */
static bool canonical_timestamp(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (strlen(s) != sizeof shape - 1)
        return false;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return false;
    int hh = (s[11] - '0') * 10 + s[12] - '0', mm = (s[14] - '0') * 10 + s[15] - '0',
        ss = (s[17] - '0') * 10 + s[18] - '0';
    return res_calendar_date((kiln_str){ s, 10 }) && hh < 24 && mm < 60 && ss < 60;
}

static bool enum_value_ok(const char *v, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* values=a|b|c into a NULL-terminated list: each a plain word (it goes into
 * C, SQL and Python literals and query strings as it is), none twice. */
static bool parse_values(struct gen *g, struct gfield *gf)
{
    size_t n = 1;
    for (const char *p = gf->values; *p; p++)
        n += *p == '|';
    const char **out = kiln_arena_alloc(g->a, (n + 1) * sizeof *out);
    const char *p = gf->values;
    for (size_t i = 0; i < n; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (!enum_value_ok(p, len))
            return fail(g, "field %s: enum value \"%.*s\" must be 1..%d of A-Z a-z 0-9 _ . -",
                        gf->f.name, (int)len, p, NAME_MAX_LEN);
        out[i] = kiln_arena_strndup(g->a, p, len);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(out[j], out[i]))
                return fail(g, "field %s: enum value \"%s\" is given twice", gf->f.name, out[i]);
        p = bar ? bar + 1 : p + len;
    }
    out[n] = NULL;
    gf->f.values = out;
    return true;
}

/* default= as the text parameter the engine writes (declare.h's .def). */
static bool check_default(struct gen *g, struct gfield *gf)
{
    struct kiln_field *f = &gf->f;
    const char *d = gf->def;
    switch (f->type) {
    case KILN_TEXT: {
        if (!kiln_utf8_valid(kiln_str_c(d)))
            return fail(g, "field %s: default= is not UTF-8", f->name);
        bool blank = true;
        for (const unsigned char *p = (const unsigned char *)d; *p; p++) {
            if (*p < 0x20 || *p == 0x7f)
                return fail(g, "field %s: default= holds a control character", f->name);
            blank &= *p == ' ';
        }
        size_t n = chars_of(d);
        if (n < f->min_len || (f->max_len && n > f->max_len) || (f->min_len && blank))
            return fail(g, "field %s: default \"%s\" is not a value the field takes "
                           "(%zu..%zu characters%s)", f->name, d, f->min_len,
                        f->max_len, f->min_len ? ", not blank" : "");
        f->def = d;
        return true;
    }
    case KILN_INTEGER: {
        int64_t v;
        if (!parse_i64(d, &v))
            return fail(g, "field %s: default \"%s\" is not an integer", f->name, d);
        if ((f->flags & KILN_BOUNDED) && (v < f->min || v > f->max))
            return fail(g, "field %s: default %s is out of its bounds (%lld..%lld)", f->name, d,
                        (long long)f->min, (long long)f->max);
        f->def = kiln_arena_sprintf(g->a, "%lld", (long long)v);
        return true;
    }
    case KILN_BOOLEAN:
        if (strcmp(d, "true") && strcmp(d, "false"))
            return fail(g, "field %s: default= must be true or false", f->name);
        f->def = d[0] == 't' ? "1" : "0";
        return true;
    case KILN_DATE:
        if (!calendar_date(d))
            return fail(g, "field %s: default \"%s\" is not a date (YYYY-MM-DD, a day that "
                           "exists)", f->name, d);
        f->def = d;
        return true;
    case KILN_TIMESTAMP:
        if (!canonical_timestamp(d))
            return fail(g, "field %s: default \"%s\" is not a timestamp as Kiln writes them "
                           "(UTC with microseconds: 2026-01-31T12:00:00.000000Z)", f->name, d);
        f->def = d;
        return true;
    case KILN_UUID: {
        if (strlen(d) != KILN_UUID_LEN || !kiln_uuid_valid(kiln_str_c(d)))
            return fail(g, "field %s: default \"%s\" is not a UUID", f->name, d);
        char *low = kiln_arena_strndup(g->a, d, strlen(d));
        for (char *c = low; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'F' ? *c - 'A' + 'a' : *c);
        f->def = low;
        return true;
    }
    case KILN_ENUM:
        for (const char *const *v = f->values; *v; v++)
            if (!strcmp(*v, d)) {
                f->def = *v;
                return true;
            }
        return fail(g, "field %s: default \"%s\" is not one of its values", f->name, d);
    case KILN_JSON: {
        json_error_t e;
        json_t *v = json_loads(d, JSON_DECODE_ANY, &e);
        if (!v)
            return fail(g, "field %s: default= is not JSON: %s", f->name, e.text);
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(v);
        if (!text)
            return fail(g, "field %s: default= cannot be written back as JSON", f->name);
        bool nul = strstr(text, "\\u0000") != NULL;
        f->def = kiln_arena_strndup(g->a, text, strlen(text));
        free(text);
        if (nul)
            return fail(g, "field %s: default= holds \\u0000, which jsonb refuses", f->name);
        return true;
    }
    case KILN_REFERENCE:
        break;
    }
    return fail(g, "field %s: a %s has no default", f->name, gf->type_word);
}

/* Words of a name: "due_date" -> "due date". */
static const char *words_of(struct gen *g, const char *name)
{
    char *w = kiln_arena_strndup(g->a, name, strlen(name));
    for (char *c = w; *c; c++)
        if (*c == '_')
            *c = ' ';
    return w;
}

/* The options of field `index` against its type and the others; then its
 * struct kiln_field as the declaration will say it. */
static bool check_field(struct gen *g, size_t index)
{
    struct gfield *gf = &g->fields[index];
    struct kiln_field *f = &gf->f;
    enum kiln_field_type t = f->type;
    for (const char *const *r = RESERVED_FIELDS; *r; r++)
        if (!strcmp(f->name, *r))
            return fail(g, "field %s is a name the engine uses (id, user_id, inserted_at, "
                           "updated_at, limit, offset, search, sort)", f->name);
    for (size_t j = 0; j < index; j++)
        if (!strcmp(g->fields[j].f.name, f->name))
            return fail(g, "field %s is given twice", f->name);
    if (gf->values && t != KILN_ENUM)
        return fail(g, "field %s: values= is for enum fields", f->name);
    if (t == KILN_ENUM && !gf->values)
        return fail(g, "field %s: an enum needs its values: %s:enum:values=a|b", f->name,
                    f->name);
    if (gf->ref && t != KILN_REFERENCE)
        return fail(g, "field %s: ref= is for reference fields", f->name);
    if (t == KILN_REFERENCE && !gf->ref)
        return fail(g, "field %s: a reference needs its target: %s:reference:TARGET", f->name,
                    f->name);
    if ((gf->has_min || gf->has_max) && t != KILN_TEXT && t != KILN_INTEGER)
        return fail(g, "field %s: min= and max= are for text and integer fields", f->name);
    if (gf->search && t != KILN_TEXT)
        return fail(g, "field %s: only text fields are searchable", f->name);
    if (gf->filter && t == KILN_JSON)
        return fail(g, "field %s: a json field cannot be a filter", f->name);
    if (gf->sort && t == KILN_JSON)
        return fail(g, "field %s: a json field cannot be a sort (jsonb and SQLite's text "
                       "order differently)", f->name);
    if (gf->def && t == KILN_REFERENCE)
        return fail(g, "field %s: a reference has no default", f->name);
    if (gf->def && gf->required)
        return fail(g, "field %s: required and default= contradict each other (a required "
                       "field is always given)", f->name);
    /* Required unless it may be null or has a default, as mix
     * phx.gen.json's changeset requires every field: a NOT NULL column
     * with nothing to put in it would fail the INSERT instead of a 422. */
    bool required = gf->required || (!gf->nullable && !gf->def);
    f->flags = (required ? KILN_REQUIRED : 0u) | (gf->nullable ? KILN_NULLABLE : 0u) |
               (gf->filter ? KILN_FILTER : 0u) | (gf->search ? KILN_SEARCH : 0u) |
               (gf->sort ? KILN_SORT : 0u);
    if (t == KILN_REFERENCE) {
        if (!check_name(g, "reference target", gf->ref))
            return false;
        f->ref = gf->ref;
        gf->self = !strcmp(gf->ref, g->name);
        if (gf->self && required)
            return fail(g, "field %s references %s itself, so it must be nullable (a required "
                           "one leaves no way to make the first row)", f->name, g->name);
    }
    if (t == KILN_TEXT) {
        if (gf->has_min && gf->min < 0)
            return fail(g, "field %s: min= counts characters: 0 or more", f->name);
        if (gf->has_max && gf->max < 1)
            return fail(g, "field %s: max= counts characters: 1 or more", f->name);
        if ((gf->has_min && gf->min > TEXT_BOUND_MAX) ||
            (gf->has_max && gf->max > TEXT_BOUND_MAX))
            return fail(g, "field %s: min= and max= are at most %d characters (leave max= out "
                           "for no bound)", f->name, TEXT_BOUND_MAX);
        f->min_len = gf->has_min ? (size_t)gf->min : required ? 1 : 0;
        f->max_len = gf->has_max ? (size_t)gf->max : 0;
        if (f->max_len && f->min_len > f->max_len)
            return fail(g, "field %s: min=%zu is above max=%zu", f->name, f->min_len,
                        f->max_len);
    }
    if (t == KILN_INTEGER && (gf->has_min || gf->has_max)) {
        f->flags |= KILN_BOUNDED;
        f->min = gf->has_min ? gf->min : INT64_MIN;
        f->max = gf->has_max ? gf->max : INT64_MAX;
        if (f->min > f->max)
            return fail(g, "field %s: min=%lld is above max=%lld", f->name, (long long)f->min,
                        (long long)f->max);
    }
    if (t == KILN_ENUM && !parse_values(g, gf))
        return false;
    if (gf->def && !check_default(g, gf))
        return false;
    f->doc = kiln_arena_sprintf(g->a, "The %s's %s.", words_of(g, g->singular),
                                words_of(g, f->name));
    return true;
}

/* ---- checks against the tree and this binary ---- */

/* Whether a create of another resource must give field f (the generated
 * tests make a row of each referenced resource through its API). */
static bool needs_value(const struct kiln_field *f)
{
    if (f->flags & KILN_READ_ONLY)
        return false;
    if (f->flags & KILN_REQUIRED)
        return true;
    return !(f->flags & (KILN_NULLABLE | KILN_NULL_IS_DEFAULT)) && !f->def;
}

/* The referenced resources whose rows the tests make, each after those its
 * own create needs. */
struct makers {
    const struct kiln_resource *r[32];
    size_t n;
};

static bool plan_maker(struct gen *g, struct makers *m, const struct kiln_resource *r,
                       int depth)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->r[i] == r)
            return true;
    if (depth > 8 || m->n == sizeof m->r / sizeof m->r[0])
        return fail(g, "the references from %s nest too deep to make test rows", r->name);
    for (size_t f = 0; f < r->nfields; f++) {
        const struct kiln_field *fd = &r->fields[f];
        if (fd->type != KILN_REFERENCE || !needs_value(fd))
            continue;
        const struct kiln_resource *t = kiln_resource_find(fd->ref);
        if (!t || t == r)
            return fail(g, "a row of %s cannot be made for the tests: its field %s requires a "
                           "row of %s", r->name, fd->name, fd->ref ? fd->ref : "?");
        if (!plan_maker(g, m, t, depth + 1))
            return false;
    }
    m->r[m->n++] = r;
    return true;
}

static const char *const FILES[] = { "app/src/api/resources/%s.c",
                                     "app/migrations/postgres/%04u_%s.sql",
                                     "app/migrations/sqlite/%04u_%s.sql",
                                     "app/tests/http/test_%s.py" };
#define NFILES (sizeof FILES / sizeof FILES[0])

static const char *file_rel(struct gen *g, size_t i)
{
    return i == 1 || i == 2 ? kiln_arena_sprintf(g->a, FILES[i], g->number, g->name)
                            : kiln_arena_sprintf(g->a, FILES[i], g->name);
}

/* A relation name no migration uses yet (PostgreSQL's one namespace for
 * tables and indexes), kept from now on. NULL after fail(). */
static const char *new_relation(struct gen *g, const char *base)
{
    const char *name = base;
    for (int i = 2; in_list(g->relations, g->nrelations, name) && i < 100; i++)
        name = kiln_arena_sprintf(g->a, "%s_%d", base, i);
    if (strlen(name) > NAME_MAX_LEN || in_list(g->relations, g->nrelations, name)) {
        fail(g, "index name %s would be longer than %d characters: choose a shorter resource "
                "or field name", name, NAME_MAX_LEN);
        return NULL;
    }
    push(g, &g->relations, &g->nrelations, &g->caprelations, name);
    return name;
}

static bool check_tree(struct gen *g, struct makers *m)
{
    if (!is_dir(path_of(g, "app/src/api/resources")))
        return fail(g, "%s/app/src/api/resources is not there: run this in a Kiln repository, "
                       "or give --root DIR", g->root);
    if (!is_dir(path_of(g, "app/tests/http")))
        return fail(g, "%s/app/tests/http is not there", g->root);
    if (!scan_migrations(g) || !scan_declarations(g))
        return false;
    if (kiln_resource_find(g->name) || in_list(g->declared, g->ndeclared, g->name))
        return fail(g, "resource %s is declared already", g->name);
    if (in_list(g->relations, g->nrelations, g->name))
        return fail(g, "a migration creates a table or index named %s already", g->name);
    /* The API scope's own routes (/me, /profile, /uploads...): a resource
     * of that name would share their paths. "v1" would read /api/v1/x as
     * the alias /api's /v1/:id. */
    size_t nroutes;
    const struct kiln_route *routes = api_routes(&nroutes);
    for (size_t i = 0; i < nroutes; i++) {
        const char *p = routes[i].path;
        if (routes[i].scope != KILN_SCOPE_API || routes[i].data || !p || *p != '/')
            continue;
        size_t n = strcspn(p + 1, "/");
        if (n == strlen(g->name) && !strncmp(p + 1, g->name, n))
            return fail(g, "/api/v1/%s is a route of kiln's already", g->name);
    }
    if (!strcmp(g->name, "v1"))
        return fail(g, "resource v1 would clash with the /api/v1 prefix");
    for (size_t i = 0; i < NFILES; i++) {
        const char *rel = file_rel(g, i);
        if (exists(path_of(g, rel)))
            return fail(g, "%s exists already: not overwriting it", rel);
    }
    for (size_t i = 0; i < g->nfields; i++) {
        struct gfield *gf = &g->fields[i];
        if (gf->f.type != KILN_REFERENCE || gf->self)
            continue;
        const struct kiln_resource *t = kiln_resource_find(gf->ref);
        bool in_tree = in_list(g->declared, g->ndeclared, gf->ref);
        if (!t && in_tree)
            return fail(g, "field %s references %s, which app/src/api/resources declares but "
                           "this kiln was built without: run make, then this command again",
                        gf->f.name, gf->ref);
        if (!t) {
            kiln_buf names;
            kiln_buf_init(&names, OUT_MAX);
            for (size_t r = 0; r < kiln_resources_count; r++)
                kiln_buf_printf(&names, "%s%s", r ? ", " : "", kiln_resources[r]->name);
            fail(g, "field %s references \"%s\", which is not a declared resource (declared: "
                    "%.*s; or %s itself)", gf->f.name, gf->ref, (int)names.len,
                 names.p ? names.p : "", g->name);
            kiln_buf_free(&names);
            return false;
        }
        if (!in_tree)
            return fail(g, "field %s references %s, which this kiln serves but %s does not "
                           "declare", gf->f.name, gf->ref, g->root);
        gf->target = t;
        if (!plan_maker(g, m, t, 0))
            return false;
    }
    /* The new table and its indexes (see emit_migration). */
    push(g, &g->relations, &g->nrelations, &g->caprelations, g->name);
    if (!(g->idx_order = new_relation(g, kiln_arena_sprintf(g->a, "%s_user_inserted_idx",
                                                            g->name))))
        return false;
    g->idx_filter = kiln_arena_alloc_z(g->a, g->nfields * sizeof *g->idx_filter);
    g->idx_ref = kiln_arena_alloc_z(g->a, g->nfields * sizeof *g->idx_ref);
    for (size_t i = 0; i < g->nfields; i++) {
        const struct kiln_field *f = &g->fields[i].f;
        if ((f->flags & KILN_FILTER) &&
            !(g->idx_filter[i] = new_relation(g, kiln_arena_sprintf(g->a, "%s_user_%s_idx",
                                                                    g->name, f->name))))
            return false;
        if (f->type == KILN_REFERENCE &&
            !(g->idx_ref[i] = new_relation(g, kiln_arena_sprintf(g->a, "%s_%s_idx", g->name,
                                                                 f->name))))
            return false;
    }
    return true;
}

/* The declaration as the engine will see it, through kiln_resource_check:
 * nothing is generated that the engine would refuse at start. A reference
 * to the new resource itself is checked as a uuid (the check looks targets
 * up among the compiled declarations, which cannot hold it yet). */
static bool check_declaration(struct gen *g)
{
    struct kiln_field *fields = kiln_arena_alloc_z(g->a, g->nfields * sizeof *fields);
    bool searchable = false;
    for (size_t i = 0; i < g->nfields; i++) {
        fields[i] = g->fields[i].f;
        if (g->fields[i].self) {
            fields[i].type = KILN_UUID;
            fields[i].ref = NULL;
        }
        searchable |= (fields[i].flags & KILN_SEARCH) != 0;
    }
    struct kiln_resource r = {
        .name = g->name,
        .singular = g->singular,
        .fields = fields,
        .nfields = g->nfields,
        .owner = KILN_OWNER_USER,
        .not_found_code = "x",
        .not_found_message = "x",
        .page_default = g->paged ? PAGE_DEFAULT : 0,
        .page_max = g->paged ? PAGE_MAX : 0,
        .order = "inserted_at DESC",
        .search_max = searchable ? SEARCH_MAX : 0,
        .cache = g->cache,
    };
    char err[512];
    if (kiln_resource_check(&r, err, sizeof err))
        return fail(g, "the engine would refuse this declaration: %s", err);
    return true;
}

/* ---- writing: literals and comments ---- */

static void c_string(kiln_buf *b, const char *s)
{
    kiln_buf_append_c(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            kiln_buf_printf(b, "\\%c", *p);
        else if (*p == '?')
            kiln_buf_append_c(b, "\\?"); /* -std=c17 reads trigraphs */
        else if (*p < 0x20 || *p == 0x7f)
            kiln_buf_printf(b, "\\%03o", *p);
        else
            kiln_buf_append(b, p, 1);
    }
    kiln_buf_append_c(b, "\"");
}

static void py_string(kiln_buf *b, const char *s, size_t n)
{
    kiln_buf_append_c(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            kiln_buf_printf(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            kiln_buf_printf(b, "\\x%02x", c);
        else
            kiln_buf_append(b, &s[i], 1);
    }
    kiln_buf_append_c(b, "\"");
}

static void sql_string(kiln_buf *b, const char *s)
{
    kiln_buf_append_c(b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            kiln_buf_append_c(b, "''");
        else
            kiln_buf_append(b, p, 1);
    }
    kiln_buf_append_c(b, "'");
}

/* A JSON value as a Python literal (True, False, None; strings as they
 * are, in UTF-8). */
static void py_value(kiln_buf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *m;
        bool first = true;
        kiln_buf_append_c(b, "{");
        json_object_foreach((json_t *)v, k, m) {
            kiln_buf_append_c(b, first ? "" : ", ");
            py_string(b, k, strlen(k));
            kiln_buf_append_c(b, ": ");
            py_value(b, m);
            first = false;
        }
        kiln_buf_append_c(b, "}");
        return;
    }
    case JSON_ARRAY:
        kiln_buf_append_c(b, "[");
        for (size_t i = 0; i < json_array_size(v); i++) {
            kiln_buf_append_c(b, i ? ", " : "");
            py_value(b, json_array_get(v, i));
        }
        kiln_buf_append_c(b, "]");
        return;
    case JSON_STRING:
        py_string(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        kiln_buf_printf(b, "%lld", (long long)json_integer_value(v));
        return;
    case JSON_REAL:
        kiln_buf_printf(b, "%.17g", json_real_value(v));
        return;
    case JSON_TRUE:
        kiln_buf_append_c(b, "True");
        return;
    case JSON_FALSE:
        kiln_buf_append_c(b, "False");
        return;
    case JSON_NULL:
        kiln_buf_append_c(b, "None");
        return;
    }
}

/* An argument as a shell would need it, for the files' headers. */
static const char *shell_word(struct gen *g, const char *s)
{
    bool plain = *s != '\0';
    for (const char *p = s; *p; p++)
        plain &= word_char(*p) || (*p && strchr(":=.,/+@%-", *p));
    if (plain)
        return s;
    kiln_buf b;
    kiln_buf_init(&b, OUT_MAX);
    kiln_buf_append_c(&b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            kiln_buf_append_c(&b, "'\\''");
        else
            kiln_buf_append(&b, (unsigned char)*p < 0x20 || *p == 0x7f ? "?" : p, 1);
    }
    kiln_buf_append_c(&b, "'");
    const char *out = kiln_arena_strndup(g->a, b.p, b.len);
    kiln_buf_free(&b);
    return out;
}

/* The command, wrapped into comment lines that start with lead. In a C
 * comment, neither its end nor a nested start (-Wcomment) may appear. */
static void comment_command(struct gen *g, kiln_buf *b, const char *lead, bool c_comment)
{
    size_t col = 0;
    const char *p = g->command;
    kiln_buf_append_c(b, lead);
    col = strlen(lead);
    while (*p) {
        size_t n = strcspn(p, " ");
        if (col > strlen(lead) && col + 1 + n + 2 > WRAP) {
            kiln_buf_printf(b, " \\\n%s    ", lead);
            col = strlen(lead) + 4;
        } else if (col > strlen(lead)) {
            kiln_buf_append_c(b, " ");
            col++;
        }
        for (size_t i = 0; i < n; i++) {
            kiln_buf_append(b, &p[i], 1);
            if (c_comment && i + 1 < n &&
                ((p[i] == '*' && p[i + 1] == '/') || (p[i] == '/' && p[i + 1] == '*')))
                kiln_buf_append_c(b, "\\");
        }
        col += n;
        p += n;
        while (*p == ' ')
            p++;
    }
    kiln_buf_append_c(b, "\n");
}

static const char *capitalized(struct gen *g, const char *name)
{
    char *w = (char *)words_of(g, name);
    if (*w >= 'a' && *w <= 'z')
        *w = (char)(*w - 'a' + 'A');
    return w;
}

/* Comma-separated tokens, a new line (indent) before one that would pass
 * WRAP columns. */
struct wrap {
    kiln_buf *b;
    size_t col;
    const char *indent;
    bool first;
};

static void wrap_token(struct wrap *w, const char *tok)
{
    size_t n = strlen(tok);
    if (!w->first && w->col + 2 + n + 3 > WRAP) {
        kiln_buf_printf(w->b, ",\n%s", w->indent);
        w->col = strlen(w->indent);
    } else if (!w->first) {
        kiln_buf_append_c(w->b, ", ");
        w->col += 2;
    }
    kiln_buf_append_c(w->b, tok);
    w->col += n;
    w->first = false;
}

static const char *type_c(enum kiln_field_type t)
{
    for (size_t i = 0; i < NTYPES; i++)
        if (TYPES[i].type == t)
            return TYPES[i].c;
    return "?";
}

static const char *bound_c(struct gen *g, int64_t v)
{
    return v == INT64_MIN   ? "INT64_MIN"
           : v == INT64_MAX ? "INT64_MAX"
                            : kiln_arena_sprintf(g->a, "%lld", (long long)v);
}

static const char *string_c(struct gen *g, const char *s)
{
    kiln_buf b;
    kiln_buf_init(&b, OUT_MAX);
    c_string(&b, s);
    const char *out = kiln_arena_strndup(g->a, b.p, b.len);
    kiln_buf_free(&b);
    return out;
}

/* ---- app/src/api/resources/NAME.c ---- */

static void emit_declaration(struct gen *g, kiln_buf *b)
{
    kiln_arena *a = g->a;
    const char *mig = kiln_arena_sprintf(a, "app/migrations/<dialect>/%04u_%s.sql", g->number,
                                         g->name);
    kiln_buf_printf(b, "/*\n * %s: a declared resource (api/declare.h) that `kiln gen resource` "
                       "wrote:\n *\n", capitalized(g, g->name));
    comment_command(g, b, " *   ", true);
    kiln_buf_printf(
        b,
        " *\n"
        " * The engine (api/engine.c) serves it from this declaration alone, on\n"
        " * /api/v1/%s and /api/%s: list, show, create, update (PUT and PATCH,\n"
        " * both partial) and delete, every statement scoped to the session's user,\n"
        " * so that another user's row answers 404 %s_not_found exactly like a\n"
        " * missing one. Its table: %s; its tests:\n"
        " * app/tests/http/test_%s.py.\n"
        " *\n"
        " * Hooks: logic of your own goes in this file, in functions that the\n"
        " * declaration below names (docs/RESOURCES.md):\n"
        " *   .before_create, .after_create, .before_update, .after_update,\n"
        " *   .before_delete, .after_delete: a kiln_write_hook, which may change\n"
        " *       what is written (kiln_write_set) or answer and return non-zero to\n"
        " *       stop the write;\n"
        " *   .show_extra: members added to GET /%s/:id (kiln_show_hook);\n"
        " *   .actions: routes POST /%s/:id/<action> (struct kiln_action).\n"
        " * A new field needs a new migration too: never edit one that has shipped.\n"
        " */\n"
        "#include \"api/declare.h\"\n\n",
        g->name, g->name, g->singular, mig, g->name, g->name, g->name);
    for (size_t i = 0; i < g->nfields; i++) {
        const struct kiln_field *f = &g->fields[i].f;
        if (f->type != KILN_ENUM)
            continue;
        kiln_buf_printf(b, "static const char *const %s_values[] = { ", f->name);
        for (const char *const *v = f->values; *v; v++) {
            c_string(b, *v);
            kiln_buf_append_c(b, ", ");
        }
        kiln_buf_append_c(b, "NULL };\n\n");
    }
    kiln_buf_append_c(b, "static const struct kiln_field fields[] = {\n");
    for (size_t i = 0; i < g->nfields; i++) {
        const struct gfield *gf = &g->fields[i];
        const struct kiln_field *f = &gf->f;
        struct wrap w = { b, 6, "      ", true };
        kiln_buf_append_c(b, "    { ");
        wrap_token(&w, kiln_arena_sprintf(a, ".name = %s", string_c(g, f->name)));
        wrap_token(&w, kiln_arena_sprintf(a, ".type = %s", type_c(f->type)));
        if (f->type == KILN_REFERENCE)
            wrap_token(&w, kiln_arena_sprintf(a, ".ref = %s", string_c(g, f->ref)));
        if (f->type == KILN_ENUM)
            wrap_token(&w, kiln_arena_sprintf(a, ".values = %s_values", f->name));
        if (f->flags) {
            static const struct {
                unsigned flag;
                const char *name;
            } names[] = { { KILN_REQUIRED, "KILN_REQUIRED" }, { KILN_NULLABLE, "KILN_NULLABLE" },
                          { KILN_FILTER, "KILN_FILTER" },     { KILN_SEARCH, "KILN_SEARCH" },
                          { KILN_SORT, "KILN_SORT" },         { KILN_BOUNDED, "KILN_BOUNDED" } };
            kiln_buf fl;
            kiln_buf_init(&fl, OUT_MAX);
            for (size_t n = 0; n < sizeof names / sizeof names[0]; n++)
                if (f->flags & names[n].flag)
                    kiln_buf_printf(&fl, "%s%s", fl.len ? " | " : "", names[n].name);
            wrap_token(&w, kiln_arena_sprintf(a, ".flags = %.*s", (int)fl.len, fl.p));
            kiln_buf_free(&fl);
        }
        if (f->min_len)
            wrap_token(&w, kiln_arena_sprintf(a, ".min_len = %zu", f->min_len));
        if (f->max_len)
            wrap_token(&w, kiln_arena_sprintf(a, ".max_len = %zu", f->max_len));
        if (f->flags & KILN_BOUNDED) {
            wrap_token(&w, kiln_arena_sprintf(a, ".min = %s", bound_c(g, f->min)));
            wrap_token(&w, kiln_arena_sprintf(a, ".max = %s", bound_c(g, f->max)));
        }
        if (f->def)
            wrap_token(&w, kiln_arena_sprintf(a, ".def = %s", string_c(g, f->def)));
        wrap_token(&w, kiln_arena_sprintf(a, ".doc = %s", string_c(g, f->doc)));
        kiln_buf_append_c(b, " },\n");
    }
    kiln_buf_append_c(b, "};\n\n");
    bool searchable = false;
    for (size_t i = 0; i < g->nfields; i++)
        searchable |= (g->fields[i].f.flags & KILN_SEARCH) != 0;
    kiln_buf_printf(b,
                    "const struct kiln_resource kiln_resource_%s = {\n"
                    "    .name = \"%s\",\n"
                    "    .singular = \"%s\",\n"
                    "    .fields = fields,\n"
                    "    .nfields = sizeof fields / sizeof fields[0],\n"
                    "    .owner = KILN_OWNER_USER,\n"
                    "    .not_found_code = \"%s_not_found\",\n"
                    "    .not_found_message = \"%s not found\",\n",
                    g->name, g->name, g->singular, g->singular, capitalized(g, g->singular));
    if (g->paged)
        kiln_buf_printf(b, "    .page_default = %d,\n    .page_max = %d,\n", PAGE_DEFAULT,
                        PAGE_MAX);
    else
        kiln_buf_append_c(b, "    /* no page_default, page_max: a list is the whole list, "
                             "{\"data\": [...]} */\n");
    kiln_buf_append_c(b, "    .order = \"inserted_at DESC\",\n");
    if (searchable)
        kiln_buf_printf(b, "    .search_max = %d,\n", SEARCH_MAX);
    if (g->cache)
        kiln_buf_append_c(b, "    .cache = true,\n");
    kiln_buf_printf(b, "    .doc = \"A user's %s.\",\n};\n", words_of(g, g->name));
}

/* ---- app/migrations/<dialect>/NNNN_NAME.sql ---- */

/* A default as a SQL literal of the column's type. */
static void sql_default(kiln_buf *b, const struct kiln_field *f, bool pg)
{
    if (f->type == KILN_INTEGER)
        kiln_buf_append_c(b, f->def);
    else if (f->type == KILN_BOOLEAN)
        kiln_buf_append_c(b, !pg ? f->def : f->def[0] == '1' ? "true" : "false");
    else
        sql_string(b, f->def);
}

static void emit_migration(struct gen *g, kiln_buf *b, bool pg)
{
    size_t width = strlen("inserted_at");
    for (size_t i = 0; i < g->nfields; i++)
        if (strlen(g->fields[i].f.name) > width)
            width = strlen(g->fields[i].f.name);
    kiln_buf_printf(b, "-- %s (app/src/api/resources/%s.c), as `kiln gen resource` wrote it:\n",
                    capitalized(g, g->name), g->name);
    comment_command(g, b, "--   ", false);
    kiln_buf_append_c(b,
                      "-- The engine writes id, user_id, inserted_at and updated_at itself and\n"
                      "-- scopes every statement by user_id. Never edit this file once it has\n"
                      "-- shipped: add a migration.\n");
    if (!pg)
        kiln_buf_printf(b,
                        "-- SQLite (see ../postgres/%04u_%s.sql): uuids, dates and timestamps\n"
                        "-- are TEXT (timestamps RFC 3339 UTC with microseconds, which sorts in\n"
                        "-- time order), booleans INTEGER 0/1; the driver turns foreign keys on,\n"
                        "-- so ON DELETE CASCADE works here too.\n",
                        g->number, g->name);
    const char *uuid = pg ? "uuid" : "TEXT", *ts = pg ? "timestamptz" : "TEXT";
    int w = (int)width;
    kiln_buf_printf(b, "CREATE TABLE %s (\n", g->name);
    kiln_buf_printf(b, "    %-*s %s PRIMARY KEY,\n", w, "id", uuid);
    kiln_buf_printf(b, "    %-*s %s NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n", w,
                    "user_id", uuid);
    for (size_t i = 0; i < g->nfields; i++) {
        const struct gfield *gf = &g->fields[i];
        const struct kiln_field *f = &gf->f;
        size_t t;
        for (t = 0; t < NTYPES && TYPES[t].type != f->type; t++)
            ;
        kiln_buf_printf(b, "    %-*s %s", w, f->name, pg ? TYPES[t].pg : TYPES[t].sqlite);
        if (!(f->flags & KILN_NULLABLE))
            kiln_buf_append_c(b, " NOT NULL");
        if (f->def) {
            kiln_buf_append_c(b, " DEFAULT ");
            sql_default(b, f, pg);
        }
        if (f->type == KILN_REFERENCE)
            kiln_buf_printf(b, " REFERENCES %s (id) ON DELETE CASCADE", f->ref);
        /* The engine checks these before it writes; the database holds
         * them too, for whatever else writes the table. */
        const char *pad = kiln_arena_sprintf(g->a, "\n    %*s ", w, "");
        if (f->type == KILN_ENUM) {
            kiln_buf_printf(b, "%sCHECK (%s IN (", pad, f->name);
            for (const char *const *v = f->values; *v; v++) {
                kiln_buf_append_c(b, v == f->values ? "" : ", ");
                sql_string(b, *v);
            }
            kiln_buf_append_c(b, "))");
        }
        if (f->type == KILN_INTEGER && gf->has_min && gf->has_max)
            kiln_buf_printf(b, "%sCHECK (%s BETWEEN %lld AND %lld)", pad, f->name,
                            (long long)gf->min, (long long)gf->max);
        else if (f->type == KILN_INTEGER && (gf->has_min || gf->has_max))
            kiln_buf_printf(b, "%sCHECK (%s %s %lld)", pad, f->name, gf->has_min ? ">=" : "<=",
                            (long long)(gf->has_min ? gf->min : gf->max));
        /* What PostgreSQL's date type refuses: date() with a modifier
         * carries an impossible day into the next month and gives NULL
         * for what is no date at all (as in 0004_projects_tasks.sql). */
        if (f->type == KILN_DATE && !pg)
            kiln_buf_printf(b, "%sCHECK (%s%s%s date(%s, '+0 days') IS %s)", pad,
                            (f->flags & KILN_NULLABLE) ? f->name : "",
                            (f->flags & KILN_NULLABLE) ? " IS NULL" : "",
                            (f->flags & KILN_NULLABLE) ? " OR" : "", f->name, f->name);
        kiln_buf_append_c(b, ",\n");
    }
    kiln_buf_printf(b, "    %-*s %s NOT NULL,\n", w, "inserted_at", ts);
    kiln_buf_printf(b, "    %-*s %s NOT NULL\n);\n\n", w, "updated_at", ts);
    kiln_buf_printf(b,
                    "-- GET /%s: the user's rows, newest first (the declared order), in one\n"
                    "-- range scan.\n"
                    "CREATE INDEX %s\n    ON %s (user_id, inserted_at DESC, id DESC);\n",
                    g->name, g->idx_order, g->name);
    for (size_t i = 0; i < g->nfields; i++) {
        const struct kiln_field *f = &g->fields[i].f;
        if (g->idx_filter[i])
            kiln_buf_printf(b,
                            "-- GET /%s?%s=: that filter, in the same order.\n"
                            "CREATE INDEX %s\n"
                            "    ON %s (user_id, %s, inserted_at DESC, id DESC);\n",
                            g->name, f->name, g->idx_filter[i], g->name, f->name);
        if (g->idx_ref[i])
            kiln_buf_printf(b,
                            "-- Deleting a row of %s deletes the %s that name it (ON DELETE\n"
                            "-- CASCADE), found here.\n"
                            "CREATE INDEX %s\n    ON %s (%s);\n",
                            f->ref, g->name, g->idx_ref[i], g->name, f->name);
    }
}

/* ---- app/tests/http/test_NAME.py ---- */

/* A valid value of field f, as JSON, variant k (0, 1, 2): tests that need
 * rows that differ take the variants in turn. Text fits the bounds (and
 * sorts by its variant in any collation), integers the range. NULL for a
 * reference: its rows are made through the API. */
static json_t *sample(const struct kiln_field *f, int k)
{
    char s[96];
    switch (f->type) {
    case KILN_TEXT: {
        kiln_buf b;
        kiln_buf_init(&b, OUT_MAX);
        kiln_buf_printf(&b, "%s %c", f->name, 'a' + k);
        if (f->max_len && b.len > f->max_len) {
            kiln_buf_reset(&b);
            for (size_t i = 0; i < (f->min_len > 1 ? f->min_len : 1); i++)
                kiln_buf_printf(&b, "%c", 'a' + k);
        }
        while (b.len < f->min_len)
            kiln_buf_append_c(&b, "x");
        json_t *v = json_stringn(b.p, b.len);
        kiln_buf_free(&b);
        return v;
    }
    case KILN_INTEGER: {
        int64_t lo = INT64_MIN, hi = INT64_MAX;
        if (f->flags & KILN_BOUNDED) {
            lo = f->min;
            hi = f->max;
        }
        int64_t start = lo > 1 ? lo : hi < 1 ? hi : 1, v = start;
        if ((uint64_t)hi - (uint64_t)start >= (uint64_t)k)
            v = start + k;
        else if ((uint64_t)start - (uint64_t)lo >= (uint64_t)k)
            v = start - k;
        return json_integer(v);
    }
    case KILN_BOOLEAN:
        return json_boolean(k != 1);
    case KILN_DATE:
        snprintf(s, sizeof s, "2026-03-0%d", k + 1);
        return json_string(s);
    case KILN_TIMESTAMP:
        snprintf(s, sizeof s, "2026-03-0%dT12:34:56.12345%dZ", k + 1, k);
        return json_string(s);
    case KILN_UUID:
        snprintf(s, sizeof s, "0b5e6a2c-7d4f-4e1a-9c3b-00000000000%d", k + 1);
        return json_string(s);
    case KILN_ENUM: {
        size_t n = 0;
        while (f->values[n])
            n++;
        return json_string(f->values[(size_t)k % n]);
    }
    case KILN_JSON:
        return k == 0   ? json_pack("{s:i, s:[s, s]}", "n", 0, "tags", "a", "b")
               : k == 1 ? json_pack("{s:i, s:[]}", "n", 1, "tags")
                        : json_pack("[i, i, i]", 1, 2, 3);
    case KILN_REFERENCE:
        break;
    }
    return NULL;
}

/* What a row shows for a field a create left out. */
static json_t *shown_default(const struct kiln_field *f)
{
    if (!f->def)
        return json_null();
    switch (f->type) {
    case KILN_INTEGER:
        return json_integer(strtoll(f->def, NULL, 10));
    case KILN_BOOLEAN:
        return json_boolean(f->def[0] == '1');
    case KILN_JSON:
        return json_loads(f->def, JSON_DECODE_ANY, NULL);
    default:
        return json_string(f->def);
    }
}

static void py_json_line(kiln_buf *b, const char *indent, const char *key, json_t *v)
{
    kiln_buf_append_c(b, indent);
    py_string(b, key, strlen(key));
    kiln_buf_append_c(b, ": ");
    py_value(b, v);
    kiln_buf_append_c(b, ",\n");
    json_decref(v);
}

/* NAME = ["a", "b"] on one line, or one item a line past WRAP. */
static void py_list(kiln_buf *b, const char *name, const char *const *items, size_t n)
{
    kiln_buf line;
    kiln_buf_init(&line, OUT_MAX);
    kiln_buf_printf(&line, "%s = [", name);
    for (size_t i = 0; i < n; i++) {
        kiln_buf_append_c(&line, i ? ", " : "");
        py_string(&line, items[i], strlen(items[i]));
    }
    kiln_buf_append_c(&line, "]\n");
    if (line.len <= WRAP + 1) {
        kiln_buf_append(b, line.p, line.len);
    } else {
        kiln_buf_printf(b, "%s = [\n", name);
        for (size_t i = 0; i < n; i++) {
            kiln_buf_append_c(b, "    ");
            py_string(b, items[i], strlen(items[i]));
            kiln_buf_append_c(b, ",\n");
        }
        kiln_buf_append_c(b, "]\n");
    }
    kiln_buf_free(&line);
}

/* NAME = [the fields with flag set], through list (room for every field). */
static void py_flagged(const struct gen *g, kiln_buf *b, const char **list, const char *name,
                       unsigned flag)
{
    size_t n = 0;
    for (size_t i = 0; i < g->nfields; i++)
        if (g->fields[i].f.flags & flag)
            list[n++] = g->fields[i].f.name;
    py_list(b, name, list, n);
}

static void case_line(kiln_buf *b, const char *field, const char *expr, const char *msg)
{
    kiln_buf_append_c(b, "    (");
    py_string(b, field, strlen(field));
    kiln_buf_printf(b, ", %s, ", expr);
    py_string(b, msg, strlen(msg));
    kiln_buf_append_c(b, "),\n");
}

/* A value no enum value equals. */
static const char *not_a_value(struct gen *g, const struct kiln_field *f)
{
    const char *bad = "not_a_value";
    for (bool taken = true; taken;) {
        taken = false;
        for (const char *const *v = f->values; *v; v++)
            taken |= !strcmp(*v, bad);
        if (taken)
            bad = kiln_arena_sprintf(g->a, "%s_", bad);
    }
    return bad;
}

/* (field, value, message) for each rule of the declaration that a value
 * can break: the 422s the engine answers (engine.c, field_value). */
static void invalid_cases(struct gen *g, kiln_buf *b, const struct kiln_field *f)
{
    kiln_arena *a = g->a;
    const char *n = f->name;
    switch (f->type) {
    case KILN_TEXT:
        case_line(b, n, "42", "is invalid");
        if (f->max_len && f->max_len < TEXT_BOUND_MAX)
            case_line(b, n, kiln_arena_sprintf(a, "\"x\" * %zu", f->max_len + 1),
                      kiln_arena_sprintf(a, "should be at most %zu character(s)", f->max_len));
        if (f->min_len >= 1)
            case_line(b, n, "\"  \"", "can't be blank");
        if (f->min_len >= 2)
            case_line(b, n, kiln_arena_sprintf(a, "\"x\" * %zu", f->min_len - 1),
                      kiln_arena_sprintf(a, "should be at least %zu character(s)", f->min_len));
        break;
    case KILN_INTEGER:
        case_line(b, n, "\"1\"", "is invalid");
        case_line(b, n, "1.5", "is invalid");
        if ((f->flags & KILN_BOUNDED) && f->min > INT64_MIN)
            case_line(b, n, kiln_arena_sprintf(a, "%lld", (long long)f->min - 1),
                      kiln_arena_sprintf(a, "must be greater than or equal to %lld",
                                         (long long)f->min));
        if ((f->flags & KILN_BOUNDED) && f->max < INT64_MAX)
            case_line(b, n, kiln_arena_sprintf(a, "%lld", (long long)f->max + 1),
                      kiln_arena_sprintf(a, "must be less than or equal to %lld",
                                         (long long)f->max));
        break;
    case KILN_BOOLEAN:
        case_line(b, n, "\"true\"", "is invalid");
        case_line(b, n, "1", "is invalid");
        break;
    case KILN_DATE:
        case_line(b, n, "\"2026-02-30\"", "is invalid");
        case_line(b, n, "\"tomorrow\"", "is invalid");
        break;
    case KILN_TIMESTAMP:
        case_line(b, n, "\"yesterday\"", "is invalid");
        case_line(b, n, "\"2026-03-01T12:00:00\"", "is invalid");
        break;
    case KILN_UUID:
        case_line(b, n, "\"nope\"", "is invalid");
        break;
    case KILN_ENUM:
        case_line(b, n, kiln_arena_sprintf(a, "\"%s\"", not_a_value(g, f)), "is invalid");
        case_line(b, n, "7", "is invalid");
        break;
    case KILN_JSON:
    case KILN_REFERENCE:
        return; /* any JSON is a json value; a reference's errors are 404s */
    }
    /* null where the column cannot hold it: Ecto's words, as field_value
     * chooses them */
    if (!(f->flags & KILN_NULLABLE)) {
        bool blank = f->type == KILN_TEXT   ? f->min_len > 0 || (f->flags & KILN_REQUIRED)
                     : f->type == KILN_ENUM ? true
                                            : (f->flags & KILN_REQUIRED) != 0;
        case_line(b, n, "None", blank ? "can't be blank" : "is invalid");
    }
}

/* A filter's query value that is malformed (400 invalid_request), or
 * NULL: any text is a text filter's value. */
static const char *bad_filter(struct gen *g, const struct kiln_field *f)
{
    switch (f->type) {
    case KILN_BOOLEAN: return "maybe";
    case KILN_INTEGER: return "1.5";
    case KILN_DATE: return "2026-02-30";
    case KILN_TIMESTAMP: return "yesterday";
    case KILN_UUID:
    case KILN_REFERENCE: return "nope";
    case KILN_ENUM: return not_a_value(g, f);
    default: return NULL;
    }
}

/* make_<name>(user): a row of r through its API, with what its create needs. */
static void emit_maker(kiln_buf *b, const struct kiln_resource *r)
{
    kiln_buf_printf(b,
                    "def make_%s(user):\n"
                    "    \"\"\"A row of %s, made through its API with the fields its "
                    "declaration\n    requires.\"\"\"\n"
                    "    sent = {\n",
                    r->name, r->name);
    for (size_t i = 0; i < r->nfields; i++) {
        const struct kiln_field *f = &r->fields[i];
        if (needs_value(f) && f->type != KILN_REFERENCE)
            py_json_line(b, "        ", f->name, sample(f, 0));
    }
    kiln_buf_append_c(b, "    }\n");
    for (size_t i = 0; i < r->nfields; i++) {
        const struct kiln_field *f = &r->fields[i];
        if (needs_value(f) && f->type == KILN_REFERENCE)
            kiln_buf_printf(b, "    sent[\"%s\"] = make_%s(user)[\"id\"]\n", f->name, f->ref);
    }
    kiln_buf_printf(b, "    return user.ok(\"POST\", \"/%s\", sent, 201)\n\n\n", r->name);
}

static void emit_tests(struct gen *g, kiln_buf *b, const struct makers *m)
{
    kiln_arena *a = g->a;
    kiln_buf_printf(
        b,
        "\"\"\"%s: the black-box tests `kiln gen resource` wrote with the resource\n"
        "(app/src/api/resources/%s.c; its table:\n"
        "app/migrations/<dialect>/%04u_%s.sql).\n"
        "They run in every store mode of the suite (KILN_STORES: SQLite, or\n"
        "PostgreSQL and Redis, direct or through pgbouncer): create (201, shape,\n"
        "defaults), show, update (PUT and PATCH, partial), delete (204, then 404),\n"
        "lists (newest first, paging, and the declared filters, search and sorts),\n"
        "ownership (another user's row answers 404 like a missing one), validation\n"
        "(422 details per field; 400 for a body that is no JSON object), ids that are\n"
        "not UUIDs (404) and references (another user's row is a 404; deleting the\n"
        "referenced row deletes this one), on /api/v1 and /api.\n"
        "\n"
        "Rows of a referenced resource are made through its own API with the fields\n"
        "its declaration requires (make_<name> below). This file is yours now: the\n"
        "tests of your hooks go here too.\n"
        "\"\"\"\n",
        capitalized(g, g->name), g->name, g->number, g->name);
    comment_command(g, b, "#   ", false);
    kiln_buf_append_c(
        b, "\nimport time\nimport uuid\n\nimport pytest\n\nimport authkit as ak\n"
           "from resourcekit import (MISSING, PREFIXES, V1, User, assert_bad_request, "
           "assert_invalid,\n"
           "                         assert_not_found, assert_row, ids, ordered, query_text)\n\n");
    bool searchable = false;
    for (size_t i = 0; i < g->nfields; i++)
        searchable |= (g->fields[i].f.flags & KILN_SEARCH) != 0;
    kiln_buf_printf(b, "PATH = \"/%s\"\nNOT_FOUND = \"%s_not_found\"\n", g->name, g->singular);
    const char **keys = kiln_arena_alloc(a, (g->nfields + 3) * sizeof *keys);
    keys[0] = "id";
    for (size_t i = 0; i < g->nfields; i++)
        keys[i + 1] = g->fields[i].f.name;
    keys[g->nfields + 1] = "inserted_at";
    keys[g->nfields + 2] = "updated_at";
    py_list(b, "KEYS", keys, g->nfields + 3);
    kiln_buf_printf(b, "PAGED = %s\nPAGE_DEFAULT, PAGE_MAX = %d, %d\nCACHED = %s\n"
                       "SEARCH_MAX = %d\n\n",
                    g->paged ? "True" : "False", g->paged ? PAGE_DEFAULT : 0,
                    g->paged ? PAGE_MAX : 0, g->cache ? "True" : "False",
                    searchable ? SEARCH_MAX : 0);

    kiln_buf_append_c(b, "# Three valid bodies, references apart (body() adds them): tests "
                         "that need\n# rows that differ take them in turn.\nVARIANTS = [\n");
    for (int k = 0; k < 3; k++) {
        kiln_buf_append_c(b, "    {\n");
        for (size_t i = 0; i < g->nfields; i++) {
            const struct kiln_field *f = &g->fields[i].f;
            if (f->type != KILN_REFERENCE)
                py_json_line(b, "        ", f->name, sample(f, k));
        }
        kiln_buf_append_c(b, "    },\n");
    }
    kiln_buf_append_c(b, "]\n");

    const char **list = kiln_arena_alloc(a, (g->nfields + 1) * sizeof *list);
    size_t n = 0;
    kiln_buf_append_c(b, "# What a create must give, and what a row shows for what it "
                         "leaves out.\n");
    for (size_t i = 0; i < g->nfields; i++)
        if ((g->fields[i].f.flags & KILN_REQUIRED) && g->fields[i].f.type != KILN_REFERENCE)
            list[n++] = g->fields[i].f.name;
    py_list(b, "REQUIRED", list, n);
    n = 0;
    for (size_t i = 0; i < g->nfields; i++)
        if ((g->fields[i].f.flags & KILN_REQUIRED) && g->fields[i].f.type == KILN_REFERENCE)
            list[n++] = g->fields[i].f.name;
    py_list(b, "REQUIRED_REFERENCES", list, n);
    kiln_buf_append_c(b, "DEFAULTS = {\n");
    for (size_t i = 0; i < g->nfields; i++) {
        const struct kiln_field *f = &g->fields[i].f;
        if (!(f->flags & KILN_REQUIRED))
            py_json_line(b, "    ", f->name, shown_default(f));
    }
    kiln_buf_append_c(b, "}\n");
    py_flagged(g, b, list, "NULLABLE", KILN_NULLABLE);
    py_flagged(g, b, list, "FILTERS", KILN_FILTER);
    kiln_buf_append_c(b, "# A value of each typed filter that is malformed: 400 "
                         "invalid_request.\nBAD_FILTERS = [\n");
    for (size_t i = 0; i < g->nfields; i++) {
        const struct kiln_field *f = &g->fields[i].f;
        const char *bad = (f->flags & KILN_FILTER) ? bad_filter(g, f) : NULL;
        if (bad)
            kiln_buf_printf(b, "    (\"%s\", \"%s\"),\n", f->name, bad);
    }
    kiln_buf_append_c(b, "]\n# Each searchable field that holds a search token, and the "
                         "fewest characters\n# it takes.\nSEARCHES = {\n");
    for (size_t i = 0; i < g->nfields; i++) {
        const struct kiln_field *f = &g->fields[i].f;
        if ((f->flags & KILN_SEARCH) &&
            (!f->max_len || f->max_len >= (f->min_len > SEARCH_TOKEN_LEN ? f->min_len
                                                                          : SEARCH_TOKEN_LEN)))
            kiln_buf_printf(b, "    \"%s\": %zu,\n", f->name, f->min_len);
    }
    kiln_buf_append_c(b, "}\n");
    py_flagged(g, b, list, "SORTS", KILN_SORT);
    kiln_buf_append_c(b, "# (field, value, its 422 message): each rule of the "
                         "declaration.\nINVALID = [\n");
    for (size_t i = 0; i < g->nfields; i++)
        invalid_cases(g, b, &g->fields[i].f);
    kiln_buf_append_c(b, "]\n\n\n"
                         "@pytest.fixture(scope=\"module\")\n"
                         "def srv(module_kiln):\n"
                         "    return ak.start_kiln(module_kiln)\n\n\n"
                         "@pytest.fixture\n"
                         "def alice(srv):\n"
                         "    return User(srv, \"alice\")\n\n\n"
                         "@pytest.fixture\n"
                         "def bob(srv):\n"
                         "    return User(srv, \"bob\")\n\n\n");
    for (size_t i = 0; i < m->n; i++)
        emit_maker(b, m->r[i]);
    kiln_buf_append_c(b, "def body(user, variant=0):\n"
                         "    \"\"\"A valid create body: VARIANTS[variant], and a fresh row "
                         "of each\n    resource it references.\"\"\"\n"
                         "    sent = dict(VARIANTS[variant])\n");
    for (size_t i = 0; i < g->nfields; i++) {
        const struct gfield *gf = &g->fields[i];
        if (gf->f.type == KILN_REFERENCE && !gf->self)
            kiln_buf_printf(b, "    sent[\"%s\"] = make_%s(user)[\"id\"]\n", gf->f.name,
                            gf->f.ref);
    }
    kiln_buf_append_c(b, "    return sent\n\n\n"
                         "def create(user, variant=0, changes=None, prefix=V1):\n"
                         "    \"\"\"A row made through the API from body(user, variant) "
                         "and the dict\n    changes, checked against what was sent.\"\"\"\n"
                         "    sent = dict(body(user, variant), **(changes or {}))\n"
                         "    return assert_row(user.ok(\"POST\", PATH, sent, 201, "
                         "prefix=prefix), KEYS, sent)\n\n\n"
                         "# Each reference: the referenced resource's path, its 404 code, "
                         "and how a row\n# of it is made.\nREFERENCES = {\n");
    for (size_t i = 0; i < g->nfields; i++) {
        const struct gfield *gf = &g->fields[i];
        if (gf->f.type != KILN_REFERENCE)
            continue;
        if (gf->self)
            kiln_buf_printf(b, "    \"%s\": (PATH, NOT_FOUND, create),\n", gf->f.name);
        else
            kiln_buf_printf(b, "    \"%s\": (\"/%s\", \"%s\", make_%s),\n", gf->f.name,
                            gf->target->name, gf->target->not_found_code, gf->target->name);
    }
    kiln_buf_append_c(b, "}\n");
    kiln_buf_append_c(b, RESOURCE_TESTS_PY);
}

/* ---- the command ---- */

/* Create every file with O_EXCL (never over one that appeared since the
 * checks); on any failure remove those this run made. */
static bool write_files(struct gen *g, kiln_buf *bufs, const char *const *rels)
{
    size_t done;
    int err = 0;
    for (done = 0; done < NFILES; done++) {
        const char *path = path_of(g, rels[done]);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            err = errno;
            break;
        }
        size_t off = 0;
        while (!err && off < bufs[done].len) {
            ssize_t n = write(fd, bufs[done].p + off, bufs[done].len - off);
            if (n < 0 && errno != EINTR)
                err = errno;
            else if (n > 0)
                off += (size_t)n;
        }
        if (close(fd) != 0 && !err)
            err = errno;
        if (err) {
            unlink(path);
            break;
        }
    }
    if (done == NFILES)
        return true;
    fail(g, "cannot write %s: %s", rels[done], strerror(err));
    while (done-- > 0)
        unlink(path_of(g, rels[done]));
    return false;
}

static bool identifier_only(struct gen *g, const char *what, const char *s)
{
    size_t n = strlen(s);
    bool ok = n > 0 && n <= NAME_MAX_LEN && *s >= 'a' && *s <= 'z';
    for (const char *p = s; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
    return ok || fail(g, "%s \"%s\" must be a lower-case identifier: a letter a-z, then a-z, "
                         "0-9 or _, at most %d characters", what, s, NAME_MAX_LEN);
}

/* 0, 1 or 2 as kiln_gen_main returns; g->err says why when not 0. */
static int run(struct gen *g, int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return 0;
        }
    bool paged = false, unpaged = false;
    const char **pos = kiln_arena_alloc_z(g->a, ((size_t)argc + 1) * sizeof *pos);
    size_t npos = 0;
    kiln_buf cmd;
    kiln_buf_init(&cmd, OUT_MAX);
    kiln_buf_append_c(&cmd, "kiln gen resource");
    int rc = 2;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        bool root = !strncmp(s, "--root=", 7) || !strcmp(s, "--root");
        bool singular = !strncmp(s, "--singular=", 11) || !strcmp(s, "--singular");
        if (root || singular) {
            const char *v = strchr(s, '=');
            if (!v && (i + 1 >= argc || argv[i + 1][0] == '-')) {
                fail(g, "%s needs a value", s);
                goto out;
            }
            v = v ? v + 1 : argv[++i];
            if (root)
                g->root = v;
            else
                g->singular = v;
            if (singular)
                kiln_buf_printf(&cmd, " %s", shell_word(g, kiln_arena_sprintf(
                                                            g->a, "--singular=%s", v)));
            continue;
        }
        if (!strcmp(s, "--paged"))
            paged = true;
        else if (!strcmp(s, "--unpaged"))
            unpaged = true;
        else if (!strcmp(s, "--cache"))
            g->cache = true;
        else if (s[0] == '-') {
            fail(g, "unknown flag \"%s\" (kiln gen resource --help)", s);
            goto out;
        } else {
            pos[npos++] = s;
        }
        kiln_buf_printf(&cmd, " %s", shell_word(g, s));
    }
    g->command = kiln_arena_strndup(g->a, cmd.p, cmd.len);
    if (paged && unpaged) {
        fail(g, "--paged and --unpaged contradict each other");
        goto out;
    }
    g->paged = !unpaged;
    if (g->cache && !g->paged) {
        fail(g, "--cache: only paged lists are cached (drop --unpaged)");
        goto out;
    }
    if (npos == 0) {
        fail(g, "give the resource's NAME and its fields (kiln gen resource --help)");
        goto out;
    }
    g->name = pos[0];
    if (!check_name(g, "resource name", g->name))
        goto out;
    if (npos == 1) {
        fail(g, "resource %s: give at least one field, name:type[:option...]", g->name);
        goto out;
    }
    if (!g->singular) {
        size_t n = strlen(g->name);
        if (n < 2 || g->name[n - 1] != 's') {
            fail(g, "%s does not end in s: give its singular with --singular=", g->name);
            goto out;
        }
        g->singular = kiln_arena_strndup(g->a, g->name, n - 1);
    }
    if (!identifier_only(g, "singular", g->singular))
        goto out;
    g->nfields = npos - 1;
    g->fields = kiln_arena_alloc_z(g->a, g->nfields * sizeof *g->fields);
    for (size_t i = 0; i < g->nfields; i++)
        if (!parse_field(g, pos[i + 1], &g->fields[i]))
            goto out;
    for (size_t i = 0; i < g->nfields; i++)
        if (!check_field(g, i))
            goto out;
    struct makers m = { .n = 0 };
    if (!check_tree(g, &m) || !check_declaration(g))
        goto out;

    kiln_buf bufs[NFILES];
    const char *rels[NFILES];
    for (size_t i = 0; i < NFILES; i++) {
        kiln_buf_init(&bufs[i], OUT_MAX);
        rels[i] = file_rel(g, i);
    }
    emit_declaration(g, &bufs[0]);
    emit_migration(g, &bufs[1], true);
    emit_migration(g, &bufs[2], false);
    emit_tests(g, &bufs[3], &m);
    if (!write_files(g, bufs, rels)) {
        rc = 1;
    } else {
        for (size_t i = 0; i < NFILES; i++)
            printf("created %s\n", rels[i]);
        printf("\nNext: make, then run kiln: /api/v1/%s and /api/%s (outside production\n"
               "`kiln serve` applies the migration at start; otherwise `kiln migrate`).\n"
               "Its tests: KILN_BIN=build/kiln python3 -m pytest -q app/tests/http/test_%s.py\n",
               g->name, g->name, g->name);
        rc = 0;
    }
    for (size_t i = 0; i < NFILES; i++)
        kiln_buf_free(&bufs[i]);
out:
    kiln_buf_free(&cmd);
    return rc;
}

int kiln_gen_main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(gen_usage, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(gen_usage, stdout);
        return 0;
    }
    if (strcmp(argv[1], "resource")) {
        fprintf(stderr, "kiln gen: unknown generator '%s' (there is one: resource)\n", argv[1]);
        return 2;
    }
    struct gen g;
    memset(&g, 0, sizeof g);
    g.a = kiln_arena_new(1 << 16);
    g.root = ".";
    int rc = run(&g, argc - 2, argv + 2);
    if (rc)
        fprintf(stderr, "kiln gen resource: %s\n", g.err);
    kiln_arena_free(g.a);
    return rc;
}
