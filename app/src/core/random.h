/*
 * Randomness. kiln_random_bytes is the kernel CSPRNG (getrandom) and is for
 * secrets: session ids, keys, nonces. kiln_request_id uses a fast per-thread
 * generator seeded from it: request ids need to be unique, not secret.
 * All functions are thread-safe.
 */
#ifndef KILN_RANDOM_H
#define KILN_RANDOM_H

#include <stddef.h>

/* 0 on success, KILN_EIO if the kernel refuses (never partial). */
int kiln_random_bytes(void *out, size_t n);

#define KILN_REQUEST_ID_LEN 20
/* 20 chars of [A-Za-z0-9_-] and a NUL. */
void kiln_request_id(char out[KILN_REQUEST_ID_LEN + 1]);

#endif
