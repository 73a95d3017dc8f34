"""`kiln gen resource` (app/src/gen/resource.c) on copies of this tree's
declarations and migrations: what it writes (the declaration compiles, the
SQLite migration applies after the others and gives the columns the
engine's column check wants, the tests are Python), the next migration
number, and every refusal: one line on stderr, exit 2, nothing written.

Under ASan (make blackbox-asan) each of these runs is checked for leaks
and memory errors as well. That a generated resource builds and its generated tests pass against it,
on SQLite and on PostgreSQL + Redis, is scripts/gen-check.sh (a step of
`make test`: it builds a scratch copy of the tree, which takes a minute).
"""

import os
import py_compile
import resource
import shutil
import signal
import sqlite3
import subprocess

import pytest

from kilnhttp import KILN_BIN, REPO_ROOT, STORES, clean_env, run_kiln

# The generator touches no store: once per binary is enough (the plain
# embedded run and the ASan one).
pytestmark = pytest.mark.skipif(STORES != "embedded",
                                reason="the generator uses no store: runs in embedded mode")

BOOKMARKS = ["bookmarks", "title:text:required:max=200:search", "url:text:required",
             "rating:integer:min=1:max=5:default=3:sort", "read:boolean:default=false:filter",
             "kind:enum:values=article|video|podcast:default=article:filter:sort",
             "published_on:date:nullable:sort", "seen_at:timestamp:nullable:sort",
             "ext_id:uuid:nullable:filter", "project_id:reference:projects:nullable:filter",
             "meta:json:nullable"]


@pytest.fixture
def tree(tmp_path):
    """A tree with this one's declarations, migrations and test folder."""
    root = tmp_path / "repo"
    for rel in ("app/src/api/resources", "app/migrations"):
        shutil.copytree(REPO_ROOT / rel, root / rel)
    (root / "app/tests/http").mkdir(parents=True)
    return root


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def gen(root, *args):
    r = run_kiln(["gen", "resource", *args, "--root", str(root)], env=clean_env(base=False))
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def generate(root, *args):
    rc, out, err = gen(root, *args)
    assert rc == 0, err
    assert err == "", err
    return out


def refused(root, args, message):
    before = files(root)
    rc, out, err = gen(root, *args)
    assert rc == 2, (rc, out, err)
    assert err.count("\n") == 1 and err.startswith("kiln gen resource: "), err
    assert message in err, err
    assert out == "", out
    assert files(root) == before, "a refused run wrote something"


def highest_migration():
    return max(int(p.name[:4]) for d in ("postgres", "sqlite")
               for p in (REPO_ROOT / "app/migrations" / d).glob("[0-9][0-9][0-9][0-9]_*.sql"))


# --------------------------------------------------------------------------
# help and usage
# --------------------------------------------------------------------------

def test_help_names_every_type_option_and_flag():
    r = run_kiln(["gen", "resource", "--help"], env=clean_env(base=False))
    assert r.returncode == 0, r
    text = r.stdout.decode()
    for word in ("text", "integer", "boolean", "date", "timestamp", "uuid", "enum", "json",
                 "reference", "required", "nullable", "default=", "min=", "max=", "values=",
                 "ref=", "filter", "search", "sort", "--singular", "--paged", "--unpaged",
                 "--cache", "--root", "--help"):
        assert word in text, f"--help does not mention {word}"


def test_kiln_help_names_gen():
    r = run_kiln(["--help"], env=clean_env(base=False))
    assert "gen" in r.stdout.decode()


@pytest.mark.parametrize("args", [["gen"], ["gen", "nope"], ["gen", "resource"]])
def test_usage_errors_exit_2(args, tmp_path):
    r = run_kiln(args, env=clean_env(base=False), cwd=tmp_path)
    assert r.returncode == 2, r
    assert r.stderr.strip() and not r.stdout, r


def test_it_wants_a_kiln_tree(tmp_path):
    r = run_kiln(["gen", "resource", "bookmarks", "title:text"], env=clean_env(base=False),
                 cwd=tmp_path)
    assert r.returncode == 2, r
    assert b"app/src/api/resources is not there" in r.stderr, r
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# what it writes
# --------------------------------------------------------------------------

def test_it_writes_the_four_files(tree):
    before = files(tree)
    out = generate(tree, *BOOKMARKS)
    n = highest_migration() + 1
    made = ["app/src/api/resources/bookmarks.c", f"app/migrations/postgres/{n:04d}_bookmarks.sql",
            f"app/migrations/sqlite/{n:04d}_bookmarks.sql", "app/tests/http/test_bookmarks.py"]
    assert sorted(files(tree)) == sorted(before + made)
    for rel in made:
        assert f"created {rel}" in out, out
    decl = (tree / made[0]).read_text()
    for want in ("const struct kiln_resource kiln_resource_bookmarks = {",
                 '.not_found_code = "bookmark_not_found"',
                 '.not_found_message = "Bookmark not found"', ".page_default = 50",
                 ".page_max = 100", '.order = "inserted_at DESC"', ".search_max = 255",
                 '.ref = "projects"', "KILN_REQUIRED", ".max_len = 200", ".min = 1",
                 ".max = 5", '.def = "3"', '.def = "0"', "kind_values[]", ".before_create",
                 ".show_extra", ".actions"):
        assert want in decl, want
    assert ".cache" not in decl
    pg = (tree / made[1]).read_text()
    for want in ("CREATE TABLE bookmarks (", "id           uuid PRIMARY KEY",
                 "user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE",
                 "title        text NOT NULL,", "rating       bigint NOT NULL DEFAULT 3",
                 "CHECK (rating BETWEEN 1 AND 5)", "read         boolean NOT NULL DEFAULT false",
                 "CHECK (kind IN ('article', 'video', 'podcast'))", "published_on date,",
                 "seen_at      timestamptz,", "ext_id       uuid,",
                 "project_id   uuid REFERENCES projects (id) ON DELETE CASCADE",
                 "meta         jsonb,", "inserted_at  timestamptz NOT NULL",
                 "ON bookmarks (user_id, inserted_at DESC, id DESC);",
                 "ON bookmarks (user_id, read, inserted_at DESC, id DESC);",
                 "ON bookmarks (user_id, kind, inserted_at DESC, id DESC);",
                 "ON bookmarks (project_id);"):
        assert want in pg, want
    lite = (tree / made[2]).read_text()
    for want in ("id           TEXT PRIMARY KEY", "rating       INTEGER NOT NULL DEFAULT 3",
                 "read         INTEGER NOT NULL DEFAULT 0",
                 "date(published_on, '+0 days') IS published_on",
                 "project_id   TEXT REFERENCES projects (id) ON DELETE CASCADE"):
        assert want in lite, want
    py_compile.compile(str(tree / made[3]), doraise=True, cfile=str(tree / "test.pyc"))


def test_the_migration_number_is_the_highest_of_both_dialects_plus_one(tree):
    n = highest_migration() + 3
    (tree / f"app/migrations/sqlite/{n:04d}_later.sql").write_text("SELECT 1;\n")
    generate(tree, "bookmarks", "title:text")
    assert (tree / f"app/migrations/postgres/{n + 1:04d}_bookmarks.sql").exists()
    assert (tree / f"app/migrations/sqlite/{n + 1:04d}_bookmarks.sql").exists()


# What engine.c's type_fits() accepts of SQLite's declared types.
SQLITE_AFFINITY = {"text": "TEXT", "integer": "INTEGER", "boolean": "INTEGER", "date": "TEXT",
                   "timestamp": "TEXT", "uuid": "TEXT", "enum": "TEXT", "json": "TEXT",
                   "reference": "TEXT"}


def test_the_sqlite_migration_applies_after_the_others(tree):
    generate(tree, *BOOKMARKS)
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA foreign_keys = ON")
    for f in sorted((tree / "app/migrations/sqlite").glob("*.sql")):
        db.executescript(f.read_text())
    cols = {r[1]: (r[2], r[3]) for r in db.execute("PRAGMA table_info(bookmarks)")}
    assert list(cols)[:2] == ["id", "user_id"] and list(cols)[-2:] == ["inserted_at",
                                                                         "updated_at"]
    for spec in BOOKMARKS[1:]:
        name, kind = spec.split(":")[:2]
        assert cols[name][0] == SQLITE_AFFINITY[kind], (name, cols[name])
        assert cols[name][1] == (0 if "nullable" in spec else 1), (name, cols[name])
    # the CHECKs hold what the engine checks
    db.execute("INSERT INTO users (id, email, inserted_at, updated_at) VALUES "
               "('u', 'u@example.com', 'x', 'x')")
    insert = ("INSERT INTO bookmarks (id, user_id, title, url, inserted_at, updated_at{}) "
              "VALUES ('b{}', 'u', 't', 'u', 'x', 'x'{})")
    db.execute(insert.format("", 0, ""))
    for i, (col, value) in enumerate((("rating", "6"), ("kind", "'nope'"),
                                      ("published_on", "'2026-02-30'")), 1):
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(insert.format(f", {col}", i, f", {value}"))


def test_the_declaration_compiles_with_the_builds_warnings(tree):
    generate(tree, *BOOKMARKS, "label:text:default=a */ b \" c \\ d ??= e /* f:max=40")
    cc = shutil.which("cc")
    if cc is None or shutil.which("pkg-config") is None:
        pytest.skip("no cc or pkg-config")
    flags = subprocess.run(["pkg-config", "--cflags", "jansson", "libuv", "openssl"],
                           capture_output=True, text=True, check=True).stdout.split()
    r = subprocess.run([cc, "-std=c17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                        "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes",
                        "-D_GNU_SOURCE", "-iquote", str(REPO_ROOT / "app/src"), *flags,
                        str(tree / "app/src/api/resources/bookmarks.c")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '.def = "a */ b \\" c \\\\ d \\?\\?= e /* f"' in \
        (tree / "app/src/api/resources/bookmarks.c").read_text()


def test_a_default_may_hold_colons(tree):
    generate(tree, "meetups", "at:timestamp:default=2026-01-31T12:00:00.000000Z:sort",
             "note:text:default=a:b:max=10")
    decl = (tree / "app/src/api/resources/meetups.c").read_text()
    assert '.def = "2026-01-31T12:00:00.000000Z"' in decl
    assert '.def = "a:b"' in decl and "KILN_SORT" in decl and ".max_len = 10" in decl


def test_the_change_feed_tables_are_taken(tree):
    """events and audit are the change feed's tables (migration 0005): a
    resource of that name is refused by name, before anything is written."""
    for name in ("events", "audit"):
        rc, out, err = gen(tree, name, "title:text", "--singular=entry")
        assert rc != 0 and f"table or index named {name} already" in err, (rc, err)
        assert not (tree / f"app/src/api/resources/{name}.c").exists()


def test_flags(tree):
    generate(tree, "people", "name:text", "--singular=person", "--unpaged")
    decl = (tree / "app/src/api/resources/people.c").read_text()
    assert '"person_not_found"' in decl and '"Person not found"' in decl
    assert ".page_max" not in decl and ".cache" not in decl
    generate(tree, "line_items", "name:text:search", "--cache", "--paged")
    decl = (tree / "app/src/api/resources/line_items.c").read_text()
    assert '"line_item_not_found"' in decl and '"Line item not found"' in decl
    assert ".cache = true" in decl and ".page_max = 100" in decl


def test_a_self_reference_and_a_chain_of_references(tree):
    generate(tree, "comments", "task_id:reference:tasks", "parent_id:reference:ref=comments:nullable",
             "body:text")
    text = (tree / "app/tests/http/test_comments.py").read_text()
    # tasks need a project: its row is made first
    assert text.index("def make_projects(") < text.index("def make_tasks(")
    assert 'sent["project_id"] = make_projects(user)["id"]' in text
    assert '"parent_id": (PATH, NOT_FOUND, create),' in text
    assert 'REQUIRED_REFERENCES = ["task_id"]' in text


def test_index_names_avoid_those_the_migrations_use(tree):
    # (a file that ends in the middle of what could be a CREATE is read
    # to its end and no further)
    (tree / "app/migrations/sqlite/0900_x.sql").write_text(
        "CREATE INDEX IF NOT EXISTS bookmarks_user_inserted_idx ON notes (id);\n-- create")
    generate(tree, "bookmarks", "title:text")
    assert "CREATE INDEX bookmarks_user_inserted_idx_2\n" in \
        (tree / "app/migrations/postgres/0901_bookmarks.sql").read_text()


# --------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------

REFUSALS = [
    (["Bookmarks", "title:text"], "must be a lower-case SQL identifier"),
    (["1bookmarks", "title:text"], "must be a lower-case SQL identifier"),
    (["b" * 64, "title:text"], "must be a lower-case SQL identifier"),
    (["orders", "order:text"], "is an SQL keyword"),
    (["bookmarks"], "give at least one field"),
    ([], "give the resource's NAME"),
    (["sheep", "title:text"], "does not end in s: give its singular"),
    (["bookmarks", "title:text", "--singular=Bookmark"], "must be a lower-case identifier"),
    (["bookmarks", "id:text"], "is a name the engine uses"),
    (["bookmarks", "user_id:uuid"], "is a name the engine uses"),
    (["bookmarks", "updated_at:timestamp"], "is a name the engine uses"),
    (["bookmarks", "limit:integer"], "is an SQL keyword"),
    (["bookmarks", "title:text", "title:integer"], "field title is given twice"),
    (["bookmarks", "title"], "want name:type"),
    (["bookmarks", "title:txt"], 'unknown type "txt"'),
    (["bookmarks", "title:text:unique"], 'unknown option "unique"'),
    (["bookmarks", "title:text:required:required"], "required is given twice"),
    (["bookmarks", "title:text:max=5:max=6"], "max= is given twice"),
    (["bookmarks", "title:text:"], "an empty option"),
    (["bookmarks", "title:text::sort"], "an empty option"),
    (["bookmarks", "kind:enum"], "an enum needs its values"),
    (["bookmarks", "kind:enum:values=a|a"], 'enum value "a" is given twice'),
    (["bookmarks", "kind:enum:values=a||b"], 'enum value ""'),
    (["bookmarks", "kind:enum:values=a|b c"], 'enum value "b c"'),
    (["bookmarks", "kind:enum:values=a|b:default=c"], 'default "c" is not one of its values'),
    (["bookmarks", "title:text:values=a"], "values= is for enum fields"),
    (["bookmarks", "n:integer:min=5:max=1"], "min=5 is above max=1"),
    (["bookmarks", "n:integer:max=5:default=9"], "out of its bounds"),
    (["bookmarks", "n:integer:min=x"], "min=x is not an integer"),
    (["bookmarks", "n:integer:default=1.5"], "is not an integer"),
    (["bookmarks", "t:text:max=0"], "1 or more"),
    (["bookmarks", "t:text:min=-1"], "0 or more"),
    (["bookmarks", "t:text:min=5:max=2"], "min=5 is above max=2"),
    (["bookmarks", "t:text:max=100001"], "at most 100000 characters"),
    (["bookmarks", "t:text:min=100001"], "at most 100000 characters"),
    (["bookmarks", "t:text:max=3:default=toolong"], "is not a value the field takes"),
    (["bookmarks", "t:text:min=1:default=   "], "is not a value the field takes"),
    (["bookmarks", "t:text:default=a\tb"], "control character"),
    (["bookmarks", "b:boolean:default=yes"], "must be true or false"),
    (["bookmarks", "d:date:default=2026-02-30"], "is not a date"),
    (["bookmarks", "ts:timestamp:default=2026-01-31"], "is not a timestamp as Kiln writes"),
    (["bookmarks", "ts:timestamp:default=2026-01-31T12:00:00Z"], "is not a timestamp"),
    (["bookmarks", "u:uuid:default=nope"], "is not a UUID"),
    (["bookmarks", "j:json:default={"], "is not JSON"),
    (["bookmarks", 'j:json:default="\\u0000"'], "\\u0000"),
    (["bookmarks", "j:json:filter"], "a json field cannot be a filter"),
    (["bookmarks", "j:json:sort"], "a json field cannot be a sort"),
    (["bookmarks", "n:integer:search"], "only text fields are searchable"),
    (["bookmarks", "b:boolean:min=1"], "min= and max= are for text and integer"),
    (["bookmarks", "t:text:required:default=x"], "contradict"),
    (["bookmarks", "p:reference"], "a reference needs its target"),
    (["bookmarks", "p:reference:projects:ref=tasks"], "ref= is given twice"),
    (["bookmarks", "p:text:ref=projects"], "ref= is for reference fields"),
    (["bookmarks", "p:reference:nope"], 'references "nope", which is not a declared resource'),
    (["bookmarks", "p:reference:Projects"], "must be a lower-case SQL identifier"),
    (["bookmarks", "p:reference:projects:default=x"], "a reference has no default"),
    (["bookmarks", "p:reference:bookmarks"], "itself, so it must be nullable"),
    (["bookmarks", "t:text", "--paged", "--unpaged"], "contradict"),
    (["bookmarks", "t:text", "--unpaged", "--cache"], "only paged lists are cached"),
    (["bookmarks", "t:text", "--nope"], 'unknown flag "--nope"'),
    (["bookmarks", "t:text", "--singular"], "--singular needs a value"),
    (["notes", "t:text"], "resource notes is declared already"),
    (["users", "t:text"], "creates a table or index named users already"),
    (["identities", "t:text", "--singular=identity"], "table or index named identities"),
    (["schema_migrations", "t:text"], "table or index named schema_migrations"),
    (["projects_user_inserted_idx", "t:text", "--singular=x"], "table or index named"),
    (["uploads", "t:text"], "/api/v1/uploads is a route of kiln's already"),
    (["profile", "t:text", "--singular=profile"], "/api/v1/profile is a route"),
    (["v1", "t:text", "--singular=v"], "clash with the /api/v1 prefix"),
    (["a" * 55 + "s", "t:text:filter"], "would be longer than 63 characters"),
]


@pytest.mark.parametrize("args,message", REFUSALS, ids=[" ".join(a)[:60] for a, _ in REFUSALS])
def test_refusals(tree, args, message):
    refused(tree, args, message)


def test_only_sql_names_must_be_no_keyword(tree):
    generate(tree, "groups", "title:text", "--singular=group")


def test_it_never_overwrites_a_file(tree):
    (tree / "app/tests/http/test_bookmarks.py").write_text("# mine\n")
    refused(tree, ["bookmarks", "title:text"],
            "app/tests/http/test_bookmarks.py exists already: not overwriting it")
    assert (tree / "app/tests/http/test_bookmarks.py").read_text() == "# mine\n"


def test_a_second_run_is_refused(tree):
    generate(tree, "bookmarks", "title:text")
    refused(tree, ["bookmarks", "title:text"], "resource bookmarks is declared already")


def test_a_reference_to_a_resource_not_built_yet(tree):
    generate(tree, "folders", "name:text")
    refused(tree, ["bookmarks", "folder_id:reference:folders"],
            "declares but this kiln was built without: run make")


def test_a_reference_the_tree_does_not_declare(tree):
    (tree / "app/src/api/resources/tasks.c").unlink()
    refused(tree, ["bookmarks", "task_id:reference:tasks"],
            "which this kiln serves but")


def test_nothing_is_left_behind_when_a_file_cannot_be_written(tree):
    # A file size limit that the declaration and the migrations fit and the
    # tests do not: the last of the four writes fails (EFBIG, SIGXFSZ being
    # ignored), and the three files already made must go again.
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (12000, 12000))

    before = files(tree)
    r = subprocess.run([KILN_BIN, "gen", "resource", *BOOKMARKS, "--root", str(tree)],
                       env=clean_env(base=False), preexec_fn=limit, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r
    assert r.stderr.startswith("kiln gen resource: cannot write app/tests/http/test_bookmarks.py")
    assert files(tree) == before
