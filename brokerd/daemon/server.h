/* The daemon: wires the parts together and runs them (event loop, signals, reload, orderly
 * shutdown, sd_notify). Opaque; main.c only makes, runs and frees it. */
#pragma once

#include "policy/config.h"

typedef struct Server Server;

/* Takes over `config` (also on failure). */
int server_new(Config *config, Server **ret);
int server_run(Server *s);
void server_free(Server *s);
