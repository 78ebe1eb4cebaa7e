#include "federation/oauth.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "macro.h"

int secure_text_new(size_t cap, SecureText *ret)
{
        char *d = sodium_malloc(cap + 1);

        if (!d)
                return -ENOMEM;
        d[0] = 0;
        *ret = (SecureText){.data = d, .cap = cap};
        return 0;
}

void secure_text_free(SecureText *t)
{
        if (t->data)
                sodium_free(t->data); /* zeroes it */
        *t = (SecureText){};
}

int secure_copy(const char *s, size_t len, char **ret)
{
        char *d = sodium_malloc(len + 1);

        if (!d)
                return -ENOMEM;
        memcpy(d, s, len);
        d[len] = 0;
        *ret = d;
        return 0;
}

static int text_append(SecureText *t, const char *s, size_t n)
{
        if (n > t->cap - t->len)
                return -E2BIG;
        memcpy(t->data + t->len, s, n);
        t->len += n;
        t->data[t->len] = 0;
        return 0;
}

/* libcurl's percent-encoding (RFC 3986 unreserved characters stay); its copy is wiped. */
static int append_escaped(SecureText *t, const char *value)
{
        char *e = curl_easy_escape(NULL, value, (int) strlen(value));
        int r;

        if (!e)
                return -ENOMEM;
        r = text_append(t, e, strlen(e));
        explicit_bzero(e, strlen(e));
        curl_free(e);
        return r;
}

int oauth_form_add(SecureText *form, const char *name, const char *value)
{
        int r;

        if (!value)
                return 0;
        if (form->len > 0 && (r = text_append(form, "&", 1)) < 0)
                return r;
        if ((r = text_append(form, name, strlen(name))) < 0 ||
            (r = text_append(form, "=", 1)) < 0)
                return r;
        return append_escaped(form, value);
}

int oauth_bearer_header(const char *token, SecureText *ret)
{
        static const char prefix[] = "Authorization: Bearer ";
        size_t n = strlen(token);
        SecureText h = {};
        int r;

        if (n > OAUTH_HEADER_MAX)
                return -E2BIG;
        r = secure_text_new(sizeof(prefix) + n, &h);
        if (r < 0)
                return r;
        memcpy(h.data, prefix, sizeof(prefix) - 1);
        memcpy(h.data + sizeof(prefix) - 1, token, n + 1);
        h.len = sizeof(prefix) - 1 + n;
        *ret = h;
        return 0;
}

int oauth_basic_header(const char *client_id, const char *secret, SecureText *ret)
{
        static const char prefix[] = "Authorization: Basic ";
        SecureText creds = {}, h = {};
        size_t b64;
        int r;

        r = secure_text_new(OAUTH_HEADER_MAX / 2, &creds);
        if (r < 0)
                return r;
        if ((r = append_escaped(&creds, client_id)) < 0 || (r = text_append(&creds, ":", 1)) < 0 ||
            (r = append_escaped(&creds, secret)) < 0)
                goto out;
        b64 = sodium_base64_ENCODED_LEN(creds.len, sodium_base64_VARIANT_ORIGINAL);
        r = secure_text_new(sizeof(prefix) + b64, &h);
        if (r < 0)
                goto out;
        memcpy(h.data, prefix, sizeof(prefix));
        sodium_bin2base64(h.data + sizeof(prefix) - 1, b64, (const unsigned char *) creds.data,
                          creds.len, sodium_base64_VARIANT_ORIGINAL);
        h.len = strlen(h.data);
        *ret = h;
        h = (SecureText){};
out:
        secure_text_free(&creds);
        secure_text_free(&h);
        return r;
}

/* RFC 6749 §5.2: error and error_description are %x20-21 / %x23-5B / %x5D-7E. */
static bool oauth_error_char(unsigned char c)
{
        return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\';
}

/* Copies an optional string member that must hold only `valid` characters and at most `max`
 * bytes; `cut` shortens a longer one instead of refusing it. */
static bool copy_checked(json_t *o, const char *key, size_t max, bool cut, char *out)
{
        json_t *v = json_object_get(o, key);
        const char *s;
        size_t n;

        out[0] = 0;
        if (!v)
                return true;
        if (!json_is_string(v))
                return false;
        s = json_string_value(v);
        n = json_string_length(v);
        if (n > max && !cut)
                return false;
        n = MIN(n, max);
        for (size_t i = 0; i < n; i++)
                if (!oauth_error_char((unsigned char) s[i]))
                        return false;
        memcpy(out, s, n);
        out[n] = 0;
        return true;
}

/* §5.2: an error answer. false when the body is not one. */
static bool read_error(json_t *root, OAuthAnswer *a)
{
        if (!json_is_object(root) || !json_is_string(json_object_get(root, "error")) ||
            json_string_length(json_object_get(root, "error")) == 0 ||
            !copy_checked(root, "error", OAUTH_ERROR_MAX, false, a->error)) {
                a->error[0] = 0;
                return false;
        }
        /* A description that breaks its syntax is dropped, not the error. */
        if (!copy_checked(root, "error_description", OAUTH_DESCRIPTION_MAX, true,
                          a->error_description))
                a->error_description[0] = 0;
        return true;
}

/* expires_in: a JSON integer, or (Azure AD v1, older Facebook) a string of digits. */
static bool read_expires_in(json_t *v, int64_t *ret)
{
        int64_t n = 0;

        *ret = -1;
        if (!v)
                return true;
        if (json_is_integer(v)) {
                n = json_integer_value(v);
        } else if (json_is_string(v)) {
                const char *s = json_string_value(v);
                size_t len = json_string_length(v);

                if (len == 0 || len > 12)
                        return false;
                for (size_t i = 0; i < len; i++) {
                        if (s[i] < '0' || s[i] > '9')
                                return false;
                        n = n * 10 + (s[i] - '0');
                }
        } else
                return false;
        if (n < 0 || n > OAUTH_EXPIRES_IN_MAX)
                return false;
        *ret = n;
        return true;
}

bool oauth_printable(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
                        return false;
        return true;
}

int oauth_answer_bad(OAuthAnswer *a, const char *what)
{
        a->outcome = OAUTH_BAD_RESPONSE;
        snprintf(a->problem, sizeof(a->problem), "%s", what);
        return 0;
}

int oauth_answer_finish(OAuthAnswer *a, int r, OAuthAnswer *ret)
{
        if (r < 0) {
                oauth_answer_done(a);
                return r;
        }
        *ret = *a;
        return 0;
}

/* An optional string, copied to the heap (not secret). */
static int dup_optional(json_t *root, const char *key, size_t max, char **ret, bool *ok)
{
        json_t *v = json_object_get(root, key);

        *ret = NULL;
        *ok = true;
        if (!v)
                return 0;
        if (!json_is_string(v) || json_string_length(v) > max ||
            !oauth_printable(json_string_value(v), json_string_length(v))) {
                *ok = false;
                return 0;
        }
        *ret = strdup(json_string_value(v));
        return *ret ? 0 : -ENOMEM;
}

/* §5.1. The access token leaves jansson's copy for secure memory, and jansson's copy is
 * wiped before the tree is freed. */
static int read_token(json_t *root, size_t max_token_bytes, OAuthAnswer *a)
{
        json_t *at = json_object_get(root, "access_token"), *tt;
        bool ok;
        int r;

        if (json_object_get(root, "error"))
                return oauth_answer_bad(a, "a success status with an OAuth2 error in the body");
        if (!at)
                return oauth_answer_bad(a, "no access_token in the answer");
        if (!json_is_string(at) || json_string_length(at) == 0 ||
            json_string_length(at) > max_token_bytes ||
            !oauth_printable(json_string_value(at), json_string_length(at)))
                return oauth_answer_bad(a, "access_token is not a string of printable ASCII");

        tt = json_object_get(root, "token_type");
        if (tt && (!json_is_string(tt) || json_string_length(tt) == 0 ||
                   json_string_length(tt) > OAUTH_TOKEN_TYPE_MAX ||
                   !oauth_printable(json_string_value(tt), json_string_length(tt))))
                return oauth_answer_bad(a, "token_type is not a short string");
        /* RFC 6749 makes token_type required; an endpoint that leaves it out issues bearer
         * tokens all the same. */
        snprintf(a->token_type, sizeof(a->token_type), "%s", tt ? json_string_value(tt) : "Bearer");
        if (!read_expires_in(json_object_get(root, "expires_in"), &a->expires_in))
                return oauth_answer_bad(a, "expires_in is not a number of seconds");
        if ((r = dup_optional(root, "scope", OAUTH_SCOPE_MAX, &a->scope, &ok)) < 0)
                return r;
        if (!ok)
                return oauth_answer_bad(a, "scope is not a string of printable ASCII");
        if ((r = dup_optional(root, "issued_token_type", OAUTH_TOKEN_TYPE_URI_MAX,
                              &a->issued_token_type, &ok)) < 0)
                return r;
        if (!ok)
                return oauth_answer_bad(a, "issued_token_type is not a short string");

        r = secure_copy(json_string_value(at), json_string_length(at), &a->access_token);
        if (r < 0)
                return r;
        a->access_token_len = json_string_length(at);
        a->outcome = OAUTH_TOKEN;
        return 0;
}

/* Wipes the access token's text inside the parsed tree (jansson frees without wiping). */
static void wipe_token_member(json_t *root)
{
        json_t *at = json_object_get(root, "access_token");

        if (json_is_string(at))
                explicit_bzero((char *) json_string_value(at), json_string_length(at));
}

int oauth_parse_response(long status, const char *body, size_t len, size_t max_token_bytes,
                         OAuthAnswer *ret)
{
        _cleanup_(json_decrefp) json_t *root = NULL;
        OAuthAnswer a = {.expires_in = -1};
        int r = 0;

        root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
        if (status >= 200 && status < 300) {
                if (!root)
                        r = oauth_answer_bad(&a, "the body is not JSON");
                else if (!json_is_object(root))
                        r = oauth_answer_bad(&a, "the body is not a JSON object");
                else
                        r = read_token(root, max_token_bytes, &a);
        } else if (status == 429 || (status >= 500 && status < 600)) {
                a.outcome = OAUTH_RETRYABLE;
                (void) read_error(root, &a);
                snprintf(a.problem, sizeof(a.problem), "HTTP %ld", status);
        } else if (status >= 400 && status < 500 && read_error(root, &a)) {
                a.outcome = OAUTH_REFUSED;
                snprintf(a.problem, sizeof(a.problem), "HTTP %ld %s", status, a.error);
        } else if (status >= 400 && status < 500) {
                snprintf(a.problem, sizeof(a.problem), "HTTP %ld without an OAuth2 error",
                         status);
                a.outcome = OAUTH_BAD_RESPONSE;
        } else {
                snprintf(a.problem, sizeof(a.problem), "unexpected HTTP status %ld", status);
                a.outcome = OAUTH_BAD_RESPONSE;
        }
        if (root)
                wipe_token_member(root);
        return oauth_answer_finish(&a, r, ret);
}

void oauth_answer_done(OAuthAnswer *a)
{
        if (a->access_token)
                sodium_free(a->access_token);
        if (a->aws_secret_access_key)
                sodium_free(a->aws_secret_access_key);
        free(a->scope);
        free(a->issued_token_type);
        *a = (OAuthAnswer){.expires_in = -1};
}
