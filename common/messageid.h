/* The journal's MESSAGE_ID of each kind of event brokerd logs (`journalctl MESSAGE_ID=...`).
 * Fixed 128-bit ids, made once with `systemd-id128 new`: part of the contract, never changed or
 * reused for another kind. */
#pragma once

#include <string.h>

#define MESSAGE_ID_STARTED             "4b17ad67f73e4fe99af061d3a9b13e43" /* serving */
#define MESSAGE_ID_STOPPING            "50d9a7c929f44abcb1fa502423852d51" /* signal received */
#define MESSAGE_ID_RELOADED            "6de3d748c2ea441087bbaf4e91d02773"
#define MESSAGE_ID_RELOAD_FAILED       "83a0b4f99e394ae9a9f0856c17a53761" /* old config kept */
#define MESSAGE_ID_DENY_SUMMARY        "19dce0ecf2c0449995dc54e336271427" /* denials counted */
#define MESSAGE_ID_KEY_CREATED         "7efa286009954e65982e0a4bea5fb5b3"
#define MESSAGE_ID_KEY_ROTATED         "ea5c282575414d10b516fc05259c83c7"
#define MESSAGE_ID_KEY_RETIRED         "f72f91dd20fa4cad90ba6380c4112c2d"
#define MESSAGE_ID_KEY_REVOKED         "291e984728f347348b2a15550e876f38"
#define MESSAGE_ID_KEY_REMOVED         "554fc53cc1984fd1bbaf063b9bc4ac86"
#define MESSAGE_ID_UPSTREAM_FAILURE    "6b5cd6d3996a425e844e5531c2a4f092"
#define MESSAGE_ID_AUDIT_FAILURE       "997e66b7d62846cc83a65fa30288c145" /* requests refused */
#define MESSAGE_ID_AUDIT_RECOVERED     "346cc7ef587e44e1ab9fcd5d2b53f24c"
#define MESSAGE_ID_AUDIT_RECORD_LOST   "1d09569d4f8847a7993c36e1b9778ee8"
#define MESSAGE_ID_CALLER_UNIDENTIFIED "62204304d0484da2a4084aa07a05df9f"
#define MESSAGE_ID_CONNECTION_REFUSED  "0ffcf7d9dcd74fbb866a44ce45b69393" /* out of fds */
#define MESSAGE_ID_PRIVILEGES_DROPPED  "e00f9f94cd8e405e8372c7353dbd7319"
#define MESSAGE_ID_PUBLISH_FAILURE     "a9da21e927144406aea553ce6941bdc2"
#define MESSAGE_ID_NO_SIGNING_KEY      "2f00dda84d594b8699188ef800ace55b"

/* The id of a key lifecycle event ("key_rotated", ...), NULL for another name. */
static inline const char *message_id_of_key_event(const char *event)
{
        static const struct {
                const char *event, *id;
        } ids[] = {
            {"key_created", MESSAGE_ID_KEY_CREATED}, {"key_rotated", MESSAGE_ID_KEY_ROTATED},
            {"key_retired", MESSAGE_ID_KEY_RETIRED}, {"key_revoked", MESSAGE_ID_KEY_REVOKED},
            {"key_removed", MESSAGE_ID_KEY_REMOVED},
        };

        for (size_t i = 0; event && i < sizeof(ids) / sizeof(ids[0]); i++)
                if (strcmp(ids[i].event, event) == 0)
                        return ids[i].id;
        return NULL;
}
