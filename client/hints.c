#include "hints.h"

#include <stdio.h>
#include <string.h>

#include "exitcode.h"

/* The advice without its parentheses, or NULL. */
static const char *advice(const broker_error *err, const CallContext *ctx, char *buf, size_t size)
{
        switch (err->status) {
        case BROKER_E_UNAVAILABLE:
                if (ctx->connecting)
                        return ctx->admin
                                   ? "is brokerd running, and are you root or the broker's "
                                     "user? --admin-socket PATH or $BROKER_ADMIN_SOCKET names "
                                     "its admin socket"
                                   : "is brokerd running? --socket PATH or $BROKER_SOCKET names "
                                     "its workload socket";
                return "transient: retry later";
        case BROKER_E_DENIED:
                if (ctx->if_denied)
                        return ctx->if_denied;
                /* The admin socket refuses callers, not requests: no rule would help. */
                if (ctx->admin)
                        return "run brokerctl as root or as the broker's user";
                return "run 'brokerctl whoami' to see the identity the broker sees, and ask "
                       "the operator for a rule";
        case BROKER_E_RATE_LIMITED:
                return "retry later, with backoff";
        case BROKER_E_BAD_REQUEST:
                if (ctx->if_bad_request)
                        return ctx->if_bad_request;
                snprintf(buf, size, "see 'brokerctl %s --help'", ctx->command ? ctx->command : "");
                return buf;
        case BROKER_E_NOT_FOUND:
                return ctx->if_not_found;
        case BROKER_E_INTERNAL:
                /* the broker logs its own failures; some messages say so already */
                return strstr(err->message, "log") ? NULL
                                                   : "a failure inside the broker: its "
                                                     "log says more";
        case BROKER_E_PROTOCOL:
                return "is this brokerd's socket, of a version that speaks this protocol?";
        default:
                return NULL;
        }
}

void failure_hint(const broker_error *err, const CallContext *ctx, char *buf, size_t size)
{
        char tmp[256];
        const char *a = advice(err, ctx, tmp, sizeof(tmp));

        if (a && *a)
                snprintf(buf, size, " (%s)", a);
        else if (size > 0)
                buf[0] = 0;
}

int failure_report(const broker_error *err, const CallContext *ctx)
{
        char hint[512];
        bool named = err->status == BROKER_E_NOT_FOUND && ctx->operand;

        failure_hint(err, ctx, hint, sizeof(hint));
        fprintf(stderr, "brokerctl: %s%s%s%s%s%s\n", err->code, err->code[0] ? ": " : "",
                err->message, named ? ": " : "", named ? ctx->operand : "", hint);
        return exit_code_for_status(err->status);
}
