/* The OAuth2 wire: the token request's form (RFC 6749 §4.4, RFC 8693, RFC 7523) and client
 * authentication (§2.3.1 Basic, form post, RFC 7523 §3 assertions), and the token endpoint's
 * answer (§5.1 success, §5.2 error). No I/O: the exchange (federation.c) sends the form
 * through http.c and hands the answer here; the fuzzer calls oauth_parse_response() directly.
 *
 * Secrets and tokens (client secret, the broker JWTs, the access token) are kept only in
 * libsodium secure memory, wiped when freed. Thread-safe: no shared state. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of a request form and of an Authorization header. */
#define OAUTH_FORM_MAX   (64u * 1024)
#define OAUTH_HEADER_MAX (16u * 1024)

/* Bounds of what an answer may hold. */
#define OAUTH_TOKEN_TYPE_MAX   64u
#define OAUTH_SCOPE_MAX        4096u
#define OAUTH_TOKEN_TYPE_URI_MAX 256u
#define OAUTH_ERROR_MAX        128u
#define OAUTH_DESCRIPTION_MAX  256u
#define OAUTH_EXPIRES_IN_MAX   (10LL * 366 * 24 * 3600)

#define OAUTH_GRANT_CLIENT_CREDENTIALS "client_credentials"
#define OAUTH_GRANT_TOKEN_EXCHANGE     "urn:ietf:params:oauth:grant-type:token-exchange"
#define OAUTH_GRANT_JWT_BEARER         "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define OAUTH_TOKEN_TYPE_JWT           "urn:ietf:params:oauth:token-type:jwt"
#define OAUTH_ASSERTION_TYPE_JWT       "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

/* A string in secure memory: a form, a header. */
typedef struct SecureText {
        char *data; /* sodium_malloc'd, NUL-terminated */
        size_t len, cap;
} SecureText;

int secure_text_new(size_t cap, SecureText *ret);
void secure_text_free(SecureText *t);

/* Appends "&name=value" (no '&' first), the value percent-encoded (libcurl's escape). A NULL
 * value adds nothing. -E2BIG past the capacity. */
int oauth_form_add(SecureText *form, const char *name, const char *value);

/* "Authorization: Basic " base64(urlencode(id) ":" urlencode(secret)), as RFC 6749 §2.3.1
 * asks (the encoding first: a ':' in an id must not split it). */
int oauth_basic_header(const char *client_id, const char *secret, SecureText *ret);

typedef enum OAuthOutcome {
        OAUTH_TOKEN,        /* a token (2xx, §5.1) */
        OAUTH_REFUSED,      /* the endpoint said no (4xx with an OAuth2 error code): denied */
        OAUTH_RETRYABLE,    /* 5xx or 429: worth another attempt */
        OAUTH_BAD_RESPONSE, /* anything else: not a usable answer (unavailable) */
} OAuthOutcome;

typedef struct OAuthAnswer {
        OAuthOutcome outcome;
        /* OAUTH_TOKEN */
        char *access_token; /* secure memory */
        size_t access_token_len;
        char token_type[OAUTH_TOKEN_TYPE_MAX + 1];
        char *scope;             /* NULL: absent */
        char *issued_token_type; /* NULL: absent */
        int64_t expires_in;      /* seconds; -1: absent */
        /* OAUTH_REFUSED (and OAUTH_RETRYABLE when the body said): the §5.2 fields, checked
         * against their syntax; a description is cut to its bound */
        char error[OAUTH_ERROR_MAX + 1];
        char error_description[OAUTH_DESCRIPTION_MAX + 1];
        /* not OAUTH_TOKEN: what was wrong, for the log and the caller ("HTTP 500", "the body
         * is not JSON", "no access_token") */
        char problem[160];
} OAuthAnswer;

/* Reads a token endpoint's answer: status and body. Returns 0 with *ret filled (whatever the
 * outcome), or -ENOMEM. */
int oauth_parse_response(long status, const char *body, size_t len, size_t max_token_bytes,
                         OAuthAnswer *ret);
void oauth_answer_done(OAuthAnswer *a);
