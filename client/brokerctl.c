/* brokerctl: the command-line client. Talks to the workload and admin sockets through
 * libbroker; reads the audit database directly for export and verify. For the cloud SDKs it
 * prints their own credential formats (formats.h: AWS credential_process, Google's
 * executable-sourced credentials) and keeps token files fresh (agent.h). */
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "audit_tool.h"
#include "broker.h"
#include "exitcode.h"
#include "formats.h"
#include "json-util.h"
#include "macro.h"
#include "message.h"
#include "secret_tool.h"
#include "tokenfile.h"

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
} Args;

static void usage(FILE *f)
{
        fputs("Usage:\n"
              "  brokerctl [--socket PATH] token --audience AUD [--scope S]... [--ttl SECONDS]\n"
              "                                  [--format plain|json|gcp-executable] [--json]\n"
              "  brokerctl [--socket PATH] token --upstream NAME [--scope S]... [--format "
              "plain|json]\n"
              "  brokerctl [--socket PATH] token (--audience AUD [--ttl SECONDS] | --upstream "
              "NAME)\n"
              "                                  [--scope S]... --write FILE [--refresh] "
              "[--mode MODE]\n"
              "  brokerctl [--socket PATH] credentials --upstream NAME --format aws\n"
              "  brokerctl [--socket PATH] whoami | jwks | ping\n"
              "  brokerctl [--admin-socket PATH] status | reload | keys | rotate [--alg ALG] | "
              "revoke KID\n"
              "  brokerctl [--admin-socket PATH] secret set NAME (value on stdin) | secret list |\n"
              "                                  secret delete NAME | upstream test NAME\n"
              "  brokerctl audit export --database PATH [--since TIME] [--until TIME]\n"
              "                         [--event EVENT[,EVENT]]... [--format jsonl|csv|ocsf] "
              "[--output FILE] [--threads N]\n"
              "  brokerctl audit verify --database PATH | --file EXPORT.jsonl [--allow-empty]\n"
              "                         [--audit-key PUBLIC_KEY|KEY_ID]... [--threads N]\n"
              "\n"
              "The workload socket defaults to $BROKER_SOCKET or " BROKER_DEFAULT_SOCKET ",\n"
              "the admin socket to $BROKER_ADMIN_SOCKET or " BROKER_DEFAULT_ADMIN_SOCKET ".\n"
              "TIME is RFC 3339 (2026-11-22T10:00:00Z) or a date (2026-11-22).\n"
              "\n"
              "Cloud SDK formats: 'token --format gcp-executable' prints Google's\n"
              "executable-sourced credential response (also written to\n"
              "$GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE when set); 'credentials --format aws' prints\n"
              "AWS credential_process JSON (for an aws_sts upstream).\n"
              "Agent mode: --write FILE puts the token alone (no newline) in FILE, replaced\n"
              "atomically, mode MODE (octal, default 0600; no execute, no write for group or\n"
              "others); --refresh keeps it fresh until SIGTERM or SIGINT (exit 0): rewritten at\n"
              "80 % of the token's lifetime; while the broker is down or says no, FILE is left\n"
              "as it is and the request retried after 1, 2, 4 ... 30 s. One log line per event\n"
              "on stderr.\n"
              "Exit codes: 0 ok, 1 usage or bad request, 2 broker unreachable or unavailable,\n"
              "3 denied or rate limited, 4 anything else.\n",
              f);
}

/* What to do next, by kind of failure. */
static const char *hint_for_status(int status)
{
        switch (status) {
        case BROKER_E_DENIED:
                return " (run 'brokerctl whoami' to see the identity the broker sees, and ask "
                       "the operator for a rule)";
        case BROKER_E_RATE_LIMITED:
                return " (wait a moment and retry)";
        case BROKER_E_UNAVAILABLE:
                return "";
        case BROKER_E_BAD_REQUEST:
                return " (see 'brokerctl --help')";
        default:
                return " (see the broker's log)";
        }
}

static int report(const broker_error *err)
{
        fprintf(stderr, "brokerctl: %s%s%s%s\n", err->code[0] ? err->code : "",
                err->code[0] ? ": " : "", err->message, hint_for_status(err->status));
        return exit_code_for_status(err->status);
}

static int usage_error(const char *message)
{
        fprintf(stderr, "brokerctl: %s (see 'brokerctl --help')\n", message);
        return EXIT_USAGE;
}

/* A broker JWT for --audience (with --scope and --ttl) into *tok; -errno with *err filled. */
static int get_token(const Args *a, broker_token *tok, broker_error *err)
{
        broker *b = NULL;
        int r;

        r = broker_open(a->socket, 0, &b, err);
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
static int get_upstream_token(const Args *a, broker_upstream_token *tok)
{
        broker *b = NULL;
        broker_error err = {};
        int r;

        if (a->audience || a->ttl)
                return usage_error("--upstream takes no --audience or --ttl (the upstream's "
                                   "configuration decides them)");
        r = broker_open(a->socket, 0, &b, &err);
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
                return report(&err);
        return EXIT_OK;
}

/* An upstream's token: the access token alone on stdout (json: the whole response). */
static int cmd_upstream_token(const Args *a, bool json)
{
        broker_upstream_token tok = {};
        int r;

        r = get_upstream_token(a, &tok);
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
        broker_upstream_token tok = {};
        char perr[256];
        int r;

        if (!a->upstream || !a->format)
                return usage_error("credentials needs --upstream NAME --format aws");
        if (strcmp(a->format, "aws") != 0)
                return usage_error("credentials: the only --format is aws");
        if (a->json || a->write || a->refresh || a->mode_set)
                return usage_error("credentials takes no --json, --write, --refresh or --mode");
        r = get_upstream_token(a, &tok);
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
        broker_error err = {};
        broker_token tok = {};
        char message[700];
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
        r = get_token(a, &tok, &err);
        if (r < 0) {
                snprintf(message, sizeof(message), "%s%s", err.message,
                         hint_for_status(err.status));
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
        if (a->json || (a->format && strcmp(a->format, "plain") != 0))
                return usage_error("--write puts the token alone in the file; it takes no --json "
                                   "or --format");
        if (!a->audience && !a->upstream)
                return usage_error("token needs --audience AUD or --upstream NAME");
        if (a->upstream && (a->audience || a->ttl))
                return usage_error("--upstream takes no --audience or --ttl (the upstream's "
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
        broker_error err = {};
        broker_token tok = {};
        bool json = a->json;
        int r;

        if ((a->refresh || a->mode_set) && !a->write)
                return usage_error("--refresh and --mode go with --write FILE");
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
                return usage_error("token --format is plain, json or gcp-executable");
        else if (a->format && a->json)
                return usage_error("--json is --format json");
        if (a->upstream)
                return cmd_upstream_token(a, json);
        if (!a->audience) {
                fprintf(stderr, "brokerctl: token needs --audience AUD or --upstream NAME\n");
                return EXIT_USAGE;
        }
        r = get_token(a, &tok, &err);
        if (r < 0)
                return report(&err);
        printf("%s\n", json ? tok.response_json : tok.token);
        broker_token_clear(&tok);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

/* Sends {"op": op[, field: value]} and prints the response. */
static int cmd_simple(const char *socket, const char *op, const char *field, const char *value)
{
        _cleanup_(json_decrefp) json_t *req = json_pack("{s:s}", "op", op);
        _cleanup_free_ char *text = NULL, *resp = NULL;
        broker *b = NULL;
        broker_error err = {};
        int r;

        if (!req || (field && value && json_object_set_new(req, field, json_string(value)) < 0) ||
            !(text = json_dumps(req, JSON_COMPACT))) {
                fprintf(stderr, "brokerctl: out of memory\n");
                return EXIT_OTHER;
        }
        r = broker_open(socket, 0, &b, &err);
        if (r >= 0)
                r = broker_call(b, text, &resp, &err);
        broker_close(b);
        if (r < 0)
                return report(&err);
        printf("%s\n", resp);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

static int parse_ttl(const char *s, int64_t *ret)
{
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);

        if (errno || end == s || *end || v <= 0 || v > TTL_MAX)
                return -EINVAL;
        *ret = v;
        return 0;
}

static const char *admin_socket_path(const Args *a)
{
        const char *p = a->admin_socket ? a->admin_socket : secure_getenv("BROKER_ADMIN_SOCKET");
        return p && *p ? p : BROKER_DEFAULT_ADMIN_SOCKET;
}

/* One getopt pass over argv into *a. Returns -1 when parsing should go on, else the exit
 * code (0 after --help). */
static int parse_options(int argc, char **argv, const char *optstring, Args *a)
{
        enum {
                OPT_SOCKET = 0x100,
                OPT_ADMIN_SOCKET,
                OPT_AUDIENCE,
                OPT_UPSTREAM,
                OPT_SCOPE,
                OPT_TTL,
                OPT_JSON,
                OPT_DATABASE,
                OPT_SINCE,
                OPT_UNTIL,
                OPT_FORMAT,
                OPT_OUTPUT,
                OPT_EVENT,
                OPT_ALG,
                OPT_FILE,
                OPT_AUDIT_KEY,
                OPT_THREADS,
                OPT_ALLOW_EMPTY,
                OPT_WRITE,
                OPT_REFRESH,
                OPT_MODE,
        };
        static const struct option opts[] = {
            {"socket", required_argument, NULL, OPT_SOCKET},
            {"admin-socket", required_argument, NULL, OPT_ADMIN_SOCKET},
            {"audience", required_argument, NULL, OPT_AUDIENCE},
            {"upstream", required_argument, NULL, OPT_UPSTREAM},
            {"scope", required_argument, NULL, OPT_SCOPE},
            {"ttl", required_argument, NULL, OPT_TTL},
            {"json", no_argument, NULL, OPT_JSON},
            {"database", required_argument, NULL, OPT_DATABASE},
            {"since", required_argument, NULL, OPT_SINCE},
            {"until", required_argument, NULL, OPT_UNTIL},
            {"format", required_argument, NULL, OPT_FORMAT},
            {"output", required_argument, NULL, OPT_OUTPUT},
            {"event", required_argument, NULL, OPT_EVENT},
            {"alg", required_argument, NULL, OPT_ALG},
            {"file", required_argument, NULL, OPT_FILE},
            {"audit-key", required_argument, NULL, OPT_AUDIT_KEY},
            {"threads", required_argument, NULL, OPT_THREADS},
            {"allow-empty", no_argument, NULL, OPT_ALLOW_EMPTY},
            {"write", required_argument, NULL, OPT_WRITE},
            {"refresh", no_argument, NULL, OPT_REFRESH},
            {"mode", required_argument, NULL, OPT_MODE},
            {"help", no_argument, NULL, 'h'},
            {},
        };
        int c;

        while ((c = getopt_long(argc, argv, optstring, opts, NULL)) >= 0)
                switch (c) {
                case OPT_SOCKET:
                        a->socket = optarg;
                        break;
                case OPT_ADMIN_SOCKET:
                        a->admin_socket = optarg;
                        break;
                case OPT_AUDIENCE:
                        a->audience = optarg;
                        break;
                case OPT_UPSTREAM:
                        a->upstream = optarg;
                        break;
                case OPT_SCOPE:
                        if (a->n_scopes >= SCOPES_MAX) {
                                fprintf(stderr, "brokerctl: at most %u --scope options\n",
                                        SCOPES_MAX);
                                return EXIT_USAGE;
                        }
                        a->scopes[a->n_scopes++] = optarg;
                        break;
                case OPT_TTL:
                        if (parse_ttl(optarg, &a->ttl) < 0) {
                                fprintf(stderr,
                                        "brokerctl: --ttl must be a number of seconds between 1 "
                                        "and %lld, got \"%s\"\n",
                                        (long long) TTL_MAX, optarg);
                                return EXIT_USAGE;
                        }
                        break;
                case OPT_JSON:
                        a->json = true;
                        break;
                case OPT_DATABASE:
                        a->audit.database = optarg;
                        break;
                case OPT_SINCE:
                        a->audit.since = optarg;
                        break;
                case OPT_UNTIL:
                        a->audit.until = optarg;
                        break;
                case OPT_FORMAT:
                        a->format = a->audit.format = optarg;
                        break;
                case OPT_OUTPUT:
                        a->audit.output = optarg;
                        break;
                case OPT_ALG:
                        a->alg = optarg;
                        break;
                case OPT_FILE:
                        a->audit.file = optarg;
                        break;
                case OPT_AUDIT_KEY:
                        if (a->audit.n_pins >= AUDIT_PINS_MAX) {
                                fprintf(stderr, "brokerctl: at most %u --audit-key options\n",
                                        AUDIT_PINS_MAX);
                                return EXIT_USAGE;
                        }
                        a->audit.pins[a->audit.n_pins++] = optarg;
                        break;
                case OPT_EVENT:
                        if (audit_args_add_events(&a->audit, optarg) != EXIT_OK)
                                return EXIT_USAGE;
                        break;
                case OPT_ALLOW_EMPTY:
                        a->audit.allow_empty = true;
                        break;
                case OPT_WRITE:
                        if (!*optarg) {
                                fprintf(stderr, "brokerctl: --write needs a file name\n");
                                return EXIT_USAGE;
                        }
                        a->write = optarg;
                        break;
                case OPT_REFRESH:
                        a->refresh = true;
                        break;
                case OPT_MODE: {
                        int k = token_file_mode_parse(optarg, &a->mode);
                        if (k < 0) {
                                fprintf(stderr,
                                        k == -EPERM
                                            ? "brokerctl: --mode %s is refused: a token file may "
                                              "not be executable, writable by group or others, "
                                              "setuid, setgid or sticky, and someone must be able "
                                              "to read it (0600, 0640, 0644, 0440 ...)\n"
                                            : "brokerctl: --mode must be an octal file mode such "
                                              "as 0600 or 0640, got \"%s\"\n",
                                        optarg);
                                return EXIT_USAGE;
                        }
                        a->mode_set = true;
                        break;
                }
                case OPT_THREADS: {
                        char *end;
                        long t = strtol(optarg, &end, 10);
                        if (end == optarg || *end || t < 1 || t > GRANTLOG_THREADS_MAX) {
                                fprintf(stderr,
                                        "brokerctl: --threads must be between 1 and %u, got "
                                        "\"%s\"\n",
                                        GRANTLOG_THREADS_MAX, optarg);
                                return EXIT_USAGE;
                        }
                        a->audit.threads = (int) t;
                        break;
                }
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return EXIT_USAGE;
                }

        return -1;
}

int main(int argc, char **argv)
{
        Args a = {};
        int r;
        /* Nothing here reads SQLite's memory statistics; keeping them costs a global mutex
         * per allocation, which the verify threads would contend on. */
        (void) sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);

        /* Global options stop at the command word ('+'), so what follows it is the command's:
         * a key id may start with '-' (base64url) and must not be taken for an option. */
        r = parse_options(argc, argv, "+h", &a);
        if (r >= 0)
                return r;
        if (optind >= argc) {
                usage(stderr);
                return EXIT_USAGE;
        }
        int n;
        char **w;
        if (strcmp(argv[optind], "revoke") == 0) {
                w = argv + optind;
                n = argc - optind;
                if (n >= 2 && strcmp(w[1], "--") == 0) { /* "revoke -- KID" works too */
                        w[1] = w[0];
                        w++;
                        n--;
                }
        } else {
                /* The command's own options, anywhere after it. */
                int sub_argc = argc - optind;
                char **sub_argv = argv + optind;
                char *command = sub_argv[0];
                optind = 0;            /* glibc: start a fresh scan */
                sub_argv[0] = argv[0]; /* getopt's messages name argv[0] */
                r = parse_options(sub_argc, sub_argv, "h", &a);
                sub_argv[0] = command;
                if (r >= 0)
                        return r;
                w = sub_argv + optind - 1;
                w[0] = command;
                n = sub_argc - optind + 1;
        }

        const char *cmd = w[0];

        if (strcmp(cmd, "token") == 0 && n == 1)
                return cmd_token(&a);
        if (strcmp(cmd, "credentials") == 0 && n == 1)
                return cmd_credentials(&a);
        if ((strcmp(cmd, "whoami") == 0 || strcmp(cmd, "jwks") == 0 || strcmp(cmd, "ping") == 0) &&
            n == 1)
                return cmd_simple(a.socket, cmd, NULL, NULL);
        if ((strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0 ||
             strcmp(cmd, "keys") == 0) &&
            n == 1)
                return cmd_simple(admin_socket_path(&a), cmd, NULL, NULL);
        if (strcmp(cmd, "rotate") == 0 && n == 1)
                return cmd_simple(admin_socket_path(&a), cmd, "alg", a.alg);
        if (strcmp(cmd, "revoke") == 0 && n == 2)
                return cmd_simple(admin_socket_path(&a), cmd, "kid", w[1]);
        if (strcmp(cmd, "secret") == 0 && n == 3 && strcmp(w[1], "set") == 0)
                return secret_set(admin_socket_path(&a), w[2]);
        if (strcmp(cmd, "secret") == 0 && n == 2 && strcmp(w[1], "list") == 0)
                return secret_list(admin_socket_path(&a));
        if (strcmp(cmd, "secret") == 0 && n == 3 && strcmp(w[1], "delete") == 0)
                return secret_delete(admin_socket_path(&a), w[2]);
        if (strcmp(cmd, "upstream") == 0 && n == 3 && strcmp(w[1], "test") == 0)
                return cmd_simple(admin_socket_path(&a), "upstream_test", "upstream", w[2]);
        if (strcmp(cmd, "audit") == 0 && n == 2 && strcmp(w[1], "export") == 0)
                return audit_export(&a.audit);
        if (strcmp(cmd, "audit") == 0 && n == 2 && strcmp(w[1], "verify") == 0)
                return audit_verify(&a.audit);

        fprintf(stderr, "brokerctl: unknown command or wrong arguments: %s\n", cmd);
        usage(stderr);
        return EXIT_USAGE;
}
