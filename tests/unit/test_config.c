/* The configuration contract: every key, every default, and every problem reported with its JSON
 * path, all of them in one pass. Configs are built as JSON documents, broken one key at a time,
 * and handed to config_parse_text() as text. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "policy/config.h"
#include "macro.h"

/* Three rules so that paths like rules[2].match.uid exist. Every key of the contract appears
 * once; the users and groups exist on every Debian system. */
static const char base_text[] =
    "{\n"
    "  \"issuer\": \"https://broker.example.internal\",\n"
    "  \"listen\": { \"workload\": \"/run/brokerd/workload/broker.sock\",\n"
    "              \"admin\": \"/run/brokerd/admin.sock\" },\n"
    "  \"state_directory\": \"/var/lib/brokerd\",\n"
    "  \"audit\": { \"database\": \"/var/lib/brokerd/audit.db\" },\n"
    "  \"tokens\": { \"default_ttl\": \"10m\", \"max_ttl\": \"2h\" },\n"
    "  \"limits\": { \"max_connections\": 100, \"max_connections_per_uid\": 10,\n"
    "              \"rate\": 50, \"burst\": 75, \"idle_timeout\": \"2m\",\n"
    "              \"read_timeout\": 3 },\n"
    "  \"rules\": [\n"
    "    { \"name\": \"web\",\n"
    "      \"match\": { \"unit\": \"web.service\", \"uid\": 33 },\n"
    "      \"subject\": \"spiffe://example.org/unit/{unit}\",\n"
    "      \"audiences\": [\"https://api.example.com\"],\n"
    "      \"scopes\": [\"read\", \"write\"],\n"
    "      \"max_ttl\": \"15m\" },\n"
    "    { \"name\": \"daemon-user\",\n"
    "      \"match\": { \"user\": \"daemon\", \"group\": \"nogroup\" },\n"
    "      \"subject\": \"spiffe://example.org/user/{user}\",\n"
    "      \"audiences\": [\"https://*.example.com\", \"urn:x\"] },\n"
    "    { \"name\": \"batch_2.x\",\n"
    "      \"match\": { \"gid\": 0, \"exe\": \"/usr/bin/*\", \"cgroup\": \"/system.slice/*\",\n"
    "                 \"container\": \"docker:*\" },\n"
    "      \"subject\": \"{uid}/{gid}/{container}/{rule}\",\n"
    "      \"audiences\": [\"aud\"],\n"
    "      \"scopes\": [],\n"
    "      \"alg\": \"EdDSA\" }\n"
    "  ]\n"
    "}\n";

static json_t *base(void)
{
        json_error_t e;
        json_t *j = json_loads(base_text, 0, &e);

        if (!j)
                fail_msg("base config does not load: %s (line %d)", e.text, e.line);
        return j;
}

/* Smallest valid config: only what the contract requires. */
static json_t *minimal(void)
{
        json_t *j = json_pack("{s:s, s:{s:s, s:s}, s:s, s:{s:s}, s:[{s:s, s:s, s:[s]}]}", "issuer",
                              "https://broker.example.internal", "listen", "workload",
                              "/run/w.sock", "admin", "/run/a.sock", "state_directory",
                              "/var/lib/brokerd", "audit", "database", "/var/lib/brokerd/audit.db",
                              "rules", "name", "r", "subject", "s", "audiences", "aud");
        assert_non_null(j);
        return j;
}

/* Sets (v != NULL) or deletes (v == NULL) the member at a path like "rules[2].match.uid",
 * creating intermediate objects as needed. Steals v. */
static void put(json_t *root, const char *path, json_t *v)
{
        json_t *cur = root;
        const char *p = path;

        for (;;) {
                char name[128] = "";
                long idx = -1;

                if (*p == '[') {
                        char *end;
                        idx = strtol(p + 1, &end, 10);
                        assert_true(*end == ']');
                        p = end + 1;
                } else {
                        size_t n = strcspn(p, ".[");
                        assert_true(n > 0 && n < sizeof(name));
                        memcpy(name, p, n);
                        name[n] = 0;
                        p += n;
                }
                if (*p == '.')
                        p++;

                if (*p == 0) { /* last segment */
                        if (idx >= 0) {
                                assert_true(json_is_array(cur));
                                if (v)
                                        assert_int_equal(json_array_set_new(cur, idx, v), 0);
                                else
                                        assert_int_equal(json_array_remove(cur, idx), 0);
                        } else {
                                assert_true(json_is_object(cur));
                                if (v)
                                        assert_int_equal(json_object_set_new(cur, name, v), 0);
                                else
                                        assert_int_equal(json_object_del(cur, name), 0);
                        }
                        return;
                }
                json_t *next = idx >= 0 ? json_array_get(cur, idx) : json_object_get(cur, name);
                if (!next && idx < 0) {
                        next = json_object();
                        json_object_set_new(cur, name, next);
                }
                if (!next)
                        fail_msg("path %s: no such element", path);
                cur = next;
        }
}

static int parse_json(json_t *root, Config **ret, char ***ret_errors)
{
        _cleanup_free_ char *text = json_dumps(root, JSON_INDENT(2));

        assert_non_null(text);
        return config_parse_text(text, strlen(text), "test.json", ret, ret_errors);
}

static char *join_lines(char **lines)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        for (char **l = lines; l && *l; l++)
                fprintf(f, "  %s\n", *l);
        fclose(f);
        return buf;
}

static size_t n_lines(char **lines)
{
        size_t n = 0;
        while (lines && lines[n])
                n++;
        return n;
}

/* Parses text that must be rejected with exactly the problems in `want` (each a prefix of one
 * line, in any order, each line used once). */
static void expect_text_errors(const char *text, const char *const *want)
{
        Config *c = (Config *) 0x1;
        char **errs = NULL;
        size_t n_want = 0;
        int r;

        r = config_parse_text(text, strlen(text), "test.json", &c, &errs);
        if (r != -EINVAL) {
                if (r == 0)
                        config_unref(c);
                fail_msg("expected -EINVAL, got %d for:\n%s", r, text);
        }
        assert_ptr_equal(c, (Config *) 0x1); /* untouched on failure */
        assert_non_null(errs);

        while (want[n_want])
                n_want++;
        bool used[64] = {};
        size_t n = n_lines(errs);
        assert_true(n < ELEMENTSOF(used));
        for (size_t w = 0; w < n_want; w++) {
                bool found = false;
                for (size_t i = 0; i < n && !found; i++)
                        if (!used[i] && strncmp(errs[i], want[w], strlen(want[w])) == 0)
                                used[i] = found = true;
                if (!found) {
                        _cleanup_free_ char *all = join_lines(errs);
                        fail_msg("no problem line starts with \"%s\"; got:\n%s", want[w], all);
                }
        }
        if (n != n_want) {
                _cleanup_free_ char *all = join_lines(errs);
                fail_msg("expected %zu problem line(s), got %zu:\n%s", n_want, n, all);
        }
        strv_free(errs);
}

static void expect_errors(json_t *root, const char *const *want)
{
        _cleanup_free_ char *text = json_dumps(root, JSON_INDENT(2));

        assert_non_null(text);
        json_decref(root);
        expect_text_errors(text, want);
}

static void expect_error(json_t *root, const char *want)
{
        expect_errors(root, (const char *const[]){want, NULL});
}

static Config *parse_ok(json_t *root)
{
        Config *c = NULL;
        char **errs = NULL;
        int r = parse_json(root, &c, &errs);

        json_decref(root);
        if (r != 0) {
                _cleanup_free_ char *all = join_lines(errs);
                strv_free(errs);
                fail_msg("config rejected (%d):\n%s", r, all ? all : "");
        }
        assert_null(errs); /* untouched on success */
        assert_non_null(c);
        return c;
}

/* ---- upstreams ----------------------------------------------------------------------------- */

/* minimal() with one upstream "cc" (client_credentials, a secret) that rule r may use. */
static json_t *with_upstream(void)
{
        json_t *j = minimal();

        put(j, "upstreams.cc",
            json_pack("{s:s, s:s, s:s, s:s}", "kind", "client_credentials", "token_endpoint",
                      "https://as.example.com/oauth2/token", "client_id", "broker",
                      "client_secret", "cc-secret"));
        put(j, "rules[0].upstreams", json_pack("[s]", "cc"));
        return j;
}

static void test_upstream_defaults(void **state)
{
        Config *c = parse_ok(with_upstream());
        const UpstreamConfig *u;

        assert_int_equal(c->n_upstreams, 1);
        u = config_find_upstream(c, "cc");
        assert_non_null(u);
        assert_null(config_find_upstream(c, "nope"));
        assert_int_equal(u->kind, UPSTREAM_CLIENT_CREDENTIALS);
        assert_string_equal(u->token_endpoint, "https://as.example.com/oauth2/token");
        assert_string_equal(u->client_id, "broker");
        assert_int_equal(u->client_auth, CLIENT_AUTH_SECRET_BASIC); /* a secret: Basic */
        assert_string_equal(u->client_secret, "cc-secret");
        assert_null(u->scope);
        assert_null(u->audience);
        assert_null(u->resource);
        assert_null(u->ca_file);
        assert_null(u->proxy);
        assert_int_equal(u->timeout_ms, 10000);
        assert_int_equal(u->connect_timeout_ms, 3000);
        assert_int_equal(u->deadline_ms, 15000);
        assert_int_equal(u->max_response_bytes, 65536);
        assert_int_equal(u->refresh_ahead_ms, -1);
        assert_int_equal(u->min_remaining_ms, 60000);
        assert_int_equal(u->cache_max_entries, 1024);
        assert_int_equal(u->breaker_failures, 5);
        assert_int_equal(u->breaker_open_for_ms, 30000);
        assert_string_equal(u->request_id_header, "X-Request-Id");
        assert_int_equal(u->subject_token.alg, ALG_ES256);
        assert_int_equal(u->subject_token.ttl, 60);
        assert_true(rule_allows_upstream(&c->rules[0], "cc"));
        assert_false(rule_allows_upstream(&c->rules[0], "other"));
        config_unref(c);
}

static void test_upstream_every_key(void **state)
{
        json_t *j = minimal();
        Config *c;
        const UpstreamConfig *u;

        put(j, "upstreams.tx",
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:s,"
                      " s:i, s:s, s:i, s:s, s:s, s:i, s:{s:i, s:s}, s:s, s:s}",
                      "kind", "token_exchange", "token_endpoint", "http://127.0.0.1:8080/token",
                      "client_id", "broker", "client_auth", "private_key_jwt",
                      "client_assertion_alg", "ES256", "scope", "read write", "audience",
                      "https://api.example.com", "resource", "https://api.example.com/v1",
                      "requested_token_type", "urn:ietf:params:oauth:token-type:access_token",
                      "subject_token", "audience", "https://as.example.com", "alg", "RS256",
                      "ttl", "2m", "ca_file", "/etc/ssl/certs/ca-certificates.crt", "timeout",
                      "5s", "connect_timeout", 2, "deadline", "1m", "max_response_bytes", 4096,
                      "refresh_ahead", "10m", "min_remaining", "30s", "cache_max_entries", 10,
                      "circuit_breaker", "failures", 3, "open_for", "1m", "request_id_header",
                      "X-Correlation-Id", "proxy", "http://proxy.internal:3128"));
        put(j, "rules[0].upstreams", json_pack("[s]", "tx"));
        put(j, "rules[0].audiences", json_array()); /* upstreams only: none of its own */
        c = parse_ok(j);
        u = config_find_upstream(c, "tx");
        assert_non_null(u);
        assert_int_equal(u->kind, UPSTREAM_TOKEN_EXCHANGE);
        assert_int_equal(u->client_auth, CLIENT_AUTH_PRIVATE_KEY_JWT);
        assert_int_equal(u->client_assertion_alg, ALG_ES256);
        assert_null(u->client_secret);
        assert_string_equal(u->scope, "read write");
        assert_string_equal(u->audience, "https://api.example.com");
        assert_string_equal(u->resource, "https://api.example.com/v1");
        assert_string_equal(u->requested_token_type,
                            "urn:ietf:params:oauth:token-type:access_token");
        assert_string_equal(u->subject_token.audience, "https://as.example.com");
        assert_int_equal(u->subject_token.alg, ALG_RS256);
        assert_int_equal(u->subject_token.ttl, 120);
        assert_string_equal(u->ca_file, "/etc/ssl/certs/ca-certificates.crt");
        assert_int_equal(u->timeout_ms, 5000);
        assert_int_equal(u->connect_timeout_ms, 2000);
        assert_int_equal(u->deadline_ms, 60000);
        assert_int_equal(u->max_response_bytes, 4096);
        assert_int_equal(u->refresh_ahead_ms, 600000);
        assert_int_equal(u->min_remaining_ms, 30000);
        assert_int_equal(u->cache_max_entries, 10);
        assert_int_equal(u->breaker_failures, 3);
        assert_int_equal(u->breaker_open_for_ms, 60000);
        assert_string_equal(u->request_id_header, "X-Correlation-Id");
        assert_string_equal(u->proxy, "http://proxy.internal:3128");
        assert_int_equal(c->rules[0].n_audiences, 0);
        config_unref(c);
}

static void test_upstream_endpoints(void **state)
{
        static const char *const good[] = {
            "https://as.example.com/token", "https://as.example.com:8443/t?tenant=x",
            "http://127.0.0.1:8080/token",  "http://127.1.2.3/token",
            "http://[::1]:9000/token",
        };
        static const char *const bad[] = {
            "http://localhost/token",  /* a name may resolve anywhere */
            "http://10.0.0.1/token",   "http://[::2]/token",
            "ftp://as.example.com/t",  "https://user:pw@as.example.com/token",
            "https://as.example.com/t#frag", "not a url",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                json_t *j = with_upstream();
                put(j, "upstreams.cc.token_endpoint", json_string(good[i]));
                config_unref(parse_ok(j));
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_t *j = with_upstream();
                put(j, "upstreams.cc.token_endpoint", json_string(bad[i]));
                expect_error(j, "upstreams.cc.token_endpoint: ");
        }
}

static void test_upstream_client_auth(void **state)
{
        json_t *j = with_upstream();

        /* post: the secret in the form; none: needs a JWT grant */
        put(j, "upstreams.cc.client_auth", json_string("client_secret_post"));
        Config *c = parse_ok(j);
        assert_int_equal(config_find_upstream(c, "cc")->client_auth, CLIENT_AUTH_SECRET_POST);
        config_unref(c);

        j = with_upstream();
        put(j, "upstreams.cc.client_secret", NULL);
        expect_error(j, "upstreams.cc.client_auth: client_credentials needs client authentication");

        j = with_upstream();
        put(j, "upstreams.cc.client_auth", json_string("client_secret_basic"));
        put(j, "upstreams.cc.client_secret", NULL);
        expect_errors(j, (const char *const[]){
                             "upstreams.cc.client_auth: client_secret_basic needs client_secret",
                             NULL});

        j = with_upstream();
        put(j, "upstreams.cc.client_auth", json_string("private_key_jwt"));
        expect_error(j, "upstreams.cc.client_auth: private_key_jwt sends no client_secret");

        j = with_upstream();
        put(j, "upstreams.cc.client_auth", json_string("private_key_jwt"));
        put(j, "upstreams.cc.client_secret", NULL);
        put(j, "upstreams.cc.client_id", NULL);
        expect_error(j, "upstreams.cc.client_auth: private_key_jwt needs client_id");

        j = with_upstream();
        put(j, "upstreams.cc.client_auth", json_string("mutual_tls"));
        expect_error(j, "upstreams.cc.client_auth: unknown value \"mutual_tls\"");

        j = with_upstream();
        put(j, "upstreams.cc.client_assertion_alg", json_string("ES256"));
        expect_error(j, "upstreams.cc.client_assertion_alg: only with client_auth private_key_jwt");

        /* the secret is named, never given: a value with a space is no name */
        j = with_upstream();
        put(j, "upstreams.cc.client_secret", json_string("s3cr3t value!"));
        expect_error(j, "upstreams.cc.client_secret: \"s3cr3t value!\" is not a secret name");

        /* a public client of a JWT grant */
        j = with_upstream();
        put(j, "upstreams.cc.kind", json_string("jwt_bearer"));
        put(j, "upstreams.cc.client_secret", NULL);
        put(j, "upstreams.cc.client_id", NULL);
        c = parse_ok(j);
        assert_int_equal(config_find_upstream(c, "cc")->client_auth, CLIENT_AUTH_NONE);
        assert_null(config_find_upstream(c, "cc")->client_id);
        config_unref(c);
}

static void test_upstream_problems_one_pass(void **state)
{
        json_t *j = with_upstream();

        put(j, "upstreams.cc.kind", json_string("password"));
        put(j, "upstreams.cc.token_endpoint", json_string("http://as.example.com/token"));
        put(j, "upstreams.cc.subject_token", json_pack("{s:s}", "alg", "HS256"));
        put(j, "upstreams.cc.requested_token_type", json_string("urn:x"));
        put(j, "upstreams.cc.scope", json_string("read  write"));
        put(j, "upstreams.cc.timeout", json_string("1s"));
        put(j, "upstreams.cc.connect_timeout", json_string("2s"));
        put(j, "upstreams.cc.max_response_bytes", json_integer(10));
        put(j, "upstreams.cc.cache_max_entries", json_integer(0));
        put(j, "upstreams.cc.circuit_breaker", json_pack("{s:i, s:b}", "failures", 0, "x", 1));
        put(j, "upstreams.cc.request_id_header", json_string("X Request"));
        put(j, "upstreams.cc.bogus", json_true());
        put(j, "upstreams.bad name", json_pack("{s:s, s:s}", "kind", "jwt_bearer",
                                                "token_endpoint", "https://a.example/t"));
        put(j, "rules[0].upstreams", json_pack("[s, s]", "cc", "missing"));
        expect_errors(
            j, (const char *const[]){
                   "upstreams.cc.kind: unknown value \"password\"",
                   "upstreams.cc.token_endpoint: must be an https:// URL",
                   /* kind fell back to client_credentials: no broker JWT to describe */
                   "upstreams.cc.subject_token: only for token_exchange and jwt_bearer",
                   "upstreams.cc.requested_token_type: only for token_exchange",
                   "upstreams.cc.scope: scopes must be separated by single spaces",
                   "upstreams.cc.connect_timeout: is longer than timeout",
                   "upstreams.cc.max_response_bytes: must be between 1024",
                   "upstreams.cc.cache_max_entries: must be between 1",
                   "upstreams.cc.circuit_breaker.x: unknown key",
                   "upstreams.cc.circuit_breaker.failures: must be between 1",
                   "upstreams.cc.request_id_header: \"X Request\" is not a valid HTTP header",
                   "upstreams.cc.bogus: unknown key",
                   "upstreams.bad name: the name may only use",
                   "rules[0].upstreams[1]: no upstream named \"missing\"", NULL});
}

/* The cloud presets: the provider's keys and defaults, and what they refuse. */
static void test_upstream_presets(void **state)
{
        json_t *j = minimal();
        const UpstreamConfig *u;
        Config *c;

        put(j, "upstreams.aws", json_pack("{s:s, s:s, s:s}", "kind", "aws_sts", "role_arn",
                                          "arn:aws:iam::123456789012:role/web", "region",
                                          "eu-west-1"));
        put(j, "upstreams.gcp",
            json_pack("{s:s, s:s, s:s, s:s}", "kind", "gcp_sts", "audience",
                      "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/"
                      "p/providers/x",
                      "service_account_impersonation_url",
                      "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
                      "sa@p.iam.gserviceaccount.com:generateAccessToken",
                      "lifetime", "30m"));
        put(j, "upstreams.azure",
            json_pack("{s:s, s:s, s:s, s:s}", "kind", "azure_ad", "tenant", "contoso.onmicrosoft.com",
                      "client_id", "00000000-0000-0000-0000-000000000001", "scope",
                      "https://cognitiveservices.azure.com/.default"));
        put(j, "rules[0].upstreams", json_pack("[s,s,s]", "aws", "gcp", "azure"));
        c = parse_ok(j);

        u = config_find_upstream(c, "aws");
        assert_int_equal(u->kind, UPSTREAM_AWS_STS);
        assert_string_equal(u->token_endpoint, "https://sts.eu-west-1.amazonaws.com/");
        assert_int_equal(u->duration, 3600);
        assert_string_equal(u->subject_token.audience, "sts.amazonaws.com");
        assert_int_equal(u->subject_token.alg, ALG_ES256);
        assert_int_equal(u->client_auth, CLIENT_AUTH_NONE);

        u = config_find_upstream(c, "gcp");
        assert_string_equal(u->token_endpoint, "https://sts.googleapis.com/v1/token");
        assert_string_equal(u->scope, "https://www.googleapis.com/auth/cloud-platform");
        assert_string_equal(u->subject_token.audience,
                            "https://iam.googleapis.com/projects/123/locations/global/"
                            "workloadIdentityPools/p/providers/x");
        assert_int_equal(u->lifetime, 1800);
        assert_int_equal(u->subject_token.alg, ALG_ES256);

        u = config_find_upstream(c, "azure");
        assert_string_equal(u->token_endpoint, "https://login.microsoftonline.com/"
                                               "contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert_string_equal(u->subject_token.audience, "api://AzureADTokenExchange");
        assert_int_equal(u->subject_token.alg, ALG_RS256);
        config_unref(c);

        j = minimal();
        put(j, "upstreams.aws", json_pack("{s:s, s:s, s:s, s:{s:s}}", "kind", "aws_sts",
                                          "role_arn", "arn:aws:iam::1:user/x", "client_id", "c",
                                          "subject_token", "alg", "EdDSA"));
        put(j, "upstreams.gcp", json_pack("{s:s, s:s, s:s}", "kind", "gcp_sts", "audience",
                                          "//iam.googleapis.com/nope", "lifetime", "1h"));
        put(j, "upstreams.azure", json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "kind", "azure_ad",
                                            "tenant", "a/b", "client_id", "c", "scope", "s",
                                            "subject_token", "alg", "ES256"));
        expect_errors(j, (const char *const[]){
                             "upstreams.aws.client_id: unknown key",
                             "upstreams.aws.role_arn: not an IAM role ARN",
                             "upstreams.aws: aws_sts needs region (or token_endpoint)",
                             "upstreams.aws.subject_token.alg: aws_sts takes RS256 or ES256",
                             "upstreams.gcp.audience: not a workload identity provider",
                             "upstreams.gcp.lifetime: only with service_account_impersonation_url",
                             "upstreams.azure.tenant: not a tenant id or domain",
                             "upstreams.azure.subject_token.alg: azure_ad takes RS256 only",
                             NULL});
}

static void test_upstream_rules(void **state)
{
        json_t *j = minimal();

        /* a rule without upstreams still needs an audience of its own */
        put(j, "rules[0].audiences", json_array());
        expect_error(j, "rules[0].audiences: must list at least one");

        j = with_upstream();
        put(j, "rules[0].upstreams", json_array());
        expect_error(j, "rules[0].upstreams: must list at least one");

        j = with_upstream();
        put(j, "upstreams", json_array());
        put(j, "rules[0].upstreams", NULL);
        expect_error(j, "upstreams: expected object, got array");
}

/* ---- valid configs ---------------------------------------------------------------------- */

static void test_full_config(void **state)
{
        Config *c = parse_ok(base());

        assert_string_equal(c->path, "test.json");
        assert_string_equal(c->issuer, "https://broker.example.internal");
        assert_string_equal(c->workload_socket, "/run/brokerd/workload/broker.sock");
        assert_string_equal(c->admin_socket, "/run/brokerd/admin.sock");
        assert_string_equal(c->state_directory, "/var/lib/brokerd");
        assert_string_equal(c->audit_database, "/var/lib/brokerd/audit.db");
        assert_int_equal(c->default_ttl, 600);
        assert_int_equal(c->max_ttl, 7200);
        assert_int_equal(c->limits.max_connections, 100);
        assert_int_equal(c->limits.max_connections_per_uid, 10);
        assert_int_equal(c->limits.rate, 50);
        assert_int_equal(c->limits.burst, 75);
        assert_int_equal(c->limits.idle_timeout, 120);
        assert_int_equal(c->limits.read_timeout, 3);
        assert_int_equal(c->n_rules, 3);

        const Rule *r = &c->rules[0];
        assert_string_equal(r->name, "web");
        assert_true(r->match.has_uid);
        assert_int_equal(r->match.uid, 33);
        assert_false(r->match.has_gid);
        assert_false(r->match.has_user);
        assert_false(r->match.has_group);
        assert_string_equal(r->match.unit, "web.service");
        assert_null(r->match.exe);
        assert_null(r->match.cgroup);
        assert_null(r->match.container);
        assert_string_equal(r->subject, "spiffe://example.org/unit/{unit}");
        assert_int_equal(r->n_audiences, 1);
        assert_string_equal(r->audiences[0], "https://api.example.com");
        assert_int_equal(r->n_scopes, 2);
        assert_string_equal(r->scopes[0], "read");
        assert_string_equal(r->scopes[1], "write");
        assert_int_equal(r->max_ttl, 900);
        assert_int_equal(r->alg, ALG_ES256);

        r = &c->rules[1];
        assert_string_equal(r->name, "daemon-user");
        assert_true(r->match.has_user);
        assert_string_equal(r->match.user, "daemon");
        assert_int_equal(r->match.user_uid, 1); /* resolved at load */
        assert_true(r->match.has_group);
        assert_string_equal(r->match.group, "nogroup");
        assert_int_equal(r->match.group_gid, 65534);
        assert_false(r->match.has_uid);
        assert_int_equal(r->n_audiences, 2);
        assert_string_equal(r->audiences[1], "urn:x");
        assert_int_equal(r->n_scopes, 0);
        assert_int_equal(r->max_ttl, 7200); /* the global one */

        r = &c->rules[2];
        assert_string_equal(r->name, "batch_2.x");
        assert_true(r->match.has_gid);
        assert_int_equal(r->match.gid, 0);
        assert_string_equal(r->match.exe, "/usr/bin/*");
        assert_string_equal(r->match.cgroup, "/system.slice/*");
        assert_string_equal(r->match.container, "docker:*");
        assert_string_equal(r->subject, "{uid}/{gid}/{container}/{rule}");
        assert_int_equal(r->n_scopes, 0);
        assert_int_equal(r->alg, ALG_EDDSA);
        config_unref(c);
}

static void test_user_group_resolved(void **state)
{
        json_t *j = minimal();
        put(j, "rules[0].match", json_pack("{s:s, s:s}", "user", "www-data", "group", "root"));
        Config *c = parse_ok(j);

        assert_true(c->rules[0].match.has_user);
        assert_int_equal(c->rules[0].match.user_uid, 33);
        assert_true(c->rules[0].match.has_group);
        assert_int_equal(c->rules[0].match.group_gid, 0);
        config_unref(c);
}

static void test_defaults(void **state)
{
        Config *c = parse_ok(minimal());

        assert_int_equal(c->default_ttl, 5 * 60);
        assert_int_equal(c->max_ttl, 60 * 60);
        assert_int_equal(c->limits.max_connections, 1024);
        assert_int_equal(c->limits.max_connections_per_uid, 256);
        assert_int_equal(c->limits.rate, 1000);
        assert_int_equal(c->limits.burst, 2000);
        assert_int_equal(c->limits.idle_timeout, 60);
        assert_int_equal(c->limits.read_timeout, 5);
        assert_int_equal(c->n_rules, 1);

        const Rule *r = &c->rules[0];
        /* No match: every selector absent, so the rule matches everyone. */
        assert_false(r->match.has_uid || r->match.has_gid || r->match.has_user ||
                     r->match.has_group);
        assert_null(r->match.user);
        assert_null(r->match.group);
        assert_null(r->match.exe);
        assert_null(r->match.unit);
        assert_null(r->match.cgroup);
        assert_null(r->match.container);
        assert_int_equal(r->n_scopes, 0);
        assert_int_equal(r->max_ttl, 3600);
        assert_int_equal(r->alg, ALG_ES256); /* the default, not EdDSA */
        config_unref(c);

        /* Partial objects: absent members keep their defaults. */
        json_t *j = minimal();
        put(j, "tokens.max_ttl", json_string("2h"));
        put(j, "limits.rate", json_integer(7));
        c = parse_ok(j);
        assert_int_equal(c->default_ttl, 300);
        assert_int_equal(c->max_ttl, 7200);
        assert_int_equal(c->rules[0].max_ttl, 7200); /* follows the global max */
        assert_int_equal(c->limits.rate, 7);
        assert_int_equal(c->limits.burst, 2000);
        assert_int_equal(c->limits.max_connections, 1024);
        config_unref(c);
}

static void test_empty_rules(void **state)
{
        json_t *j = minimal();
        put(j, "rules", json_array());
        Config *c = parse_ok(j);
        assert_int_equal(c->n_rules, 0);
        config_unref(c);
}

static void test_rate_zero_disables(void **state)
{
        json_t *j = minimal();
        put(j, "limits", json_pack("{s:i, s:i}", "rate", 0, "burst", 0));
        Config *c = parse_ok(j);
        assert_int_equal(c->limits.rate, 0);
        assert_int_equal(c->limits.burst, 0);
        config_unref(c);
}

static void check_duration(json_t *value, uint64_t want)
{
        json_t *j = minimal();
        put(j, "tokens", json_pack("{s:i, s:o}", "default_ttl", 1, "max_ttl", value));
        Config *c = parse_ok(j);
        if (c->max_ttl != want)
                fail_msg("max_ttl %llu, wanted %llu", (unsigned long long) c->max_ttl,
                         (unsigned long long) want);
        assert_int_equal(c->default_ttl, 1);
        config_unref(c);
}

static void test_durations(void **state)
{
        check_duration(json_integer(1), 1);
        check_duration(json_integer(90), 90);
        check_duration(json_integer(86400), 86400);
        check_duration(json_string("90"), 90);
        check_duration(json_string("90s"), 90);
        check_duration(json_string("15m"), 900);
        check_duration(json_string("24h"), 86400);
        check_duration(json_string("400d"), 400ULL * 86400);

        /* The same syntax everywhere a duration is accepted. */
        json_t *j = minimal();
        put(j, "tokens", json_pack("{s:s, s:s}", "default_ttl", "90s", "max_ttl", "24h"));
        put(j, "limits", json_pack("{s:s, s:i}", "idle_timeout", "15m", "read_timeout", 2));
        put(j, "rules[0].max_ttl", json_string("400m"));
        Config *c = parse_ok(j);
        assert_int_equal(c->default_ttl, 90);
        assert_int_equal(c->max_ttl, 86400);
        assert_int_equal(c->limits.idle_timeout, 900);
        assert_int_equal(c->limits.read_timeout, 2);
        assert_int_equal(c->rules[0].max_ttl, 400 * 60);
        config_unref(c);
}

static void test_socket_path_length(void **state)
{
        char p107[108], p108[109];

        /* sun_path holds 108 bytes including the NUL. */
        memset(p107, 'a', sizeof(p107) - 1);
        p107[0] = '/';
        p107[107] = 0;
        memset(p108, 'b', sizeof(p108) - 1);
        p108[0] = '/';
        p108[108] = 0;

        json_t *j = minimal();
        put(j, "listen.workload", json_string(p107));
        Config *c = parse_ok(j);
        assert_int_equal(strlen(c->workload_socket), 107);
        config_unref(c);

        j = minimal();
        put(j, "listen.workload", json_string(p108));
        expect_error(j, "listen.workload: longer than 107 bytes");

        j = minimal();
        put(j, "listen.admin", json_string(p108));
        expect_error(j, "listen.admin: longer than 107 bytes");
}

/* ---- required keys ------------------------------------------------------------------------ */

static void test_missing_required_each(void **state)
{
        static const char *const paths[] = {
            "issuer",
            "listen",
            "listen.workload",
            "listen.admin",
            "state_directory",
            "audit",
            "audit.database",
            "rules",
            "rules[0].name",
            "rules[1].subject",
            "rules[2].audiences",
        };

        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                char want[128];
                json_t *j = base();
                put(j, paths[i], NULL);
                snprintf(want, sizeof(want), "%s: missing (required)", paths[i]);
                expect_error(j, want);
        }
}

static void test_missing_required_all_at_once(void **state)
{
        /* Every top-level key gone. */
        expect_text_errors("{}", (const char *const[]){"issuer: missing (required)",
                                                       "listen: missing (required)",
                                                       "state_directory: missing (required)",
                                                       "audit: missing (required)",
                                                       "rules: missing (required)", NULL});

        /* Every nested required key gone. */
        json_t *j = base();
        put(j, "listen", json_object());
        put(j, "audit", json_object());
        put(j, "rules[0]", json_object());
        expect_errors(j, (const char *const[]){"listen.workload: missing (required)",
                                               "listen.admin: missing (required)",
                                               "audit.database: missing (required)",
                                               "rules[0].name: missing (required)",
                                               "rules[0].subject: missing (required)",
                                               "rules[0].audiences: missing (required)", NULL});
}

/* ---- types -------------------------------------------------------------------------------- */

static void test_wrong_types(void **state)
{
        static const struct {
                const char *path;
                const char *value; /* JSON */
                const char *want;
        } cases[] = {
            {"issuer", "5", "issuer: expected string, got integer"},
            {"listen", "\"x\"", "listen: expected object, got string"},
            {"listen.workload", "1", "listen.workload: expected string, got integer"},
            {"listen.admin", "true", "listen.admin: expected string, got boolean"},
            {"state_directory", "[]", "state_directory: expected string, got array"},
            {"audit", "[]", "audit: expected object, got array"},
            {"audit.database", "null", "audit.database: expected string, got null"},
            {"tokens", "1", "tokens: expected object, got integer"},
            {"tokens.default_ttl", "1.5", "tokens.default_ttl: expected duration"},
            {"tokens.max_ttl", "true", "tokens.max_ttl: expected duration"},
            {"limits", "\"x\"", "limits: expected object, got string"},
            {"limits.max_connections", "\"100\"",
             "limits.max_connections: expected integer, got string"},
            {"limits.max_connections_per_uid", "1.0",
             "limits.max_connections_per_uid: expected integer, got number"},
            {"limits.rate", "null", "limits.rate: expected integer, got null"},
            {"limits.burst", "[1]", "limits.burst: expected integer, got array"},
            {"limits.idle_timeout", "[]", "limits.idle_timeout: expected duration"},
            {"limits.read_timeout", "{}", "limits.read_timeout: expected duration"},
            {"rules", "{}", "rules: expected array, got object"},
            {"rules[1]", "\"x\"", "rules[1]: expected object, got string"},
            {"rules[2].name", "1", "rules[2].name: expected string, got integer"},
            {"rules[2].match", "[]", "rules[2].match: expected object, got array"},
            {"rules[2].match.uid", "\"33\"", "rules[2].match.uid: expected integer"},
            {"rules[2].match.gid", "0.0", "rules[2].match.gid: expected integer, got number"},
            {"rules[2].match.user", "0", "rules[2].match.user: expected string, got integer"},
            {"rules[2].match.group", "0", "rules[2].match.group: expected string"},
            {"rules[2].match.exe", "false", "rules[2].match.exe: expected string"},
            {"rules[2].match.unit", "[]", "rules[2].match.unit: expected string"},
            {"rules[2].match.cgroup", "{}", "rules[2].match.cgroup: expected string"},
            {"rules[2].match.container", "1", "rules[2].match.container: expected string"},
            {"rules[2].subject", "1", "rules[2].subject: expected string"},
            {"rules[2].audiences", "\"aud\"", "rules[2].audiences: expected array"},
            {"rules[2].audiences[0]", "1", "rules[2].audiences[0]: expected string, got integer"},
            {"rules[0].scopes", "\"read\"", "rules[0].scopes: expected array, got string"},
            {"rules[0].scopes[1]", "{}", "rules[0].scopes[1]: expected string, got object"},
            {"rules[2].max_ttl", "1.5", "rules[2].max_ttl: expected duration"},
            {"rules[2].alg", "1", "rules[2].alg: expected string, got integer"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_t *j = base();
                json_t *v = json_loads(cases[i].value, JSON_DECODE_ANY, NULL);
                assert_non_null(v);
                put(j, cases[i].path, v);
                print_message("  %s = %s\n", cases[i].path, cases[i].value);
                expect_error(j, cases[i].want);
        }
}

/* ---- unknown keys ------------------------------------------------------------------------- */

static void test_unknown_keys_each(void **state)
{
        static const char *const paths[] = {
            "extra",        "listen.extra",   "audit.extra",          "tokens.extra",
            "limits.extra", "rules[1].extra", "rules[1].match.extra", "rules[0].match.Uid",
        };

        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                char want[128];
                json_t *j = base();
                put(j, paths[i], json_integer(1));
                snprintf(want, sizeof(want), "%s: unknown key", paths[i]);
                expect_error(j, want);
        }
}

static void test_unknown_keys_all_at_once(void **state)
{
        json_t *j = base();

        put(j, "top", json_true());
        put(j, "listen.x", json_true());
        put(j, "audit.x", json_true());
        put(j, "tokens.x", json_true());
        put(j, "limits.x", json_true());
        put(j, "rules[2].x", json_true());
        put(j, "rules[2].match.x", json_true());
        expect_errors(j, (const char *const[]){"top: unknown key", "listen.x: unknown key",
                                               "audit.x: unknown key", "tokens.x: unknown key",
                                               "limits.x: unknown key", "rules[2].x: unknown key",
                                               "rules[2].match.x: unknown key", NULL});
}

/* ---- values ------------------------------------------------------------------------------- */

static void test_invalid_durations(void **state)
{
        static const char *const bad_strings[] = {"5x",  "-5s", "1.5h", "",    "5 s",
                                                  " 5s", "5S",  "5w",   "1e3", "0x10"};

        for (size_t i = 0; i < ELEMENTSOF(bad_strings); i++) {
                json_t *j = base();
                put(j, "tokens.max_ttl", json_string(bad_strings[i]));
                print_message("  \"%s\"\n", bad_strings[i]);
                expect_error(j, "tokens.max_ttl: invalid duration");
        }

        /* Too large, as a string and as an integer. */
        json_t *j = base();
        put(j, "tokens.max_ttl", json_string("99999999999999999999999d"));
        expect_error(j, "tokens.max_ttl: duration too large");
        j = base();
        put(j, "tokens.max_ttl", json_string("36601d"));
        expect_error(j, "tokens.max_ttl: duration too large");
        j = base();
        put(j, "limits.idle_timeout", json_integer(1000000000000LL));
        expect_error(j, "limits.idle_timeout: duration out of range");
        j = base();
        put(j, "limits.idle_timeout", json_integer(-5));
        expect_error(j, "limits.idle_timeout: duration out of range");

        /* Zero is a valid duration but not a valid lifetime or timeout. */
        j = base();
        put(j, "tokens.default_ttl", json_integer(0));
        expect_error(j, "tokens.default_ttl: must be at least 1 seconds");
        j = base();
        put(j, "limits.read_timeout", json_string("0s"));
        expect_error(j, "limits.read_timeout: must be at least 1 seconds");
        j = base();
        put(j, "rules[0].max_ttl", json_string("0m"));
        expect_error(j, "rules[0].max_ttl: must be at least 1 seconds");

        /* A JSON number too big for any integer type is a JSON error, not a silent wrap. */
        expect_text_errors("{\"tokens\": {\"max_ttl\": 99999999999999999999999}}",
                           (const char *const[]){"line 1 column", NULL});
}

/* The grant log's options: defaults, values, and each bad value named. */
static void test_audit_options(void **state)
{
        Config *c = parse_ok(minimal());

        assert_int_equal(c->audit_checkpoint_every, 1000);
        assert_int_equal(c->audit_checkpoint_interval_ms, 60 * 1000);
        assert_int_equal(c->audit_retention_ms, 0); /* keep everything */
        config_unref(c);

        json_t *j = base();
        put(j, "audit.retention", json_string("400d"));
        put(j, "audit.checkpoint_every", json_integer(1));
        put(j, "audit.checkpoint_interval", json_string("5m"));
        c = parse_ok(j);
        assert_int_equal(c->audit_retention_ms, 400LL * 86400 * 1000);
        assert_int_equal(c->audit_checkpoint_every, 1);
        assert_int_equal(c->audit_checkpoint_interval_ms, 300 * 1000);
        config_unref(c);

        static const struct {
                const char *path;
                const char *json;
                const char *want;
        } bad[] = {
            {"audit.checkpoint_every", "0", "audit.checkpoint_every: must be between 1 and"},
            {"audit.checkpoint_every", "1000001", "audit.checkpoint_every: must be between 1"},
            {"audit.checkpoint_every", "-1", "audit.checkpoint_every: must be between 1 and"},
            {"audit.checkpoint_every", "\"10\"", "audit.checkpoint_every: expected integer"},
            {"audit.checkpoint_interval", "0", "audit.checkpoint_interval: must be at least 1"},
            {"audit.checkpoint_interval", "\"5x\"", "audit.checkpoint_interval: invalid duration"},
            {"audit.retention", "\"1.5y\"", "audit.retention: invalid duration"},
            {"audit.retention", "-1", "audit.retention: duration out of range"},
            {"audit.retention", "true", "audit.retention: expected"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                j = base();
                put(j, bad[i].path, json_loads(bad[i].json, JSON_DECODE_ANY, NULL));
                print_message("  %s = %s\n", bad[i].path, bad[i].json);
                expect_error(j, bad[i].want);
        }
}

static void test_uid_gid_range(void **state)
{
        static const struct {
                const char *path;
                json_int_t v;
        } bad[] = {
            {"rules[2].match.uid", -1},           {"rules[2].match.uid", 4294967295LL},
            {"rules[2].match.uid", 1LL << 40},    {"rules[2].match.gid", -1},
            {"rules[2].match.gid", 4294967295LL},
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char want[128];
                json_t *j = base();
                put(j, bad[i].path, json_integer(bad[i].v));
                snprintf(want, sizeof(want), "%s: must be between 0 and 4294967294", bad[i].path);
                expect_error(j, want);
        }

        json_t *j = base();
        put(j, "rules[2].match.uid", json_integer(4294967294LL));
        put(j, "rules[2].match.gid", json_integer(4294967294LL));
        Config *c = parse_ok(j);
        assert_true(c->rules[2].match.has_uid);
        assert_int_equal(c->rules[2].match.uid, 4294967294u);
        assert_int_equal(c->rules[2].match.gid, 4294967294u);
        config_unref(c);
}

static void test_nonexistent_user_group(void **state)
{
        json_t *j = base();
        put(j, "rules[1].match.user", json_string("no-such-user-brokerd-test"));
        expect_error(j, "rules[1].match.user: no such user \"no-such-user-brokerd-test\"");

        j = base();
        put(j, "rules[1].match.group", json_string("no-such-group-brokerd-test"));
        expect_error(j, "rules[1].match.group: no such group \"no-such-group-brokerd-test\"");

        /* A uid is not a user name. */
        j = base();
        put(j, "rules[1].match.user", json_string("0"));
        expect_error(j, "rules[1].match.user: no such user");
}

static void test_match_shapes(void **state)
{
        json_t *j = base();
        put(j, "rules[2].match.exe", json_string("usr/bin/*"));
        expect_error(j, "rules[2].match.exe: must be an absolute path");

        j = base();
        put(j, "rules[2].match.exe", json_string("*"));
        expect_error(j, "rules[2].match.exe: must be an absolute path");

        j = base();
        put(j, "rules[2].match.cgroup", json_string("system.slice/*"));
        expect_error(j, "rules[2].match.cgroup: must start with '/'");

        j = base();
        put(j, "rules[2].match.container", json_string("docker"));
        expect_error(j, "rules[2].match.container: expected RUNTIME:ID");

        j = base();
        put(j, "rules[2].match.unit", json_string(""));
        expect_error(j, "rules[2].match.unit: must not be empty");

        j = base();
        put(j, "rules[2].match.unit", json_string("web\n.service"));
        expect_error(j, "rules[2].match.unit: must not contain control characters");

        /* An empty match is valid and matches everyone. */
        j = base();
        put(j, "rules[2].match", json_object());
        Config *c = parse_ok(j);
        assert_null(c->rules[2].match.exe);
        assert_false(c->rules[2].match.has_gid);
        config_unref(c);
}

/* Any user can run the program at a path and make it run their own code (LD_PRELOAD, ptrace):
 * a rule with exe must also pin who runs it, and --check says why. */
static void test_exe_needs_a_pin(void **state)
{
        static const char why[] = "needs uid, user, gid, group or unit in the same match: any user "
                                  "can run the program at this path and make it run code of "
                                  "their own (LD_PRELOAD, ptrace)";
        char want[512];

        /* exe alone, or with selectors that say nothing about who runs it. */
        json_t *j = base();
        put(j, "rules[2].match", json_pack("{s:s}", "exe", "/usr/bin/sleep"));
        snprintf(want, sizeof(want), "rules[2].match.exe: %s", why);
        expect_error(j, want);

        j = base();
        put(j, "rules[2].match.gid", NULL);
        expect_error(j, want); /* cgroup and container pin no one */

        /* Every rule is reported, each with its own path. */
        j = base();
        put(j, "rules[0].match", json_pack("{s:s}", "exe", "/usr/bin/a"));
        put(j, "rules[2].match.gid", NULL);
        expect_errors(j, (const char *const[]){"rules[0].match.exe: needs uid, user, gid",
                                               "rules[2].match.exe: needs uid, user, gid", NULL});

        /* Each pin is enough on its own. */
        static const struct {
                const char *key;
                const char *value; /* JSON */
        } pins[] = {
            {"uid", "33"},
            {"user", "\"daemon\""},
            {"gid", "0"},
            {"group", "\"nogroup\""},
            {"unit", "\"web.service\""},
        };
        for (size_t i = 0; i < ELEMENTSOF(pins); i++) {
                char path[64];

                j = base();
                put(j, "rules[2].match",
                    json_pack("{s:s, s:s}", "exe", "/usr/bin/*", "cgroup", "/system.slice/*"));
                snprintf(path, sizeof(path), "rules[2].match.%s", pins[i].key);
                put(j, path, json_loads(pins[i].value, JSON_DECODE_ANY, NULL));
                print_message("  exe with %s\n", pins[i].key);
                Config *c = parse_ok(j);
                assert_string_equal(c->rules[2].match.exe, "/usr/bin/*");
                config_unref(c);
        }

        /* A pin that is there but wrong has its own problem, and no second one about exe. */
        j = base();
        put(j, "rules[2].match.gid", json_string("0"));
        expect_error(j, "rules[2].match.gid: expected integer");
        j = base();
        put(j, "rules[2].match.gid", NULL);
        put(j, "rules[2].match.user", json_string("no-such-user-brokerd-test"));
        expect_error(j, "rules[2].match.user: no such user");

        /* A rule without exe needs no pin. */
        j = base();
        put(j, "rules[2].match", json_pack("{s:s}", "container", "docker:*"));
        config_unref(parse_ok(j));
}

static void test_bad_subject_templates(void **state)
{
        static const char *const bad[] = {
            "spiffe://x/{foo}", "spiffe://x/{UID}", "{uid",   "uid}",    "spiffe://{uid}}", "{}",
            "{{uid}}",          "a{uid}{",          "{ uid}", "x/{unit", "{user}{group}",   "{pid}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_t *j = base();
                put(j, "rules[1].subject", json_string(bad[i]));
                print_message("  \"%s\"\n", bad[i]);
                expect_error(j, "rules[1].subject: ");
        }

        json_t *j = base();
        put(j, "rules[1].subject", json_string("x/{nope}"));
        expect_error(j, "rules[1].subject: unknown placeholder {nope}");
        j = base();
        put(j, "rules[1].subject", json_string("x/{uid"));
        expect_error(j, "rules[1].subject: unbalanced '{'");
        j = base();
        put(j, "rules[1].subject", json_string("x/uid}"));
        expect_error(j, "rules[1].subject: unbalanced '}'");

        /* Every placeholder at once is fine. */
        j = base();
        put(j, "rules[1].subject",
            json_string("s://{uid}/{gid}/{user}/{unit}/{container}/{rule}{uid}"));
        Config *c = parse_ok(j);
        config_unref(c);
}

static void test_invalid_scopes(void **state)
{
        static const char *const bad[] = {"read write", "a\"b", "a\\b", "caf\xc3\xa9", "tab\t", ""};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_t *j = base();
                put(j, "rules[0].scopes[1]", json_string(bad[i]));
                print_message("  \"%s\"\n", bad[i]);
                expect_error(j, "rules[0].scopes[1]: ");
        }

        json_t *j = base();
        put(j, "rules[0].scopes[1]", json_string("read write"));
        expect_error(j, "rules[0].scopes[1]: \"read write\" is not a valid scope");

        /* RFC 6749 scope-token characters are all accepted. */
        j = base();
        put(j, "rules[0].scopes[1]", json_string("api:read/x.y-z_~!#$%&'()*+,;<=>?@[]^`{|}"));
        Config *c = parse_ok(j);
        assert_int_equal(c->rules[0].n_scopes, 2);
        config_unref(c);
}

static void test_audiences(void **state)
{
        json_t *j = base();
        put(j, "rules[1].audiences", json_array());
        expect_error(j, "rules[1].audiences: must list at least one audience");

        j = base();
        put(j, "rules[1].audiences[1]", json_string(""));
        expect_error(j, "rules[1].audiences[1]: must be 1 to 1024 bytes");

        char *longaud = malloc(1026);
        assert_non_null(longaud);
        memset(longaud, 'a', 1025);
        longaud[1025] = 0;
        j = base();
        put(j, "rules[1].audiences[0]", json_string(longaud));
        free(longaud);
        expect_error(j, "rules[1].audiences[0]: must be 1 to 1024 bytes");
}

static void test_rule_names(void **state)
{
        json_t *j = base();
        put(j, "rules[2].name", json_string("web"));
        expect_error(j, "rules[2].name: \"web\" is already the name of rules[0]");

        /* Three of the same name: each later one names the earlier ones. */
        j = base();
        put(j, "rules[1].name", json_string("web"));
        put(j, "rules[2].name", json_string("web"));
        expect_errors(j, (const char *const[]){
                             "rules[1].name: \"web\" is already the name of rules[0]",
                             "rules[2].name: \"web\" is already the name of rules[0]",
                             "rules[2].name: \"web\" is already the name of rules[1]", NULL});

        static const char *const bad[] = {"web server", "a/b",    "caf\xc3\xa9",
                                          "a:b",        "{rule}", "a\"b"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                j = base();
                put(j, "rules[0].name", json_string(bad[i]));
                print_message("  \"%s\"\n", bad[i]);
                expect_error(j, "rules[0].name: \"");
        }
        j = base();
        put(j, "rules[0].name", json_string(""));
        expect_error(j, "rules[0].name: must not be empty");

        char name[66];
        memset(name, 'n', 65);
        name[65] = 0;
        j = base();
        put(j, "rules[0].name", json_string(name));
        expect_error(j, "rules[0].name: longer than 64 bytes");
        name[64] = 0;
        j = base();
        put(j, "rules[0].name", json_string(name));
        Config *c = parse_ok(j);
        config_unref(c);
}

static void test_ttl_relations(void **state)
{
        json_t *j = base();
        put(j, "tokens", json_pack("{s:s, s:s}", "default_ttl", "2h", "max_ttl", "1h"));
        put(j, "rules[0].max_ttl", NULL);
        expect_error(j, "tokens.default_ttl: 7200s is longer than tokens.max_ttl (3600s)");

        /* The default max_ttl (1h) also bounds an explicit default_ttl. */
        j = minimal();
        put(j, "tokens.default_ttl", json_string("61m"));
        expect_error(j, "tokens.default_ttl: 3660s is longer than tokens.max_ttl (3600s)");

        j = base();
        put(j, "rules[0].max_ttl", json_string("3h"));
        expect_error(j, "rules[0].max_ttl: 10800s is longer than tokens.max_ttl (7200s)");

        /* Equal is fine. */
        j = base();
        put(j, "rules[0].max_ttl", json_string("2h"));
        put(j, "tokens.default_ttl", json_string("2h"));
        Config *c = parse_ok(j);
        assert_int_equal(c->rules[0].max_ttl, 7200);
        config_unref(c);
}

static void test_limit_relations(void **state)
{
        json_t *j = base();
        put(j, "limits.max_connections", json_integer(10));
        put(j, "limits.max_connections_per_uid", json_integer(11));
        expect_error(j,
                     "limits.max_connections_per_uid: 11 is more than limits.max_connections (10)");

        /* Against the default total (1024). */
        j = minimal();
        put(j, "limits.max_connections_per_uid", json_integer(1025));
        expect_error(j, "limits.max_connections_per_uid: 1025 is more than");

        j = base();
        put(j, "limits.burst", json_integer(0));
        expect_error(j, "limits.burst: must be at least 1 when limits.rate is not 0");

        j = base();
        put(j, "limits.max_connections", json_integer(0));
        put(j, "limits.max_connections_per_uid", json_integer(0));
        expect_errors(j, (const char *const[]){
                             "limits.max_connections: must be between 1 and",
                             "limits.max_connections_per_uid: must be between 1 and", NULL});

        j = base();
        put(j, "limits.rate", json_integer(-1));
        expect_error(j, "limits.rate: must be between 0 and");
}

static void test_issuer(void **state)
{
        static const struct {
                const char *issuer;
                const char *want;
        } bad[] = {
            {"http://broker.example", "issuer: must be an https:// URL"},
            {"https://", "issuer: must be an https:// URL"},
            {"HTTPS://broker.example", "issuer: must be an https:// URL"},
            {"broker.example", "issuer: must be an https:// URL"},
            {"ftp://broker.example", "issuer: must be an https:// URL"},
            {"https://broker.example?x=1", "issuer: must not contain a query"},
            {"https://broker.example/path?", "issuer: must not contain a query"},
            {"https://broker.example#frag", "issuer: must not contain a query"},
            {"https://broker example", "issuer: must not contain a query"},
            {"https://broker.example/", "issuer: must not end with '/'"},
            {"https://broker.example/tenant/", "issuer: must not end with '/'"},
            {"https://broker.example\x01", "issuer: must not contain control characters"},
            {"", "issuer: must not be empty"},
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_t *j = base();
                put(j, "issuer", json_string(bad[i].issuer));
                expect_error(j, bad[i].want);
        }

        json_t *j = base();
        put(j, "issuer", json_string("https://broker.example/tenant-a"));
        Config *c = parse_ok(j);
        assert_string_equal(c->issuer, "https://broker.example/tenant-a");
        config_unref(c);
}

static void test_paths(void **state)
{
        json_t *j = base();
        put(j, "listen.admin", json_string("/run/brokerd/workload/broker.sock"));
        expect_error(j, "listen.admin: must differ from listen.workload");

        static const char *const paths[] = {"listen.workload", "listen.admin", "state_directory",
                                            "audit.database"};
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                char want[128];
                j = base();
                put(j, paths[i], json_string("relative/path"));
                snprintf(want, sizeof(want), "%s: must be an absolute path", paths[i]);
                expect_error(j, want);
        }
}

static void test_alg(void **state)
{
        /* "none" and symmetric algorithms never sign anything. */
        static const char *const bad[] = {"none", "HS256", "eddsa", ""};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_t *j = base();
                put(j, "rules[2].alg", json_string(bad[i]));
                expect_error(j, "rules[2].alg: unsupported algorithm");
        }
}

/* ---- the document itself ------------------------------------------------------------------ */

static void test_invalid_json(void **state)
{
        const char *text = "{\n  \"issuer\": \"https://a\",\n  \"listen\": ,\n}\n";

        expect_text_errors(text, (const char *const[]){"line 3 column", NULL});

        Config *c = NULL;
        char **errs = NULL;
        assert_int_equal(config_parse_text(text, strlen(text), "test.json", &c, &errs), -EINVAL);
        assert_int_equal(n_lines(errs), 1);
        assert_non_null(strstr(errs[0], "invalid JSON"));
        strv_free(errs);

        /* Truncated document, invalid UTF-8, NUL inside a string, trailing garbage. */
        expect_text_errors("{\"issuer\": \"https://a\"", (const char *const[]){"line 1", NULL});
        expect_text_errors("{\"issuer\": \"https://\xff\"}", (const char *const[]){"line 1", NULL});
        expect_text_errors("{\"issuer\": \"https://a\\u0000b\"}",
                           (const char *const[]){"line 1", NULL});
        expect_text_errors("{} {}", (const char *const[]){"line 1", NULL});
        expect_text_errors("", (const char *const[]){"line ", NULL});
}

static void test_duplicate_keys(void **state)
{
        const char *text = "{\"issuer\": \"https://a\",\n \"issuer\": \"https://b\"}";
        Config *c = NULL;
        char **errs = NULL;

        assert_int_equal(config_parse_text(text, strlen(text), "test.json", &c, &errs), -EINVAL);
        assert_null(c);
        assert_int_equal(n_lines(errs), 1);
        assert_non_null(strstr(errs[0], "line 2"));
        assert_non_null(strstr(errs[0], "duplicate"));
        strv_free(errs);

        /* Nested duplicates too: the later "uid" must not silently win. */
        json_t *j = base();
        _cleanup_free_ char *good = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        const char *at = strstr(good, "\"uid\":33");
        assert_non_null(at);
        _cleanup_free_ char *dup = NULL;
        assert_true(asprintf(&dup, "%.*s\"uid\":0,%s", (int) (at - good), good, at) > 0);
        expect_text_errors(dup, (const char *const[]){"line 1", NULL});
}

static void test_top_level_not_object(void **state)
{
        expect_text_errors("[]",
                           (const char *const[]){"(top level): expected object, got array", NULL});
        expect_text_errors("[{\"issuer\": \"https://a\"}]",
                           (const char *const[]){"(top level): expected object, got array", NULL});
        /* Scalars are not even accepted as JSON documents here. */
        expect_text_errors("42", (const char *const[]){"line 1", NULL});
        expect_text_errors("\"x\"", (const char *const[]){"line 1", NULL});
}

static void test_too_many_rules(void **state)
{
        json_t *j = minimal();
        json_t *rules = json_array();
        for (int i = 0; i < 4097; i++) {
                char name[16];
                snprintf(name, sizeof(name), "r%d", i);
                json_array_append_new(rules, json_pack("{s:s, s:s, s:[s]}", "name", name, "subject",
                                                       "s", "audiences", "aud"));
        }
        put(j, "rules", rules);
        expect_error(j, "rules: more than 4096 rules");
}

/* The important property: one pass reports every problem, each with its own path. */
static void test_multiple_problems_one_pass(void **state)
{
        json_t *j = base();

        put(j, "issuer", json_string("http://broker.example"));
        put(j, "listen.admin", NULL);
        put(j, "limits.burst", json_integer(0));
        put(j, "rules[1].scopes", json_pack("[s]", "bad scope"));
        put(j, "rules[2].match.uid", json_string("33"));
        expect_errors(j, (const char *const[]){
                             "issuer: must be an https:// URL", "listen.admin: missing (required)",
                             "limits.burst: must be at least 1",
                             "rules[1].scopes[0]: \"bad scope\" is not a valid scope",
                             "rules[2].match.uid: expected integer", NULL});

        /* Several problems inside one rule and across rules. */
        j = base();
        put(j, "rules[0].name", json_string("bad name"));
        put(j, "rules[0].match.exe", json_string("bin/x"));
        put(j, "rules[0].match.container", json_string("docker"));
        put(j, "rules[0].subject", json_string("{nope}"));
        put(j, "rules[0].audiences", json_array());
        put(j, "rules[0].scopes[0]", json_integer(3));
        put(j, "rules[0].max_ttl", json_string("5x"));
        put(j, "rules[0].bogus", json_true());
        put(j, "rules[1].match.user", json_string("no-such-user-brokerd-test"));
        put(j, "rules[2].match.gid", json_integer(-1));
        put(j, "tokens.default_ttl", json_string("3h"));
        put(j, "state_directory", json_string("var/lib"));
        expect_errors(
            j, (const char *const[]){
                   "rules[0].name: \"bad name\"", "rules[0].match.exe: must be an absolute path",
                   "rules[0].match.container: expected RUNTIME:ID",
                   "rules[0].subject: unknown placeholder {nope}",
                   "rules[0].audiences: must list at least one",
                   "rules[0].scopes[0]: expected string", "rules[0].max_ttl: invalid duration",
                   "rules[0].bogus: unknown key", "rules[1].match.user: no such user",
                   "rules[2].match.gid: must be between", "tokens.default_ttl: 10800s is longer",
                   "state_directory: must be an absolute path", NULL});
}

/* A member reported as invalid must not come back in a second problem through the default that
 * stands in for it ("256 is more than ..." when the file says 1.0). */
static void test_no_follow_on_problems(void **state)
{
        json_t *j = base();
        put(j, "tokens.max_ttl", json_string("2x"));
        put(j, "rules[0].max_ttl", json_string("90m")); /* above the 1h default max */
        expect_error(j, "tokens.max_ttl: invalid duration");

        /* "tokens": "2h" instead of an object: rules are not measured against the default. */
        j = base();
        put(j, "tokens", json_string("2h"));
        put(j, "rules[0].max_ttl", json_string("2h"));
        expect_error(j, "tokens: expected object, got string");

        j = base();
        put(j, "tokens.default_ttl", json_string("5x"));
        put(j, "tokens.max_ttl", json_string("1m")); /* below the 5m default */
        put(j, "rules[0].max_ttl", NULL);
        expect_error(j, "tokens.default_ttl: invalid duration");

        j = base();
        put(j, "limits.max_connections", json_string("10"));
        put(j, "limits.max_connections_per_uid", json_integer(2000)); /* above 1024 default */
        expect_error(j, "limits.max_connections: expected integer");

        j = base();
        put(j, "limits.max_connections_per_uid", json_integer(0));
        put(j, "limits.max_connections", json_integer(1)); /* below the 256 default */
        expect_error(j, "limits.max_connections_per_uid: must be between 1 and");

        j = base();
        put(j, "limits.rate", json_string("none"));
        put(j, "limits.burst", json_integer(0)); /* fine when rate is 0 */
        expect_error(j, "limits.rate: expected integer");

        /* Real relations are still found when both sides are valid or defaulted. */
        j = minimal();
        put(j, "tokens.max_ttl", json_string("1m"));
        expect_error(j, "tokens.default_ttl: 300s is longer than tokens.max_ttl (60s)");
        j = minimal();
        put(j, "limits.max_connections", json_integer(100));
        expect_error(
            j, "limits.max_connections_per_uid: 256 is more than limits.max_connections (100)");
        j = minimal();
        put(j, "limits.burst", json_integer(0));
        expect_error(j, "limits.burst: must be at least 1 when limits.rate is not 0");
}

/* `user`, the account brokerd drops to: resolved at load, never root, restart-only. */
static void test_run_as_user(void **state)
{
        Config *c = parse_ok(base()), *d;
        json_t *j;

        assert_null(c->user);
        j = base();
        put(j, "user", json_string("nobody"));
        d = parse_ok(j);
        assert_string_equal(d->user, "nobody");
        assert_int_equal(d->user_uid, 65534);
        assert_int_equal(d->user_gid, 65534);
        assert_non_null(config_restart_only_change(c, d));
        assert_string_equal(config_restart_only_change(c, d), "user");
        assert_string_equal(config_restart_only_change(d, c), "user");
        config_unref(d);
        config_unref(c);

        j = base();
        put(j, "user", json_string("no-such-user-brokerd-test"));
        expect_error(j, "user: no such user \"no-such-user-brokerd-test\"");
        j = base();
        put(j, "user", json_string("root"));
        expect_error(j, "user: \"root\" is root; leave \"user\" out to run as root");
        j = base();
        put(j, "user", json_integer(65534));
        expect_error(j, "user: expected string");
}

/* ---- reload ------------------------------------------------------------------------------- */

static void test_restart_only_change(void **state)
{
        Config *a = parse_ok(base());

        /* Same file: nothing. Policy, tokens, limits and issuer may change on reload. */
        json_t *j = base();
        put(j, "rules", json_array());
        put(j, "tokens.max_ttl", json_string("3h"));
        put(j, "limits.rate", json_integer(1));
        put(j, "issuer", json_string("https://other.example"));
        Config *b = parse_ok(j);
        assert_null(config_restart_only_change(a, a));
        assert_null(config_restart_only_change(a, b));
        config_unref(b);

        static const struct {
                const char *path, *value;
        } changes[] = {
            {"listen.workload", "/run/other/w.sock"},
            {"listen.admin", "/run/other/a.sock"},
            {"state_directory", "/var/lib/other"},
            {"audit.database", "/var/lib/brokerd/other.db"},
            {"audit.retention", "400d"},
        };
        for (size_t i = 0; i < ELEMENTSOF(changes); i++) {
                j = base();
                put(j, changes[i].path, json_string(changes[i].value));
                b = parse_ok(j);
                const char *what = config_restart_only_change(a, b);
                assert_non_null(what);
                assert_string_equal(what, changes[i].path);
                /* Symmetric. */
                what = config_restart_only_change(b, a);
                assert_non_null(what);
                assert_string_equal(what, changes[i].path);
                config_unref(b);
        }
        config_unref(a);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_full_config),
            cmocka_unit_test(test_user_group_resolved),
            cmocka_unit_test(test_run_as_user),
            cmocka_unit_test(test_defaults),
            cmocka_unit_test(test_empty_rules),
            cmocka_unit_test(test_rate_zero_disables),
            cmocka_unit_test(test_durations),
            cmocka_unit_test(test_audit_options),
            cmocka_unit_test(test_socket_path_length),
            cmocka_unit_test(test_missing_required_each),
            cmocka_unit_test(test_missing_required_all_at_once),
            cmocka_unit_test(test_wrong_types),
            cmocka_unit_test(test_unknown_keys_each),
            cmocka_unit_test(test_unknown_keys_all_at_once),
            cmocka_unit_test(test_invalid_durations),
            cmocka_unit_test(test_uid_gid_range),
            cmocka_unit_test(test_nonexistent_user_group),
            cmocka_unit_test(test_match_shapes),
            cmocka_unit_test(test_exe_needs_a_pin),
            cmocka_unit_test(test_bad_subject_templates),
            cmocka_unit_test(test_invalid_scopes),
            cmocka_unit_test(test_audiences),
            cmocka_unit_test(test_rule_names),
            cmocka_unit_test(test_ttl_relations),
            cmocka_unit_test(test_limit_relations),
            cmocka_unit_test(test_issuer),
            cmocka_unit_test(test_paths),
            cmocka_unit_test(test_alg),
            cmocka_unit_test(test_invalid_json),
            cmocka_unit_test(test_duplicate_keys),
            cmocka_unit_test(test_top_level_not_object),
            cmocka_unit_test(test_too_many_rules),
            cmocka_unit_test(test_multiple_problems_one_pass),
            cmocka_unit_test(test_no_follow_on_problems),
            cmocka_unit_test(test_restart_only_change),
            cmocka_unit_test(test_upstream_defaults),
            cmocka_unit_test(test_upstream_every_key),
            cmocka_unit_test(test_upstream_endpoints),
            cmocka_unit_test(test_upstream_client_auth),
            cmocka_unit_test(test_upstream_problems_one_pass),
            cmocka_unit_test(test_upstream_rules),
            cmocka_unit_test(test_upstream_presets),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
