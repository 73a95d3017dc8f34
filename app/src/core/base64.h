/* base64url without padding (RFC 4648 section 5), as cookies and JOSE use it. */
#ifndef KILN_BASE64_H
#define KILN_BASE64_H

#include <stdbool.h>
#include <stddef.h>

/* Encoded length of n bytes (no padding, no NUL). */
static inline size_t kiln_base64url_len(size_t n)
{
    return (n * 4 + 2) / 3;
}
/* out needs kiln_base64url_len(n) + 1 bytes; NUL-terminated. */
void kiln_base64url_encode(const void *data, size_t n, char *out);
/*
 * Decode into out (capacity cap). Accepts the url alphabet only, no padding
 * (a trailing '=' run is tolerated). Returns false on any other byte, an
 * impossible length, non-zero trailing bits, or overflow of cap.
 */
bool kiln_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                           size_t *outlen);

#endif
