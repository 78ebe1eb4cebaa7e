/* What brokerctl prints for the cloud SDKs, so that they take the broker's credentials with no
 * change to the application. Pure functions (no I/O): the tests check each shape on a JSON text.
 *
 * Contract:
 * - Every text returned is one compact JSON object followed by "\n", keys in the order the
 *   providers document them; the caller frees it with erase_and_freep() (it holds a secret).
 * - format_aws_credential_process(): the AWS SDKs' credential_process output
 *   (https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html)
 *   {"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"}, from the broker's
 *   whole answer for an aws_sts upstream (broker_upstream_token.response_json), whose "aws" object
 *   holds the four fields as AWS returned them. Validated before use: the answer is a JSON object
 *   with ok true, "aws" an object whose four fields are non-empty strings, Expiration an RFC 3339
 *   date and time (timeutil.h) and "expires_at" an integer. Expiration is written back in UTC to
 *   the second ("2026-11-22T10:00:00Z"), or taken from expires_at when the broker's expiry is
 *   earlier (an SDK then refreshes no later than the broker would). -ENOENT when the answer has
 *   no "aws" object (the upstream is not aws_sts), -EBADMSG when it is malformed (err says how),
 *   -ENOMEM.
 * - format_gcp_executable_success() / _failure(): Google's executable-sourced credential response
 *   (https://google.aip.dev/auth/4117): {"version":1,"success":true,"token_type":
 *   "urn:ietf:params:oauth:token-type:jwt","id_token","expiration_time"} and
 *   {"version":1,"success":false,"code","message"}. The token must be UTF-8 (-EINVAL otherwise);
 *   code and message go through text_escape() (escape.h), so that a message cut in the middle
 *   of a character still makes valid JSON, and an empty one becomes "error" (the libraries
 *   require both non-empty). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define GCP_TOKEN_TYPE_JWT      "urn:ietf:params:oauth:token-type:jwt"
#define GCP_TOKEN_TYPE_ID_TOKEN "urn:ietf:params:oauth:token-type:id_token"

int format_aws_credential_process(const char *response_json, char **ret, char *err, size_t errlen);

int format_gcp_executable_success(const char *id_token, int64_t expires_at, char **ret);
int format_gcp_executable_failure(const char *code, const char *message, char **ret);
