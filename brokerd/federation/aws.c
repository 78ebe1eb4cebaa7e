#include "federation/aws.h"

#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "timeutil.h"

/* Codes AWS documents as worth retrying (CommonErrors, and IDPCommunicationError of
 * AssumeRoleWithWebIdentity: the identity provider could not be reached). */
static const char *const retryable_codes[] = {
    "IDPCommunicationError", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    "ServiceUnavailable",    "InternalFailure", NULL,
};

static bool is_retryable_code(const char *code)
{
        for (size_t i = 0; retryable_codes[i]; i++)
                if (strcmp(code, retryable_codes[i]) == 0)
                        return true;
        return false;
}

/* The first element child named `name` (whatever its namespace), or NULL. */
static xmlNode *child(xmlNode *n, const char *name)
{
        if (!n)
                return NULL;
        for (xmlNode *c = n->children; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE && strcmp((const char *) c->name, name) == 0)
                        return c;
        return NULL;
}

/* The element's text when it is exactly one text node of printable ASCII, 1..max bytes. */
static const char *text(xmlNode *n, size_t max, size_t *ret_len)
{
        xmlNode *t = n ? n->children : NULL;
        size_t len;

        if (!t || t->next || t->type != XML_TEXT_NODE || !t->content)
                return NULL;
        len = strlen((const char *) t->content);
        if (len == 0 || len > max || !oauth_printable((const char *) t->content, len))
                return NULL;
        if (ret_len)
                *ret_len = len;
        return (const char *) t->content;
}

static void wipe_text(xmlNode *n)
{
        xmlNode *t = n ? n->children : NULL;

        for (; t; t = t->next)
                if (t->type == XML_TEXT_NODE && t->content)
                        explicit_bzero(t->content, strlen((const char *) t->content));
}

static bool key_id_valid(const char *s)
{
        for (; *s; s++)
                if (!((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
                        return false;
        return true;
}

static int read_credentials(xmlNode *root, size_t max_token_bytes, int64_t now_ms,
                            OAuthAnswer *a)
{
        xmlNode *creds = child(child(root, "AssumeRoleWithWebIdentityResult"), "Credentials");
        const char *key_id, *secret, *session, *expiration;
        size_t secret_len, session_len;
        int64_t exp_ms;

        if (!creds)
                return oauth_answer_bad(a, "no Credentials in the answer");
        key_id = text(child(creds, "AccessKeyId"), AWS_KEY_ID_MAX, NULL);
        secret = text(child(creds, "SecretAccessKey"), AWS_SECRET_MAX, &secret_len);
        session = text(child(creds, "SessionToken"), max_token_bytes, &session_len);
        expiration = text(child(creds, "Expiration"), AWS_EXPIRATION_MAX, NULL);
        if (!key_id || !key_id_valid(key_id) || strlen(key_id) < 16)
                return oauth_answer_bad(a, "AccessKeyId is missing or not an access key id");
        if (!secret || !session)
                return oauth_answer_bad(
                    a, "SecretAccessKey or SessionToken is missing or not printable");
        if (!expiration || time_parse_rfc3339(expiration, &exp_ms) < 0)
                return oauth_answer_bad(a, "Expiration is missing or not an ISO 8601 time");
        if (exp_ms <= now_ms)
                return oauth_answer_bad(a, "the credentials have expired already");
        if (secure_copy(secret, secret_len, &a->aws_secret_access_key) < 0 ||
            secure_copy(session, session_len, &a->access_token) < 0)
                return -ENOMEM;
        a->access_token_len = session_len;
        snprintf(a->aws_access_key_id, sizeof(a->aws_access_key_id), "%s", key_id);
        snprintf(a->aws_expiration, sizeof(a->aws_expiration), "%s", expiration);
        snprintf(a->token_type, sizeof(a->token_type), "aws4_request");
        a->expires_in = MIN((exp_ms - now_ms) / 1000, (int64_t) OAUTH_EXPIRES_IN_MAX);
        a->outcome = OAUTH_TOKEN;
        return 0;
}

/* <ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>; the
 * code and message are cut to the OAuth2 error bounds and must be printable. */
static bool read_error(xmlNode *root, OAuthAnswer *a)
{
        xmlNode *err = child(root, "Error");
        const char *code = text(child(err, "Code"), OAUTH_ERROR_MAX, NULL);
        const char *message = text(child(err, "Message"), 4096, NULL);

        if (!root || strcmp((const char *) root->name, "ErrorResponse") != 0 || !code ||
            strpbrk(code, "\"\\"))
                return false;
        snprintf(a->error, sizeof(a->error), "%s", code);
        if (message && !strpbrk(message, "\"\\"))
                snprintf(a->error_description, sizeof(a->error_description), "%s", message);
        return true;
}

int aws_parse_response(long status, const char *body, size_t len, size_t max_token_bytes,
                       int64_t now_ms, OAuthAnswer *ret)
{
        OAuthAnswer a = {.expires_in = -1};
        xmlDoc *doc = NULL;
        xmlNode *root = NULL;
        int r = 0;

        if (len > 0 && len <= INT32_MAX)
                doc = xmlReadMemory(body, (int) len, NULL, NULL,
                                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                        XML_PARSE_NOBLANKS | XML_PARSE_NOCDATA);
        if (doc && doc->intSubset) { /* a DTD: refused, whatever it declares */
                xmlFreeDoc(doc);
                doc = NULL;
        }
        root = doc ? xmlDocGetRootElement(doc) : NULL;

        if (status >= 200 && status < 300) {
                if (!root)
                        r = oauth_answer_bad(&a, "the body is not an XML document");
                else if (strcmp((const char *) root->name, "AssumeRoleWithWebIdentityResponse"))
                        r = oauth_answer_bad(
                            &a, "the body is not an AssumeRoleWithWebIdentityResponse");
                else
                        r = read_credentials(root, max_token_bytes, now_ms, &a);
        } else if (read_error(root, &a) && status >= 400 && status < 500 && status != 429 &&
                   !is_retryable_code(a.error)) {
                a.outcome = OAUTH_REFUSED;
                snprintf(a.problem, sizeof(a.problem), "HTTP %ld %s", status, a.error);
        } else if (status == 429 || (status >= 400 && status < 600 && a.error[0]) ||
                   (status >= 500 && status < 600)) {
                a.outcome = OAUTH_RETRYABLE;
                snprintf(a.problem, sizeof(a.problem), "HTTP %ld", status);
        } else {
                snprintf(a.problem, sizeof(a.problem), "HTTP %ld without an AWS error", status);
                a.outcome = OAUTH_BAD_RESPONSE;
        }
        if (root) {
                xmlNode *creds =
                    child(child(root, "AssumeRoleWithWebIdentityResult"), "Credentials");
                wipe_text(child(creds, "SecretAccessKey"));
                wipe_text(child(creds, "SessionToken"));
        }
        xmlFreeDoc(doc);
        return oauth_answer_finish(&a, r, ret);
}

static bool session_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               strchr("_+=,.@-", c);
}

void aws_session_name(const char *subject, char ret[AWS_SESSION_NAME_MAX + 1])
{
        size_t n = strlen(subject), i;

        for (i = 0; i < n && i < AWS_SESSION_NAME_MAX; i++)
                ret[i] = session_char(subject[i]) ? subject[i] : '-';
        ret[i] = 0;
        if (n > AWS_SESSION_NAME_MAX) {
                unsigned char digest[crypto_hash_sha256_BYTES];

                crypto_hash_sha256(digest, (const unsigned char *) subject, n);
                ret[AWS_SESSION_NAME_MAX - 9] = '-';
                sodium_bin2hex(ret + AWS_SESSION_NAME_MAX - 8, 9, digest, 4);
        }
        while (strlen(ret) < 2) /* at least two characters */
                strcat(ret, "-");
}
