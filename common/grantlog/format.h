/* The grant log's record format: canonical form, hash chain and signed statements. Shared by
 * the writer (brokerd), the verifier and the exporter (brokerctl); nothing outside
 * common/grantlog/ knows it.
 *
 * Record: one JSON object. Its canonical form is RFC 8785 (JCS): members sorted, no
 * whitespace; every record string is valid UTF-8 without control characters and every number
 * an integer, so jansson's JSON_SORT_KEYS|JSON_COMPACT output is exactly JCS. The canonical
 * form holds every member but "hash", including "seq" and "prev_hash"; then
 *     hash = hex(SHA-256(canonical form))
 * and each record's prev_hash is the previous record's hash. The first record of a log has
 * prev_hash GRANTLOG_GENESIS (64 zeros). An exported line is the canonical form with
 * ,"hash":"..." added before its closing brace.
 *
 * Signed statement: the audit key (Ed25519) signs the canonical JSON of
 *     {"hash": H, "key_id": K, "seq": N, "time": T, "type": "checkpoint"|"head"|"anchor"}
 * where (N, H) is a record's seq and hash and T an RFC 3339 time. The signature is base64url.
 * A checkpoint is a record of its own in the chain, signing the record before it; the head
 * (signing the last record) and the anchor (signing the last pruned record) live beside the
 * records in the database.
 *
 * Errors are -errno. Every function is thread-safe (no shared state). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GRANTLOG_GENESIS  "0000000000000000000000000000000000000000000000000000000000000000"
#define GRANTLOG_HASH_HEX 65 /* 64 hex digits and NUL */
#define GRANTLOG_SIG_B64  87 /* an Ed25519 signature in base64url, and NUL */
#define GRANTLOG_KEY_B64  44 /* an Ed25519 public key in base64url, and NUL */

/* hex(SHA-256(data)) into out. */
void grantlog_hash_hex(const void *data, size_t len, char out[GRANTLOG_HASH_HEX]);

/* The canonical bytes of a signed statement (malloc'd), or NULL when out of memory. */
char *grantlog_statement(const char *type, uint64_t seq, const char *hash, const char *time,
                         const char *key_id);

/* Verifies a base64url Ed25519 signature (public key given as base64url, as in the log's
 * audit_key records) over a statement. 0 when valid, -EBADMSG otherwise. */
int grantlog_statement_verify(const char *statement, const char *signature_b64,
                              const char *public_key_b64);

/* Who signs the log's statements: the audit key's id and public half, and a function that
 * signs with its private half, which never enters the grant log's code. `sign` must be
 * thread-safe; it writes a 64-byte Ed25519 signature. */
typedef struct GrantlogSigner {
        char key_id[64];
        char public_key[GRANTLOG_KEY_B64];
        int (*sign)(void *ctx, const void *msg, size_t len, unsigned char sig[64]);
        void *ctx;
} GrantlogSigner;

/* Signs a statement; base64url into sig_b64. */
int grantlog_sign_statement(const GrantlogSigner *s, const char *type, uint64_t seq,
                            const char *hash, const char *time, char sig_b64[GRANTLOG_SIG_B64]);

/* A record in its canonical form but for "seq" and "prev_hash", which hold placeholders of
 * fixed place: made by the thread that submits it, so the writer, whose time is the commit's,
 * only patches in two values, hashes and inserts. */
typedef struct GrantlogEntry {
        char *text;
        size_t len;
        size_t prev_at;         /* offset of the 64 placeholder hex digits */
        size_t seq_at, seq_len; /* offset and length of the placeholder number */
        char event[32];
        int64_t time_ms;
} GrantlogEntry;

/* `rec`: an object with "time", "event" and the event's fields (no "seq"/"prev_hash"; they
 * are added to it). -EINVAL for a record without a short "event". */
int grantlog_entry_prepare(json_t *rec, int64_t time_ms, GrantlogEntry *ret);
void grantlog_entry_done(GrantlogEntry *e);

/* The entry's canonical form with its seq and prev_hash in place (malloc'd, *ret_len bytes,
 * NUL-terminated), and its hash. */
int grantlog_entry_render(const GrantlogEntry *e, uint64_t seq, const char *prev_hash, char **ret,
                          size_t *ret_len, char hash[GRANTLOG_HASH_HEX]);

/* An exported line: the canonical record with ,"hash":"<64 hex>"} at its end. Writes one
 * (with its newline), or cuts one (in place, without its newline) into the canonical record
 * and the hash; false when the line does not end that way. */
void grantlog_line_write(FILE *out, const char *body, size_t len, const char *hash);
bool grantlog_line_split(char *line, size_t len, char **ret_hash);
