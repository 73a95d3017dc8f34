/* Random (version 4) UUIDs as lower-case text, and a syntax check. */
#ifndef KILN_UUID_H
#define KILN_UUID_H

#include <stdbool.h>

#include "core/str.h"

#define KILN_UUID_LEN 36
/* out gets 36 characters and a NUL. Uses the kernel CSPRNG. */
void kiln_uuid_v4(char out[KILN_UUID_LEN + 1]);
/* 8-4-4-4-12 hex digits, any case. */
bool kiln_uuid_valid(kiln_str s);

#endif
