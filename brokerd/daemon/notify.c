#include "daemon/notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include "daemon/server-private.h"
#include "grantlog/record.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "messageid.h"
#include "timeutil.h"

/* Writer thread: hands the outcome to the loop. */
static void started_committed(int result, void *userdata)
{
        Server *s = userdata;

        s->notify.started_result = result;
        mailbox_post(s->mailbox, &s->notify.started);
}

static void send_ready(Server *s);

static void on_started(MailboxMsg *m)
{
        Server *s = (Server *) ((char *) m - offsetof(Server, notify.started));

        /* Outside the loop (a start that failed later, shutdown) there is nothing to say. */
        if (!s->notify.armed)
                return;
        if (s->notify.started_result < 0) {
                log_struct(LOG_ERR, s->notify.started_result,
                           &(LogFields){.message_id = MESSAGE_ID_AUDIT_FAILURE},
                           "%s: the grant log cannot be written (%m); not starting: no token may "
                           "leave without its record",
                           s->config->audit_database);
                (void) sd_event_exit(s->event, s->notify.started_result);
                return;
        }
        log_struct(LOG_INFO, 0, &(LogFields){.message_id = MESSAGE_ID_STARTED},
                   "Serving workloads on %s, admin on %s", s->config->workload_socket,
                   s->config->admin_socket);
        send_ready(s);
}

void notify_record_started(Server *s)
{
        int64_t now = now_unix_ms();
        json_t *rec = grantlog_record_lifecycle("started", now, NULL,
                                                json_pack("{s:i}", "pid", (int) getpid()));

        s->notify.started.run = on_started;
        s->notify.started_result = -EIO;
        if (!rec) {
                log_oom();
                mailbox_post(s->mailbox, &s->notify.started);
                return;
        }
        /* With a callback, a failed commit comes back here instead of being kept and retried:
         * a log that cannot take this record cannot take a grant either. */
        if (grantlog_store_submit(s->log, rec, now, false, started_committed, s) < 0)
                mailbox_post(s->mailbox, &s->notify.started);
}

/* "Serving: 3 grants, 1 denials, 2 connections; audit failing; upstream aws open". */
static char *status_line(Server *s)
{
        _cleanup_(json_decrefp) json_t *publish = keyservice_publish_status(s->keys);
        _cleanup_(json_decrefp) json_t *ups = federation_status(s->federation);
        char *buf = NULL;
        size_t len = 0;
        IssuanceStats is;
        TransportStats ts;
        const char *name;
        json_t *u;
        FILE *f;

        issuance_stats(s->issuance, &is);
        transport_stats(s->transport, &ts);
        f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        fprintf(f, "Serving: %llu grants, %llu denials, %llu connections",
                (unsigned long long) is.grants, (unsigned long long) is.denials,
                (unsigned long long) ts.connections);
        if (!grantlog_store_healthy(s->log))
                fputs("; audit failing", f);
        if (json_is_string(json_object_get(publish, "last_error")))
                fputs("; publish failing", f);
        json_object_foreach (ups, name, u) {
                const char *state = json_string_value(json_object_get(u, "state"));

                if (state && strcmp(state, "ok") != 0)
                        fprintf(f, "; upstream %s %s", name, state);
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

void notify_status(Server *s)
{
        _cleanup_free_ char *line = NULL;

        if (!s->notify.ready)
                return;
        line = status_line(s);
        if (!line || (s->notify.status && strcmp(line, s->notify.status) == 0))
                return;
        (void) sd_notifyf(false, "STATUS=%s", line);
        free(s->notify.status);
        s->notify.status = TAKE_PTR(line);
}

static void send_ready(Server *s)
{
        _cleanup_free_ char *line = status_line(s);

        s->notify.ready = true;
        (void) sd_notifyf(false, "READY=1\nSTATUS=%s", line ? line : "Serving");
        free(s->notify.status);
        s->notify.status = TAKE_PTR(line);
}

static int on_status_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
        notify_status(userdata);
        /* A time source fires once per deadline: set the next one. */
        return sd_event_source_set_time_relative(src, NOTIFY_STATUS_INTERVAL_USEC);
}

int notify_start(Server *s)
{
        int r;

        s->notify.armed = true;
        r = sd_event_add_time_relative(s->event, &s->notify.timer, CLOCK_MONOTONIC,
                                       NOTIFY_STATUS_INTERVAL_USEC, 0, on_status_timer, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->notify.timer, SD_EVENT_ON);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the status timer: %m");
        return 0;
}

void notify_reloading(Server *s)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        /* One datagram: Type=notify-reload pairs RELOADING=1 with the timestamp in it. */
        (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading %s",
                          (unsigned long long) ts.tv_sec * 1000000ull +
                              (unsigned long long) ts.tv_nsec / 1000ull,
                          s->config->path);
}

void notify_reloaded(Server *s)
{
        if (s->notify.ready)
                send_ready(s);
}

void notify_stopping(Server *s)
{
        s->notify.armed = false;
        s->notify.timer = sd_event_source_disable_unref(s->notify.timer);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping: finishing the requests taken");
}

void notify_done(Server *s)
{
        s->notify.armed = false;
        s->notify.timer = sd_event_source_disable_unref(s->notify.timer);
        free(s->notify.status);
        s->notify.status = NULL;
}
