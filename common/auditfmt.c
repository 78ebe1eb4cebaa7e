#include "auditfmt.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <string.h>

#include "b64url.h"
#include "json-util.h"
#include "macro.h"

void audit_hash_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX])
{
        unsigned char d[crypto_hash_sha256_BYTES];

        crypto_hash_sha256(d, data, len);
        sodium_bin2hex(out, AUDIT_HASH_HEX, d, sizeof(d));
}

char *audit_statement(const char *type, uint64_t seq, const char *hash, const char *time,
                      const char *key_id)
{
        _cleanup_(json_decrefp) json_t *o =
            json_pack("{s:s, s:s, s:I, s:s, s:s}", "hash", hash, "key_id", key_id, "seq",
                      (json_int_t) seq, "time", time, "type", type);

        return o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
}

int audit_statement_verify(const char *statement, const char *signature_b64,
                           const char *public_key_b64)
{
        unsigned char sig[crypto_sign_BYTES], pk[crypto_sign_PUBLICKEYBYTES];

        if (!statement || !signature_b64 || !public_key_b64 ||
            b64url_decode_exact(signature_b64, sig, sizeof(sig)) < 0 ||
            b64url_decode_exact(public_key_b64, pk, sizeof(pk)) < 0)
                return -EBADMSG;
        return crypto_sign_verify_detached(sig, (const unsigned char *) statement,
                                           strlen(statement), pk) == 0
                   ? 0
                   : -EBADMSG;
}
