#include "daemon/server.h"

#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "transport/conn.h"
#include "daemon/keyschedule.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "pathsafe.h"
#include "timeutil.h"

/* File descriptors beyond the connection limit: listeners, databases, pidfds, the reserve. */
#define FD_HEADROOM 64u

void server_audit_event(Server *s, const char *event, json_t *fields)
{
        _cleanup_(json_decrefp) json_t *f = fields;
        int64_t now = now_unix_ms();
        json_t *rec = audit_record_new(event, now);

        if (!rec || (f && json_object_update(rec, f) < 0)) {
                json_decref(rec);
                log_oom();
                return;
        }
        /* Lifecycle events are not waited for; a failure is logged by the writer. */
        (void) audit_submit(s->audit, rec, now, NULL, NULL);
}

/* Each connection holds a socket and a pidfd. */
static void raise_fd_limit(uint64_t max_connections)
{
        struct rlimit rl;
        rlim_t want = (rlim_t) (max_connections * 2 + FD_HEADROOM);

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
                return;
        rl.rlim_cur = MIN(want, rl.rlim_max);
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
                log_warning("File descriptor limit %llu is below the %llu that %llu connections "
                            "need; connections beyond it are refused",
                            (unsigned long long) rl.rlim_cur, (unsigned long long) want,
                            (unsigned long long) max_connections);
}

static const int handled_signals[] = {SIGTERM, SIGINT, SIGHUP};

static void nop_signal_handler(int sig) {}

static int on_sigterm(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata)
{
        Server *s = userdata;

        log_info("Received %s, shutting down", strsignal((int) si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1");
        s->stopping = true;
        return sd_event_exit(s->event, 0);
}

static int on_sighup(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata)
{
        _cleanup_free_ char *errors = NULL;

        (void) server_reload(userdata, &errors);
        return 0;
}

static int make_state_dirs(const Config *c)
{
        _cleanup_free_ char *db_dir = strdup(c->audit_database);
        char err[512];
        int r;

        if (!db_dir)
                return -ENOMEM;
        r = path_make_dir(c->state_directory, 0700, true, false, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Unsafe state_directory: %s", err);
        r = path_make_dir(dirname(db_dir), 0700, false, false, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Unsafe directory for audit.database: %s", err);
        /* Checked here, before any key is made: relying parties trust what lies there. */
        if (c->publish_directory) {
                r = path_make_dir(c->publish_directory, 0755, false, false, err, sizeof(err));
                if (r < 0)
                        return log_error_errno(r, "Unsafe publish_directory: %s", err);
        }
        return 0;
}

static int open_listeners(Server *s)
{
        int r;

        r = listener_open(&s->workload, s->config->workload_socket, "workload", 0666, false, true);
        if (r < 0)
                return r;
        r = listener_open(&s->admin, s->config->admin_socket, "admin", 0600, true, false);
        if (r < 0)
                return r;
        s->workload.userdata = s->admin.userdata = s;
        r = sd_event_add_io(s->event, &s->workload.source, s->workload.fd, EPOLLIN,
                            conn_on_listener, &s->workload);
        if (r >= 0)
                r = sd_event_add_io(s->event, &s->admin.source, s->admin.fd, EPOLLIN,
                                    conn_on_listener, &s->admin);
        if (r < 0)
                return log_error_errno(r, "Cannot watch listening sockets: %m");
        return 0;
}

int server_new(Config *config, Server **ret)
{
        _cleanup_(signing_key_unrefp) SigningKey *audit_key = NULL;
        bool audit_key_created = false;
        sigset_t mask;
        Server *s;
        int r;

        s = calloc(1, sizeof(Server));
        if (!s)
                return -ENOMEM;
        s->config = config;
        s->reserve_fd = -EBADF;
        s->workload = s->admin = (Listener){.fd = -EBADF, .lock_fd = -EBADF};
        s->started_at = now_unix_sec();

        r = sd_event_default(&s->event);
        if (r < 0)
                goto fail;
        /* A real (empty) handler as well as the signalfd: as PID 1 of a container the kernel
         * drops signals whose disposition is still the default. */
        sigemptyset(&mask);
        for (size_t i = 0; i < ELEMENTSOF(handled_signals); i++) {
                (void) sigaction(handled_signals[i],
                                 &(struct sigaction){.sa_handler = nop_signal_handler}, NULL);
                sigaddset(&mask, handled_signals[i]);
        }
        sigprocmask(SIG_BLOCK, &mask, NULL);
        if ((r = sd_event_add_signal(s->event, NULL, SIGTERM, on_sigterm, s)) < 0 ||
            (r = sd_event_add_signal(s->event, NULL, SIGINT, on_sigterm, s)) < 0 ||
            (r = sd_event_add_signal(s->event, NULL, SIGHUP, on_sighup, s)) < 0)
                goto fail;
        (void) sd_event_set_watchdog(s->event, true);

        raise_fd_limit(config->limits.max_connections);
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        r = make_state_dirs(config);
        if (r < 0)
                goto fail;
        r = master_key_load(config->master_key_file, &s->master);
        if (r < 0)
                goto fail;
        r = signer_init();
        if (r < 0)
                goto fail;
        r = keystore_open(config->state_directory, s->master, &s->keys);
        if (r < 0)
                goto fail;
        r = keystore_audit_key(s->keys, now_unix_sec(), &audit_key, &audit_key_created);
        if (r < 0)
                goto fail;
        r = audit_open(config->audit_database,
                       &(AuditLogOptions){
                           .checkpoint_every = config->audit_checkpoint_every,
                           .checkpoint_interval_ms = config->audit_checkpoint_interval_ms,
                           .retention_ms = config->audit_retention_ms,
                       },
                       audit_key, s->event, &s->audit);
        if (r < 0)
                goto fail;
        if (audit_key_created)
                log_notice("Created audit key %s; pin it when verifying exports", audit_key->kid);
        r = ratelimit_new(&s->rate);
        if (r < 0)
                goto fail;
        r = signpool_new(0, &s->signers);
        if (r < 0)
                goto fail;
        r = open_listeners(s);
        if (r < 0)
                goto fail;

        server_audit_event(s, "started", json_pack("{s:i}", "pid", (int) getpid()));
        /* After the audit store: the keys made or rotated now are recorded too. */
        r = key_schedule_start(s);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        server_free(s);
        return r;
}

int server_run(Server *s)
{
        int r;

        (void) sd_notifyf(false, "READY=1\nSTATUS=Serving %s", s->config->workload_socket);
        log_info("Serving workloads on %s, admin on %s", s->config->workload_socket,
                 s->config->admin_socket);
        r = sd_event_loop(s->event);

        /* Stop taking requests, let the ones already decided reach their commit and answer,
         * then record that we stopped. */
        s->workload.source = sd_event_source_disable_unref(s->workload.source);
        s->admin.source = sd_event_source_disable_unref(s->admin.source);
        conn_shutdown_all(s);
        /* Tokens being signed still reach the audit queue before "stopped" does. */
        signpool_drain(s->signers);
        server_audit_event(s, "stopped", json_pack("{s:i}", "pid", (int) getpid()));
        audit_drain(s->audit);
        conn_close_all(s);
        return r;
}

int server_reload(Server *s, char **ret_errors)
{
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_strv_free_ char **errors = NULL;
        const char *changed;
        int r;

        (void) sd_notify(false, "RELOADING=1");
        r = config_load(s->config->path, &c, &errors);
        if (r < 0) {
                size_t len = 0;
                FILE *f = open_memstream(ret_errors, &len);
                if (f) {
                        if (errors)
                                for (char **e = errors; *e; e++)
                                        fprintf(f, "%s%s: %s", e == errors ? "" : "\n",
                                                s->config->path, *e);
                        else
                                fprintf(f, "%s: %s", s->config->path, strerror(-r));
                        fclose(f);
                }
                log_error("Reload failed; keeping the running configuration:\n%s",
                          *ret_errors ? *ret_errors : "");
                (void) sd_notify(false, "READY=1");
                return r == -ENOMEM ? r : -EINVAL;
        }
        changed = config_restart_only_change(s->config, c);
        if (changed) {
                if (asprintf(ret_errors, "%s: %s: cannot change on reload; restart brokerd",
                             s->config->path, changed) < 0)
                        *ret_errors = NULL;
                log_error("Reload refused: %s", *ret_errors ? *ret_errors : changed);
                (void) sd_notify(false, "READY=1");
                return -EINVAL;
        }

        config_free(s->config);
        s->config = TAKE_PTR(c);
        log_info("Configuration reloaded from %s (%zu rules)", s->config->path, s->config->n_rules);
        server_audit_event(s, "config_reloaded",
                           json_pack("{s:s, s:I}", "config", s->config->path, "rules",
                                     (json_int_t) s->config->n_rules));
        /* Rules may now ask for another algorithm, or none for one they used to. */
        (void) key_schedule_run(s);
        (void) sd_notify(false, "READY=1");
        return 0;
}

void server_free(Server *s)
{
        if (!s)
                return;
        conn_close_all(s);
        signpool_free(s->signers);
        key_schedule_stop(s);
        listener_close(&s->workload);
        listener_close(&s->admin);
        audit_close(s->audit);
        keystore_close(s->keys);
        master_key_free(s->master);
        ratelimit_free(s->rate);
        uid_counter_done(&s->uids);
        if (s->reserve_fd >= 0)
                close(s->reserve_fd);
        sd_event_unref(s->event);
        config_free(s->config);
        free(s);
}
