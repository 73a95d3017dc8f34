/*
 * Notes (API.md, protected routes): the whole resource is this
 * declaration. The engine (engine.c) serves list, show, create, update and
 * delete on /api/v1/notes and /api/notes, and the two actions below; the
 * migration is app/migrations/<dialect>/0003_notes.sql.
 *
 * The list is paged and cached (the dashboard and the mobile client read
 * it most), shows non-archived notes unless ?archived=true, and searches
 * title and content.
 */
#include "api/declare.h"

static const struct kiln_field fields[] = {
    { .name = "title", .type = KILN_TEXT, .flags = KILN_REQUIRED | KILN_SEARCH | KILN_SORT,
      .min_len = 1, .max_len = 255, .doc = "The note's title." },
    /* null stores "", as the original's changeset did */
    { .name = "content", .type = KILN_TEXT, .flags = KILN_NULL_IS_DEFAULT | KILN_SEARCH,
      .max_len = 10000, .def = "", .doc = "The note's text." },
    /* a note may be created archived; lists show the other kind unless asked */
    { .name = "archived", .type = KILN_BOOLEAN, .flags = KILN_FILTER, .def = "0",
      .filter_def = "false", .doc = "Archived notes are left out of lists unless ?archived=true." },
};

static const struct kiln_action actions[] = {
    { .name = "archive", .field = "archived", .value = "1", .doc = "Archive the note.",
      .event = "archived" },
    { .name = "unarchive", .field = "archived", .value = "0", .doc = "Unarchive the note.",
      .event = "unarchived" },
};

const struct kiln_resource kiln_resource_notes = {
    .name = "notes",
    .singular = "note",
    .fields = fields,
    .nfields = sizeof fields / sizeof fields[0],
    .owner = KILN_OWNER_USER,
    .not_found_code = "note_not_found",
    .not_found_message = "Note not found",
    .page_default = 50,
    .page_max = 100,
    .order = "inserted_at DESC",
    .search_max = 255,
    .cache = true,
    .actions = actions,
    .nactions = sizeof actions / sizeof actions[0],
    .doc = "A user's notes.",
};
