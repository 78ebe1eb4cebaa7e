/* Grant-log verify of a hostile export (common/grantlog/verify.h grantlog_verify_file): the
 * input's first byte is a set of options, the rest the exported file, written to a memfd that
 * the verifier opens by its /proc path (in process, no disk).
 *
 *   bit 0  rechain: each line ending in '}' is a record body; its "prev_hash" is set to the
 *          previous line's hash and its own "hash" appended, as an attacker who can write the
 *          file does. Without it the bytes go in as they are and rarely get past the hashes.
 *   bit 1  verify with one thread and with 2-4 (bits 5-6): both reports must agree, as the
 *          verifier promises ("reported at the lowest seq, as a one-piece check reports it")
 *   bits 2-3  key trust: the first named key (brokerctl's default); a foreign pinned public
 *          key; both; the foreign key pinned by its key id
 */
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "grantlog/format.h"
#include "grantlog/verify.h"

/* RFC 8032's first test public key and its RFC 7638 thumbprint: a key the log never names. */
#define FOREIGN_PUB "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
#define FOREIGN_KID "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"

static const char prev_tag[] = "\"prev_hash\":\"";

static void append(char **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
        if (*len + n + 1 > *cap) {
                *cap = (*len + n + 1) * 2;
                *buf = realloc(*buf, *cap);
                FUZZ_ASSERT(*buf);
        }
        memcpy(*buf + *len, p, n);
        *len += n;
        (*buf)[*len] = '\0';
}

/* Re-links and re-hashes every record line (see bit 0). */
static char *rechain(const uint8_t *data, size_t size, size_t *ret_len)
{
        char prev[GRANTLOG_HASH_HEX] = GRANTLOG_GENESIS, hash[GRANTLOG_HASH_HEX];
        char *out = NULL, *line = malloc(size + 1);
        size_t len = 0, cap = 0;

        FUZZ_ASSERT(line);
        append(&out, &len, &cap, "", 0);
        for (size_t off = 0; off < size;) {
                const uint8_t *nl = memchr(data + off, '\n', size - off);
                size_t n = nl ? (size_t) (nl - (data + off)) : size - off;
                char *at;

                memcpy(line, data + off, n);
                line[n] = '\0';
                off += n + (nl ? 1 : 0);

                at = memmem(line, n, prev_tag, sizeof(prev_tag) - 1);
                if (at && (size_t) (at - line) + sizeof(prev_tag) - 1 + 64 <= n)
                        memcpy(at + sizeof(prev_tag) - 1, prev, 64);
                if (n > 0 && line[n - 1] == '}') {
                        grantlog_hash_hex(line, n, hash);
                        append(&out, &len, &cap, line, n - 1);
                        append(&out, &len, &cap, ",\"hash\":\"", 9);
                        append(&out, &len, &cap, hash, 64);
                        append(&out, &len, &cap, "\"}", 2);
                        memcpy(prev, hash, sizeof(prev));
                } else
                        append(&out, &len, &cap, line, n);
                if (nl)
                        append(&out, &len, &cap, "\n", 1);
        }
        free(line);
        *ret_len = len;
        return out;
}

static void check_report(const GrantlogReport *r)
{
        FUZZ_ASSERT(r->verdict <= GRANTLOG_DAMAGED);
        FUZZ_ASSERT(memchr(r->why, '\0', sizeof(r->why)));
        FUZZ_ASSERT(r->n_keys <= GRANTLOG_REPORT_KEYS_MAX);
        for (size_t i = 0; i < r->n_keys; i++)
                FUZZ_ASSERT(memchr(r->keys[i].kid, '\0', sizeof(r->keys[i].kid)) &&
                            memchr(r->keys[i].pub, '\0', sizeof(r->keys[i].pub)));
        if (r->verdict == GRANTLOG_INTACT) {
                FUZZ_ASSERT(r->n_records > 0 && r->first_seq >= 1 && r->first_seq <= r->last_seq);
                FUZZ_ASSERT(r->last_seq - r->first_seq + 1 == r->n_records);
                FUZZ_ASSERT(r->n_checkpoints <= r->n_records);
                FUZZ_ASSERT(r->why[0] == '\0');
        } else
                FUZZ_ASSERT(r->why[0] != '\0');
}

/* What the unit tests require of a report made with one thread and with several. */
static void check_same(const GrantlogReport *a, const GrantlogReport *b)
{
        FUZZ_ASSERT(a->verdict == b->verdict);
        FUZZ_ASSERT(a->problem_seq == b->problem_seq);
        FUZZ_ASSERT(strcmp(a->why, b->why) == 0);
        FUZZ_ASSERT(a->first_seq == b->first_seq && a->last_seq == b->last_seq);
        if (a->verdict != GRANTLOG_INTACT)
                return;
        FUZZ_ASSERT(a->n_records == b->n_records && a->n_checkpoints == b->n_checkpoints &&
                    a->last_checkpoint_seq == b->last_checkpoint_seq && a->n_keys == b->n_keys);
        for (size_t i = 0; i < a->n_keys; i++)
                FUZZ_ASSERT(strcmp(a->keys[i].kid, b->keys[i].kid) == 0 &&
                            strcmp(a->keys[i].pub, b->keys[i].pub) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static int fd = -1;
        static char path[64];
        static const char *const foreign_pub[] = {FOREIGN_PUB}, *const foreign_kid[] = {FOREIGN_KID};
        GrantlogVerifyOptions o = {.threads = 1};
        GrantlogReport one, many;
        char *text = NULL;
        size_t len;
        uint8_t flags;

        if (size < 1)
                return -1;
        if (fd < 0) {
                fd = memfd_create("export.jsonl", MFD_CLOEXEC);
                FUZZ_ASSERT(fd >= 0);
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        }
        flags = data[0];
        data++, size--;
        if (flags & 1) {
                text = rechain(data, size, &len);
                data = (const uint8_t *) text;
                size = len;
        }
        FUZZ_ASSERT(ftruncate(fd, 0) == 0);
        FUZZ_ASSERT(size == 0 || pwrite(fd, data, size, 0) == (ssize_t) size);
        free(text);

        switch ((flags >> 2) & 3) {
        case 0:
                o.trust.first_named = true;
                break;
        case 1:
                o.trust = (GrantlogTrust){.pins = foreign_pub, .n_pins = 1};
                break;
        case 2:
                o.trust = (GrantlogTrust){.pins = foreign_pub, .n_pins = 1, .first_named = true};
                break;
        default:
                o.trust = (GrantlogTrust){.pins = foreign_kid, .n_pins = 1};
        }

        memset(&one, 0xa5, sizeof(one));
        grantlog_verify_file(path, &o, &one);
        check_report(&one);
        if (flags & 2) {
                o.threads = 2 + ((flags >> 5) & 3) % 3;
                memset(&many, 0x5a, sizeof(many));
                grantlog_verify_file(path, &o, &many);
                check_report(&many);
                check_same(&one, &many);
        }
        return 0;
}
