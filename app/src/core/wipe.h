/*
 * Releasing memory that held a secret (a password, a token, a secret
 * string from Secrets Manager): wiped first, so that no copy lingers in
 * freed heap where a later bug or a core dump could show it.
 */
#ifndef KILN_CORE_WIPE_H
#define KILN_CORE_WIPE_H

#include <jansson.h>

/* explicit_bzero the NUL-terminated s, then free it. NULL allowed. */
void kiln_free_secret(char *s);
/* Wipe every string inside v (objects and arrays, recursively) before it is
 * decref'd: jansson frees its strings without clearing them. */
void kiln_json_wipe(json_t *v);

#endif
