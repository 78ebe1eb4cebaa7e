/* libbroker — a C client for brokerd.
 *
 * A `broker` handle is one connection to a broker socket. It holds no global state; a handle
 * may be shared between threads (calls on it are serialised), or each thread may open its own.
 * If the connection breaks, the failing call reports it and the next call reconnects.
 *
 *   broker *b;
 *   broker_error err;
 *   broker_token tok;
 *   if (broker_open(NULL, 0, &b, &err) < 0 ||
 *       broker_get_token(b, &(broker_token_request){.audience = "https://api.example.com"},
 *                        &tok, &err) < 0)
 *           fprintf(stderr, "%s\n", err.message);
 */
#ifndef BROKER_H
#define BROKER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BROKER_DEFAULT_SOCKET       "/run/brokerd/workload/broker.sock"
#define BROKER_DEFAULT_ADMIN_SOCKET "/run/brokerd/admin.sock"
#define BROKER_DEFAULT_TIMEOUT_MS   10000

/* Results: 0 or one of these. */
enum {
        BROKER_OK = 0,
        BROKER_E_BAD_REQUEST = -1,  /* invalid argument, or the broker said bad_request */
        BROKER_E_UNAVAILABLE = -2,  /* unreachable, timed out, or the broker is unavailable */
        BROKER_E_DENIED = -3,       /* the policy said no */
        BROKER_E_RATE_LIMITED = -4, /* too many requests or connections from this caller */
        BROKER_E_NOT_FOUND = -5,
        BROKER_E_INTERNAL = -6, /* the broker failed internally */
        BROKER_E_PROTOCOL = -7, /* the broker's answer was malformed */
        BROKER_E_NOMEM = -8,
};

typedef struct broker broker;

typedef struct broker_error {
        int status;        /* one of the results above */
        char code[32];     /* the broker's error code ("denied", ...) or "" */
        char message[512]; /* for humans */
} broker_error;

/* Connects to `socket_path`; NULL means $BROKER_SOCKET (read with secure_getenv) or
 * BROKER_DEFAULT_SOCKET. `timeout_ms` bounds every call on the handle (0: default). `err` may
 * be NULL in every function. */
int broker_open(const char *socket_path, int timeout_ms, broker **ret, broker_error *err);
void broker_close(broker *b);

typedef struct broker_token_request {
        const char *audience;      /* required */
        const char *const *scopes; /* n_scopes strings */
        size_t n_scopes;
        int64_t ttl; /* seconds; 0: the broker's default. Longer than allowed is clamped. */
} broker_token_request;

typedef struct broker_token {
        char *token; /* compact JWS */
        int64_t expires_at;
        char *kid;
        char *jti;
        char *response_json; /* the broker's whole response */
} broker_token;

int broker_get_token(broker *b, const broker_token_request *req, broker_token *ret,
                     broker_error *err);
/* Wipes and frees the token. */
void broker_token_clear(broker_token *t);

/* A token of an upstream (README §Federation): the broker exchanges its credentials at the
 * upstream's token endpoint for this caller, as the policy allows, and hands back only the
 * upstream's short-lived token. */
typedef struct broker_upstream_request {
        const char *upstream;      /* required: a name of the broker's "upstreams" */
        const char *const *scopes; /* n_scopes strings; none: the upstream's default scope */
        size_t n_scopes;
} broker_upstream_request;

/* For an aws_sts upstream, access_token is the session's SessionToken and token_type
 * "aws4_request"; the key pair is in response_json's "aws" object (AccessKeyId,
 * SecretAccessKey, SessionToken, Expiration), as the AWS SDKs' credential_process reads it. */
typedef struct broker_upstream_token {
        char *access_token;
        char *token_type; /* "Bearer", ... */
        int64_t expires_at;
        char *scope;             /* NULL when the answer had none */
        char *issued_token_type; /* NULL when the answer had none */
        char *response_json;     /* the broker's whole response */
        /* Also on failure: the upstream's OAuth2 error code ("invalid_client", ...), or "". */
        char upstream_error[129];
} broker_upstream_token;

int broker_get_upstream_token(broker *b, const broker_upstream_request *req,
                              broker_upstream_token *ret, broker_error *err);
/* Wipes and frees the token. */
void broker_upstream_token_clear(broker_upstream_token *t);

/* Sends one request given as a JSON object text (e.g. {"op":"whoami"}) and returns the
 * response text in *ret_response (free()). When the broker answers {"ok":false,...}, returns
 * the matching error with err filled, and still returns the response text. */
int broker_call(broker *b, const char *request_json, char **ret_response, broker_error *err);

const char *broker_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif
