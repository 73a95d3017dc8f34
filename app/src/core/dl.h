/*
 * libpq, libcurl and SQLite, loaded when first needed instead of at exec;
 * so are the accounts' libraries (libargon2 for password hashes, libcbor
 * for WebAuthn, libqrencode for TOTP enrolment), which only some
 * deployments and only some requests ever use.
 *
 * The first two drag in most of the process's shared objects: libpq brings
 * Kerberos (GSSAPI) and OpenLDAP, which brings GnuTLS, p11-kit, nettle and
 * GMP; libcurl brings nghttp2, librtmp, libssh2, libpsl, libidn2. Linked
 * normally, the loader maps, relocates and initialises all of them at
 * every start (GnuTLS's constructor alone reads its configuration and
 * sets up its crypto backend), although an embedded-mode Kiln with no
 * OIDC provider and no AWS never calls either. That was most of the start
 * time and a third of the idle RSS (docs/ARCHITECTURE.md, Footprint).
 * SQLite (and the libm it needs) is the embedded database: a Kiln on
 * PostgreSQL never opens it.
 *
 * The calls go through tables of function pointers filled by dlsym, named
 * after the functions (kiln_pq.PQstatus(conn)): the prototypes come from
 * the libraries' own headers, so every call is still type-checked. The
 * sonames here are the one list of libraries Kiln loads at run time;
 * the Makefile reads them from this file for the image and the Lambda zips.
 */
#ifndef KILN_CORE_DL_H
#define KILN_CORE_DL_H

/* curl's typecheck macros would rewrite kiln_curl.curl_easy_setopt(...). */
#define CURL_DISABLE_TYPECHECK 1
#include <argon2.h>
#include <cbor.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include <qrencode.h>
#include <sqlite3.h>

#define KILN_PQ_SONAME "libpq.so.5"
#define KILN_CURL_SONAME "libcurl.so.4"
#define KILN_SQLITE_SONAME "libsqlite3.so.0"
#define KILN_ARGON2_SONAME "libargon2.so.1"
#define KILN_CBOR_SONAME "libcbor.so.0.8"
#define KILN_QRENCODE_SONAME "libqrencode.so.4"

#define KILN_PQ_FUNCS(X) \
    X(PQclear) X(PQcmdTuples) X(PQconnectPoll) X(PQconnectStartParams) X(PQconninfoFree) \
    X(PQconninfoParse) X(PQconsumeInput) X(PQenterPipelineMode) X(PQerrorMessage) \
    X(PQfinish) X(PQflush) X(PQfname) X(PQfreemem) X(PQgetResult) X(PQgetisnull) \
    X(PQgetlength) X(PQgetvalue) X(PQisBusy) X(PQnfields) X(PQntuples) X(PQpipelineSync) \
    X(PQresultErrorField) X(PQresultErrorMessage) X(PQresultStatus) X(PQsendPrepare) \
    X(PQsendQuery) X(PQsendQueryParams) X(PQsendQueryPrepared) X(PQsetNoticeProcessor) \
    X(PQsetnonblocking) X(PQsocket) X(PQstatus)

#define KILN_CURL_FUNCS(X) \
    X(curl_easy_cleanup) X(curl_easy_getinfo) X(curl_easy_init) X(curl_easy_perform) \
    X(curl_easy_reset) \
    X(curl_easy_setopt) X(curl_easy_strerror) X(curl_free) X(curl_global_init) \
    X(curl_slist_append) X(curl_slist_free_all) X(curl_url) X(curl_url_cleanup) \
    X(curl_url_get) X(curl_url_set) X(curl_url_strerror)

#define KILN_SQLITE_FUNCS(X) \
    X(sqlite3_bind_null) X(sqlite3_bind_parameter_index) X(sqlite3_bind_text) \
    X(sqlite3_busy_timeout) X(sqlite3_changes64) X(sqlite3_clear_bindings) X(sqlite3_close_v2) \
    X(sqlite3_column_bytes) X(sqlite3_column_count) X(sqlite3_column_name) \
    X(sqlite3_column_text) X(sqlite3_column_type) X(sqlite3_create_function) X(sqlite3_errmsg) \
    X(sqlite3_errstr) X(sqlite3_exec) X(sqlite3_finalize) X(sqlite3_free) X(sqlite3_open_v2) \
    X(sqlite3_prepare_v3) X(sqlite3_progress_handler) X(sqlite3_reset) X(sqlite3_result_error) \
    X(sqlite3_result_int) X(sqlite3_sleep) X(sqlite3_step) X(sqlite3_value_bytes) \
    X(sqlite3_value_text)

#define KILN_ARGON2_FUNCS(X) \
    X(argon2_encodedlen) X(argon2_error_message) X(argon2id_hash_encoded) X(argon2id_verify)

/* What auth/webauthn.c reads of CBOR: decoding only. */
#define KILN_CBOR_FUNCS(X) \
    X(cbor_array_handle) X(cbor_array_is_definite) X(cbor_array_size) \
    X(cbor_bytestring_handle) X(cbor_bytestring_is_definite) X(cbor_bytestring_length) \
    X(cbor_decref) X(cbor_get_int) X(cbor_isa_array) X(cbor_isa_bytestring) X(cbor_isa_map) \
    X(cbor_isa_negint) X(cbor_isa_string) X(cbor_isa_uint) X(cbor_load) X(cbor_map_handle) \
    X(cbor_map_is_definite) X(cbor_map_size) X(cbor_string_handle) X(cbor_string_is_definite) \
    X(cbor_string_length) X(cbor_typeof)

#define KILN_QRENCODE_FUNCS(X) X(QRcode_encodeString) X(QRcode_free)

#define KILN_DL_MEMBER(f) __typeof__(f) *f;
struct kiln_pq_api {
    KILN_PQ_FUNCS(KILN_DL_MEMBER)
};
struct kiln_curl_api {
    KILN_CURL_FUNCS(KILN_DL_MEMBER)
};
struct kiln_sqlite_api {
    KILN_SQLITE_FUNCS(KILN_DL_MEMBER)
};
struct kiln_argon2_api {
    KILN_ARGON2_FUNCS(KILN_DL_MEMBER)
};
struct kiln_cbor_api {
    KILN_CBOR_FUNCS(KILN_DL_MEMBER)
};
struct kiln_qrencode_api {
    KILN_QRENCODE_FUNCS(KILN_DL_MEMBER)
};
#undef KILN_DL_MEMBER

/* Filled once by kiln_dl_pq / kiln_dl_curl / kiln_dl_sqlite; read-only
 * afterwards. */
extern struct kiln_pq_api kiln_pq;
extern struct kiln_curl_api kiln_curl;
extern struct kiln_sqlite_api kiln_sqlite;
extern struct kiln_argon2_api kiln_argon2;
extern struct kiln_cbor_api kiln_cbor;
extern struct kiln_qrencode_api kiln_qrencode;

/*
 * Load the library once (any thread; later calls return the first
 * result): 0, or KILN_EIO with the reason logged once ("cannot load
 * libpq.so.5: ..."). Callers check before their first call through the
 * table.
 */
int kiln_dl_pq(void);
int kiln_dl_curl(void);
int kiln_dl_sqlite(void);
int kiln_dl_argon2(void);
int kiln_dl_cbor(void);
int kiln_dl_qrencode(void);

/*
 * GnuTLS comes in only under libpq (through OpenLDAP) and libcurl (through
 * librtmp), for LDAP service lookups and rtmps:// that Kiln never makes,
 * and both of those call gnutls_global_init themselves when they do. Its
 * constructor's implicit initialisation (reading its system configuration,
 * setting up its crypto backend) cost about 4 ms and 0.7 MiB of RSS at
 * every start on the reference machine. dl.c defines GnuTLS's documented
 * hook for skipping it (GNUTLS_SKIP_GLOBAL_INIT in gnutls.h), and the
 * Makefile exports it from the executable so that the constructor finds
 * it. Not GNUTLS_NO_IMPLICIT_INIT: GnuTLS reads it with secure_getenv,
 * which ignores it in the image, where the binary's file capability puts
 * the process in secure-execution mode.
 */
int _gnutls_global_init_skip(void);

/*
 * Load libpq on a thread of its own, from the main thread at start, so that
 * the listeners open and /livez answers while it loads (about 400 page
 * faults: a third of the start on the reference machine). Returns an fd
 * that becomes readable when the load has finished (either way: then call
 * kiln_dl_pq for the result), for a fiber to wait on with kiln_wait_fd
 * without blocking its loop; -1 if no thread could be started (the first
 * kiln_dl_pq then loads it where it is called). kiln_dl_pq_join at exit.
 */
int kiln_dl_pq_background(void);
int kiln_dl_pq_ready_fd(void);
void kiln_dl_pq_join(void);

#endif
