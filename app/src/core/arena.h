/*
 * Per-request memory: everything a request and its handler allocate comes
 * from the request's arena and is released at once when the response has
 * been written. Handlers never free. An arena keeps its first chunk across
 * kiln_arena_reset so that a busy connection allocates nothing per request.
 * Not thread-safe: a request (and its arena) belongs to one thread at a time.
 */
#ifndef KILN_ARENA_H
#define KILN_ARENA_H

#include <stdarg.h>
#include <stddef.h>

#include "core/str.h"

typedef struct kiln_arena kiln_arena;

kiln_arena *kiln_arena_new(size_t first_chunk);
void kiln_arena_free(kiln_arena *a);          /* NULL allowed */
void kiln_arena_reset(kiln_arena *a);          /* keeps the first chunk */

/* 16-byte aligned, never NULL (OOM aborts); zeroed by the _z variant. */
void *kiln_arena_alloc(kiln_arena *a, size_t n);
void *kiln_arena_alloc_z(kiln_arena *a, size_t n);
char *kiln_arena_strndup(kiln_arena *a, const char *s, size_t n);
char *kiln_arena_sprintf(kiln_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Bytes handed out since the last reset (for tests and metrics). */
size_t kiln_arena_used(const kiln_arena *a);

#endif
