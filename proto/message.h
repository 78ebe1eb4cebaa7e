/* Messages: requests (parsed by the daemon) and responses (built by the daemon, parsed by
 * clients). Parsing runs one visible pipeline, each step able to reject: the frame length was
 * already checked by frame.c; then JSON (strict UTF-8, no NUL, no duplicate keys, one object),
 * then `op`, then `id`, then the type and bounds of every field of that op, unknown fields last.
 * Requests and responses have separate parsers. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

typedef enum Op {
        OP_PING,
        OP_TOKEN,
        OP_JWKS,
        OP_WHOAMI,
        OP_STATUS,
        OP_RELOAD,
        OP_KEYS,
        OP_ROTATE,
        OP_REVOKE,
        OP_SECRET_SET,
        OP_SECRET_LIST,
        OP_SECRET_DELETE,
        OP_UPSTREAM_TEST,
        _OP_MAX,
} Op;

/* Which socket a request arrived on; each op is allowed on one or both. */
enum {
        OPSET_WORKLOAD = 1u << 0,
        OPSET_ADMIN = 1u << 1,
};

/* Bounds on caller-controlled fields. */
#define REQUEST_ID_MAX 256u         /* bytes of a string id; integer ids are any JSON integer */
#define AUDIENCE_MAX   1024u        /* bytes */
#define SCOPE_MAX      256u         /* bytes of one scope */
#define SCOPES_MAX     64u          /* scopes in one request */
#define KID_MAX        128u         /* bytes of a key id */
#define TTL_MAX        2147483647LL /* seconds; larger values are rejected, smaller ones clamped */
#define BROKER_NAME_MAX  64u          /* bytes of a rule, upstream or secret name */
#define SECRET_VALUE_MAX 8192u        /* bytes of a stored secret */

typedef struct Request {
        json_t *root; /* owns every string below */
        Op op;
        json_t *id; /* borrowed from root, NULL when absent */

        /* OP_TOKEN: a token of the broker's own (audience), or one from an upstream (upstream;
         * then no audience and no ttl: the upstream decides the lifetime) */
        const char *audience;
        const char *upstream; /* also OP_UPSTREAM_TEST */
        const char *scopes[SCOPES_MAX];
        size_t n_scopes;
        bool has_ttl;
        int64_t ttl;

        /* OP_REVOKE */
        const char *kid;

        /* OP_ROTATE: NULL for every algorithm */
        const char *alg;

        /* OP_SECRET_SET, OP_SECRET_DELETE */
        const char *name;
        /* OP_SECRET_SET: the secret itself; the daemon wipes it in `root` once stored */
        const char *value;
} Request;

const char *op_to_string(Op op);

/* Parses and validates one request body. `opset` says which ops this socket accepts; any other
 * op is "unknown". On failure returns -EBADMSG with a message in `err` that names the field,
 * and, if the body was an object with a valid `id`, a new reference to it in *ret_id (else
 * NULL) so the error response can echo it. On success *ret owns the parsed JSON: call
 * request_done(). */
int request_parse(const void *body, size_t len, unsigned opset, Request *ret, json_t **ret_id,
                  char *err, size_t errlen);
void request_done(Request *r);

/* Scope syntax of RFC 6749 §3.3: printable ASCII except space, '"' and '\'. */
bool scope_token_valid(const char *s);

/* Names of rules, upstreams and secrets: 1 to BROKER_NAME_MAX letters, digits, '.', '_', '-'. */
bool broker_name_valid(const char *s);

/* Response building (daemon). Both return a new object with "ok" and, when id != NULL, "id". */
json_t *response_new_ok(json_t *id);
json_t *response_new_error(BrokerErrorCode code, const char *message, json_t *id);
/* Adds "upstream_error" (the upstream's OAuth2 error code) to an error response's "error". */
int response_error_set_upstream(json_t *resp, const char *upstream_error);

/* Serialises a message as one frame (header + compact JSON). -EMSGSIZE if it would not fit. */
int message_encode_frame(json_t *msg, char **ret, size_t *ret_len);

/* Response parsing (clients). */
typedef struct Response {
        json_t *root; /* owns everything */
        bool ok;
        BrokerErrorCode code; /* when !ok */
        const char *message;  /* when !ok */
        const char *upstream_error; /* when !ok: the upstream's OAuth2 error code, or NULL */
} Response;

/* Validates a response body: one object, boolean "ok"; when false, an "error" object with a
 * known string "code" and a string "message". -EBADMSG with `err` filled on failure. */
int response_parse(const void *body, size_t len, Response *ret, char *err, size_t errlen);
void response_done(Response *r);

typedef struct TokenResponse {
        const char *token;
        int64_t expires_at;
        const char *kid;
        const char *jti;
} TokenResponse;

/* The fields of a successful `token` response, each type-checked. Borrowed from r->root. */
int response_get_token(const Response *r, TokenResponse *ret, char *err, size_t errlen);

typedef struct UpstreamTokenResponse {
        const char *access_token;
        const char *token_type;
        int64_t expires_at;
        const char *scope;             /* NULL when absent */
        const char *issued_token_type; /* NULL when absent */
} UpstreamTokenResponse;

/* The fields of a successful `token` response for an upstream, each type-checked. An aws_sts
 * upstream's answer holds an `aws` object instead (AccessKeyId, SecretAccessKey, SessionToken,
 * Expiration, all checked): access_token is then its SessionToken, token_type "aws4_request". */
int response_get_upstream_token(const Response *r, UpstreamTokenResponse *ret, char *err,
                                size_t errlen);
