/* Google's IAM Credentials wire for the gcp_sts preset's second step: generateAccessToken
 * (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken),
 * which turns the STS token into a service account's access token. The first step, Google
 * STS's token exchange, is plain RFC 8693 (oauth.c). No I/O; the fuzzer calls
 * google_parse_access_token() directly. Thread-safe: no shared state. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "federation/oauth.h"

/* The request body: {"scope": [the space-separated scope's items], "lifetime": "Ns"}.
 * Returns 0 with *ret (free()) or -ENOMEM. */
int google_impersonation_body(const char *scope, uint64_t lifetime_s, char **ret);

/* Reads the answer: {"accessToken", "expireTime" (RFC 3339)} on success; Google's error
 * object {"error": {"code", "message", "status"}} otherwise, whose status ("PERMISSION_DENIED")
 * becomes the OAuth2-style error code. Returns 0 with *ret filled (whatever the outcome) or
 * -ENOMEM. */
int google_parse_access_token(long status, const char *body, size_t len, size_t max_token_bytes,
                              int64_t now_ms, OAuthAnswer *ret);
