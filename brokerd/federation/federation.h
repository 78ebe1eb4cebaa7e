/* Federation: the broker exchanges its credentials at an upstream's OAuth2 token endpoint for
 * a caller and hands the caller only the upstream's short-lived token (README §Federation).
 * Policy has already decided (issuance.c); this service owns what follows: the token cache
 * with single flight and refresh-ahead, the exchange itself (the form, client authentication,
 * the broker JWTs it needs, HTTP through http.c), retries with backoff and full jitter within
 * the caller's deadline, and a circuit breaker per upstream.
 *
 * Threads: federation_get() from any thread (the workers call it after the policy decision);
 * the cache, breakers and counters are behind one lock. Exchanges run on the event loop (a
 * mailbox message starts them), as does everything else here. A result comes back through the
 * callback exactly once: within federation_get() (a cache hit, or a fast failure), or later on
 * the loop once the exchange ends (FedResult.async).
 *
 * Secrets: a client secret is unsealed from the secret store for one attempt and wiped after
 * it; tokens live in secure memory (cache.h). Nothing here logs a secret or a token.
 * Errors: -errno; upstream failures are results, logged once per minute per upstream with a
 * count of the ones not logged. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "federation/cache.h"
#include "keys/secretstore.h"
#include "keys/signer.h"
#include "policy/config.h"
#include "runtime/mailbox.h"

typedef enum FedStatus {
        FED_OK,
        FED_DENIED,      /* the upstream refused (an OAuth2 4xx error) */
        FED_UNAVAILABLE, /* no usable answer: down, slow, 5xx, malformed, open circuit, ... */
        FED_INTERNAL,
} FedStatus;

typedef struct FedResult {
        FedStatus status;
        bool async;     /* after an exchange, on the loop; else within federation_get() */
        bool cache_hit;
        FedToken *token;            /* FED_OK: borrowed for the callback (fed_token_ref) */
        const char *scope;          /* the scope asked of the upstream, NULL: none */
        const char *message;        /* not FED_OK: for the caller */
        const char *upstream_error; /* the upstream's OAuth2 error code, or NULL */
        long http_status;           /* of the last attempt; 0: no HTTP answer */
        const char *request_id;     /* of the last attempt; "" when none was sent */
} FedResult;

typedef void (*fed_done_t)(const FedResult *r, void *userdata);

typedef struct FedRequest {
        Config *config;                 /* the one the request was decided with */
        const UpstreamConfig *upstream; /* in config */
        const char *rule;               /* the deciding rule */
        const char *subject;            /* rendered from the rule */
        const char *const *scopes;      /* asked for; none: the upstream's default scope */
        size_t n_scopes;
} FedRequest;

typedef struct FederationDeps {
        sd_event *event;
        Mailbox *mailbox;
        KeySource keys;        /* for subject tokens and client assertions */
        SecretStore *secrets;  /* the loop's */
} FederationDeps;

typedef struct Federation Federation;

int federation_new(const FederationDeps *deps, Config *config, Federation **ret);
void federation_free(Federation *f);

/* A reload: every cache is dropped and every upstream starts afresh (breaker closed, counters
 * zero). Exchanges running finish for the callers waiting on them, uncached. */
void federation_set_config(Federation *f, Config *config);
/* Drops the cached tokens of the upstreams that authenticate with the secret `name` (a secret
 * was set or deleted), or of every upstream (NULL: a signing key was revoked). */
void federation_drop(Federation *f, const char *secret_name);

/* Returns 0 when `done` has run already (a hit, or a fast failure), 1 when it will run later
 * on the loop, or -errno (`done` never runs). */
int federation_get(Federation *f, const FedRequest *req, fed_done_t done, void *userdata);

/* The admin's `upstream test`: one exchange now for the subject "brokerd:upstream-test",
 * uncached, without retries and whatever the circuit breaker says. On the loop. Returns 0 when
 * `done` will run exactly once: on the loop when the exchange ends, or within this call when it
 * cannot start (a secret that is not set); -ENOENT (no such upstream) or -errno: it never
 * runs. */
#define FED_TEST_SUBJECT "brokerd:upstream-test"
int federation_test(Federation *f, Config *config, const UpstreamConfig *upstream, fed_done_t done,
                    void *userdata);

/* On the loop, when the loop has ended (the daemon stops): running and queued exchanges end
 * now with `unavailable`, and their callbacks run before this returns. */
void federation_stop(Federation *f);

/* {NAME: {state, last_error, cache_entries, hit_ratio, hits, misses}} */
json_t *federation_status(Federation *f);
