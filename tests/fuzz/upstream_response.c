/* An upstream token endpoint's answer (brokerd/federation: http_header_parse for the header
 * lines libcurl hands over, oauth_parse_response for status and body): what any server the
 * broker is pointed at, or anything between, may send back. Input: two bytes of status
 * (folded into 100..599), header lines up to an empty line, then the body. */
#include <errno.h>
#include <sodium.h>

#include "answer.h"
#include "federation/http.h"

#define MAX_TOKEN 4096

/* Tokens live in sodium_malloc()'d memory, which needs sodium_init() first (the daemon's main
 * calls it). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void) argc;
        (void) argv;
        FUZZ_ASSERT(sodium_init() >= 0);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        HttpHeaders h = {.retry_after_s = -1};
        const char *p, *end, *body;
        OAuthAnswer a;
        long status;

        if (size < 2 || size > 256 * 1024)
                return -1;
        status = 100 + (long) (((unsigned) data[0] << 8 | data[1]) % 500);
        p = (const char *) data + 2;
        end = (const char *) data + size;
        /* header lines, each with its line end as libcurl gives it, until an empty line */
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t n = nl ? (size_t) (nl - p) + 1 : (size_t) (end - p);

                http_header_parse(p, n, &h);
                FUZZ_ASSERT(strlen(h.content_type) < sizeof(h.content_type));
                FUZZ_ASSERT(h.retry_after_s >= -1 && h.retry_after_s <= 999999999);
                p += n;
                if (n <= 2 && (n == 1 || p[-2] == '\r'))
                        break;
        }
        body = p;

        FUZZ_ASSERT(oauth_parse_response(status, body, (size_t) (end - body), MAX_TOKEN, &a) == 0);
        fuzz_check_answer(&a, status, MAX_TOKEN);
        if (a.outcome == OAUTH_TOKEN) {
                FUZZ_ASSERT(a.token_type[0] && fuzz_printable(a.token_type, strlen(a.token_type)));
                FUZZ_ASSERT(!a.scope || (strlen(a.scope) <= OAUTH_SCOPE_MAX &&
                                         fuzz_printable(a.scope, strlen(a.scope))));
                FUZZ_ASSERT(!a.issued_token_type ||
                            strlen(a.issued_token_type) <= OAUTH_TOKEN_TYPE_URI_MAX);
        }
        fuzz_answer_done(&a);
        return 0;
}
