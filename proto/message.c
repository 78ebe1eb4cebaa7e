/* Requests (parsed by the daemon) and responses (built by the daemon, parsed by clients).
 *
 * Everything a request carries is caller-controlled. Parsing is one pipeline, each step able
 * to reject: JSON (jansson: strict UTF-8, no NUL, bounded depth, no duplicate keys), one
 * object, `op`, `id`, the type and bounds of each field of that op, unknown fields last. The
 * first problem found is reported, so the order is part of the behaviour tests pin down.
 *
 * Linked into libbroker as well as the daemon: no logging, nothing from common/ but headers. */
#include "message.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "escape.h"
#include "frame.h"
#include "json-util.h"
#include "macro.h"

#define streq(a, b) (strcmp((a), (b)) == 0)

/* JSON_DECODE_ANY: a scalar body is valid JSON and deserves "must be a JSON object" rather
 * than a parser message. jansson rejects raw control bytes, invalid UTF-8 and, as long as
 * JSON_ALLOW_NUL is not given (it never is here), \u0000; so every string below is a C string
 * whose strlen() is its whole length. */
#define LOAD_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

/* Bytes of caller input echoed back in an error message, and the room that needs escaped. */
#define ECHO_MAX 64u
#define ECHO_BUF (JSON_ERROR_TEXT_LENGTH * 4u + sizeof("..."))

static const struct {
        const char *name;
        unsigned opset;
} op_table[_OP_MAX] = {
    [OP_PING] = {"ping", OPSET_WORKLOAD | OPSET_ADMIN},
    [OP_TOKEN] = {"token", OPSET_WORKLOAD},
    [OP_JWKS] = {"jwks", OPSET_WORKLOAD},
    [OP_WHOAMI] = {"whoami", OPSET_WORKLOAD},
    [OP_STATUS] = {"status", OPSET_ADMIN},
    [OP_RELOAD] = {"reload", OPSET_ADMIN},
    [OP_KEYS] = {"keys", OPSET_ADMIN},
    [OP_ROTATE] = {"rotate", OPSET_ADMIN},
    [OP_REVOKE] = {"revoke", OPSET_ADMIN},
    [OP_SECRET_SET] = {"secret_set", OPSET_ADMIN},
    [OP_SECRET_LIST] = {"secret_list", OPSET_ADMIN},
    [OP_SECRET_DELETE] = {"secret_delete", OPSET_ADMIN},
    [OP_UPSTREAM_TEST] = {"upstream_test", OPSET_ADMIN},
};

/* Fields each op takes besides "op" and "id". */
static const char *const token_fields[] = {"audience", "scopes", "ttl", "upstream", NULL};
static const char *const secret_set_fields[] = {"name", "value", NULL};
static const char *const secret_delete_fields[] = {"name", NULL};
static const char *const upstream_test_fields[] = {"upstream", NULL};
static const char *const revoke_fields[] = {"kid", NULL};
static const char *const rotate_fields[] = {"alg", NULL};
static const char *const no_fields[] = {NULL};

const char *op_to_string(Op op)
{
        if ((unsigned) op >= ELEMENTSOF(op_table))
                return NULL;
        return op_table[op].name;
}

static int op_from_string(const char *s)
{
        for (size_t i = 0; i < ELEMENTSOF(op_table); i++)
                if (strcmp(op_table[i].name, s) == 0)
                        return (int) i;
        return -EINVAL;
}

static const char *const *op_fields(Op op)
{
        switch (op) {
        case OP_TOKEN:
                return token_fields;
        case OP_REVOKE:
                return revoke_fields;
        case OP_ROTATE:
                return rotate_fields;
        case OP_SECRET_SET:
                return secret_set_fields;
        case OP_SECRET_DELETE:
                return secret_delete_fields;
        case OP_UPSTREAM_TEST:
                return upstream_test_fields;
        default:
                return no_fields;
        }
}

static int reject(char *err, size_t errlen, const char *fmt, ...) _printf_(3, 4);
static int reject(char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;

        if (err && errlen > 0) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return -EBADMSG;
}

/* Copies at most `max` bytes of untrusted text for an error message. Only printable ASCII
 * passes; other bytes become \xNN, so what a caller sent can neither forge log lines nor put
 * invalid UTF-8 into a response. With `quote`, '"' and '\' are escaped too, for text shown
 * between quotes. out must hold max * 4 + sizeof("...") bytes. */
static void escape_untrusted(const char *s, size_t max, bool quote, char *out)
{
        size_t i, o = 0;

        for (i = 0; s[i] && i < max; i++) {
                unsigned char c = (unsigned char) s[i];

                if (quote && (c == '"' || c == '\\')) {
                        out[o++] = '\\';
                        out[o++] = (char) c;
                } else if (c >= 0x20 && c < 0x7f)
                        out[o++] = (char) c;
                else
                        o += (size_t) sprintf(out + o, "\\x%02x", c);
        }
        if (s[i]) {
                memcpy(out + o, "...", 3);
                o += 3;
        }
        out[o] = '\0';
}

static int reject_json(const json_error_t *jerr, char *err, size_t errlen)
{
        char text[ECHO_BUF];

        /* jansson's text quotes the offending input ("near '...'"). */
        escape_untrusted(jerr->text, JSON_ERROR_TEXT_LENGTH, false, text);
        return reject(err, errlen, "invalid JSON: %s at position %d", text, jerr->position);
}

/* Type and byte-length bounds (1..max) of a string field. `v` may be NULL (field absent). */
static int check_string(json_t *v, const char *name, size_t max, const char **ret, char *err,
                        size_t errlen)
{
        size_t n;

        if (!v)
                return reject(err, errlen, "%s: missing", name);
        if (!json_is_string(v))
                return reject(err, errlen, "%s: expected string", name);
        n = json_string_length(v);
        if (n == 0)
                return reject(err, errlen, "%s: must not be empty", name);
        if (n > max)
                return reject(err, errlen, "%s: longer than %zu bytes", name, max);
        *ret = json_string_value(v);
        return 0;
}

/* Offset of the first byte that may not appear in an RFC 6749 §3.3 scope-token
 * (%x21 / %x23-5B / %x5D-7E), or -1 when there is none. */
static ssize_t scope_invalid_at(const char *s)
{
        for (size_t i = 0; s[i]; i++) {
                unsigned char c = (unsigned char) s[i];

                if (c < 0x21 || c > 0x7e || c == '"' || c == '\\')
                        return (ssize_t) i;
        }
        return -1;
}

bool scope_token_valid(const char *s)
{
        return s && s[0] && scope_invalid_at(s) < 0;
}

bool broker_name_valid(const char *s)
{
        size_t i;

        if (!s)
                return false;
        for (i = 0; s[i]; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
                        return false;
        return i >= 1 && i <= BROKER_NAME_MAX;
}

/* A name field (upstream, secret): type, bounds, then the name syntax. */
static int check_name(json_t *v, const char *field, const char **ret, char *err, size_t errlen)
{
        int r = check_string(v, field, BROKER_NAME_MAX, ret, err, errlen);

        if (r < 0)
                return r;
        if (!broker_name_valid(*ret))
                return reject(err, errlen,
                              "%s: may only use letters, digits, '.', '_' and '-'", field);
        return 0;
}

static bool is_base64url_char(char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_';
}

static int check_id(json_t *id, char *err, size_t errlen)
{
        if (!id || json_is_integer(id))
                return 0;
        if (!json_is_string(id))
                return reject(err, errlen, "id: expected string or integer");
        if (json_string_length(id) > REQUEST_ID_MAX)
                return reject(err, errlen, "id: longer than %u bytes", REQUEST_ID_MAX);
        return 0;
}

static int parse_scopes(json_t *root, Request *req, char *err, size_t errlen)
{
        json_t *v = json_object_get(root, "scopes"), *s;
        size_t i;
        int r;

        if (!v)
                return 0;
        if (!json_is_array(v))
                return reject(err, errlen, "scopes: expected array");
        if (json_array_size(v) > SCOPES_MAX)
                return reject(err, errlen, "scopes: more than %u scopes", SCOPES_MAX);
        json_array_foreach (v, i, s) {
                char name[sizeof("scopes[]") + 20];
                const char *scope;
                ssize_t bad;

                snprintf(name, sizeof(name), "scopes[%zu]", i);
                r = check_string(s, name, SCOPE_MAX, &scope, err, errlen);
                if (r < 0)
                        return r;
                bad = scope_invalid_at(scope);
                if (bad >= 0)
                        return reject(err, errlen,
                                      "%s: invalid character at byte %zd (allowed: printable "
                                      "ASCII except space, '\"' and '\\')",
                                      name, bad);
                /* A duplicate is most likely a caller bug; refusing it keeps the granted scope
                 * list (and the token's "scope" claim) canonical. */
                for (size_t j = 0; j < i; j++)
                        if (strcmp(req->scopes[j], scope) == 0)
                                return reject(err, errlen, "%s: duplicate of scopes[%zu]", name,
                                              j);
                req->scopes[i] = scope;
        }
        req->n_scopes = json_array_size(v);
        return 0;
}

static int parse_token_fields(json_t *root, Request *req, char *err, size_t errlen)
{
        json_t *v;
        int r;

        /* An upstream's token: the upstream decides its audience and lifetime. */
        v = json_object_get(root, "upstream");
        if (v) {
                r = check_name(v, "upstream", &req->upstream, err, errlen);
                if (r < 0)
                        return r;
                if (json_object_get(root, "audience"))
                        return reject(err, errlen,
                                      "audience: not used with upstream (the upstream's "
                                      "configuration names its audience)");
                if (json_object_get(root, "ttl"))
                        return reject(err, errlen,
                                      "ttl: not used with upstream (the upstream decides the "
                                      "lifetime)");
                return parse_scopes(root, req, err, errlen);
        }

        r = check_string(json_object_get(root, "audience"), "audience", AUDIENCE_MAX,
                         &req->audience, err, errlen);
        if (r < 0)
                return r;
        /* Audiences end up in tokens, audit records and logs: no control characters. */
        for (size_t i = 0; req->audience[i]; i++) {
                unsigned char c = (unsigned char) req->audience[i];

                if (c < 0x20 || c == 0x7f)
                        return reject(err, errlen, "audience: control character at byte %zu", i);
        }
        /* Nor the Unicode ones that rewrite what a reader sees (C1, bidirectional overrides,
         * line separators): audiences are stored and shown exactly as asked for. */
        if (!text_display_safe(req->audience))
                return reject(err, errlen,
                              "audience: C1, bidirectional or line-separator character");

        r = parse_scopes(root, req, err, errlen);
        if (r < 0)
                return r;

        v = json_object_get(root, "ttl");
        if (v) {
                json_int_t ttl;

                /* Integers only: 1.5 or "5" is a caller bug, not something to round. */
                if (!json_is_integer(v))
                        return reject(err, errlen, "ttl: expected integer");
                ttl = json_integer_value(v);
                if (ttl < 1 || ttl > TTL_MAX)
                        return reject(err, errlen, "ttl: must be between 1 and %lld", TTL_MAX);
                req->has_ttl = true;
                req->ttl = ttl;
        }

        return 0;
}

/* Optional: without it, every algorithm's series rotates. */
static int parse_rotate_fields(json_t *root, Request *req, char *err, size_t errlen)
{
        static const char *const algs[] = {"EdDSA", "ES256", "RS256"};
        json_t *v = json_object_get(root, "alg");
        int r;

        if (!v)
                return 0;
        r = check_string(v, "alg", 16, &req->alg, err, errlen);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(algs); i++)
                if (streq(req->alg, algs[i]))
                        return 0;
        return reject(err, errlen, "alg: must be \"EdDSA\", \"ES256\" or \"RS256\"");
}

static int parse_revoke_fields(json_t *root, Request *req, char *err, size_t errlen)
{
        int r;

        r = check_string(json_object_get(root, "kid"), "kid", KID_MAX, &req->kid, err, errlen);
        if (r < 0)
                return r;
        for (size_t i = 0; req->kid[i]; i++)
                if (!is_base64url_char(req->kid[i]))
                        return reject(err, errlen,
                                      "kid: invalid character at byte %zu (expected base64url)", i);
        return 0;
}

/* The secret's value travels only here: bounded, printable (no control characters, which no
 * client secret has and which would only hide what was stored). */
static int parse_secret_fields(json_t *root, Request *req, bool with_value, char *err,
                               size_t errlen)
{
        int r = check_name(json_object_get(root, "name"), "name", &req->name, err, errlen);

        if (r < 0 || !with_value)
                return r;
        r = check_string(json_object_get(root, "value"), "value", SECRET_VALUE_MAX, &req->value,
                         err, errlen);
        if (r < 0)
                return r;
        for (size_t i = 0; req->value[i]; i++) {
                unsigned char c = (unsigned char) req->value[i];

                /* the position only: the value itself is never echoed */
                if (c < 0x20 || c == 0x7f)
                        return reject(err, errlen, "value: control character at byte %zu", i);
        }
        return 0;
}

/* Everything after "the body is one JSON object", in the documented order. */
static int parse_request_object(json_t *root, unsigned opset, Request *req, char *err,
                                size_t errlen)
{
        const char *const *fields;
        const char *key;
        json_t *v, *id;
        int r, op;

        v = json_object_get(root, "op");
        if (!v)
                return reject(err, errlen, "op: missing");
        if (!json_is_string(v))
                return reject(err, errlen, "op: expected string");
        op = op_from_string(json_string_value(v));
        /* An op of the other socket is reported like an unknown one, so the workload socket
         * does not even confirm which admin ops exist. */
        if (op < 0 || !(op_table[op].opset & opset)) {
                char shown[ECHO_BUF];

                escape_untrusted(json_string_value(v), ECHO_MAX, true, shown);
                return reject(err, errlen, "op: unknown op \"%s\"", shown);
        }
        req->op = (Op) op;

        id = json_object_get(root, "id");
        r = check_id(id, err, errlen);
        if (r < 0)
                return r;
        req->id = id;

        switch (req->op) {
        case OP_TOKEN:
                r = parse_token_fields(root, req, err, errlen);
                break;
        case OP_REVOKE:
                r = parse_revoke_fields(root, req, err, errlen);
                break;
        case OP_ROTATE:
                r = parse_rotate_fields(root, req, err, errlen);
                break;
        case OP_SECRET_SET:
        case OP_SECRET_DELETE:
                r = parse_secret_fields(root, req, req->op == OP_SECRET_SET, err, errlen);
                break;
        case OP_UPSTREAM_TEST:
                r = check_name(json_object_get(root, "upstream"), "upstream", &req->upstream, err,
                               errlen);
                break;
        default:
                r = 0;
        }
        if (r < 0)
                return r;

        /* Last, so that a request with a known field wrong and an unknown one besides is told
         * about the known one first. Rejecting unknown fields catches misspellings ("scope")
         * that would otherwise silently mean "not given". */
        fields = op_fields(req->op);
        json_object_foreach (root, key, v) {
                bool known = streq(key, "op") || streq(key, "id");

                for (size_t i = 0; !known && fields[i]; i++)
                        known = streq(key, fields[i]);
                if (!known) {
                        char shown[ECHO_BUF];

                        escape_untrusted(key, ECHO_MAX, true, shown);
                        return reject(err, errlen, "%s: unknown field", shown);
                }
        }

        return 0;
}

int request_parse(const void *body, size_t len, unsigned opset, Request *ret, json_t **ret_id,
                  char *err, size_t errlen)
{
        _cleanup_(json_decrefp) json_t *root = NULL;
        Request req = {};
        json_error_t jerr;
        int r;

        if (ret_id)
                *ret_id = NULL;
        if (err && errlen > 0)
                err[0] = '\0';
        if (!ret)
                return -EINVAL;

        root = json_loadb(body, len, LOAD_FLAGS, &jerr);
        if (!root)
                return reject_json(&jerr, err, errlen);
        if (!json_is_object(root))
                return reject(err, errlen, "request must be a JSON object");

        r = parse_request_object(root, opset, &req, err, errlen);
        if (r < 0) {
                /* Echo the id whenever it is valid, even when the op was what failed: a client
                 * pipelining requests can then match the error to its request. */
                json_t *id = json_object_get(root, "id");

                if (ret_id && id && check_id(id, NULL, 0) >= 0)
                        *ret_id = json_incref(id);
                return r;
        }

        req.root = TAKE_PTR(root);
        *ret = req;
        return 0;
}

void request_done(Request *r)
{
        if (!r)
                return;
        json_decref(r->root);
        *r = (Request){};
}

json_t *response_new_ok(json_t *id)
{
        _cleanup_(json_decrefp) json_t *o = json_object();

        if (!o)
                return NULL;
        if (json_object_set_new(o, "ok", json_true()) < 0)
                return NULL;
        if (id && json_object_set(o, "id", id) < 0)
                return NULL;
        return TAKE_PTR(o);
}

/* An error message may carry text the daemon did not choose (a path read from /proc, say)
 * that is not UTF-8, which a JSON string cannot hold. Rather than have no response at all,
 * replace the non-ASCII bytes. */
static json_t *json_string_lossy(const char *s)
{
        _cleanup_free_ char *copy = NULL;
        json_t *j;

        j = json_string(s);
        if (j)
                return j;
        copy = strdup(s);
        if (!copy)
                return NULL;
        for (char *p = copy; *p; p++)
                if ((unsigned char) *p >= 0x80)
                        *p = '?';
        return json_string(copy);
}

json_t *response_new_error(BrokerErrorCode code, const char *message, json_t *id)
{
        const char *code_str = broker_error_code_to_string(code);
        _cleanup_(json_decrefp) json_t *o = NULL;
        json_t *e;

        if (!code_str)
                return NULL;

        o = json_object();
        e = json_object();
        if (!o || !e) {
                json_decref(e);
                return NULL;
        }
        /* json_object_set_new() consumes the value even when it fails. */
        if (json_object_set_new(o, "ok", json_false()) < 0 ||
            json_object_set_new(o, "error", e) < 0)
                return NULL;
        if (json_object_set_new(e, "code", json_string(code_str)) < 0 ||
            json_object_set_new(e, "message", json_string_lossy(message ?: code_str)) < 0)
                return NULL;
        if (id && json_object_set(o, "id", id) < 0)
                return NULL;
        return TAKE_PTR(o);
}

int response_error_set_upstream(json_t *resp, const char *upstream_error)
{
        json_t *e = json_object_get(resp, "error");

        if (!json_is_object(e))
                return -EINVAL;
        return json_object_set_new(e, "upstream_error", json_string_lossy(upstream_error)) < 0
                   ? -ENOMEM
                   : 0;
}

int message_encode_frame(json_t *msg, char **ret, size_t *ret_len)
{
        /* Dumped once into this thread's scratch buffer, then copied into a frame of exactly its
         * size: dumping twice (measure, then write) doubled the cost of every answer, and a
         * growing buffer would leave copies of a token behind in freed memory. The scratch is
         * wiped after each use. */
        static _Thread_local char *scratch;
        size_t n;
        char *buf;

        if (!json_is_object(msg) || !ret || !ret_len)
                return -EINVAL;
        if (!scratch) {
                scratch = malloc(FRAME_MAX);
                if (!scratch)
                        return -ENOMEM;
        }
        n = json_dumpb(msg, scratch, FRAME_MAX, JSON_COMPACT);
        if (n == 0)
                return -EINVAL;
        if (n > FRAME_MAX) { /* json_dumpb says how much it would have needed */
                explicit_bzero(scratch, FRAME_MAX);
                return -EMSGSIZE;
        }
        buf = malloc(FRAME_HEADER_SIZE + n);
        if (buf) {
                frame_put_header((uint8_t *) buf, (uint32_t) n);
                memcpy(buf + FRAME_HEADER_SIZE, scratch, n);
        }
        explicit_bzero(scratch, n);
        if (!buf)
                return -ENOMEM;
        *ret = buf;
        *ret_len = FRAME_HEADER_SIZE + n;
        return 0;
}

int response_parse(const void *body, size_t len, Response *ret, char *err, size_t errlen)
{
        _cleanup_(json_decrefp) json_t *root = NULL;
        Response resp = {};
        json_error_t jerr;
        json_t *v, *e;

        if (err && errlen > 0)
                err[0] = '\0';
        if (!ret)
                return -EINVAL;

        root = json_loadb(body, len, LOAD_FLAGS, &jerr);
        if (!root)
                return reject_json(&jerr, err, errlen);
        if (!json_is_object(root))
                return reject(err, errlen, "response must be a JSON object");

        v = json_object_get(root, "ok");
        if (!v)
                return reject(err, errlen, "ok: missing");
        if (!json_is_boolean(v))
                return reject(err, errlen, "ok: expected boolean");
        resp.ok = json_is_true(v);

        /* Other fields are not checked: responses may gain fields, clients ignore them. */
        if (!resp.ok) {
                int code;

                e = json_object_get(root, "error");
                if (!e)
                        return reject(err, errlen, "error: missing");
                if (!json_is_object(e))
                        return reject(err, errlen, "error: expected object");

                v = json_object_get(e, "code");
                if (!v)
                        return reject(err, errlen, "error.code: missing");
                if (!json_is_string(v))
                        return reject(err, errlen, "error.code: expected string");
                code = broker_error_code_from_string(json_string_value(v));
                if (code < 0) {
                        char shown[ECHO_BUF];

                        escape_untrusted(json_string_value(v), ECHO_MAX, true, shown);
                        return reject(err, errlen, "error.code: unknown code \"%s\"", shown);
                }
                resp.code = (BrokerErrorCode) code;

                v = json_object_get(e, "message");
                if (!v)
                        return reject(err, errlen, "error.message: missing");
                if (!json_is_string(v))
                        return reject(err, errlen, "error.message: expected string");
                resp.message = json_string_value(v);

                v = json_object_get(e, "upstream_error");
                if (v && !json_is_string(v))
                        return reject(err, errlen, "error.upstream_error: expected string");
                resp.upstream_error = json_string_value(v);
        }

        resp.root = TAKE_PTR(root);
        *ret = resp;
        return 0;
}

void response_done(Response *r)
{
        if (!r)
                return;
        json_decref(r->root);
        *r = (Response){};
}

int response_get_token(const Response *r, TokenResponse *ret, char *err, size_t errlen)
{
        TokenResponse t = {};
        json_t *v;
        int k;

        if (err && errlen > 0)
                err[0] = '\0';
        if (!r || !r->root || !ret)
                return -EINVAL;
        if (!r->ok) {
                (void) reject(err, errlen, "response is an error, not a token");
                return -EINVAL;
        }

        k = check_string(json_object_get(r->root, "token"), "token", SIZE_MAX, &t.token, err,
                         errlen);
        if (k < 0)
                return k;

        v = json_object_get(r->root, "expires_at");
        if (!v)
                return reject(err, errlen, "expires_at: missing");
        if (!json_is_integer(v))
                return reject(err, errlen, "expires_at: expected integer");
        t.expires_at = json_integer_value(v);

        k = check_string(json_object_get(r->root, "kid"), "kid", SIZE_MAX, &t.kid, err, errlen);
        if (k < 0)
                return k;
        k = check_string(json_object_get(r->root, "jti"), "jti", SIZE_MAX, &t.jti, err, errlen);
        if (k < 0)
                return k;

        *ret = t;
        return 0;
}

/* An optional string field: absent is fine, anything but a non-empty string is not. */
static int check_optional_string(json_t *root, const char *name, const char **ret, char *err,
                                 size_t errlen)
{
        json_t *v = json_object_get(root, name);

        *ret = NULL;
        if (!v)
                return 0;
        return check_string(v, name, SIZE_MAX, ret, err, errlen);
}

int response_get_upstream_token(const Response *r, UpstreamTokenResponse *ret, char *err,
                                size_t errlen)
{
        UpstreamTokenResponse t = {};
        json_t *v;
        int k;

        if (err && errlen > 0)
                err[0] = '\0';
        if (!r || !r->root || !ret)
                return -EINVAL;
        if (!r->ok) {
                (void) reject(err, errlen, "response is an error, not a token");
                return -EINVAL;
        }
        v = json_object_get(r->root, "aws");
        if (v) {
                /* an aws_sts upstream's credentials: the SessionToken stands for the token,
                 * the whole object is in the response for those who need the key pair */
                const char *unused;
                if (!json_is_object(v))
                        return reject(err, errlen, "aws: expected object");
                k = check_string(json_object_get(v, "AccessKeyId"), "aws.AccessKeyId", SIZE_MAX,
                                 &unused, err, errlen);
                if (k >= 0)
                        k = check_string(json_object_get(v, "SecretAccessKey"),
                                         "aws.SecretAccessKey", SIZE_MAX, &unused, err, errlen);
                if (k >= 0)
                        k = check_string(json_object_get(v, "Expiration"), "aws.Expiration",
                                         SIZE_MAX, &unused, err, errlen);
                if (k >= 0)
                        k = check_string(json_object_get(v, "SessionToken"), "aws.SessionToken",
                                         SIZE_MAX, &t.access_token, err, errlen);
                t.token_type = "aws4_request";
        } else {
                k = check_string(json_object_get(r->root, "access_token"), "access_token",
                                 SIZE_MAX, &t.access_token, err, errlen);
                if (k >= 0)
                        k = check_string(json_object_get(r->root, "token_type"), "token_type",
                                         SIZE_MAX, &t.token_type, err, errlen);
        }
        if (k >= 0)
                k = check_optional_string(r->root, "scope", &t.scope, err, errlen);
        if (k >= 0)
                k = check_optional_string(r->root, "issued_token_type", &t.issued_token_type, err,
                                          errlen);
        if (k < 0)
                return k;
        v = json_object_get(r->root, "expires_at");
        if (!v)
                return reject(err, errlen, "expires_at: missing");
        if (!json_is_integer(v))
                return reject(err, errlen, "expires_at: expected integer");
        t.expires_at = json_integer_value(v);
        *ret = t;
        return 0;
}
