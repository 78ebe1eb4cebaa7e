#include "daemon/server.h"

#include <signal.h>
#include <sodium.h>
#include <systemd/sd-daemon.h>

#include "daemon/preflight.h"
#include "daemon/privileges.h"
#include "daemon/server-private.h"
#include "grantlog/record.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "timeutil.h"
#include "transport/listener.h"

void server_submit(Server *s, json_t *rec, int64_t time_ms)
{
        if (!rec) {
                log_oom();
                return;
        }
        /* Lifecycle records are not waited for; the grant log keeps and retries them. */
        (void) grantlog_store_submit(s->log, rec, time_ms, false, NULL, NULL);
}

void server_record_by(Server *s, const char *event, const GrantlogOrigin *origin, json_t *fields)
{
        int64_t now = now_unix_ms();

        server_submit(s, grantlog_record_lifecycle(event, now, origin, fields), now);
}

void server_record(Server *s, const char *event, json_t *fields)
{
        server_record_by(s, event, NULL, fields);
}

static const int handled_signals[] = {SIGTERM, SIGINT, SIGHUP};

static void nop_signal_handler(int sig) {}

static int on_sigterm(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata)
{
        Server *s = userdata;

        log_struct(LOG_INFO, 0, &(LogFields){.message_id = MESSAGE_ID_STOPPING},
                   "Received %s, shutting down", strsignal((int) si->ssi_signo));
        notify_stopping(s);
        s->stopping = true;
        return sd_event_exit(s->event, 0);
}

static int on_sighup(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata)
{
        /* The kernel's word on who sent it (systemctl reload: systemd's kill, or its own pid). */
        GrantlogOrigin origin = {
            .signal = "SIGHUP", .uid = si->ssi_uid, .pid = (pid_t) si->ssi_pid};
        _cleanup_free_ char *errors = NULL;

        (void) server_reload(userdata, &origin, &errors);
        return 0;
}

static void key_policy_from_config(const Config *c, KeyPolicy *ret)
{
        *ret = (KeyPolicy){
            .rotation_period = c->keys.rotation_period,
            .publish_ahead = c->keys.publish_ahead,
            .retention = c->keys.retention,
            .rsa_bits = c->keys.rsa_bits,
        };
        ret->algs[ALG_DEFAULT] = true; /* the default algorithm always has a key */
        for (size_t i = 0; i < c->n_rules; i++)
                ret->algs[c->rules[i].alg] = true;
        /* the JWTs the broker sends upstreams, signed with its published keys too */
        for (size_t i = 0; i < c->n_upstreams; i++) {
                const UpstreamConfig *u = &c->upstreams[i];

                if (u->kind != UPSTREAM_CLIENT_CREDENTIALS)
                        ret->algs[u->subject_token.alg] = true;
                if (u->client_auth == CLIENT_AUTH_PRIVATE_KEY_JWT)
                        ret->algs[u->client_assertion_alg] = true;
        }
}

static KeyServiceSettings key_settings(const Config *c)
{
        KeyServiceSettings s = {.issuer = c->issuer, .publish_directory = c->publish_directory};

        key_policy_from_config(c, &s.policy);
        return s;
}

static TransportLimits transport_limits(const Config *c)
{
        return (TransportLimits){.max_connections = c->limits.max_connections,
                                 .max_connections_per_uid = c->limits.max_connections_per_uid,
                                 .max_connections_per_identity =
                                     c->limits.max_connections_per_identity,
                                 .connect_rate = c->limits.connect_rate,
                                 .connect_burst = c->limits.connect_burst,
                                 .idle_timeout = c->limits.idle_timeout,
                                 .read_timeout = c->limits.read_timeout};
}

/* The grant log signs with the audit key; its private half stays in the key's own memory. */
static int sign_with_audit_key(void *ctx, const void *msg, size_t len, unsigned char sig[64])
{
        unsigned char buf[SIGNATURE_MAX];
        size_t n;
        int r = signing_key_sign(ctx, msg, len, buf, &n);

        if (r < 0)
                return r;
        if (n != 64)
                return -EINVAL;
        memcpy(sig, buf, 64);
        return 0;
}

static int open_grant_log(Server *s, bool new_audit_key)
{
        const Config *c = s->config;
        GrantlogSigner signer = {.sign = sign_with_audit_key, .ctx = s->audit_key};

        snprintf(signer.key_id, sizeof(signer.key_id), "%s", s->audit_key->kid);
        snprintf(signer.public_key, sizeof(signer.public_key), "%s",
                 json_string_value(json_object_get(s->audit_key->jwk, "x")));
        return grantlog_store_open(c->audit_database,
                                   &(GrantlogOptions){
                                       .checkpoint_every = c->audit_checkpoint_every,
                                       .checkpoint_interval_ms = c->audit_checkpoint_interval_ms,
                                       .retention_ms = c->audit_retention_ms,
                                       .new_audit_key = new_audit_key,
                                   },
                                   &signer, &s->log);
}

static SigningKey *active_key(void *ctx, Alg alg)
{
        return keyservice_active(ctx, alg);
}

static int setup_signals(Server *s)
{
        sigset_t mask;
        int r;

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
                return r;
        (void) sd_event_set_watchdog(s->event, true);
        return 0;
}

/* Every check a start makes, made before anything is created: a refused start leaves nothing
 * behind, and names every problem at once (what brokerd --check prints). */
static int check_before_creating(const Config *c)
{
        _cleanup_strv_free_ char **problems = NULL;
        size_t n = 0;
        int r = preflight_run(c, PREFLIGHT_START, &problems, NULL);

        if (r != -EINVAL)
                return r;
        for (char **p = problems; *p; p++, n++)
                log_error("%s: %s", c->path, *p);
        log_error("Refusing to start: %zu problem%s above; nothing was created", n,
                  n == 1 ? "" : "s");
        return r;
}

int server_new(Config *config, Server **ret)
{
        KeyStore *store = NULL;
        bool audit_key_created = false;
        Server *s;
        int r;

        s = calloc(1, sizeof(Server));
        if (!s) {
                config_unref(config);
                return -ENOMEM;
        }
        s->config = config;
        s->started_at = now_unix_sec();

        r = sd_event_default(&s->event);
        if (r >= 0)
                r = setup_signals(s);
        if (r >= 0)
                r = mailbox_new(s->event, &s->mailbox);
        if (r >= 0)
                r = check_before_creating(config);
        if (r >= 0)
                r = preflight_make_dirs(config);
        if (r >= 0)
                r = master_key_load(config->master_key_file, &s->master);
        /* What needs root is done: from here on the configured `user`, before any thread. */
        if (r >= 0)
                r = privileges_drop(config);
        if (r >= 0)
                r = signer_init();
        if (r >= 0)
                r = keystore_open(config->state_directory, s->master, &store);
        if (r >= 0)
                r = keystore_audit_key(store, now_unix_sec(), &s->audit_key, &audit_key_created);
        if (r >= 0)
                r = open_grant_log(s, audit_key_created);
        if (r < 0) {
                keystore_close(store);
                goto fail;
        }
        if (audit_key_created)
                log_notice("Created audit key %s; pin it when verifying exports",
                           s->audit_key->kid);
        /* READY=1 waits for this record's commit: then the grant log is known to write. */
        notify_record_started(s);

        /* After the grant log: the keys made or rotated now are recorded too. */
        GrantSink sink = grantlog_store_sink(s->log);
        KeyServiceSettings ks = key_settings(config);
        r = keyservice_new(s->event, store, &sink, &ks, &s->keys);
        if (r < 0) {
                keystore_close(store);
                goto fail;
        }
        /* keys.db's master key was checked by the key store */
        r = secretstore_open(config->state_directory, s->master, &s->secrets);
        if (r >= 0)
                r = federation_new(&(FederationDeps){.event = s->event,
                                                     .mailbox = s->mailbox,
                                                     .keys = {.active = active_key, .ctx = s->keys},
                                                     .secrets = s->secrets},
                                   config, &s->federation);
        if (r >= 0)
                r = workers_new(0, &s->workers);
        if (r >= 0)
                r = workers_attach_event(s->workers, s->event);
        if (r >= 0)
                r = issuance_new(&(IssuanceDeps){.event = s->event,
                                                 .workers = s->workers,
                                                 .mailbox = s->mailbox,
                                                 .keys = {.active = active_key, .ctx = s->keys},
                                                 .sink = sink,
                                                 .federation = s->federation},
                                 config, &s->issuance);
        TransportLimits limits = transport_limits(config);
        if (r >= 0)
                r = transport_new(s->event, s->workers, s->mailbox, &limits, &s->transport);
        if (r >= 0)
                r = transport_listen(s->transport, config->workload_socket, "workload", false,
                                     workload_handle, s);
        if (r >= 0)
                r = transport_listen(s->transport, config->admin_socket, "admin", true,
                                     admin_handle, s);
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

        /* READY=1 and "Serving workloads on ..." once the "started" record is committed. */
        (void) notify_start(s);
        r = sd_event_loop(s->event);

        /* Stop taking requests, let the ones already taken reach their commit and answer, then
         * record that we stopped. */
        transport_stop_accepting(s->transport);
        transport_shutdown(s->transport);
        /* Requests being decided still reach the grant log before "stopped" does; so do the
         * ones waiting for an upstream, answered now. */
        workers_drain(s->workers);
        federation_stop(s->federation);
        server_record(s, "stopped", json_pack("{s:i}", "pid", (int) getpid()));
        grantlog_store_drain(s->log);
        (void) mailbox_dispatch(s->mailbox);
        transport_close_all(s->transport);
        return r;
}

/* A failed reload is recorded, with the first problem (the log line has them all). */
static void record_reload_failed(Server *s, const GrantlogOrigin *origin, const char *error)
{
        int64_t now = now_unix_ms();

        server_submit(s, grantlog_record_config_reload_failed(now, origin, s->config->path, error),
                      now);
}

int server_reload(Server *s, const GrantlogOrigin *origin, char **ret_errors)
{
        _cleanup_(config_unrefp) Config *c = NULL;
        _cleanup_strv_free_ char **errors = NULL;
        _cleanup_free_ char *why = NULL;
        const char *changed;
        int64_t now;
        int r;

        notify_reloading(s);
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
                log_struct(LOG_ERR, 0, &(LogFields){.message_id = MESSAGE_ID_RELOAD_FAILED},
                           "Reload failed; keeping the running configuration:\n%s",
                           *ret_errors ? *ret_errors : "");
                record_reload_failed(s, origin, errors ? errors[0] : strerror(-r));
                notify_reloaded(s);
                return r == -ENOMEM ? r : -EINVAL;
        }
        changed = config_restart_only_change(s->config, c);
        if (changed) {
                if (asprintf(ret_errors, "%s: %s: cannot change on reload; restart brokerd",
                             s->config->path, changed) < 0)
                        *ret_errors = NULL;
                log_struct(LOG_ERR, 0, &(LogFields){.message_id = MESSAGE_ID_RELOAD_FAILED},
                           "Reload refused: %s", *ret_errors ? *ret_errors : changed);
                if (asprintf(&why, "%s: cannot change on reload; restart brokerd", changed) < 0)
                        why = NULL;
                record_reload_failed(s, origin, why ? why : changed);
                notify_reloaded(s);
                return -EINVAL;
        }

        config_unref(s->config);
        s->config = TAKE_PTR(c);
        issuance_set_config(s->issuance, s->config);
        federation_set_config(s->federation, s->config);
        TransportLimits limits = transport_limits(s->config);
        transport_set_limits(s->transport, &limits);
        log_struct(LOG_INFO, 0, &(LogFields){.message_id = MESSAGE_ID_RELOADED},
                   "Configuration reloaded from %s (%zu rules)", s->config->path,
                   s->config->n_rules);
        now = now_unix_ms();
        server_submit(s,
                      grantlog_record_config_reloaded(now, origin, s->config->path,
                                                      s->config->sha256, s->config->n_rules),
                      now);
        /* Rules may now ask for another algorithm, or none for one they used to; the issuer
         * may be new: published again now. */
        KeyServiceSettings ks = key_settings(s->config);
        (void) keyservice_update(s->keys, &ks, origin);
        notify_reloaded(s);
        return 0;
}

void server_free(Server *s)
{
        if (!s)
                return;
        /* Whatever is still in flight finishes and is answered before anything it uses goes:
         * the workers' jobs reach the grant log, whose writer commits them and posts their
         * answers, which the mailbox then runs. */
        workers_free(s->workers);
        federation_free(s->federation);
        grantlog_store_close(s->log);
        if (s->mailbox)
                (void) mailbox_dispatch(s->mailbox);
        transport_free(s->transport);
        issuance_free(s->issuance);
        keyservice_free(s->keys);
        secretstore_close(s->secrets);
        mailbox_free(s->mailbox);
        if (s->audit_key)
                signing_key_unref(s->audit_key);
        master_key_free(s->master);
        notify_done(s);
        sd_event_unref(s->event);
        config_unref(s->config);
        free(s);
}
