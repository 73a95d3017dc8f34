/* Names and messages of kiln_err, generated from KILN_ERR_MAP. */
#include "core/err.h"

const char *kiln_err_name(int err)
{
    switch (err) {
    case KILN_OK: return "OK";
#define KILN_ERR_NAME(name, code, msg) case KILN_##name: return #name;
    KILN_ERR_MAP(KILN_ERR_NAME)
#undef KILN_ERR_NAME
    }
    return "EUNKNOWN";
}

const char *kiln_err_message(int err)
{
    switch (err) {
    case KILN_OK: return "success";
#define KILN_ERR_MSG(name, code, msg) case KILN_##name: return msg;
    KILN_ERR_MAP(KILN_ERR_MSG)
#undef KILN_ERR_MSG
    }
    return "unknown error";
}
