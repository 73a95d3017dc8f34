/*
 * One error convention: functions return 0 on success and a negative
 * kiln_err otherwise. Names and messages come from this one list, so a new
 * error is one line here (the X-macro pattern of libuv's UV_ERRNO_MAP).
 */
#ifndef KILN_ERR_H
#define KILN_ERR_H

#define KILN_ERR_MAP(X)                                        \
    X(EINVAL, 1, "invalid argument")                           \
    X(ETOOBIG, 2, "size limit exceeded")                       \
    X(EBUSY, 3, "queue full")                                  \
    X(EIO, 4, "input/output error")                            \
    X(ETIMEDOUT, 5, "timed out")                               \
    X(ENOTFOUND, 6, "not found")                               \
    X(ECLOSED, 7, "closed")                                    \
    X(ETLS, 8, "TLS error")                                    \
    X(EUNAVAILABLE, 9, "service unavailable")                  \
    X(ECONFLICT, 10, "conflict")                               \
    X(EDB, 11, "database error")                               \
    X(EPROTO, 12, "protocol error")                            \
    X(EAUTH, 13, "authentication failed")

enum kiln_err {
    KILN_OK = 0,
#define KILN_ERR_ENUM(name, code, msg) KILN_##name = -(code),
    KILN_ERR_MAP(KILN_ERR_ENUM)
#undef KILN_ERR_ENUM
};

/* Static strings; never NULL, "unknown error" for codes not in the map. */
const char *kiln_err_name(int err);
const char *kiln_err_message(int err);

#endif
