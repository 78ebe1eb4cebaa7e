/* brokerctl's exit codes (the contract, README "Exit codes") and the one map from libbroker's
 * results to them. Every brokerctl command, the audit tools and the agent mode included, exits
 * through these. */
#pragma once

enum {
        EXIT_OK = 0,
        EXIT_USAGE = 1,        /* usage error, bad input or bad_request: fix the command */
        EXIT_UNAVAILABLE = 2,  /* broker unreachable or unavailable: retry later */
        EXIT_DENIED = 3,       /* denied: final until the policy or the caller changes */
        EXIT_OTHER = 4,        /* anything else; for the audit tools: the log does not verify */
        EXIT_RATE_LIMITED = 5, /* rate_limited: retry later, with backoff */
};

/* The exit code for a libbroker result (BROKER_OK or a BROKER_E_* value). */
int exit_code_for_status(int broker_status);
