/* Runs the key store's schedule on the event loop: a CLOCK_REALTIME timer at the next
 * transition, plus a periodic CLOCK_BOOTTIME tick that catches wall-clock jumps the timer
 * would not notice. Every transition is audited, and the published files are rewritten. */
#pragma once

#include "keys/keystore.h"
#include "daemon/server.h"

void key_policy_from_config(const Config *c, KeyPolicy *ret);

/* Applies what is due now (also after a reload changed the policy) and re-arms the timer. */
int key_schedule_run(Server *s);

/* Audits key events, rewrites the published files and re-arms the timer; after an admin
 * rotate or revoke, or a run of the schedule. */
void key_schedule_changed(Server *s, const KeyEvents *ev);

int key_schedule_start(Server *s);
void key_schedule_stop(Server *s);
