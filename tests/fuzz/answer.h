/* Shared by the harnesses of the token endpoints' answers (upstream_response.c,
 * cloud_response.c): what every parser that fills an OAuthAnswer (brokerd/federation/oauth.h)
 * promises, whatever it is fed. Each harness adds what its own parser promises besides. */
#pragma once

#include "federation/oauth.h"
#include "fuzz.h"

/* The answer to `status` has one of the four outcomes and what that outcome promises: a token
 * (1..max_token printable bytes) only for a 2xx; an OAuth2 error (RFC 6749 §5.2's characters,
 * printable) only for a 4xx other than 429; otherwise no token and a problem for the log. */
static inline void fuzz_check_answer(const OAuthAnswer *a, long status, size_t max_token)
{
        switch (a->outcome) {
        case OAUTH_TOKEN:
                FUZZ_ASSERT(status >= 200 && status < 300);
                FUZZ_ASSERT(a->access_token && a->access_token_len >= 1 &&
                            a->access_token_len <= max_token &&
                            strlen(a->access_token) == a->access_token_len &&
                            fuzz_printable(a->access_token, a->access_token_len));
                FUZZ_ASSERT(a->expires_in >= -1 && a->expires_in <= OAUTH_EXPIRES_IN_MAX);
                break;
        case OAUTH_REFUSED:
                FUZZ_ASSERT(status >= 400 && status < 500 && status != 429);
                FUZZ_ASSERT(a->error[0] && strlen(a->error) <= OAUTH_ERROR_MAX);
                FUZZ_ASSERT(!strchr(a->error, '"') && !strchr(a->error, '\\'));
                FUZZ_ASSERT(fuzz_printable(a->error, strlen(a->error)));
                FUZZ_ASSERT(fuzz_printable(a->error_description, strlen(a->error_description)));
                /* fall through: no token either */
        case OAUTH_RETRYABLE:
        case OAUTH_BAD_RESPONSE:
                FUZZ_ASSERT(!a->access_token && !a->aws_secret_access_key && a->problem[0]);
                break;
        default:
                FUZZ_ASSERT(!"an outcome outside the four");
        }
}

/* oauth_answer_done(), which must leave nothing of the answer behind. */
static inline void fuzz_answer_done(OAuthAnswer *a)
{
        oauth_answer_done(a);
        FUZZ_ASSERT(!a->access_token && !a->aws_secret_access_key && !a->scope &&
                    !a->issued_token_type);
}
