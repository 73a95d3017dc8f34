/* KILN_VERSION comes from the build; a bare compile still links. */
#include "core/version.h"

#ifndef KILN_VERSION
#define KILN_VERSION "0.0.0-dev"
#endif

const char *kiln_version(void)
{
    return KILN_VERSION;
}
