/*
 * OpenID Connect providers and the authorization-code flow with PKCE (S256).
 *
 * Providers come from the environment at start (kiln_providers_load):
 *   google   GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET   (issuer GOOGLE_ISSUER,
 *            default https://accounts.google.com)
 *   apple    APPLE_CLIENT_ID, APPLE_TEAM_ID, APPLE_KEY_ID, APPLE_PRIVATE_KEY
 *            (PEM P8; the client secret is an ES256 JWT made from them and
 *            regenerated before it expires), or APPLE_CLIENT_SECRET given
 *            as is (issuer APPLE_ISSUER, default https://appleid.apple.com);
 *            response_mode=form_post
 *   others   OIDC_PROVIDERS=name1,name2 with OIDC_<NAME>_ISSUER,
 *            _CLIENT_ID, _CLIENT_SECRET, _SCOPES (default "openid email
 *            profile")
 * A provider without credentials is off: kiln_provider_find returns NULL.
 * Endpoints come from the issuer's discovery document
 * (<issuer>/.well-known/openid-configuration), fetched on first use and
 * cached; the JWKS is cached and refetched when a token names an unknown
 * kid (at most once a minute per provider).
 *
 * Threads: load/free at start/exit on the main thread; everything else on
 * worker threads (it blocks on HTTPS), thread-safe.
 */
#ifndef KILN_AUTH_OIDC_H
#define KILN_AUTH_OIDC_H

#include <stdbool.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/str.h"

struct kiln_provider;

/* Returns the number of configuration problems ("config: …\n" lines). */
int kiln_providers_load(kiln_getenv_fn get, void *ctx, const struct kiln_config *cfg,
                        kiln_buf *problems);
void kiln_providers_free(void);
/* NULL when the name is unknown or the provider is not configured. */
const struct kiln_provider *kiln_provider_find(kiln_str name);
const char *kiln_provider_name(const struct kiln_provider *p);
/* Apple answers with a form POST (response_mode=form_post). */
bool kiln_provider_form_post(const struct kiln_provider *p);
/* Names of the configured providers, comma-separated (for logs, "/"). */
const char *kiln_providers_list(void);

/*
 * The provider's authorization URL for this login attempt. state, nonce and
 * code_challenge (base64url SHA-256 of the verifier) are the caller's.
 * On failure *reason is a short code ("provider_unreachable", ...).
 */
int kiln_oidc_authorize_url(const struct kiln_provider *p, kiln_arena *a,
                            const char *redirect_uri, const char *state, const char *nonce,
                            const char *code_challenge, const char **url, const char **reason);

struct kiln_oidc_identity {
    const char *subject;     /* "sub"; never NULL on success */
    const char *email;       /* may be NULL */
    bool email_verified;
    const char *name;
    const char *first_name;  /* given_name */
    const char *last_name;   /* family_name */
    const char *picture;
};

/*
 * Exchange the code at the token endpoint (client secret, PKCE verifier,
 * the same redirect_uri) and verify the ID token: signature against the
 * JWKS (RS256 or ES256; "none" and HMAC refused), iss, aud (and azp when
 * several audiences), exp and iat with 60 s of skew, nonce. Strings of out
 * live in the arena. On failure returns non-zero and sets *reason to one of:
 * provider_unreachable, token_exchange_failed, invalid_token, bad_signature,
 * wrong_issuer, wrong_audience, token_expired, nonce_mismatch.
 */
int kiln_oidc_exchange(const struct kiln_provider *p, kiln_arena *a, const char *code,
                       const char *code_verifier, const char *redirect_uri, const char *nonce,
                       struct kiln_oidc_identity *out, const char **reason);

#endif
