#include "federation/breaker.h"

bool breaker_allow(Breaker *b, int64_t now_ms, bool *ret_probe)
{
        *ret_probe = false;
        if (b->state == BREAKER_OPEN && now_ms >= b->open_until_ms)
                b->state = BREAKER_HALF_OPEN;
        switch (b->state) {
        case BREAKER_CLOSED:
                return true;
        case BREAKER_HALF_OPEN:
                if (b->probe_running)
                        return false;
                b->probe_running = true;
                *ret_probe = true;
                return true;
        default:
                return false;
        }
}

void breaker_probe_abandoned(Breaker *b)
{
        b->probe_running = false;
}

void breaker_success(Breaker *b)
{
        *b = (Breaker){.state = BREAKER_CLOSED};
}

void breaker_failure(Breaker *b, int64_t now_ms, uint64_t threshold, int64_t open_for_ms)
{
        b->failures++;
        b->probe_running = false;
        /* A failed probe opens it again at once; otherwise the threshold decides. */
        if (b->state == BREAKER_HALF_OPEN || b->state == BREAKER_OPEN ||
            b->failures >= threshold) {
                b->state = BREAKER_OPEN;
                b->open_until_ms = now_ms + open_for_ms;
        }
}

const char *breaker_state_name(const Breaker *b, int64_t now_ms)
{
        if (b->state != BREAKER_CLOSED)
                return "open";
        return b->failures > 0 ? "failing" : "ok";
}
