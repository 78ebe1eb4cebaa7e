/* AWS STS's wire for the aws_sts preset: AssumeRoleWithWebIdentity's answer, an XML document
 * (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html,
 * errors as https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html), read with
 * libxml2, and the RoleSessionName made from the caller. No I/O: federation.c sends the form
 * and hands the answer here; the fuzzer calls aws_parse_response() directly.
 *
 * The answer is an OAuthAnswer like any upstream's (the outcome decides denied, retry or
 * unavailable alike): its access_token is the SessionToken, and the aws fields hold the key
 * pair and the expiration as AWS wrote it. Secrets (SecretAccessKey, SessionToken) are copied
 * into secure memory and wiped inside libxml2's tree before it is freed. A document with a DTD
 * is refused (AWS sends none; entities are how XML documents grow). Threads: libxml2 must have
 * been initialised (xmlInitParser, main.c); then any thread. */
#pragma once

#include <stddef.h>

#include "federation/oauth.h"

#define AWS_SESSION_NAME_MAX 64u

/* Reads an STS answer. Returns 0 with *ret filled (whatever the outcome), or -ENOMEM.
 * now_ms: the wall clock, to turn Expiration into expires_in. */
int aws_parse_response(long status, const char *body, size_t len, size_t max_token_bytes,
                       int64_t now_ms, OAuthAnswer *ret);

/* RoleSessionName from the caller's subject: AWS allows [\w+=,.@-]{2,64}; other characters
 * become '-', and a subject that does not fit is cut and ends in 8 hex digits of its SHA-256,
 * so different subjects stay different. */
void aws_session_name(const char *subject, char ret[AWS_SESSION_NAME_MAX + 1]);
