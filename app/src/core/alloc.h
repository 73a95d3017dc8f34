/*
 * Allocation with one out-of-memory policy for the whole program: a failed
 * allocation logs one line and aborts. Callers never check for NULL. Input
 * from clients never reaches these sizes unbounded: every buffer that grows
 * with input has its own cap (see buf.h, arena.h), so OOM here means the
 * machine, not a client, is the problem.
 */
#ifndef KILN_ALLOC_H
#define KILN_ALLOC_H

#include <stddef.h>

void *kiln_malloc(size_t n);
void *kiln_calloc(size_t count, size_t n);
void *kiln_realloc(void *p, size_t n);
char *kiln_strdup(const char *s);
char *kiln_strndup(const char *s, size_t n);

/* Aborts after printing "fatal: <what>" on stderr; for broken invariants. */
_Noreturn void kiln_fatal(const char *what);

#endif
