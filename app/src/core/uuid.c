/* UUID v4 (RFC 9562 section 5.4). */
#include "core/uuid.h"

#include "core/alloc.h"
#include "core/random.h"

void kiln_uuid_v4(char out[KILN_UUID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    if (kiln_random_bytes(b, sizeof b) != 0)
        kiln_fatal("getrandom failed");
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80); /* variant 10 */
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

bool kiln_uuid_valid(kiln_str s)
{
    if (s.len != KILN_UUID_LEN)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}
