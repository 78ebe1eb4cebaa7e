/* What brokerctl says after a failed call: the broker's error code and message, then what to do
 * next. The advice depends on which socket was called (a workload command cannot be helped by
 * --admin-socket, nor an admin one by a policy rule), on whether anything reached the broker,
 * and on the command (a not_found names what was not found and how to list what there is). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "broker.h"

typedef struct CallContext {
        const char *command; /* "token", "secret delete": for "see 'brokerctl COMMAND --help'" */
        bool admin;          /* the call went to the admin socket */
        bool connecting;     /* broker_open failed: nothing reached the broker */
        const char *operand; /* what the command names (a kid, a secret), added to not_found */
        /* Advice replacing the default for these codes, or NULL. */
        const char *if_denied;
        const char *if_not_found;
        const char *if_bad_request;
} CallContext;

/* The advice for `err` as " (...)", or "" where the message says all there is. */
void failure_hint(const broker_error *err, const CallContext *ctx, char *buf, size_t size);

/* "brokerctl: CODE: MESSAGE[: OPERAND] (ADVICE)" on stderr; returns the exit code (exitcode.h). */
int failure_report(const broker_error *err, const CallContext *ctx);
