/* Error codes of the wire protocol. */
#pragma once

typedef enum BrokerErrorCode {
        BROKER_ERR_BAD_REQUEST,
        BROKER_ERR_DENIED,
        BROKER_ERR_RATE_LIMITED,
        BROKER_ERR_UNAVAILABLE,
        BROKER_ERR_NOT_FOUND,
        BROKER_ERR_INTERNAL,
        _BROKER_ERR_MAX,
} BrokerErrorCode;

/* "bad_request", "denied", ... */
const char *broker_error_code_to_string(BrokerErrorCode c);
/* Returns the code, or -EINVAL for a string that is not one of the protocol's codes. */
int broker_error_code_from_string(const char *s);
