/* The cloud presets' answers (brokerd/federation: aws_parse_response, AWS STS's XML with
 * libxml2; google_parse_access_token, IAM Credentials' JSON): what an endpoint, or anything
 * between, may send back. Input: one byte choosing the parser (even: AWS, odd: Google), two
 * bytes of status (folded into 100..599), then the body. */
#include <libxml/parser.h>
#include <sodium.h>

#include "answer.h"
#include "federation/aws.h"
#include "federation/google.h"

#define MAX_TOKEN 4096
#define NOW_MS    1796472000000LL /* 2026-12-05T12:00:00Z */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void) argc;
        (void) argv;
        FUZZ_ASSERT(sodium_init() >= 0);
        xmlInitParser();
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        OAuthAnswer a;
        bool aws;
        long status;

        if (size < 3 || size > 256 * 1024)
                return -1;
        aws = (data[0] & 1) == 0;
        status = 100 + (long) (((unsigned) data[1] << 8 | data[2]) % 500);
        if (aws)
                FUZZ_ASSERT(aws_parse_response(status, (const char *) data + 3, size - 3, MAX_TOKEN,
                                               NOW_MS, &a) == 0);
        else
                FUZZ_ASSERT(google_parse_access_token(status, (const char *) data + 3, size - 3,
                                                      MAX_TOKEN, NOW_MS, &a) == 0);
        fuzz_check_answer(&a, status, MAX_TOKEN);
        if (a.outcome == OAUTH_TOKEN) {
                FUZZ_ASSERT(a.expires_in >= 0); /* from an expiry time, which both require */
                if (aws) {
                        FUZZ_ASSERT(a.aws_secret_access_key &&
                                    strlen(a.aws_secret_access_key) <= AWS_SECRET_MAX &&
                                    fuzz_printable(a.aws_secret_access_key,
                                                   strlen(a.aws_secret_access_key)));
                        FUZZ_ASSERT(strlen(a.aws_access_key_id) >= 16);
                        FUZZ_ASSERT(a.aws_expiration[0]);
                } else
                        FUZZ_ASSERT(!a.aws_secret_access_key);
        }
        fuzz_answer_done(&a);
        return 0;
}
