#include "issuance/denials.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "timeutil.h"

/* Open addressing over a dense array of entries, at most half full; rebuilt when entries are
 * forgotten (collect), which is the only time they go. */
#define SLOTS (DENY_UIDS_MAX * 2)

typedef struct Tally {
        uint64_t count, below_floor;
        int64_t first_ms, last_ms;
} Tally;

typedef struct Entry {
        uid_t uid;
        int64_t window_end; /* monotonic ms: the budget is whole again from then on */
        uint64_t used;      /* records taken in this window */
        bool due;           /* holds counts of a window that has ended */
        Tally t[_DENY_MAX];
} Entry;

struct DenyLedger {
        pthread_mutex_t lock;
        Entry *entries;
        size_t n;
        uint32_t *slots; /* index + 1 into entries; 0: empty */
        Tally overflow[_DENY_MAX];
        bool closed;
};

int deny_ledger_new(DenyLedger **ret)
{
        DenyLedger *l = calloc(1, sizeof(DenyLedger));

        if (!l)
                return -ENOMEM;
        l->entries = calloc(DENY_UIDS_MAX, sizeof(Entry));
        l->slots = calloc(SLOTS, sizeof(uint32_t));
        if (!l->entries || !l->slots) {
                free(l->entries);
                free(l->slots);
                free(l);
                return -ENOMEM;
        }
        pthread_mutex_init(&l->lock, NULL);
        *ret = l;
        return 0;
}

static void log_unwritten(const Tally *t, DenyReason reason, const char *who)
{
        char first[TIME_RFC3339_MAX], last[TIME_RFC3339_MAX];

        if (t->count == 0)
                return;
        time_format_rfc3339_ms(t->first_ms, first);
        time_format_rfc3339_ms(t->last_ms, last);
        log_struct(LOG_ERR, 0, &(LogFields){.message_id = MESSAGE_ID_AUDIT_RECORD_LOST},
                   "audit record lost (brokerd stopped before it could be written): deny_summary "
                   "of %s, %s, %llu denials from %s to %s",
                   who, deny_reason_to_string(reason), (unsigned long long) t->count, first, last);
}

void deny_ledger_free(DenyLedger *l)
{
        char who[32];

        if (!l)
                return;
        for (size_t i = 0; i < l->n; i++) {
                snprintf(who, sizeof(who), "uid %u", (unsigned) l->entries[i].uid);
                for (int r = 0; r < _DENY_MAX; r++)
                        log_unwritten(&l->entries[i].t[r], r, who);
        }
        for (int r = 0; r < _DENY_MAX; r++)
                log_unwritten(&l->overflow[r], r, "uids beyond the table");
        pthread_mutex_destroy(&l->lock);
        free(l->entries);
        free(l->slots);
        free(l);
}

static size_t slot_of(uid_t uid)
{
        return (size_t) (((uint64_t) uid * 0x9e3779b97f4a7c15ull) >> 32) & (SLOTS - 1);
}

static Entry *find(DenyLedger *l, uid_t uid)
{
        for (size_t s = slot_of(uid);; s = (s + 1) & (SLOTS - 1)) {
                uint32_t i = l->slots[s];
                if (i == 0)
                        return NULL;
                if (l->entries[i - 1].uid == uid)
                        return &l->entries[i - 1];
        }
}

static void index_entry(DenyLedger *l, size_t i)
{
        size_t s = slot_of(l->entries[i].uid);

        while (l->slots[s] != 0)
                s = (s + 1) & (SLOTS - 1);
        l->slots[s] = (uint32_t) i + 1;
}

/* The uid's entry, made if missing; NULL when the table is full. */
static Entry *find_or_add(DenyLedger *l, uid_t uid)
{
        Entry *e = find(l, uid);

        if (e || l->n == DENY_UIDS_MAX)
                return e;
        e = &l->entries[l->n];
        *e = (Entry){.uid = uid};
        index_entry(l, l->n++);
        return e;
}

static void tally_add(Tally *t, uint64_t count, uint64_t below_floor, int64_t first_ms,
                      int64_t last_ms)
{
        if (t->count == 0 || first_ms < t->first_ms)
                t->first_ms = first_ms;
        if (t->count == 0 || last_ms > t->last_ms)
                t->last_ms = last_ms;
        t->count += count;
        t->below_floor += below_floor;
}

static bool has_counts(const Tally *t)
{
        for (int r = 0; r < _DENY_MAX; r++)
                if (t[r].count > 0)
                        return true;
        return false;
}

DenyVerdict deny_ledger_take(DenyLedger *l, uid_t uid, DenyReason reason, int64_t mono_ms,
                             int64_t wall_ms, uint64_t budget, int64_t interval_ms)
{
        DenyVerdict v = DENY_COUNTED;
        Entry *e;

        if (reason <= DENY_NONE || reason >= _DENY_MAX)
                return DENY_RECORD_CLOSED; /* not a denial the ledger knows: recorded as it is */
        pthread_mutex_lock(&l->lock);
        e = l->closed ? NULL : find_or_add(l, uid);
        if (l->closed)
                v = DENY_RECORD_CLOSED;
        else if (!e)
                tally_add(&l->overflow[reason], 1, 0, wall_ms, wall_ms);
        else {
                if (mono_ms >= e->window_end) {
                        /* A new window: what was counted in the last one is due now. */
                        e->due |= has_counts(e->t);
                        e->window_end = mono_ms + interval_ms;
                        e->used = 0;
                }
                if (e->used < budget) {
                        e->used++;
                        v = DENY_RECORD;
                } else
                        tally_add(&e->t[reason], 1, 0, wall_ms, wall_ms);
        }
        pthread_mutex_unlock(&l->lock);
        return v;
}

bool deny_ledger_count_below_floor(DenyLedger *l, uid_t uid, DenyReason reason, int64_t wall_ms)
{
        Entry *e;

        if (reason <= DENY_NONE || reason >= _DENY_MAX)
                return false;
        pthread_mutex_lock(&l->lock);
        if (l->closed) {
                pthread_mutex_unlock(&l->lock);
                return false;
        }
        e = find_or_add(l, uid);
        if (e && e->used > 0)
                e->used--;
        tally_add(e ? &e->t[reason] : &l->overflow[reason], 1, 1, wall_ms, wall_ms);
        pthread_mutex_unlock(&l->lock);
        return true;
}

static void take_tallies(Tally *t, bool uid_known, uid_t uid, DenyTally *out, size_t *n)
{
        for (int r = 0; r < _DENY_MAX; r++) {
                if (t[r].count == 0)
                        continue;
                out[(*n)++] = (DenyTally){.uid_known = uid_known,
                                          .uid = uid,
                                          .reason = r,
                                          .count = t[r].count,
                                          .below_floor = t[r].below_floor,
                                          .first_ms = t[r].first_ms,
                                          .last_ms = t[r].last_ms};
                t[r] = (Tally){};
        }
}

static int collect(DenyLedger *l, int64_t mono_ms, bool all, bool hold, bool close, DenyTally **ret)
{
        DenyTally *out;
        size_t n = 0, kept = 0;

        pthread_mutex_lock(&l->lock);
        out = malloc((l->n + 1) * _DENY_MAX * sizeof(DenyTally));
        if (!out) {
                pthread_mutex_unlock(&l->lock);
                return -ENOMEM;
        }
        l->closed |= close;
        for (size_t i = 0; i < l->n; i++) {
                Entry *e = &l->entries[i];
                bool ended = mono_ms >= e->window_end;

                if (all || (!hold && (ended || e->due))) {
                        take_tallies(e->t, true, e->uid, out, &n);
                        e->due = false;
                }
                /* An ended window with nothing held is forgotten: its budget is whole. */
                if (!ended || has_counts(e->t))
                        l->entries[kept++] = *e;
        }
        if (all || !hold)
                take_tallies(l->overflow, false, 0, out, &n);
        if (kept != l->n) {
                l->n = kept;
                memset(l->slots, 0, SLOTS * sizeof(uint32_t));
                for (size_t i = 0; i < l->n; i++)
                        index_entry(l, i);
        }
        pthread_mutex_unlock(&l->lock);
        if (n == 0) {
                free(out);
                out = NULL;
        }
        *ret = out;
        return (int) n;
}

int deny_ledger_collect(DenyLedger *l, int64_t mono_ms, bool all, bool hold, DenyTally **ret)
{
        return collect(l, mono_ms, all, hold, false, ret);
}

int deny_ledger_close(DenyLedger *l, DenyTally **ret)
{
        return collect(l, INT64_MAX, true, false, true, ret);
}

void deny_ledger_restore(DenyLedger *l, const DenyTally *t)
{
        Entry *e;

        pthread_mutex_lock(&l->lock);
        e = t->uid_known ? find_or_add(l, t->uid) : NULL;
        if (e)
                e->due = true;
        tally_add(e ? &e->t[t->reason] : &l->overflow[t->reason], t->count, t->below_floor,
                  t->first_ms, t->last_ms);
        pthread_mutex_unlock(&l->lock);
}

bool deny_ledger_busy(DenyLedger *l)
{
        bool busy;

        pthread_mutex_lock(&l->lock);
        busy = l->n > 0 || has_counts(l->overflow);
        pthread_mutex_unlock(&l->lock);
        return busy;
}
