/* The configuration of upstreams: the OAuth2 token endpoints the broker exchanges its
 * credentials at for a caller (README §Federation). Part of the Config (immutable, shared by
 * reference); parsed by config.c through upstream_config_parse().
 *
 * Invariants once parsed: the token endpoint is https, or http to a loopback address literal
 * (127.0.0.0/8, ::1); client_secret is the *name* of a stored secret, present exactly when
 * client_auth needs one; subject_token is set only for the kinds that send a broker JWT (the
 * presets always do: their defaults are the provider's, never EdDSA, which AWS and Azure
 * refuse); a preset's token_endpoint is filled in from its region or authority;
 * every duration is in milliseconds. Errors carry their JSON path, like the rest of the
 * config. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys/alg.h"
#include "policy/confparse.h"

typedef enum UpstreamKind {
        UPSTREAM_CLIENT_CREDENTIALS, /* RFC 6749 §4.4 */
        UPSTREAM_TOKEN_EXCHANGE,     /* RFC 8693, the broker's JWT as subject_token */
        UPSTREAM_JWT_BEARER,         /* RFC 7523 §2.1, the broker's JWT as assertion */
        /* Cloud presets (upstream_presets.c): their wire is the provider's, not only OAuth2 */
        UPSTREAM_AWS_STS,  /* AssumeRoleWithWebIdentity (query API, XML answer) */
        UPSTREAM_GCP_STS,  /* Google STS token exchange, then optionally generateAccessToken */
        UPSTREAM_AZURE_AD, /* Entra ID client credentials with a federated client assertion */
        _UPSTREAM_KIND_MAX,
} UpstreamKind;

typedef enum ClientAuth {
        CLIENT_AUTH_SECRET_BASIC,
        CLIENT_AUTH_SECRET_POST,
        CLIENT_AUTH_PRIVATE_KEY_JWT, /* RFC 7523 §3, signed with the broker's published key */
        CLIENT_AUTH_NONE,
        _CLIENT_AUTH_MAX,
} ClientAuth;

const char *upstream_kind_to_string(UpstreamKind k);
const char *client_auth_to_string(ClientAuth a);

typedef struct UpstreamConfig {
        char *name;
        UpstreamKind kind;
        char *token_endpoint;
        char *client_id;     /* NULL: not sent (a public client of a JWT grant) */
        ClientAuth client_auth;
        char *client_secret; /* the stored secret's name; NULL unless client_secret_* */
        Alg client_assertion_alg; /* private_key_jwt */
        char *scope;         /* default scope, space-separated; NULL: none sent */
        char *audience, *resource, *requested_token_type; /* NULL: not sent */
        /* token_exchange, jwt_bearer: the broker JWT minted for the caller */
        struct {
                char *audience; /* (the token endpoint) */
                Alg alg;        /* (EdDSA) */
                uint64_t ttl;   /* seconds (60) */
        } subject_token;
        char *ca_file; /* NULL: the system's trust store */
        int64_t timeout_ms, connect_timeout_ms, deadline_ms;
        uint64_t max_response_bytes;
        int64_t refresh_ahead_ms; /* -1: 20 % of the lifetime, at least 5 minutes */
        int64_t min_remaining_ms;
        uint64_t cache_max_entries;
        uint64_t breaker_failures;
        int64_t breaker_open_for_ms;
        char *request_id_header; /* "X-Request-Id" */
        char *proxy;             /* NULL: none, whatever the environment says */
        /* aws_sts */
        char *role_arn, *region;
        uint64_t duration; /* seconds, DurationSeconds */
        /* gcp_sts (audience and scope above are Google's) */
        char *impersonation_url; /* NULL: the STS token is the answer */
        uint64_t lifetime;       /* seconds, of the impersonated token */
        /* azure_ad (client_id and scope above are Entra's; token_endpoint is derived) */
        char *tenant, *authority_host;
} UpstreamConfig;

/* Whether the kind is a cloud preset (the broker speaks the provider's protocol). */
static inline bool upstream_kind_is_preset(UpstreamKind k)
{
        return k == UPSTREAM_AWS_STS || k == UPSTREAM_GCP_STS || k == UPSTREAM_AZURE_AD;
}

/* Parses the top-level "upstreams" object (may be absent) into *ret (n in *ret_n). */
void upstream_config_parse(Problems *p, json_t *root, UpstreamConfig **ret, size_t *ret_n);
void upstream_config_free(UpstreamConfig *u, size_t n);

/* Whether the stored CA files are safe to trust: owned by root or us, writable by no one else
 * (whoever can change one can read every secret the broker sends there). Problems are added
 * with their JSON paths. */
void upstream_config_check_files(Problems *p, const UpstreamConfig *u, size_t n);
