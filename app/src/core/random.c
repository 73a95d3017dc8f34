/* Kernel randomness for secrets; xoshiro256** per thread for request ids. */
#include "core/random.h"

#include <errno.h>
#include <stdint.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/err.h"

int kiln_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    while (n) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return KILN_EIO;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static _Thread_local uint64_t rng[4];
static _Thread_local int rng_seeded;

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next(void)
{
    if (!rng_seeded) {
        if (kiln_random_bytes(rng, sizeof rng) != 0)
            kiln_fatal("getrandom failed");
        rng_seeded = 1;
    }
    uint64_t result = rotl(rng[1] * 5, 7) * 9;
    uint64_t t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return result;
}

void kiln_request_id(char out[KILN_REQUEST_ID_LEN + 1])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    /* 20 chars x 6 bits = 120 random bits, from two 64-bit draws. */
    uint64_t a = next(), b = next();
    for (int i = 0; i < 10; i++) {
        out[i] = alphabet[a & 63];
        a >>= 6;
        out[10 + i] = alphabet[b & 63];
        b >>= 6;
    }
    out[KILN_REQUEST_ID_LEN] = '\0';
}
