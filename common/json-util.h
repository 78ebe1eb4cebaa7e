/* jansson helpers shared by the protocol code and its users.
 *
 * json_decrefp() — the cleanup helper for `_cleanup_(json_decrefp) json_t *j = NULL;` — is not
 * defined here: jansson >= 2.9 already ships it in <jansson.h> (with the same signature,
 * `static inline void json_decrefp(json_t **j)`), and a second definition would not compile.
 * Include this header rather than <jansson.h> to get a clear error on an older jansson. */
#pragma once

#include <jansson.h>

#if JANSSON_VERSION_HEX < 0x020900
#error "jansson >= 2.9 is required (json_decrefp, JSON_REJECT_DUPLICATES)"
#endif
