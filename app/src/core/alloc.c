/* One allocator wrapper: out of memory is fatal, never a silent NULL. */
#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Noreturn void kiln_fatal(const char *what)
{
    /* stderr is unbuffered; no allocation on this path. */
    fputs("fatal: ", stderr);
    fputs(what, stderr);
    fputc('\n', stderr);
    abort();
}

void *kiln_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        kiln_fatal("out of memory");
    return p;
}

void *kiln_calloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p)
        kiln_fatal("out of memory");
    return p;
}

void *kiln_realloc(void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);
    if (!p)
        kiln_fatal("out of memory");
    return p;
}

char *kiln_strndup(const char *s, size_t n)
{
    char *p = kiln_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *kiln_strdup(const char *s)
{
    return kiln_strndup(s, strlen(s));
}
