#include "policy/upstream_config.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "message.h"
#include "pathsafe.h"

#define UPSTREAMS_MAX      256u
#define URL_MAX            2048u
#define PARAM_MAX          1024u /* audience, resource, requested_token_type, client_id */
#define HEADER_NAME_MAX    64u
#define RESPONSE_BYTES_MIN 1024u
#define RESPONSE_BYTES_MAX (16u << 20)

static const char *const kind_names[_UPSTREAM_KIND_MAX] = {
    [UPSTREAM_CLIENT_CREDENTIALS] = "client_credentials",
    [UPSTREAM_TOKEN_EXCHANGE] = "token_exchange",
    [UPSTREAM_JWT_BEARER] = "jwt_bearer",
    [UPSTREAM_AWS_STS] = "aws_sts",
    [UPSTREAM_GCP_STS] = "gcp_sts",
    [UPSTREAM_AZURE_AD] = "azure_ad",
};

#define KIND_NAMES                                                                            \
        "client_credentials, token_exchange, jwt_bearer, aws_sts, gcp_sts or azure_ad"

/* The presets' provider defaults. */
#define AWS_STS_AUDIENCE      "sts.amazonaws.com"
#define GCP_STS_ENDPOINT      "https://sts.googleapis.com/v1/token"
#define GCP_SCOPE             "https://www.googleapis.com/auth/cloud-platform"
#define AZURE_AUDIENCE        "api://AzureADTokenExchange"
#define AZURE_AUTHORITY_HOST  "https://login.microsoftonline.com"

static const char *const auth_names[_CLIENT_AUTH_MAX] = {
    [CLIENT_AUTH_SECRET_BASIC] = "client_secret_basic",
    [CLIENT_AUTH_SECRET_POST] = "client_secret_post",
    [CLIENT_AUTH_PRIVATE_KEY_JWT] = "private_key_jwt",
    [CLIENT_AUTH_NONE] = "none",
};

const char *upstream_kind_to_string(UpstreamKind k)
{
        return (unsigned) k < _UPSTREAM_KIND_MAX ? kind_names[k] : NULL;
}

const char *client_auth_to_string(ClientAuth a)
{
        return (unsigned) a < _CLIENT_AUTH_MAX ? auth_names[a] : NULL;
}

/* Index of `s` in `names`, or -1 after reporting what is allowed. */
static int get_enum(Problems *p, json_t *v, const char *path, const char *const *names, size_t n,
                    const char *allowed)
{
        if (!json_is_string(v)) {
                conf_problem(p, path, "expected string, got %s", conf_type_name(v));
                return -1;
        }
        for (size_t i = 0; i < n; i++)
                if (strcmp(json_string_value(v), names[i]) == 0)
                        return (int) i;
        conf_problem(p, path, "unknown value \"%s\" (expected %s)", json_string_value(v), allowed);
        return -1;
}

static bool loopback_literal(const char *host)
{
        struct in6_addr a6;
        struct in_addr a4;
        char buf[INET6_ADDRSTRLEN + 2];
        size_t n = strlen(host);

        if (inet_pton(AF_INET, host, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        /* libcurl gives an IPv6 host in brackets */
        if (n < 2 || n - 2 >= sizeof(buf) || host[0] != '[' || host[n - 1] != ']')
                return false;
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = 0;
        return inet_pton(AF_INET6, buf, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* https://, or http:// to a loopback address literal (a name could resolve anywhere); no user
 * or password in the URL (the secret has its own store) and no fragment. Parsed by libcurl,
 * which also sends the request, so both read the URL the same way. */
static void check_endpoint(Problems *p, const char *path, const char *url)
{
        CURLU *u = curl_url();
        char *scheme = NULL, *host = NULL, *user = NULL, *fragment = NULL;

        if (!u) {
                p->oom = true;
                return;
        }
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
                conf_problem(p, path, "not a valid URL: \"%s\"", url);
        else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
                conf_problem(p, path,
                             "must not hold a user name or password (client_secret names a "
                             "stored secret)");
        else if (curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK)
                conf_problem(p, path, "must not hold a fragment");
        else if (strcmp(scheme, "https") != 0 &&
                 !(strcmp(scheme, "http") == 0 && loopback_literal(host)))
                conf_problem(p, path,
                             "must be an https:// URL (http:// only to a loopback address: "
                             "127.0.0.0/8 or [::1]), got \"%s\"",
                             url);
        curl_free(scheme);
        curl_free(host);
        curl_free(user);
        curl_free(fragment);
        curl_url_cleanup(u);
}

/* The endpoint URL at `key`, checked, into *ret; a copy of `fallback` when `key` is absent. */
static void get_endpoint_or(Problems *p, json_t *u, const char *path, const char *key,
                            const char *fallback, char **ret)
{
        char kp[BROKER_NAME_MAX + 64];

        if (!json_object_get(u, key)) {
                if (!(*ret = strdup(fallback)))
                        p->oom = true;
                return;
        }
        conf_join_path(kp, sizeof(kp), path, key);
        if (conf_get_string(p, u, path, key, true, URL_MAX, ret))
                check_endpoint(p, kp, *ret);
}

/* RFC 7230 token characters: a header name. */
static bool header_name_valid(const char *s)
{
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-.^_`|~", *s)))
                        return false;
        return true;
}

/* Space-separated scope tokens, as on the OAuth2 wire (RFC 6749 §3.3). */
static void check_scope(Problems *p, const char *path, const char *scope)
{
        _cleanup_free_ char *copy = strdup(scope);
        char *save = NULL;

        if (!copy) {
                p->oom = true;
                return;
        }
        if (scope[0] == ' ' || scope[strlen(scope) - 1] == ' ' || strstr(scope, "  ")) {
                conf_problem(p, path, "scopes must be separated by single spaces");
                return;
        }
        for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
                if (!scope_token_valid(t)) {
                        conf_problem(p, path, "\"%s\" is not a valid scope", t);
                        return;
                }
}

static void get_ms(Problems *p, json_t *o, const char *path, const char *key, uint64_t min_s,
                   int64_t *ret_ms)
{
        uint64_t s;

        if (conf_get_duration(p, o, path, key, min_s, &s))
                *ret_ms = (int64_t) s * 1000;
}

static void get_alg(Problems *p, json_t *o, const char *path, const char *key, Alg *ret)
{
        json_t *v = json_object_get(o, key);
        char kp[160];

        if (!v)
                return;
        conf_join_path(kp, sizeof(kp), path, key);
        if (!json_is_string(v))
                conf_problem(p, kp, "expected string, got %s", conf_type_name(v));
        else if (alg_from_string(json_string_value(v)) < 0)
                conf_problem(p, kp, "unsupported algorithm \"%s\" (supported: EdDSA, ES256, RS256)",
                             json_string_value(v));
        else
                *ret = alg_from_string(json_string_value(v));
}

static void parse_subject_token(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        json_t *st = json_object_get(u, "subject_token");
        char kp[160], member[176];
        bool ok;

        ret->subject_token.alg = ALG_DEFAULT;
        if (ret->kind == UPSTREAM_AZURE_AD)
                ret->subject_token.alg = ALG_RS256;
        ret->subject_token.ttl = 60;
        conf_join_path(kp, sizeof(kp), path, "subject_token");
        if (!st)
                return;
        if (ret->kind == UPSTREAM_CLIENT_CREDENTIALS) {
                conf_problem(p, kp,
                             "only for token_exchange and jwt_bearer (client_credentials sends "
                             "no broker JWT for the caller)");
                return;
        }
        conf_check_object(p, st, kp, &ok);
        if (!ok)
                return;
        conf_check_unknown_keys(p, st, kp, (const char *const[]){"audience", "alg", "ttl", NULL});
        conf_get_string(p, st, kp, "audience", false, AUDIENCE_MAX, &ret->subject_token.audience);
        get_alg(p, st, kp, "alg", &ret->subject_token.alg);
        conf_join_path(member, sizeof(member), kp, "alg");
        /* What the providers take (their documentation): AWS STS and Google RS256 or ES256;
         * Entra's federated credentials RS256 only. */
        if (ret->kind == UPSTREAM_AZURE_AD && ret->subject_token.alg != ALG_RS256)
                conf_problem(p, member, "azure_ad takes RS256 only");
        else if ((ret->kind == UPSTREAM_AWS_STS || ret->kind == UPSTREAM_GCP_STS) &&
                 ret->subject_token.alg == ALG_EDDSA)
                conf_problem(p, member, "%s takes RS256 or ES256, not EdDSA",
                             kind_names[ret->kind]);
        if (conf_get_duration(p, st, kp, "ttl", 1, &ret->subject_token.ttl) &&
            ret->subject_token.ttl > 3600) {
                conf_join_path(member, sizeof(member), kp, "ttl");
                conf_problem(p, member, "must be at most 1h: it only has to outlive the exchange");
        }
}

/* client_auth and the secret it needs, once kind and client_id are known. */
static void parse_client_auth(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        json_t *v = json_object_get(u, "client_auth");
        char kp[160];
        int a;

        conf_join_path(kp, sizeof(kp), path, "client_secret");
        if (conf_get_string(p, u, path, "client_secret", false, BROKER_NAME_MAX,
                            &ret->client_secret) &&
            !broker_name_valid(ret->client_secret))
                conf_problem(p, kp,
                             "\"%s\" is not a secret name (letters, digits, '.', '_', '-'); it "
                             "names a secret stored with `brokerctl secret set`, never the value",
                             ret->client_secret);

        /* Default: the secret's two methods if a secret is named, else none. */
        ret->client_auth = ret->client_secret ? CLIENT_AUTH_SECRET_BASIC : CLIENT_AUTH_NONE;
        conf_join_path(kp, sizeof(kp), path, "client_auth");
        if (v) {
                a = get_enum(p, v, kp, auth_names, _CLIENT_AUTH_MAX,
                             "client_secret_basic, client_secret_post, private_key_jwt or none");
                if (a < 0)
                        return;
                ret->client_auth = (ClientAuth) a;
        }
        switch (ret->client_auth) {
        case CLIENT_AUTH_SECRET_BASIC:
        case CLIENT_AUTH_SECRET_POST:
                if (!json_object_get(u, "client_secret"))
                        conf_problem(p, kp, "%s needs client_secret (the name of a stored secret)",
                                     auth_names[ret->client_auth]);
                break;
        case CLIENT_AUTH_PRIVATE_KEY_JWT:
        case CLIENT_AUTH_NONE:
                if (json_object_get(u, "client_secret"))
                        conf_problem(p, kp, "%s sends no client_secret; remove it",
                                     auth_names[ret->client_auth]);
                break;
        default:
                break;
        }
        if (ret->client_auth != CLIENT_AUTH_NONE && !json_object_get(u, "client_id"))
                conf_problem(p, kp, "%s needs client_id", auth_names[ret->client_auth]);
        if (ret->kind == UPSTREAM_CLIENT_CREDENTIALS && ret->client_auth == CLIENT_AUTH_NONE)
                conf_problem(p, kp,
                             "client_credentials needs client authentication "
                             "(client_secret_basic, client_secret_post or private_key_jwt)");

        ret->client_assertion_alg = ALG_DEFAULT;
        conf_join_path(kp, sizeof(kp), path, "client_assertion_alg");
        if (json_object_get(u, "client_assertion_alg") &&
            ret->client_auth != CLIENT_AUTH_PRIVATE_KEY_JWT)
                conf_problem(p, kp, "only with client_auth private_key_jwt");
        else
                get_alg(p, u, path, "client_assertion_alg", &ret->client_assertion_alg);
}

static void parse_breaker(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        json_t *b = json_object_get(u, "circuit_breaker");
        char kp[160];
        bool ok;

        ret->breaker_failures = 5;
        ret->breaker_open_for_ms = 30 * 1000;
        if (!b)
                return;
        conf_join_path(kp, sizeof(kp), path, "circuit_breaker");
        conf_check_object(p, b, kp, &ok);
        if (!ok)
                return;
        conf_check_unknown_keys(p, b, kp, (const char *const[]){"failures", "open_for", NULL});
        conf_get_uint(p, b, kp, "failures", 1, 1000, &ret->breaker_failures);
        get_ms(p, b, kp, "open_for", 1, &ret->breaker_open_for_ms);
}

#define COMMON_KEYS                                                                           \
        "ca_file", "timeout", "connect_timeout", "deadline", "max_response_bytes",            \
            "refresh_ahead", "min_remaining", "cache_max_entries", "circuit_breaker",         \
            "request_id_header", "proxy"

static void parse_oauth(Problems *p, json_t *u, const char *path, UpstreamConfig *ret);
static void parse_preset(Problems *p, json_t *u, const char *path, UpstreamConfig *ret);
static void parse_common(Problems *p, json_t *u, const char *path, UpstreamConfig *ret);

static void parse_upstream(Problems *p, const char *name, json_t *u, UpstreamConfig *ret)
{
        char path[BROKER_NAME_MAX + 32], kp[BROKER_NAME_MAX + 64];
        json_t *v;
        bool ok;
        int k;

        /* Names print as they are in paths: they were checked to be plain before, or the
         * problem says so and the path is escaped by conf_problem() anyway. */
        snprintf(path, sizeof(path), "upstreams.%s", name);
        ret->name = strdup(name);
        if (!ret->name) {
                p->oom = true;
                return;
        }
        if (!broker_name_valid(name))
                conf_problem(p, path, "the name may only use letters, digits, '.', '_' and '-' "
                             "(1 to 64)");
        conf_check_object(p, u, path, &ok);
        if (!ok)
                return;

        v = conf_member(p, u, path, "kind", true);
        conf_join_path(kp, sizeof(kp), path, "kind");
        k = v ? get_enum(p, v, kp, kind_names, _UPSTREAM_KIND_MAX, KIND_NAMES) : -1;
        ret->kind = k < 0 ? UPSTREAM_CLIENT_CREDENTIALS : (UpstreamKind) k;

        if (upstream_kind_is_preset(ret->kind))
                parse_preset(p, u, path, ret);
        else
                parse_oauth(p, u, path, ret);
        parse_common(p, u, path, ret);
}

/* The keys of the generic OAuth2 kinds. */
static void parse_oauth(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        char kp[BROKER_NAME_MAX + 64];

        conf_check_unknown_keys(
            p, u, path,
            (const char *const[]){"kind", "token_endpoint", "client_id", "client_auth",
                                  "client_secret", "client_assertion_alg", "scope", "audience",
                                  "resource", "requested_token_type", "subject_token", COMMON_KEYS,
                                  NULL});
        conf_join_path(kp, sizeof(kp), path, "token_endpoint");
        if (conf_get_string(p, u, path, "token_endpoint", true, URL_MAX, &ret->token_endpoint))
                check_endpoint(p, kp, ret->token_endpoint);
        conf_get_string(p, u, path, "client_id", false, PARAM_MAX, &ret->client_id);
        parse_client_auth(p, u, path, ret);

        conf_join_path(kp, sizeof(kp), path, "scope");
        if (conf_get_string(p, u, path, "scope", false, PARAM_MAX, &ret->scope))
                check_scope(p, kp, ret->scope);
        conf_get_string(p, u, path, "audience", false, PARAM_MAX, &ret->audience);
        conf_get_string(p, u, path, "resource", false, PARAM_MAX, &ret->resource);
        conf_join_path(kp, sizeof(kp), path, "requested_token_type");
        if (conf_get_string(p, u, path, "requested_token_type", false, PARAM_MAX,
                            &ret->requested_token_type) &&
            ret->kind != UPSTREAM_TOKEN_EXCHANGE)
                conf_problem(p, kp, "only for token_exchange");
        parse_subject_token(p, u, path, ret);
}

/* What every kind has: transport, timeouts, cache, breaker. */
static void parse_common(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        char kp[BROKER_NAME_MAX + 64];

        conf_join_path(kp, sizeof(kp), path, "ca_file");
        if (json_object_get(u, "ca_file"))
                conf_get_path(p, u, path, "ca_file", PATH_MAX, &ret->ca_file);

        ret->timeout_ms = 10 * 1000;
        ret->connect_timeout_ms = 3 * 1000;
        ret->deadline_ms = 15 * 1000;
        get_ms(p, u, path, "timeout", 1, &ret->timeout_ms);
        get_ms(p, u, path, "connect_timeout", 1, &ret->connect_timeout_ms);
        get_ms(p, u, path, "deadline", 1, &ret->deadline_ms);
        if (ret->connect_timeout_ms > ret->timeout_ms) {
                conf_join_path(kp, sizeof(kp), path, "connect_timeout");
                conf_problem(p, kp, "is longer than timeout (one attempt, connection included)");
        }
        ret->max_response_bytes = 65536;
        conf_get_uint(p, u, path, "max_response_bytes", RESPONSE_BYTES_MIN, RESPONSE_BYTES_MAX,
                      &ret->max_response_bytes);

        ret->refresh_ahead_ms = -1;
        ret->min_remaining_ms = 60 * 1000;
        ret->cache_max_entries = 1024;
        get_ms(p, u, path, "refresh_ahead", 1, &ret->refresh_ahead_ms);
        get_ms(p, u, path, "min_remaining", 0, &ret->min_remaining_ms);
        conf_get_uint(p, u, path, "cache_max_entries", 1, 1000000, &ret->cache_max_entries);
        parse_breaker(p, u, path, ret);

        conf_join_path(kp, sizeof(kp), path, "request_id_header");
        if (!json_object_get(u, "request_id_header")) {
                ret->request_id_header = strdup("X-Request-Id");
                p->oom |= !ret->request_id_header;
        } else if (conf_get_string(p, u, path, "request_id_header", false, HEADER_NAME_MAX,
                                   &ret->request_id_header) &&
                   !header_name_valid(ret->request_id_header))
                conf_problem(p, kp, "\"%s\" is not a valid HTTP header name",
                             ret->request_id_header);
        conf_get_string(p, u, path, "proxy", false, URL_MAX, &ret->proxy);
}

/* A string of `len` bytes all in `allowed` (and ASCII letters and digits). */
static bool plain(const char *s, size_t min, size_t max, const char *allowed)
{
        size_t n = 0;

        for (; s[n]; n++)
                if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
                      (s[n] >= '0' && s[n] <= '9') || strchr(allowed, s[n])))
                        return false;
        return n >= min && n <= max;
}

static bool has_suffix(const char *s, const char *suffix)
{
        size_t n = strlen(s), m = strlen(suffix);

        return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* aws_sts: AssumeRoleWithWebIdentity
 * (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html). */
static void parse_aws(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        char kp[BROKER_NAME_MAX + 64];

        conf_join_path(kp, sizeof(kp), path, "role_arn");
        if (conf_get_string(p, u, path, "role_arn", true, 2048, &ret->role_arn) &&
            (strncmp(ret->role_arn, "arn:", 4) != 0 || !strstr(ret->role_arn, ":role/")))
                conf_problem(p, kp, "not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME): \"%s\"",
                             ret->role_arn);
        conf_join_path(kp, sizeof(kp), path, "region");
        if (conf_get_string(p, u, path, "region", false, 32, &ret->region) &&
            !plain(ret->region, 1, 32, "-"))
                conf_problem(p, kp, "not a region name (e.g. eu-west-1): \"%s\"", ret->region);
        conf_join_path(kp, sizeof(kp), path, "token_endpoint");
        if (json_object_get(u, "token_endpoint")) {
                if (conf_get_string(p, u, path, "token_endpoint", true, URL_MAX,
                                    &ret->token_endpoint))
                        check_endpoint(p, kp, ret->token_endpoint);
        } else if (ret->region) {
                if (asprintf(&ret->token_endpoint, "https://sts.%s.amazonaws.com/", ret->region) < 0) {
                        ret->token_endpoint = NULL;
                        p->oom = true;
                }
        } else if (!json_object_get(u, "region"))
                conf_problem(p, path, "aws_sts needs region (or token_endpoint)");
        ret->duration = 3600;
        conf_join_path(kp, sizeof(kp), path, "duration");
        if (conf_get_duration(p, u, path, "duration", 900, &ret->duration) &&
            ret->duration > 43200)
                conf_problem(p, kp, "AWS allows at most 12h");
}

/* gcp_sts: Google STS token exchange
 * (https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token), then, with
 * service_account_impersonation_url, IAM Credentials generateAccessToken
 * (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken). */
static void parse_gcp(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        char kp[BROKER_NAME_MAX + 64];

        conf_join_path(kp, sizeof(kp), path, "audience");
        if (conf_get_string(p, u, path, "audience", true, PARAM_MAX, &ret->audience) &&
            (strncmp(ret->audience, "//iam.googleapis.com/projects/", 30) != 0 ||
             !strstr(ret->audience, "/locations/global/workloadIdentityPools/") ||
             !strstr(ret->audience, "/providers/")))
                conf_problem(p, kp,
                             "not a workload identity provider (//iam.googleapis.com/projects/"
                             "NUMBER/locations/global/workloadIdentityPools/POOL/providers/"
                             "PROVIDER): \"%s\"",
                             ret->audience);
        conf_join_path(kp, sizeof(kp), path, "scope");
        if (conf_get_string(p, u, path, "scope", false, PARAM_MAX, &ret->scope))
                check_scope(p, kp, ret->scope);
        else if (!json_object_get(u, "scope") && !(ret->scope = strdup(GCP_SCOPE)))
                p->oom = true;
        get_endpoint_or(p, u, path, "token_endpoint", GCP_STS_ENDPOINT, &ret->token_endpoint);
        conf_join_path(kp, sizeof(kp), path, "service_account_impersonation_url");
        if (conf_get_string(p, u, path, "service_account_impersonation_url", false, URL_MAX,
                            &ret->impersonation_url)) {
                check_endpoint(p, kp, ret->impersonation_url);
                if (!has_suffix(ret->impersonation_url, ":generateAccessToken"))
                        conf_problem(p, kp,
                                     "expected .../serviceAccounts/EMAIL:generateAccessToken");
        }
        ret->lifetime = 3600;
        conf_join_path(kp, sizeof(kp), path, "lifetime");
        if (conf_get_duration(p, u, path, "lifetime", 1, &ret->lifetime)) {
                if (!ret->impersonation_url)
                        conf_problem(p, kp, "only with service_account_impersonation_url (the "
                                            "STS token's lifetime is Google's)");
                else if (ret->lifetime > 43200)
                        conf_problem(p, kp, "Google allows at most 12h");
        }
}

/* azure_ad: Entra ID client credentials with a federated client assertion
 * (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential). */
static void parse_azure(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        char kp[BROKER_NAME_MAX + 64];
        const char *host;
        size_t n;

        conf_join_path(kp, sizeof(kp), path, "tenant");
        if (conf_get_string(p, u, path, "tenant", true, 128, &ret->tenant) &&
            !plain(ret->tenant, 1, 128, "-."))
                conf_problem(p, kp, "not a tenant id or domain: \"%s\"", ret->tenant);
        conf_get_string(p, u, path, "client_id", true, PARAM_MAX, &ret->client_id);
        conf_join_path(kp, sizeof(kp), path, "scope");
        if (conf_get_string(p, u, path, "scope", true, PARAM_MAX, &ret->scope))
                check_scope(p, kp, ret->scope);
        get_endpoint_or(p, u, path, "authority_host", AZURE_AUTHORITY_HOST, &ret->authority_host);
        if (!ret->authority_host || !ret->tenant)
                return;
        host = ret->authority_host;
        n = strlen(host);
        while (n > 0 && host[n - 1] == '/')
                n--;
        if (asprintf(&ret->token_endpoint, "%.*s/%s/oauth2/v2.0/token", (int) n, host,
                     ret->tenant) < 0) {
                ret->token_endpoint = NULL;
                p->oom = true;
        }
}

/* A cloud preset: the provider's keys, no client authentication of ours (the broker's JWT is
 * the credential), and the subject token's provider defaults. */
static void parse_preset(Problems *p, json_t *u, const char *path, UpstreamConfig *ret)
{
        const char *audience = NULL;

        switch (ret->kind) {
        case UPSTREAM_AWS_STS:
                conf_check_unknown_keys(p, u, path,
                                        (const char *const[]){"kind", "role_arn", "region",
                                                              "duration", "token_endpoint",
                                                              "subject_token", COMMON_KEYS, NULL});
                parse_aws(p, u, path, ret);
                audience = AWS_STS_AUDIENCE;
                break;
        case UPSTREAM_GCP_STS:
                conf_check_unknown_keys(
                    p, u, path,
                    (const char *const[]){"kind", "audience", "scope",
                                          "service_account_impersonation_url", "lifetime",
                                          "token_endpoint", "subject_token", COMMON_KEYS, NULL});
                parse_gcp(p, u, path, ret);
                break;
        default:
                conf_check_unknown_keys(p, u, path,
                                        (const char *const[]){"kind", "tenant", "client_id",
                                                              "scope", "authority_host",
                                                              "subject_token", COMMON_KEYS, NULL});
                parse_azure(p, u, path, ret);
                audience = AZURE_AUDIENCE;
                break;
        }
        ret->client_auth = CLIENT_AUTH_NONE;
        parse_subject_token(p, u, path, ret);
        if (ret->subject_token.audience)
                return;
        /* Google's default allowed audience of a provider is its resource name as a URL. */
        if (ret->kind == UPSTREAM_GCP_STS && ret->audience) {
                if (asprintf(&ret->subject_token.audience, "https:%s", ret->audience) < 0) {
                        ret->subject_token.audience = NULL;
                        p->oom = true;
                }
        } else if (audience && !(ret->subject_token.audience = strdup(audience)))
                p->oom = true;
}

void upstream_config_parse(Problems *p, json_t *root, UpstreamConfig **ret, size_t *ret_n)
{
        json_t *o = json_object_get(root, "upstreams"), *v;
        const char *name;
        size_t i = 0;
        bool ok;

        if (!o)
                return;
        conf_check_object(p, o, "upstreams", &ok);
        if (!ok)
                return;
        if (json_object_size(o) > UPSTREAMS_MAX) {
                conf_problem(p, "upstreams", "more than %u upstreams", UPSTREAMS_MAX);
                return;
        }
        *ret = calloc(json_object_size(o) + 1, sizeof(UpstreamConfig));
        if (!*ret) {
                p->oom = true;
                return;
        }
        /* jansson keeps insertion order: problems come in file order */
        json_object_foreach (o, name, v)
                parse_upstream(p, name, v, &(*ret)[i++]);
        *ret_n = i;
}

void upstream_config_check_files(Problems *p, const UpstreamConfig *u, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                _cleanup_close_ int fd = -EBADF;
                char err[512], kp[BROKER_NAME_MAX + 64];
                int r;

                if (!u[i].ca_file)
                        continue;
                snprintf(kp, sizeof(kp), "upstreams.%s.ca_file", u[i].name);
                r = path_open_protected_file(u[i].ca_file, &fd, err, sizeof(err));
                if (r == -EPERM)
                        conf_problem(p, kp, "refusing a CA file others could change: %s", err);
                else if (r < 0)
                        conf_problem(p, kp, "%s", err[0] ? err : strerror(-r));
        }
}

void upstream_config_free(UpstreamConfig *u, size_t n)
{
        if (!u)
                return;
        for (size_t i = 0; i < n; i++) {
                free(u[i].name);
                free(u[i].token_endpoint);
                free(u[i].client_id);
                free(u[i].client_secret);
                free(u[i].scope);
                free(u[i].audience);
                free(u[i].resource);
                free(u[i].requested_token_type);
                free(u[i].subject_token.audience);
                free(u[i].ca_file);
                free(u[i].request_id_header);
                free(u[i].proxy);
                free(u[i].role_arn);
                free(u[i].region);
                free(u[i].impersonation_url);
                free(u[i].tenant);
                free(u[i].authority_host);
        }
        free(u);
}
