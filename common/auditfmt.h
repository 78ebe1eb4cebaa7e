/* The tamper-evident format of the grant log, shared by the daemon (which writes it) and
 * brokerctl (which verifies it).
 *
 * Record: one JSON object. Its canonical form is RFC 8785 (JCS): members sorted, no
 * whitespace; every record string is valid UTF-8 without control characters and every number
 * an integer, so jansson's JSON_SORT_KEYS|JSON_COMPACT output is exactly JCS. The canonical
 * form holds every member but "hash", including "seq" and "prev_hash"; then
 *     hash = hex(SHA-256(canonical form))
 * and each record's prev_hash is the previous record's hash. The first record of a log has
 * prev_hash AUDIT_GENESIS (64 zeros). An exported line is the canonical form with
 * ,"hash":"..." added before its closing brace.
 *
 * Signed statement: the audit key (Ed25519) signs the canonical JSON of
 *     {"hash": H, "key_id": K, "seq": N, "time": T, "type": "checkpoint"|"head"|"anchor"}
 * where (N, H) is a record's seq and hash and T an RFC 3339 time. The signature is base64url.
 * A checkpoint is a record of its own in the chain, signing the record before it; the head
 * (signing the last record) and the anchor (signing the last pruned record) live beside the
 * records in the database. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define AUDIT_GENESIS  "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_HASH_HEX 65 /* 64 hex digits and NUL */

/* hex(SHA-256(data)) into out. */
void audit_hash_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX]);

/* The canonical bytes of a signed statement (malloc'd), or NULL when out of memory. */
char *audit_statement(const char *type, uint64_t seq, const char *hash, const char *time,
                      const char *key_id);

/* Verifies a base64url Ed25519 signature (public key given as base64url, as in the log's
 * audit_key records) over a statement. 0 when valid, -EBADMSG otherwise. */
int audit_statement_verify(const char *statement, const char *signature_b64,
                           const char *public_key_b64);
