/* Error codes of the wire protocol: their names on the wire. */
#include "errors.h"

#include <errno.h>
#include <string.h>

#include "macro.h"

static const char *const error_code_table[_BROKER_ERR_MAX] = {
    [BROKER_ERR_BAD_REQUEST] = "bad_request",   [BROKER_ERR_DENIED] = "denied",
    [BROKER_ERR_RATE_LIMITED] = "rate_limited", [BROKER_ERR_UNAVAILABLE] = "unavailable",
    [BROKER_ERR_NOT_FOUND] = "not_found",       [BROKER_ERR_INTERNAL] = "internal",
};

const char *broker_error_code_to_string(BrokerErrorCode c)
{
        /* The enum may hold any int a caller casts into it. */
        if ((unsigned) c >= ELEMENTSOF(error_code_table))
                return NULL;
        return error_code_table[c];
}

int broker_error_code_from_string(const char *s)
{
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(error_code_table); i++)
                if (strcmp(error_code_table[i], s) == 0)
                        return (int) i;
        return -EINVAL;
}
