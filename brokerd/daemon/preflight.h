/* What a start checks before it creates anything, and all that `brokerd --check` runs: every
 * path the daemon reads, makes or binds (the state, audit and publish directories, the audit
 * database's files, the master key, the sockets and their locks), the master key against the
 * key store it sealed, and, for --check, the kernel. Every problem is found, not just the first,
 * each as one line "KEY: what is wrong" naming the configuration key, the path, what was found
 * and what is wanted. Nothing is created, changed or logged, so a start that is refused, like
 * a check, leaves the file system as it was.
 *
 * preflight_make_dirs() then makes the directories from the same table, checking each again
 * (whatever changed meanwhile is refused there). Event loop thread (or before it). */
#pragma once

#include "policy/config.h"

typedef enum PreflightMode {
        /* brokerd --check: the kernel too, and warnings about publishing; a held socket lock is
         * fine (the running daemon holds it while its next configuration is checked). */
        PREFLIGHT_CHECK,
        /* A start: a held socket lock is a problem (another brokerd serves that socket). */
        PREFLIGHT_START,
} PreflightMode;

/* 0 when nothing stops a start; -EINVAL with *ret_problems; -ENOMEM. With ret_warnings (--check),
 * what will not stop a start but will fail once it runs (publishing to a read-only or unsafe
 * place). Both NULL-terminated lists or NULL; strv_free(). */
int preflight_run(const Config *c, PreflightMode mode, char ***ret_problems, char ***ret_warnings);

/* Makes the state, audit and publish directories that are missing (each with its mode, ours,
 * mkdir -p) and checks them and the audit database's files as preflight_run() did. Logs the
 * first problem. */
int preflight_make_dirs(const Config *c);
