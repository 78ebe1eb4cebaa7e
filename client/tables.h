/* What brokerctl prints for the broker's replies that are not printed as they come: the JWKS
 * alone, and the admin `status` and `keys` as readable tables or, with --json, as JSON.
 *
 * The JSON of `status --json` and `keys --json` is the protocol reply less its envelope (`ok`
 * and `id`): the fields PROTOCOL.md §8 documents, unchanged, so that scripts read the names they
 * would read on the socket. The tables show the same fields under the same names, times
 * (integers under a name ending in `_at`, or `last_success`) as RFC 3339 UTC, 0 or null as
 * "-". */
#pragma once

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/* "2026-11-22T02:51:07Z" for unix seconds; "-" for 0 and for what gmtime cannot show. */
#define TIME_TEXT_MAX 32
void time_text(int64_t unix_sec, char buf[TIME_TEXT_MAX]);

/* Removes the envelope's members from a reply object. */
void reply_strip_envelope(json_t *reply);

/* Each prints to `f` and returns 0, or -EBADMSG when the reply lacks what it must hold. */
int print_jwks(json_t *reply, FILE *f);
int print_status_table(json_t *reply, FILE *f);
int print_keys_table(json_t *reply, FILE *f);
