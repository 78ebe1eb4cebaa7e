/* brokerctl: the command-line client. Talks to the workload and admin sockets through
 * libbroker; reads the audit database directly for export and verify. For the cloud SDKs it
 * prints their own credential formats (formats.h: AWS credential_process, Google's
 * executable-sourced credentials) and keeps token files fresh (agent.h). Which command takes
 * which option, and each command's help, are commands.h's; what to advise after a failure is
 * hints.h's; the tables of status and keys are tables.h's. */
#include <getopt.h>
#include <stdarg.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "audit_tool.h"
#include "broker.h"
#include "commands.h"
#include "exitcode.h"
#include "formats.h"
#include "hints.h"
#include "json-util.h"
#include "macro.h"
#include "message.h"
#include "secret_tool.h"
#include "tables.h"
#include "timeutil.h"
#include "tokenfile.h"
#include "version.h"

typedef struct Args {
        const char *socket;
        const char *admin_socket;
        const char *audience;
        const char *upstream;
        const char *scopes[SCOPES_MAX];
        size_t n_scopes;
        int64_t ttl;
        bool json;
        const char *format; /* token, credentials; audit export has its own copy */
        const char *write;  /* token --write FILE */
        bool refresh;
        mode_t mode;
        bool mode_set;
        const char *alg; /* rotate: one algorithm's series only */
        AuditToolArgs audit;
        unsigned seen; /* OPT_BIT()s of the options given, checked against the command's */
        bool help, version;
} Args;

static CallContext workload_call(const char *command)
{
        return (CallContext){.command = command};
}

static int usage_error(const Command *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "brokerctl: WHAT IS WRONG (see 'brokerctl COMMAND --help')"; returns EXIT_USAGE. */
static int usage_error(const Command *c, const char *fmt, ...)
{
        va_list ap;

        fputs("brokerctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, " (see 'brokerctl %s%s--help')\n", c ? c->full : "", c ? " " : "");
        return EXIT_USAGE;
}

static const Command *cmd_of(CommandId id)
{
        return &commands[id];
}

/* A broker JWT for --audience (with --scope and --ttl) into *tok; -errno with *err filled and
 * *ret_connecting saying whether the connection itself failed. */
static int get_token(const Args *a, broker_token *tok, broker_error *err, bool *ret_connecting)
{
        broker *b = NULL;
        int r;

        r = broker_open(a->socket, 0, &b, err);
        *ret_connecting = r < 0;
        if (r >= 0)
                r = broker_get_token(b,
                                     &(broker_token_request){.audience = a->audience,
                                                             .scopes = a->scopes,
                                                             .n_scopes = a->n_scopes,
                                                             .ttl = a->ttl},
                                     tok, err);
        broker_close(b);
        return r;
}

/* Fetches an upstream's token into *tok; on failure reports it on stderr and returns the exit
 * code. */
static int get_upstream_token(const Args *a, const Command *c, broker_upstream_token *tok)
{
        CallContext ctx = workload_call(c->full);
        broker *b = NULL;
        broker_error err = {};
        int r;

        if (a->audience || a->ttl)
                return usage_error(c, "--upstream takes no --audience or --ttl (the upstream's "
                                      "configuration decides them)");
        r = broker_open(a->socket, 0, &b, &err);
        ctx.connecting = r < 0;
        if (r >= 0)
                r = broker_get_upstream_token(
                    b,
                    &(broker_upstream_request){.upstream = a->upstream,
                                               .scopes = a->scopes,
                                               .n_scopes = a->n_scopes},
                    tok, &err);
        broker_close(b);
        if (r < 0 && tok->upstream_error[0]) {
                /* The upstream refused the broker: no rule of ours is missing, so the usual
                 * hint (whoami, ask for a rule) would send the caller the wrong way. */
                fprintf(stderr, "brokerctl: %s: %s (the upstream refused the broker; the "
                                "operator can retry it with 'brokerctl upstream test %s')\n",
                        err.code, err.message, a->upstream);
                return exit_code_for_status(err.status);
        }
        if (r < 0)
                return failure_report(&err, &ctx);
        return EXIT_OK;
}

/* An upstream's token: the access token alone on stdout (json: the whole response). */
static int cmd_upstream_token(const Args *a, bool json)
{
        broker_upstream_token tok = {};
        int r;

        r = get_upstream_token(a, cmd_of(CMD_TOKEN), &tok);
        if (r != EXIT_OK)
                return r;
        printf("%s\n", json ? tok.response_json : tok.access_token);
        broker_upstream_token_clear(&tok);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

/* AWS credential_process: the JSON on stdout, or nothing there and the reason on stderr. */
static int cmd_credentials(const Args *a)
{
        _cleanup_(erase_and_freep) char *out = NULL;
        const Command *c = cmd_of(CMD_CREDENTIALS);
        broker_upstream_token tok = {};
        char perr[256];
        int r;

        if (!a->upstream)
                return usage_error(c, "credentials needs --upstream NAME (an aws_sts upstream)");
        if (!a->format)
                return usage_error(c, "credentials needs --format aws");
        if (strcmp(a->format, "aws") != 0)
                return usage_error(c, "credentials --format is aws, got \"%s\"", a->format);
        r = get_upstream_token(a, c, &tok);
        if (r != EXIT_OK)
                return r;
        r = format_aws_credential_process(tok.response_json, &out, perr, sizeof(perr));
        broker_upstream_token_clear(&tok);
        if (r == -ENOENT) {
                fprintf(stderr,
                        "brokerctl: the upstream %s gave no AWS credentials (--format aws "
                        "needs an upstream of kind aws_sts)\n",
                        a->upstream);
                return EXIT_USAGE;
        }
        if (r == -ENOMEM) {
                fprintf(stderr, "brokerctl: out of memory\n");
                return EXIT_OTHER;
        }
        if (r < 0) {
                fprintf(stderr, "brokerctl: malformed AWS credentials from the broker: %s\n", perr);
                return EXIT_OTHER;
        }
        fputs(out, stdout);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

/* The broker's error code for a result, for the "code" of Google's failure response. */
static const char *status_code_name(const broker_error *err)
{
        if (err->code[0])
                return err->code;
        switch (err->status) {
        case BROKER_E_BAD_REQUEST:
                return "bad_request";
        case BROKER_E_UNAVAILABLE:
                return "unavailable";
        case BROKER_E_DENIED:
                return "denied";
        case BROKER_E_RATE_LIMITED:
                return "rate_limited";
        case BROKER_E_NOT_FOUND:
                return "not_found";
        case BROKER_E_PROTOCOL:
                return "protocol_error";
        case BROKER_E_NOMEM:
                return "out_of_memory";
        default:
                return "internal";
        }
}

/* Google's failure response on stdout; returns `exit_code`. */
static int gcp_fail(const char *code, const char *message, int exit_code)
{
        _cleanup_free_ char *out = NULL;

        if (format_gcp_executable_failure(code, message, &out) < 0)
                return EXIT_OTHER;
        fputs(out, stdout);
        (void) fflush(stdout);
        return exit_code;
}

/* Google's executable-sourced credentials (AIP-4117). The auth libraries read stdout and stderr
 * as one stream and parse it as JSON, so everything, failures included, is reported as JSON on
 * stdout and nothing is written to stderr. */
static int cmd_token_gcp(const Args *a)
{
        _cleanup_(erase_and_freep) char *out = NULL;
        const char *type = secure_getenv("GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE");
        const char *output_file = secure_getenv("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE");
        CallContext ctx = workload_call("token");
        broker_error err = {};
        broker_token tok = {};
        char message[1200], hint[512];
        int r;

        if (a->upstream || !a->audience)
                return gcp_fail("usage",
                                "--format gcp-executable needs --audience AUD (a broker JWT), "
                                "not --upstream",
                                EXIT_USAGE);
        /* The library names the subject token type of its configuration; a broker JWT is an
         * OIDC token, which Google takes as either of these two types, never as SAML. */
        if (type && *type && strcmp(type, GCP_TOKEN_TYPE_JWT) != 0 &&
            strcmp(type, GCP_TOKEN_TYPE_ID_TOKEN) != 0) {
                snprintf(message, sizeof(message),
                         "brokerctl issues JWTs; the credential configuration asks for %s "
                         "(set subject_token_type to %s)",
                         type, GCP_TOKEN_TYPE_JWT);
                return gcp_fail("unsupported_token_type", message, EXIT_USAGE);
        }
        r = get_token(a, &tok, &err, &ctx.connecting);
        if (r < 0) {
                failure_hint(&err, &ctx, hint, sizeof(hint));
                snprintf(message, sizeof(message), "%s%s", err.message, hint);
                return gcp_fail(status_code_name(&err), message, exit_code_for_status(err.status));
        }
        r = format_gcp_executable_success(tok.token, tok.expires_at, &out);
        broker_token_clear(&tok);
        if (r < 0)
                return gcp_fail("internal", "cannot format the token", EXIT_OTHER);
        /* The libraries read a cached response from this file before they run us again. Failing
         * to write it costs a request next time, nothing else, and may not be reported on
         * stderr (see above): the response on stdout is what counts. */
        if (output_file && *output_file)
                (void) token_file_write(output_file, out, strlen(out), TOKEN_FILE_MODE_DEFAULT);
        fputs(out, stdout);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

/* token --write FILE [--refresh]: agent.h. */
static int cmd_token_write(const Args *a)
{
        const Command *c = cmd_of(CMD_TOKEN);

        if (a->json || (a->format && strcmp(a->format, "plain") != 0))
                return usage_error(c, "--write puts the token alone in the file; it takes no "
                                      "--json or --format");
        if (!a->audience && !a->upstream)
                return usage_error(c, "token needs --audience AUD or --upstream NAME");
        if (a->upstream && (a->audience || a->ttl))
                return usage_error(c, "--upstream takes no --audience or --ttl (the upstream's "
                                      "configuration decides them)");
        return agent_run(&(AgentOptions){
            .socket = a->socket,
            .path = a->write,
            .mode = a->mode_set ? a->mode : TOKEN_FILE_MODE_DEFAULT,
            .refresh = a->refresh,
            .audience = a->audience,
            .upstream = a->upstream,
            .scopes = a->scopes,
            .n_scopes = a->n_scopes,
            .ttl = a->ttl,
        });
}

static int cmd_token(const Args *a)
{
        const Command *c = cmd_of(CMD_TOKEN);
        CallContext ctx = workload_call("token");
        broker_error err = {};
        broker_token tok = {};
        bool json = a->json;
        int r;

        if ((a->refresh || a->mode_set) && !a->write)
                return usage_error(c, "%s goes with --write FILE",
                                   a->refresh ? "--refresh" : "--mode");
        if (a->write)
                return cmd_token_write(a);
        if (a->format && strcmp(a->format, "gcp-executable") == 0) {
                if (a->json)
                        return gcp_fail("usage", "--json is --format json", EXIT_USAGE);
                return cmd_token_gcp(a);
        }
        if (a->format && strcmp(a->format, "json") == 0)
                json = true;
        else if (a->format && strcmp(a->format, "plain") != 0)
                return usage_error(c, "token --format is plain, json or gcp-executable, got \"%s\"",
                                   a->format);
        else if (a->format && a->json)
                return usage_error(c, "--json is --format json: give one of them");
        if (a->upstream)
                return cmd_upstream_token(a, json);
        if (!a->audience)
                return usage_error(c, "token needs --audience AUD or --upstream NAME");
        r = get_token(a, &tok, &err, &ctx.connecting);
        if (r < 0)
                return failure_report(&err, &ctx);
        printf("%s\n", json ? tok.response_json : tok.token);
        broker_token_clear(&tok);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

typedef enum Output {
        OUTPUT_AS_IS,  /* the broker's response as it came */
        OUTPUT_JWKS,   /* the JWKS alone */
        OUTPUT_STATUS, /* a table; JSON less the envelope with --json */
        OUTPUT_KEYS,
} Output;

/* The upstream's OAuth2 error code of a failed response text, or NULL. */
static const char *upstream_error_of(json_t *resp)
{
        return json_string_value(
            json_object_get(json_object_get(resp, "error"), "upstream_error"));
}

/* Sends {"op": op[, field: value]} and prints the response as `out` says. */
static int cmd_simple(const char *socket, CallContext *ctx, const char *op, const char *field,
                      const char *value, Output out, bool json)
{
        _cleanup_(json_decrefp) json_t *req = json_pack("{s:s}", "op", op), *reply = NULL;
        _cleanup_free_ char *text = NULL, *resp = NULL;
        broker *b = NULL;
        broker_error err = {};
        char advice[300];
        int r;

        if (!req || (field && value && json_object_set_new(req, field, json_string(value)) < 0) ||
            !(text = json_dumps(req, JSON_COMPACT))) {
                fprintf(stderr, "brokerctl: out of memory\n");
                return EXIT_OTHER;
        }
        r = broker_open(socket, 0, &b, &err);
        ctx->connecting = r < 0;
        if (r >= 0)
                r = broker_call(b, text, &resp, &err);
        broker_close(b);
        if (resp)
                reply = json_loads(resp, 0, NULL);
        if (r < 0) {
                const char *ue = upstream_error_of(reply);

                if (ue && !ctx->if_denied) {
                        snprintf(advice, sizeof(advice),
                                 "the upstream answered %s: check its configuration and the "
                                 "secret it uses ('brokerctl secret list')",
                                 ue);
                        ctx->if_denied = advice;
                }
                return failure_report(&err, ctx);
        }
        if (out == OUTPUT_AS_IS) {
                printf("%s\n", resp);
                return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
        }
        if (!reply) {
                fprintf(stderr, "brokerctl: malformed answer from the broker\n");
                return EXIT_OTHER;
        }
        if (json) {
                _cleanup_free_ char *j = NULL;

                reply_strip_envelope(reply);
                j = json_dumps(reply, JSON_COMPACT);
                if (!j) {
                        fprintf(stderr, "brokerctl: out of memory\n");
                        return EXIT_OTHER;
                }
                printf("%s\n", j);
        } else {
                r = out == OUTPUT_JWKS     ? print_jwks(reply, stdout)
                    : out == OUTPUT_STATUS ? print_status_table(reply, stdout)
                                           : print_keys_table(reply, stdout);
                if (r < 0) {
                        fprintf(stderr, "brokerctl: malformed %s answer from the broker\n", op);
                        return EXIT_OTHER;
                }
        }
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

/* --ttl: a duration as the configuration takes them (timeutil.h), within the protocol's
 * bounds. */
static int parse_ttl(const char *s, int64_t *ret)
{
        uint64_t v;

        if (duration_parse(s, &v) < 0 || v < 1 || v > (uint64_t) TTL_MAX)
                return -EINVAL;
        *ret = (int64_t) v;
        return 0;
}

static const char *admin_socket_path(const Args *a)
{
        const char *p = a->admin_socket ? a->admin_socket : secure_getenv("BROKER_ADMIN_SOCKET");
        return p && *p ? p : BROKER_DEFAULT_ADMIN_SOCKET;
}

enum {
        OPT_GETOPT_BASE = 0x100, /* getopt's values: OPT_GETOPT_BASE + OptionId */
        OPT_VERSION = OPT_GETOPT_BASE + _OPT_MAX,
};

#define LONG_OPT(name, has_arg, id) {name, has_arg, NULL, OPT_GETOPT_BASE + (id)}

static const struct option long_options[] = {
    LONG_OPT("socket", required_argument, OPT_SOCKET),
    LONG_OPT("admin-socket", required_argument, OPT_ADMIN_SOCKET),
    LONG_OPT("audience", required_argument, OPT_AUDIENCE),
    LONG_OPT("upstream", required_argument, OPT_UPSTREAM),
    LONG_OPT("scope", required_argument, OPT_SCOPE),
    LONG_OPT("ttl", required_argument, OPT_TTL),
    LONG_OPT("json", no_argument, OPT_JSON),
    LONG_OPT("database", required_argument, OPT_DATABASE),
    LONG_OPT("since", required_argument, OPT_SINCE),
    LONG_OPT("until", required_argument, OPT_UNTIL),
    LONG_OPT("format", required_argument, OPT_FORMAT),
    LONG_OPT("output", required_argument, OPT_OUTPUT),
    LONG_OPT("event", required_argument, OPT_EVENT),
    LONG_OPT("alg", required_argument, OPT_ALG),
    LONG_OPT("file", required_argument, OPT_FILE),
    LONG_OPT("audit-key", required_argument, OPT_AUDIT_KEY),
    LONG_OPT("threads", required_argument, OPT_THREADS),
    LONG_OPT("allow-empty", no_argument, OPT_ALLOW_EMPTY),
    LONG_OPT("write", required_argument, OPT_WRITE),
    LONG_OPT("refresh", no_argument, OPT_REFRESH),
    LONG_OPT("mode", required_argument, OPT_MODE),
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, 'h'},
    {},
};

/* Takes one option's value into *a. Returns -1 to go on, else the exit code. */
static int take_option(OptionId id, const char *optarg_, Args *a)
{
        char *value = (char *) optarg_;

        a->seen |= OPT_BIT(id);
        switch (id) {
        case OPT_SOCKET:
                a->socket = value;
                break;
        case OPT_ADMIN_SOCKET:
                a->admin_socket = value;
                break;
        case OPT_AUDIENCE:
                a->audience = value;
                break;
        case OPT_UPSTREAM:
                a->upstream = value;
                break;
        case OPT_SCOPE:
                if (a->n_scopes >= SCOPES_MAX) {
                        fprintf(stderr, "brokerctl: at most %u --scope options\n", SCOPES_MAX);
                        return EXIT_USAGE;
                }
                a->scopes[a->n_scopes++] = value;
                break;
        case OPT_TTL:
                if (parse_ttl(value, &a->ttl) < 0) {
                        fprintf(stderr,
                                "brokerctl: --ttl must be a duration from 1 second to %lld "
                                "seconds: a number of seconds, or a number with s, m, h or d "
                                "(90s, 15m, 1h, 1d); got \"%s\"\n",
                                (long long) TTL_MAX, value);
                        return EXIT_USAGE;
                }
                break;
        case OPT_JSON:
                a->json = true;
                break;
        case OPT_DATABASE:
                a->audit.database = value;
                break;
        case OPT_SINCE:
                a->audit.since = value;
                break;
        case OPT_UNTIL:
                a->audit.until = value;
                break;
        case OPT_FORMAT:
                a->format = a->audit.format = value;
                break;
        case OPT_OUTPUT:
                a->audit.output = value;
                break;
        case OPT_ALG:
                a->alg = value;
                break;
        case OPT_FILE:
                a->audit.file = value;
                break;
        case OPT_AUDIT_KEY:
                if (a->audit.n_pins >= AUDIT_PINS_MAX) {
                        fprintf(stderr, "brokerctl: at most %u --audit-key options\n",
                                AUDIT_PINS_MAX);
                        return EXIT_USAGE;
                }
                a->audit.pins[a->audit.n_pins++] = value;
                break;
        case OPT_EVENT:
                if (audit_args_add_events(&a->audit, value) != EXIT_OK)
                        return EXIT_USAGE;
                break;
        case OPT_ALLOW_EMPTY:
                a->audit.allow_empty = true;
                break;
        case OPT_WRITE:
                if (!*value) {
                        fprintf(stderr, "brokerctl: --write needs a file name\n");
                        return EXIT_USAGE;
                }
                a->write = value;
                break;
        case OPT_REFRESH:
                a->refresh = true;
                break;
        case OPT_MODE: {
                int k = token_file_mode_parse(value, &a->mode);
                if (k < 0) {
                        fprintf(stderr,
                                k == -EPERM ? "brokerctl: --mode %s is refused: a token file may "
                                              "not be executable, writable by group or others, "
                                              "setuid, setgid or sticky, and someone must be able "
                                              "to read it (0600, 0640, 0644, 0440 ...)\n"
                                            : "brokerctl: --mode must be an octal file mode such "
                                              "as 0600 or 0640, got \"%s\"\n",
                                value);
                        return EXIT_USAGE;
                }
                a->mode_set = true;
                break;
        }
        case OPT_THREADS: {
                char *end;
                long t = strtol(value, &end, 10);
                if (end == value || *end || t < 1 || t > GRANTLOG_THREADS_MAX) {
                        fprintf(stderr,
                                "brokerctl: --threads must be between 1 and %u, got \"%s\"\n",
                                GRANTLOG_THREADS_MAX, value);
                        return EXIT_USAGE;
                }
                a->audit.threads = (int) t;
                break;
        }
        default:
                break;
        }
        return -1;
}

/* One getopt pass over argv into *a; `command` (or NULL) names what a getopt error's advice
 * points at. Returns -1 when parsing should go on, else the exit code. --help and --version
 * are noted, to be acted on once the command is known. */
static int parse_options(int argc, char **argv, const char *optstring, const char *command,
                         Args *a)
{
        int c, r;

        while ((c = getopt_long(argc, argv, optstring, long_options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        a->help = true;
                        break;
                case OPT_VERSION:
                        a->version = true;
                        break;
                case '?':
                        /* getopt named the option and what is wrong with it */
                        fprintf(stderr, "See 'brokerctl %s%s--help'.\n", command ?: "",
                                command ? " " : "");
                        return EXIT_USAGE;
                default:
                        r = take_option((OptionId) (c - OPT_GETOPT_BASE), optarg, a);
                        if (r >= 0)
                                return r;
                }
        return -1;
}

/* The option a word after `revoke` names exactly ("--admin-socket" or "--admin-socket=PATH"),
 * or NULL: such a word is an option, any other (a kid may start with '-') the KID. */
static const struct option *revoke_option(const char *word)
{
        if (strncmp(word, "--", 2) != 0)
                return NULL;
        for (const struct option *o = long_options; o->name; o++) {
                size_t n = strlen(o->name);

                if (strncmp(word + 2, o->name, n) == 0 &&
                    (word[2 + n] == 0 || (word[2 + n] == '=' && o->has_arg != no_argument)))
                        return o;
        }
        return NULL;
}

/* The words after `revoke` (argv[0] is the first): options as revoke_option() says, "--" ends
 * them, the rest are operands, collected in w[1..]. Returns -1 to go on, else the exit code. */
static int parse_revoke(int argc, char **argv, Args *a, char **w, int *ret_n)
{
        bool options_done = false;
        int n = 1, r;

        for (int i = 0; i < argc; i++) {
                const struct option *o = options_done ? NULL : revoke_option(argv[i]);
                const char *eq;

                if (!options_done && strcmp(argv[i], "--") == 0) {
                        options_done = true;
                        continue;
                }
                if (!options_done && strcmp(argv[i], "-h") == 0) {
                        a->help = true;
                        continue;
                }
                if (!o) {
                        w[n++] = argv[i];
                        continue;
                }
                if (o->val == 'h' || o->val == OPT_VERSION) {
                        a->help |= o->val == 'h';
                        a->version |= o->val == OPT_VERSION;
                        continue;
                }
                eq = strchr(argv[i], '=');
                if (o->has_arg == no_argument)
                        r = take_option((OptionId) (o->val - OPT_GETOPT_BASE), NULL, a);
                else if (eq)
                        r = take_option((OptionId) (o->val - OPT_GETOPT_BASE), eq + 1, a);
                else if (i + 1 < argc)
                        r = take_option((OptionId) (o->val - OPT_GETOPT_BASE), argv[++i], a);
                else {
                        fprintf(stderr, "brokerctl: option '%s' requires an argument\n", argv[i]);
                        return EXIT_USAGE;
                }
                if (r >= 0)
                        return r;
        }
        *ret_n = n;
        return -1;
}

/* Refuses an option the command does not take, naming both. */
static int check_options(const Command *c, const Args *a)
{
        unsigned extra = a->seen & ~c->options;
        OptionId o;

        /* audit export and verify explain an option of the other one themselves (audit_tool.h),
         * better than this could */
        for (size_t i = 0; c->group && i < _CMD_MAX; i++)
                if (commands[i].group && strcmp(commands[i].group, c->group) == 0)
                        extra &= ~(commands[i].options & ~(OPT_BIT(OPT_SOCKET) |
                                                            OPT_BIT(OPT_ADMIN_SOCKET)));
        if (!extra)
                return -1;
        for (o = 0; o < _OPT_MAX && !(extra & OPT_BIT(o)); o++)
                ;
        if (o == OPT_SOCKET && c->admin)
                return usage_error(c, "--socket does not apply to %s: it talks to the admin "
                                      "socket, named with --admin-socket PATH or "
                                      "$BROKER_ADMIN_SOCKET",
                                   c->full);
        if (o == OPT_ADMIN_SOCKET && !c->admin && !c->group)
                return usage_error(c, "--admin-socket does not apply to %s: it talks to the "
                                      "workload socket, named with --socket PATH or $BROKER_SOCKET",
                                   c->full);
        return usage_error(c, "%s does not apply to %s", option_name(o), c->full);
}

static int run_command(const Command *c, Args *a, char **operands)
{
        CallContext ctx = {.command = c->full, .admin = c->admin};
        const char *admin = admin_socket_path(a);

        switch (c->id) {
        case CMD_TOKEN:
                return cmd_token(a);
        case CMD_CREDENTIALS:
                return cmd_credentials(a);
        case CMD_WHOAMI:
        case CMD_PING:
                return cmd_simple(a->socket, &ctx, c->name, NULL, NULL, OUTPUT_AS_IS, false);
        case CMD_JWKS:
                return cmd_simple(a->socket, &ctx, c->name, NULL, NULL, OUTPUT_JWKS, false);
        case CMD_STATUS:
                return cmd_simple(admin, &ctx, c->name, NULL, NULL, OUTPUT_STATUS, a->json);
        case CMD_KEYS:
                return cmd_simple(admin, &ctx, c->name, NULL, NULL, OUTPUT_KEYS, a->json);
        case CMD_RELOAD:
                ctx.if_bad_request = "the running configuration stays; fix the file and reload";
                return cmd_simple(admin, &ctx, c->name, NULL, NULL, OUTPUT_AS_IS, false);
        case CMD_ROTATE:
                ctx.operand = a->alg;
                ctx.if_not_found = "'brokerctl keys' shows the active keys and their algorithms";
                ctx.if_bad_request = "--alg is EdDSA, ES256 or RS256";
                return cmd_simple(admin, &ctx, c->name, "alg", a->alg, OUTPUT_AS_IS, false);
        case CMD_REVOKE:
                ctx.operand = operands[0];
                ctx.if_not_found = "'brokerctl keys' lists the kids";
                ctx.if_bad_request = "'brokerctl keys' shows each key's state";
                return cmd_simple(admin, &ctx, c->name, "kid", operands[0], OUTPUT_AS_IS, false);
        case CMD_SECRET_SET:
                return secret_set(admin, operands[0]);
        case CMD_SECRET_LIST:
                return secret_list(admin);
        case CMD_SECRET_DELETE:
                return secret_delete(admin, operands[0]);
        case CMD_UPSTREAM_TEST:
                ctx.operand = operands[0];
                ctx.if_not_found = "the upstreams are those the broker's configuration names "
                                   "under \"upstreams\"";
                return cmd_simple(admin, &ctx, "upstream_test", "upstream", operands[0],
                                  OUTPUT_AS_IS, false);
        case CMD_AUDIT_EXPORT:
                return audit_export(&a->audit);
        case CMD_AUDIT_VERIFY:
                return audit_verify(&a->audit);
        default:
                return EXIT_OTHER;
        }
}

static void list_commands(FILE *f)
{
        fputs("the commands are", f);
        for (size_t i = 0; i < _CMD_MAX; i++) {
                const Command *c = &commands[i];
                bool first_of_group = !c->group || i == 0 || !commands[i - 1].group ||
                                      strcmp(commands[i - 1].group, c->group) != 0;

                if (first_of_group)
                        fprintf(f, "%s %s", i ? "," : "", c->group ?: c->name);
        }
}

int main(int argc, char **argv)
{
        Args a = {};
        const Command *c;
        char **w, **operands;
        int n, n_operands, r;

        /* Nothing here reads SQLite's memory statistics; keeping them costs a global mutex
         * per allocation, which the verify threads would contend on. */
        (void) sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);

        /* Options before the command word stop at it ('+'); they are checked against the
         * command like those after it. */
        r = parse_options(argc, argv, "+h", NULL, &a);
        if (r >= 0)
                return r;
        if (a.version) {
                printf("brokerctl " BROKERD_VERSION "\n");
                return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
        }
        if (optind >= argc) {
                if (a.help) {
                        usage_all(stdout);
                        return EXIT_OK;
                }
                fputs("brokerctl: no command given; ", stderr);
                list_commands(stderr);
                fputs(" (see 'brokerctl --help')\n", stderr);
                return EXIT_USAGE;
        }

        w = calloc((size_t) argc + 1, sizeof(char *));
        if (!w) {
                fprintf(stderr, "brokerctl: out of memory\n");
                return EXIT_OTHER;
        }
        w[0] = argv[optind];
        if (strcmp(argv[optind], "revoke") == 0) {
                /* A kid may start with '-' (base64url; 1 in 64 real kids does): only the
                 * options revoke_option() names are taken for options. */
                r = parse_revoke(argc - optind - 1, argv + optind + 1, &a, w, &n);
        } else {
                /* The command's own options, anywhere after it. */
                int sub_argc = argc - optind;
                char **sub_argv = argv + optind;
                char *command = sub_argv[0];

                optind = 0;            /* glibc: start a fresh scan */
                sub_argv[0] = argv[0]; /* getopt's messages name argv[0] */
                r = parse_options(sub_argc, sub_argv, "h", command, &a);
                sub_argv[0] = command;
                n = 1;
                for (int i = optind; r < 0 && i < sub_argc; i++)
                        w[n++] = sub_argv[i];
        }
        if (r >= 0)
                goto out;
        if (a.version) {
                printf("brokerctl " BROKERD_VERSION "\n");
                r = fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
                goto out;
        }

        if (command_is_group(w[0])) {
                c = n >= 2 ? command_find(w[0], w[1]) : NULL;
                if (!c && a.help) {
                        usage_group(w[0], stdout);
                        r = EXIT_OK;
                        goto out;
                }
                if (!c && n < 2) {
                        fprintf(stderr, "brokerctl: %s needs a command: %s (see 'brokerctl %s "
                                        "--help')\n",
                                w[0], command_group_choices(w[0]), w[0]);
                        r = EXIT_USAGE;
                        goto out;
                }
                if (!c) {
                        fprintf(stderr, "brokerctl: unknown command '%s %s': %s takes %s (see "
                                        "'brokerctl %s --help')\n",
                                w[0], w[1], w[0], command_group_choices(w[0]), w[0]);
                        r = EXIT_USAGE;
                        goto out;
                }
                operands = w + 2;
                n_operands = n - 2;
        } else {
                c = command_find(w[0], NULL);
                if (!c) {
                        fprintf(stderr, "brokerctl: unknown command '%s'; ", w[0]);
                        list_commands(stderr);
                        fputs(" (see 'brokerctl --help')\n", stderr);
                        r = EXIT_USAGE;
                        goto out;
                }
                operands = w + 1;
                n_operands = n - 1;
        }
        if (a.help) {
                usage_command(c, stdout);
                r = fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
                goto out;
        }
        if (c->operand && n_operands < 1) {
                r = usage_error(c, "%s needs %s", c->full, c->operand);
                goto out;
        }
        if (n_operands > (c->operand ? 1 : 0)) {
                if (c->operand)
                        r = usage_error(c, "%s takes one %s, got also \"%s\"", c->full,
                                        c->operand, operands[1]);
                else
                        r = usage_error(c, "%s takes no arguments, got \"%s\"", c->full,
                                        operands[0]);
                goto out;
        }
        r = check_options(c, &a);
        if (r < 0)
                r = run_command(c, &a, operands);
out:
        free(w);
        return r;
}
