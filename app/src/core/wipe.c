/* Wiping secrets before they are freed; see wipe.h. */
#include "core/wipe.h"

#include <stdlib.h>
#include <string.h>

void kiln_free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void kiln_json_wipe(json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;
    if (json_is_string(v)) {
        explicit_bzero((char *)json_string_value(v), json_string_length(v));
    } else if (json_is_object(v)) {
        json_object_foreach(v, k, x) kiln_json_wipe(x);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) kiln_json_wipe(x);
    }
}
