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
#define AWS_KEY_ID_MAX         128u
#define AWS_SECRET_MAX         256u
#define AWS_EXPIRATION_MAX     64u

#define OAUTH_GRANT_CLIENT_CREDENTIALS "client_credentials"
#define OAUTH_GRANT_TOKEN_EXCHANGE     "urn:ietf:params:oauth:grant-type:token-exchange"
#define OAUTH_GRANT_JWT_BEARER         "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define OAUTH_TOKEN_TYPE_JWT           "urn:ietf:params:oauth:token-type:jwt"
#define OAUTH_TOKEN_TYPE_ACCESS_TOKEN  "urn:ietf:params:oauth:token-type:access_token"
#define OAUTH_ASSERTION_TYPE_JWT       "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

/* A string in secure memory: a form, a header. */
typedef struct SecureText {
        char *data; /* sodium_malloc'd, NUL-terminated */
        size_t len, cap;
} SecureText;

int secure_text_new(size_t cap, SecureText *ret);
void secure_text_free(SecureText *t);

/* A copy of s[0..len) and a NUL in secure memory (sodium_free() it). 0 or -ENOMEM. */
int secure_copy(const char *s, size_t len, char **ret);

/* Appends "&name=value" (no '&' first), the value percent-encoded (libcurl's escape). A NULL
 * value adds nothing. -E2BIG past the capacity. */
int oauth_form_add(SecureText *form, const char *name, const char *value);

/* "Authorization: Bearer TOKEN" (RFC 6750 §2.1), in secure memory. */
int oauth_bearer_header(const char *token, SecureText *ret);

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
        /* aws_sts (aws.c): access_token is the SessionToken; these are the rest */
        char aws_access_key_id[AWS_KEY_ID_MAX + 1];
        char *aws_secret_access_key; /* secure memory */
        char aws_expiration[AWS_EXPIRATION_MAX + 1];
} OAuthAnswer;

/* Reads a token endpoint's answer: status and body. Returns 0 with *ret filled (whatever the
 * outcome), or -ENOMEM. */
int oauth_parse_response(long status, const char *body, size_t len, size_t max_token_bytes,
                         OAuthAnswer *ret);
void oauth_answer_done(OAuthAnswer *a);

/* For the parsers of answers (this one, aws.c's, google.c's), which fill an OAuthAnswer alike:
 * - oauth_printable(): s[0..n) is printable ASCII, %x20-7E (RFC 6749's VSCHAR and space).
 * - oauth_answer_bad(): the answer is OAUTH_BAD_RESPONSE, `what` its problem; returns 0, so
 *   that a reader can end with `return oauth_answer_bad(a, "...")`.
 * - oauth_answer_finish(): a parser's last step. r >= 0: moves *a into *ret and returns 0;
 *   otherwise frees what *a holds and returns r, *ret untouched. */
bool oauth_printable(const char *s, size_t n);
int oauth_answer_bad(OAuthAnswer *a, const char *what);
int oauth_answer_finish(OAuthAnswer *a, int r, OAuthAnswer *ret);
