/* The one verifier of the grant log, and its one key-trust policy. brokerctl audit verify runs
 * it over a database or an exported file; brokerd runs its checks at start (the signed head)
 * and before pruning (the stretch to delete). It recomputes every hash, follows every link,
 * and checks every signed statement (checkpoints, head, anchor), reporting the first bad seq
 * and what is wrong with it.
 *
 * Key trust: an audit key's signature counts when the key is one the caller vouches for (a
 * pin: its public key, or, where the input names the key's public half, its key id, the RFC
 * 7638 thumbprint of it), or, if the caller allows it, when it is the first key the log names
 * (its pruning anchor's, else its first audit_key record's). brokerctl pins what the auditor
 * passes and trusts the first named key only when nothing is pinned; brokerd pins its own key
 * and trusts the first named one too (a log it continues after its key store was reset).
 *
 * Large inputs are split into chunks verified by parallel threads, each on its own read-only
 * connection; a problem is always reported at the lowest seq, as a one-piece check reports it.
 * Thread-safe: no shared state. */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grantlog/format.h"
#include "grantlog/reader.h"

typedef struct GrantlogTrust {
        const char *const *pins; /* base64url public keys or key ids */
        size_t n_pins;
        bool first_named; /* also trust the first key the log names */
} GrantlogTrust;

/* Whether a key (its id and public half) is trusted, the log's first named key being
 * `first_named_pub` ("" or NULL when it names none yet). */
bool grantlog_trust_accepts(const GrantlogTrust *t, const char *first_named_pub, const char *kid,
                            const char *pub);

typedef enum GrantlogVerdict {
        GRANTLOG_INTACT,
        GRANTLOG_UNREADABLE,   /* could not be read (missing, permissions, stayed locked): no
                                * verdict on the log */
        GRANTLOG_NOT_A_LOG,    /* not a grant log or an export of one */
        GRANTLOG_TAMPERED,     /* a hash, a link or a signature does not hold */
        GRANTLOG_KEY_MISMATCH, /* signed by a key the caller did not vouch for, or whose public
                                * half it did not give */
        GRANTLOG_EMPTY,        /* an export with no records at all */
        GRANTLOG_DAMAGED,      /* a database whose SQLite file does not hold together (a copy
                                * taken while it was written, a damaged disk): its records
                                * cannot be checked; why says what verify saw */
} GrantlogVerdict;

#define GRANTLOG_REPORT_KEYS_MAX 16

typedef struct GrantlogReport {
        GrantlogVerdict verdict;
        uint64_t problem_seq; /* TAMPERED, KEY_MISMATCH */
        char why[512];
        uint64_t n_records, first_seq, last_seq, n_checkpoints, last_checkpoint_seq;
        bool from_anchor; /* a database whose chain starts at its pruning anchor */
        size_t n_keys;    /* the audit keys that sign it, in the order the log names them */
        struct {
                char kid[64], pub[64];
        } keys[GRANTLOG_REPORT_KEYS_MAX];
} GrantlogReport;

typedef struct GrantlogVerifyOptions {
        GrantlogTrust trust;
        unsigned threads; /* 0: one per online CPU for a large input, else this many (<= 16) */
} GrantlogVerifyOptions;

void grantlog_verify_database(const char *path, const GrantlogVerifyOptions *o,
                              GrantlogReport *ret);
/* An exported JSONL file; "-" reads standard input. */
void grantlog_verify_file(const char *path, const GrantlogVerifyOptions *o, GrantlogReport *ret);

/* An audit key as the broker vouches for it. */
typedef struct GrantlogKey {
        char kid[64], pub[64];
} GrantlogKey;

/* brokerd's checks, on its writer's connection, with the keys it vouches for: its own, and,
 * for a log it continues after its key store was reset, those a full verification of the log
 * accepted under the one policy (grantlog_verify_database() with its own key pinned and the
 * first key the log names trusted). The checks take no key from the log itself: whoever can
 * write the database can add a key record, an anchor or a row before the first record.
 * 0, -EBADMSG (the log does not verify; why says how), -ENOKEY (signed by a key not among
 * `keys`: verify the log in full to decide), or -EIO (it could not be read).
 *
 * The signed head must sign the last record (or the anchor of an empty pruned log): a log cut
 * below its head, or a head re-signed to match a cut tail, is refused. */
int grantlog_verify_head(sqlite3 *db, const GrantlogKey *keys, size_t n_keys, uint64_t last_seq,
                         const char *last_hash, char *why, size_t whylen);
/* Where the remaining chain starts: genesis for a log that starts at seq 1, else its pruning
 * anchor's hash, whose signature must hold and to which the first record must link. */
int grantlog_verify_start(sqlite3 *db, const GrantlogKey *keys, size_t n_keys,
                          char start_hash[GRANTLOG_HASH_HEX], char *why, size_t whylen);
/* Records first..upto, linked from start_hash, must verify up to the first checkpoint after
 * them, which must be signed by one of `keys`; or, with no checkpoint yet, reach the record the
 * writer committed last (committed_seq, committed_hash). On -EBADMSG, why says what is wrong. */
int grantlog_verify_stretch(sqlite3 *db, const GrantlogKey *keys, size_t n_keys, uint64_t first,
                            uint64_t upto, const char *start_hash, uint64_t committed_seq,
                            const char *committed_hash, char *why, size_t whylen);
