/*
 * libFuzzer target for the webhook URL check (app/src/core/egress.c): any
 * bytes as the URL a user registers.
 *
 * Oracles: the check never crashes and answers 0, KILN_EINVAL or KILN_EIO
 * (libcurl missing); a refusal leaves a non-empty sentence; an accepted URL
 * is at most KILN_EGRESS_MAX_URL bytes with no control character or space;
 * and the policies only widen: what the strictest one accepts, every
 * looser one accepts too (allow_http, allow_private).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/egress.h"
#include "core/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    memcpy(url, data, size);
    url[size] = '\0';
    static const struct kiln_egress_policy pols[4] = {
        { false, false }, { true, false }, { false, true }, { true, true } };
    int rc[4];
    for (int i = 0; i < 4; i++) {
        char why[512];
        why[0] = 'x';
        rc[i] = kiln_egress_check_url(url, &pols[i], why, sizeof why);
        if (rc[i] != 0 && rc[i] != KILN_EINVAL && rc[i] != KILN_EIO)
            abort();
        if (rc[i] != 0 && (why[0] == '\0' || !memchr(why, '\0', sizeof why)))
            abort();
        if (rc[i] == 0) {
            size_t n = strlen(url);
            if (n > KILN_EGRESS_MAX_URL)
                abort();
            for (size_t k = 0; k < n; k++)
                if ((unsigned char)url[k] <= 0x20 || url[k] == 0x7f)
                    abort();
        }
    }
    if (rc[0] == 0 && (rc[1] || rc[2] || rc[3]))
        abort();
    if ((rc[1] == 0 || rc[2] == 0) && rc[3])
        abort();
    free(url);
    return 0;
}
