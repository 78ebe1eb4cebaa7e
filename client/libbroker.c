#include "broker.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "frame.h"
#include "json-util.h"
#include "macro.h"
#include "message.h"

#define EXPORT __attribute__((visibility("default")))

struct broker {
        pthread_mutex_t lock;
        char *path;
        int fd; /* -1 until connected, and again after a broken connection */
        int timeout_ms;
};

__attribute__((format(printf, 4, 5))) static int fail(broker_error *err, int status,
                                                      const char *code, const char *fmt, ...)
{
        va_list ap;

        if (!err)
                return status;
        err->status = status;
        snprintf(err->code, sizeof(err->code), "%s", code ? code : "");
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        return status;
}

static int status_from_code(BrokerErrorCode c)
{
        switch (c) {
        case BROKER_ERR_BAD_REQUEST:
                return BROKER_E_BAD_REQUEST;
        case BROKER_ERR_DENIED:
                return BROKER_E_DENIED;
        case BROKER_ERR_RATE_LIMITED:
                return BROKER_E_RATE_LIMITED;
        case BROKER_ERR_UNAVAILABLE:
                return BROKER_E_UNAVAILABLE;
        case BROKER_ERR_NOT_FOUND:
                return BROKER_E_NOT_FOUND;
        default:
                return BROKER_E_INTERNAL;
        }
}

EXPORT const char *broker_strerror(int status)
{
        switch (status) {
        case BROKER_OK:
                return "ok";
        case BROKER_E_BAD_REQUEST:
                return "bad request";
        case BROKER_E_UNAVAILABLE:
                return "broker unavailable";
        case BROKER_E_DENIED:
                return "denied";
        case BROKER_E_RATE_LIMITED:
                return "rate limited";
        case BROKER_E_NOT_FOUND:
                return "not found";
        case BROKER_E_INTERNAL:
                return "broker internal error";
        case BROKER_E_PROTOCOL:
                return "malformed answer from the broker";
        case BROKER_E_NOMEM:
                return "out of memory";
        default:
                return "unknown error";
        }
}

static int do_connect(broker *b, broker_error *err)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct timeval tv = {.tv_sec = b->timeout_ms / 1000,
                             .tv_usec = (b->timeout_ms % 1000) * 1000};
        int fd;

        if (strlen(b->path) >= sizeof(sa.sun_path))
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "socket path too long: %s", b->path);
        strcpy(sa.sun_path, b->path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return fail(err, BROKER_E_UNAVAILABLE, NULL, "socket(): %s", strerror(errno));
        /* Bounds connect() too when the broker's backlog is full. */
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int e = errno;
                close(fd);
                /* No advice here: which option or variable names this socket is the
                 * caller's to say (brokerctl's hints.h). */
                return fail(err, BROKER_E_UNAVAILABLE, NULL, "cannot reach the broker at %s: %s",
                            b->path, strerror(e));
        }
        b->fd = fd;
        return 0;
}

EXPORT int broker_open(const char *socket_path, int timeout_ms, broker **ret, broker_error *err)
{
        broker *b;
        int r;

        if (!ret)
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "ret is NULL");
        if (!socket_path)
                socket_path = secure_getenv("BROKER_SOCKET");
        if (!socket_path || !*socket_path)
                socket_path = BROKER_DEFAULT_SOCKET;
        if (timeout_ms < 0)
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "negative timeout");

        b = calloc(1, sizeof(broker));
        if (!b || !(b->path = strdup(socket_path))) {
                free(b);
                return fail(err, BROKER_E_NOMEM, NULL, "out of memory");
        }
        pthread_mutex_init(&b->lock, NULL);
        b->fd = -1;
        b->timeout_ms = timeout_ms ? timeout_ms : BROKER_DEFAULT_TIMEOUT_MS;
        r = do_connect(b, err);
        if (r < 0) {
                broker_close(b);
                return r;
        }
        *ret = b;
        return 0;
}

EXPORT void broker_close(broker *b)
{
        if (!b)
                return;
        if (b->fd >= 0)
                close(b->fd);
        pthread_mutex_destroy(&b->lock);
        free(b->path);
        free(b);
}

/* One request/response exchange; on any transport failure the connection is dropped so the
 * next call starts clean instead of reading a stale answer. Called with the lock held. */
static int exchange(broker *b, const char *req, size_t len, char **ret_body, size_t *ret_len,
                    broker_error *err)
{
        int r;

        if (b->fd < 0) {
                r = do_connect(b, err);
                if (r < 0)
                        return r;
        }
        r = frame_send(b->fd, req, len, b->timeout_ms);
        /* A broker that refuses a connection (limits, admin permission) sends one error frame
         * and closes, possibly before our request went out: read the explanation anyway. */
        if (r >= 0 || r == -ECONNRESET)
                r = frame_recv(b->fd, ret_body, ret_len, r >= 0 ? b->timeout_ms : 1000);
        if (r < 0) {
                close(b->fd);
                b->fd = -1;
                if (r == -ETIMEDOUT)
                        return fail(err, BROKER_E_UNAVAILABLE, NULL,
                                    "the broker at %s did not answer within %d ms", b->path,
                                    b->timeout_ms);
                if (r == -EMSGSIZE || r == -EBADMSG)
                        return fail(err, BROKER_E_PROTOCOL, NULL,
                                    "the broker at %s sent a malformed frame", b->path);
                return fail(err, BROKER_E_UNAVAILABLE, NULL,
                            "lost the connection to the broker at %s: %s", b->path, strerror(-r));
        }
        return 0;
}

/* Sends a request object and parses the response envelope. */
static int call_json(broker *b, json_t *req, Response *ret, char **ret_text, broker_error *err)
{
        char *text = NULL, *body = NULL;
        size_t body_len;
        char perr[256];
        int r;

        text = json_dumps(req, JSON_COMPACT);
        if (!text)
                return fail(err, BROKER_E_NOMEM, NULL, "out of memory");
        if (strlen(text) > FRAME_MAX) {
                free(text);
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "request larger than %u bytes",
                            FRAME_MAX);
        }
        pthread_mutex_lock(&b->lock);
        r = exchange(b, text, strlen(text), &body, &body_len, err);
        pthread_mutex_unlock(&b->lock);
        free(text);
        if (r < 0)
                return r;

        r = response_parse(body, body_len, ret, perr, sizeof(perr));
        if (r < 0) {
                free(body);
                return fail(err, BROKER_E_PROTOCOL, NULL, "malformed answer from the broker: %s",
                            perr);
        }
        if (ret_text)
                *ret_text = body;
        else
                free(body);
        if (!ret->ok)
                return fail(err, status_from_code(ret->code),
                            broker_error_code_to_string(ret->code), "%s", ret->message);
        return 0;
}

EXPORT int broker_call(broker *b, const char *request_json, char **ret_response, broker_error *err)
{
        _cleanup_(json_decrefp) json_t *req = NULL;
        json_error_t jerr;
        Response resp = {};
        char *text = NULL;
        int r;

        if (!b || !request_json || !ret_response)
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "invalid argument");
        req = json_loads(request_json, JSON_REJECT_DUPLICATES, &jerr);
        if (!req || !json_is_object(req))
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "request is not a JSON object%s%s",
                            req ? "" : ": ", req ? "" : jerr.text);
        r = call_json(b, req, &resp, &text, err);
        response_done(&resp);
        if (text)
                *ret_response = text;
        return r;
}

EXPORT void broker_token_clear(broker_token *t)
{
        if (!t)
                return;
        if (t->token) {
                explicit_bzero(t->token, strlen(t->token));
                free(t->token);
        }
        if (t->response_json) {
                explicit_bzero(t->response_json, strlen(t->response_json));
                free(t->response_json);
        }
        free(t->kid);
        free(t->jti);
        memset(t, 0, sizeof(*t));
}

static int add_scopes(json_t *msg, const char *const *scopes, size_t n, broker_error *err)
{
        json_t *a;

        if (n == 0)
                return 0;
        a = json_array();
        for (size_t i = 0; a && i < n; i++)
                if (!scopes[i] || json_array_append_new(a, json_string(scopes[i])) < 0) {
                        json_decref(a);
                        return fail(err, BROKER_E_BAD_REQUEST, NULL,
                                    "scope %zu is not valid UTF-8 text", i);
                }
        if (!a || json_object_set_new(msg, "scopes", a) < 0)
                return fail(err, BROKER_E_NOMEM, NULL, "out of memory");
        return 0;
}

EXPORT int broker_get_token(broker *b, const broker_token_request *req, broker_token *ret,
                            broker_error *err)
{
        _cleanup_(json_decrefp) json_t *msg = NULL;
        Response resp = {};
        TokenResponse tr;
        broker_token t = {};
        char perr[256];
        int r;

        if (!b || !req || !ret || !req->audience)
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "audience is required");
        if (req->ttl < 0)
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "ttl must not be negative");
        msg = json_pack("{s:s, s:s}", "op", "token", "audience", req->audience);
        if (!msg)
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "audience must be valid UTF-8 text");
        r = add_scopes(msg, req->scopes, req->n_scopes, err);
        if (r < 0)
                return r;
        if (req->ttl > 0 && json_object_set_new(msg, "ttl", json_integer(req->ttl)) < 0)
                return fail(err, BROKER_E_NOMEM, NULL, "out of memory");

        r = call_json(b, msg, &resp, &t.response_json, err);
        if (r < 0) {
                response_done(&resp);
                broker_token_clear(&t);
                return r;
        }
        r = response_get_token(&resp, &tr, perr, sizeof(perr));
        if (r < 0) {
                response_done(&resp);
                broker_token_clear(&t);
                return fail(err, BROKER_E_PROTOCOL, NULL, "malformed token response: %s", perr);
        }
        t.token = strdup(tr.token);
        t.kid = strdup(tr.kid);
        t.jti = strdup(tr.jti);
        t.expires_at = tr.expires_at;
        response_done(&resp);
        if (!t.token || !t.kid || !t.jti) {
                broker_token_clear(&t);
                return fail(err, BROKER_E_NOMEM, NULL, "out of memory");
        }
        *ret = t;
        return 0;
}

static char *strdup_or_null(const char *s, bool *oom)
{
        char *d;

        if (!s)
                return NULL;
        d = strdup(s);
        *oom |= !d;
        return d;
}

EXPORT int broker_get_upstream_token(broker *b, const broker_upstream_request *req,
                                     broker_upstream_token *ret, broker_error *err)
{
        _cleanup_(json_decrefp) json_t *msg = NULL;
        broker_upstream_token t = {};
        UpstreamTokenResponse ur;
        Response resp = {};
        char perr[256];
        bool oom = false;
        int r;

        if (!b || !req || !ret || !req->upstream)
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "upstream is required");
        memset(ret, 0, sizeof(*ret));
        msg = json_pack("{s:s, s:s}", "op", "token", "upstream", req->upstream);
        if (!msg)
                return fail(err, BROKER_E_BAD_REQUEST, NULL, "upstream must be valid UTF-8 text");
        r = add_scopes(msg, req->scopes, req->n_scopes, err);
        if (r < 0)
                return r;

        r = call_json(b, msg, &resp, &t.response_json, err);
        if (r < 0) {
                /* the upstream's own word, for the caller to act on (invalid_client, ...) */
                if (resp.root && !resp.ok && resp.upstream_error)
                        snprintf(ret->upstream_error, sizeof(ret->upstream_error), "%s",
                                 resp.upstream_error);
                response_done(&resp);
                broker_upstream_token_clear(&t);
                return r;
        }
        r = response_get_upstream_token(&resp, &ur, perr, sizeof(perr));
        if (r < 0) {
                response_done(&resp);
                broker_upstream_token_clear(&t);
                return fail(err, BROKER_E_PROTOCOL, NULL, "malformed token response: %s", perr);
        }
        t.access_token = strdup_or_null(ur.access_token, &oom);
        t.token_type = strdup_or_null(ur.token_type, &oom);
        t.scope = strdup_or_null(ur.scope, &oom);
        t.issued_token_type = strdup_or_null(ur.issued_token_type, &oom);
        t.expires_at = ur.expires_at;
        response_done(&resp);
        if (oom) {
                broker_upstream_token_clear(&t);
                return fail(err, BROKER_E_NOMEM, NULL, "out of memory");
        }
        *ret = t;
        return 0;
}

EXPORT void broker_upstream_token_clear(broker_upstream_token *t)
{
        if (!t)
                return;
        if (t->access_token) {
                explicit_bzero(t->access_token, strlen(t->access_token));
                free(t->access_token);
        }
        if (t->response_json) {
                explicit_bzero(t->response_json, strlen(t->response_json));
                free(t->response_json);
        }
        free(t->token_type);
        free(t->scope);
        free(t->issued_token_type);
        memset(t, 0, sizeof(*t));
}
