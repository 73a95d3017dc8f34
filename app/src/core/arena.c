/*
 * Chunked bump allocator. Large requests (a big body) get a chunk of their
 * own so a single allocation never wastes the rest of a normal chunk.
 */
#include "core/arena.h"

#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

struct chunk {
    struct chunk *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
};

struct kiln_arena {
    struct chunk *head;   /* current chunk; the first chunk is last in list */
    struct chunk *first;
    size_t first_size;
    size_t total;
};

static struct chunk *chunk_new(size_t size)
{
    struct chunk *c = kiln_malloc(sizeof *c + size);
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

kiln_arena *kiln_arena_new(size_t first_chunk)
{
    kiln_arena *a = kiln_malloc(sizeof *a);
    a->first_size = first_chunk ? first_chunk : 4096;
    a->first = a->head = chunk_new(a->first_size);
    a->total = 0;
    return a;
}

void kiln_arena_free(kiln_arena *a)
{
    if (!a)
        return;
    struct chunk *c = a->head;
    while (c) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    free(a);
}

void kiln_arena_reset(kiln_arena *a)
{
    struct chunk *c = a->head;
    while (c != a->first) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = a->first;
    a->first->used = 0;
    a->total = 0;
}

void *kiln_arena_alloc(kiln_arena *a, size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    if (need < n)
        kiln_fatal("arena allocation overflow");
    struct chunk *c = a->head;
    if (c->size - c->used < need) {
        size_t size = a->first_size * 2;
        if (size < need)
            size = need;
        c = chunk_new(size);
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += need;
    a->total += need;
    return p;
}

void *kiln_arena_alloc_z(kiln_arena *a, size_t n)
{
    void *p = kiln_arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *kiln_arena_strndup(kiln_arena *a, const char *s, size_t n)
{
    char *p = kiln_arena_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *kiln_arena_sprintf(kiln_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        kiln_fatal("arena sprintf: bad format");
    char *p = kiln_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

size_t kiln_arena_used(const kiln_arena *a)
{
    return a->total;
}
