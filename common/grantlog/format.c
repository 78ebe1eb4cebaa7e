#include "grantlog/format.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "b64url.h"
#include "json-util.h"
#include "macro.h"

void grantlog_hash_hex(const void *data, size_t len, char out[GRANTLOG_HASH_HEX])
{
        unsigned char d[crypto_hash_sha256_BYTES];

        crypto_hash_sha256(d, data, len);
        sodium_bin2hex(out, GRANTLOG_HASH_HEX, d, sizeof(d));
}

char *grantlog_statement(const char *type, uint64_t seq, const char *hash, const char *time,
                         const char *key_id)
{
        _cleanup_(json_decrefp) json_t *o =
            json_pack("{s:s, s:s, s:I, s:s, s:s}", "hash", hash, "key_id", key_id, "seq",
                      (json_int_t) seq, "time", time, "type", type);

        return o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
}

int grantlog_statement_verify(const char *statement, const char *signature_b64,
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

int grantlog_sign_statement(const GrantlogSigner *s, const char *type, uint64_t seq,
                            const char *hash, const char *time, char sig_b64[GRANTLOG_SIG_B64])
{
        _cleanup_free_ char *st = grantlog_statement(type, seq, hash, time, s->key_id);
        unsigned char sig[crypto_sign_BYTES];
        int r;

        if (!st)
                return -ENOMEM;
        r = s->sign(s->ctx, st, strlen(st), sig);
        if (r < 0)
                return r;
        sodium_bin2base64(sig_b64, GRANTLOG_SIG_B64, sig, sizeof(sig),
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        return 0;
}

/* Placeholders that cannot be mistaken for anything else in a record: a "prev_hash" of 64
 * 'p' (not hex, so no real hash or id), and a "seq" larger than any log will reach. Keys are
 * sorted, and only the top level has these keys, so each appears exactly once. */
#define PREV_PLACEHOLDER "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
#define SEQ_PLACEHOLDER  9007199254740993LL

int grantlog_entry_prepare(json_t *rec, int64_t time_ms, GrantlogEntry *ret)
{
        const char *event = json_string_value(json_object_get(rec, "event"));
        static const char prev_key[] = "\"prev_hash\":\"" PREV_PLACEHOLDER "\"";
        static const char seq_key[] = "\"seq\":9007199254740993";
        GrantlogEntry e = {.time_ms = time_ms};
        char *p, *q;

        if (!event || strlen(event) >= sizeof(e.event))
                return -EINVAL;
        if (json_object_set_new(rec, "prev_hash", json_string(PREV_PLACEHOLDER)) < 0 ||
            json_object_set_new(rec, "seq", json_integer(SEQ_PLACEHOLDER)) < 0)
                return -ENOMEM;
        e.text = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
        if (!e.text)
                return -ENOMEM;
        p = strstr(e.text, prev_key);
        q = strstr(e.text, seq_key);
        if (!p || !q || q < p) {
                free(e.text);
                return -EINVAL;
        }
        e.len = strlen(e.text);
        e.prev_at = (size_t) (p - e.text) + sizeof("\"prev_hash\":\"") - 1;
        e.seq_at = (size_t) (q - e.text) + sizeof("\"seq\":") - 1;
        e.seq_len = sizeof("9007199254740993") - 1;
        snprintf(e.event, sizeof(e.event), "%s", event);
        *ret = e;
        return 0;
}

void grantlog_entry_done(GrantlogEntry *e)
{
        free(e->text);
        e->text = NULL;
}

int grantlog_entry_render(const GrantlogEntry *e, uint64_t seq, const char *prev_hash, char **ret,
                          size_t *ret_len, char hash[GRANTLOG_HASH_HEX])
{
        _cleanup_free_ char *body = malloc(e->len + 24);
        char digits[24];
        size_t len;
        int nd;

        if (!body)
                return -ENOMEM;
        nd = snprintf(digits, sizeof(digits), "%llu", (unsigned long long) seq);
        memcpy(body, e->text, e->prev_at);
        memcpy(body + e->prev_at, prev_hash, 64);
        memcpy(body + e->prev_at + 64, e->text + e->prev_at + 64, e->seq_at - e->prev_at - 64);
        len = e->seq_at;
        memcpy(body + len, digits, (size_t) nd);
        len += (size_t) nd;
        memcpy(body + len, e->text + e->seq_at + e->seq_len, e->len - e->seq_at - e->seq_len);
        len += e->len - e->seq_at - e->seq_len;
        body[len] = 0;
        grantlog_hash_hex(body, len, hash);
        *ret = TAKE_PTR(body);
        *ret_len = len;
        return 0;
}

void grantlog_line_write(FILE *out, const char *body, size_t len, const char *hash)
{
        fwrite(body, 1, len - 1, out);
        fputs(",\"hash\":\"", out);
        fwrite(hash, 1, 64, out);
        fputs("\"}\n", out);
}

bool grantlog_line_split(char *line, size_t len, char **ret_hash)
{
        static const char tag[] = ",\"hash\":\"";
        const size_t tail = sizeof(tag) - 1 + 64 + 2; /* tag, hex, '"', '}' */

        if (len < tail + 2 || line[len - 1] != '}' || line[len - 2] != '"' ||
            memcmp(line + len - tail, tag, sizeof(tag) - 1) != 0)
                return false;
        *ret_hash = line + len - 66;
        line[len - 2] = 0;      /* ends the hash */
        line[len - tail] = '}'; /* the canonical record ends here */
        line[len - tail + 1] = 0;
        return true;
}
