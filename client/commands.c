#include "commands.h"

#include <string.h>

#include "broker.h"
#include "macro.h"

#define W OPT_BIT(OPT_SOCKET)
#define A OPT_BIT(OPT_ADMIN_SOCKET)

#define WORKLOAD_SOCKET_HELP                                                                       \
        "  --socket PATH         the workload socket (default: $BROKER_SOCKET, else\n"             \
        "                        " BROKER_DEFAULT_SOCKET ")\n"
#define ADMIN_SOCKET_HELP                                                                          \
        "  --admin-socket PATH   the admin socket (default: $BROKER_ADMIN_SOCKET, else\n"          \
        "                        " BROKER_DEFAULT_ADMIN_SOCKET "); root or the broker's user\n"

/* The texts are laid out as they print. */
/* clang-format off */
const Command commands[_CMD_MAX] = {
    [CMD_TOKEN] = {
        .id = CMD_TOKEN, .name = "token", .full = "token",
        .options = W | OPT_BIT(OPT_AUDIENCE) | OPT_BIT(OPT_UPSTREAM) | OPT_BIT(OPT_SCOPE) |
                   OPT_BIT(OPT_TTL) | OPT_BIT(OPT_JSON) | OPT_BIT(OPT_FORMAT) |
                   OPT_BIT(OPT_WRITE) | OPT_BIT(OPT_REFRESH) | OPT_BIT(OPT_MODE),
        .usage =
            "brokerctl [--socket PATH] token --audience AUD [--scope S]... [--ttl DURATION]\n"
            "                                [--format plain|json|gcp-executable] [--json]\n"
            "brokerctl [--socket PATH] token --upstream NAME [--scope S]... [--format plain|json]\n"
            "brokerctl [--socket PATH] token (--audience AUD [--ttl DURATION] | --upstream NAME)\n"
            "                                [--scope S]... --write FILE [--refresh] [--mode MODE]\n",
        .help =
            "Asks the broker for a token and prints it alone on stdout: a broker JWT for\n"
            "--audience, or the access token of an upstream (--upstream; its configuration\n"
            "decides the lifetime, so no --ttl).\n"
            "\n"
            "'--format gcp-executable' prints Google's executable-sourced credential response\n"
            "(also written to $GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE when set), failures included,\n"
            "and nothing on stderr.\n"
            "Agent mode: --write FILE puts the token alone (no newline) in FILE, replaced\n"
            "atomically; --refresh keeps it fresh until SIGTERM or SIGINT (exit 0): rewritten at\n"
            "80 % of the token's lifetime; while the broker is down or says no, FILE is left as\n"
            "it is and the request retried after 1, 2, 4 ... 30 s. One log line per event on\n"
            "stderr.\n"
            "\n"
            "Options:\n" WORKLOAD_SOCKET_HELP
            "  --audience AUD        the token's audience (one the deciding rule lists)\n"
            "  --upstream NAME       an upstream's token instead (one the deciding rule names)\n"
            "  --scope S             a scope to ask for; repeat for more\n"
            "  --ttl DURATION        the token's lifetime: seconds, or 90s, 15m, 1h, 1d; above\n"
            "                        the rule's max_ttl it is clamped (--json shows expires_at)\n"
            "  --format FORMAT       plain (the token alone, the default), json (the whole\n"
            "                        response) or gcp-executable\n"
            "  --json                the same as --format json\n"
            "  --write FILE          agent mode: the token into FILE instead of stdout\n"
            "  --refresh             with --write: keep FILE fresh\n"
            "  --mode MODE           with --write: FILE's mode, octal (default 0600; no execute,\n"
            "                        no write for group or others)\n",
    },
    [CMD_CREDENTIALS] = {
        .id = CMD_CREDENTIALS, .name = "credentials", .full = "credentials",
        .options = W | OPT_BIT(OPT_UPSTREAM) | OPT_BIT(OPT_SCOPE) | OPT_BIT(OPT_FORMAT),
        .usage = "brokerctl [--socket PATH] credentials --upstream NAME [--scope S]... --format aws\n",
        .help =
            "Prints the AWS credential_process JSON of an upstream of kind aws_sts, for\n"
            "'credential_process = brokerctl credentials --upstream NAME --format aws' in\n"
            "~/.aws/config. On failure nothing goes to stdout.\n"
            "\n"
            "Options:\n" WORKLOAD_SOCKET_HELP
            "  --upstream NAME       the aws_sts upstream\n"
            "  --scope S             a scope to ask for; repeat for more\n"
            "  --format aws          the only format\n",
    },
    [CMD_WHOAMI] = {
        .id = CMD_WHOAMI, .name = "whoami", .full = "whoami", .options = W,
        .usage = "brokerctl [--socket PATH] whoami\n",
        .help = "Prints the broker's response as JSON: the identity the broker sees for the\n"
                "caller (uid, gid, groups, pid, user, exe, cgroup, unit, container) and the\n"
                "rule that would decide its requests.\n"
                "\n"
                "Options:\n" WORKLOAD_SOCKET_HELP,
    },
    [CMD_JWKS] = {
        .id = CMD_JWKS, .name = "jwks", .full = "jwks", .options = W,
        .usage = "brokerctl [--socket PATH] jwks\n",
        .help = "Prints the broker's public keys as a JWKS ({\"keys\": [...]}), ready for a\n"
                "relying party.\n"
                "\n"
                "Options:\n" WORKLOAD_SOCKET_HELP,
    },
    [CMD_PING] = {
        .id = CMD_PING, .name = "ping", .full = "ping", .options = W,
        .usage = "brokerctl [--socket PATH] ping\n",
        .help = "Prints the broker's response ({\"ok\":true}) when it answers.\n"
                "\n"
                "Options:\n" WORKLOAD_SOCKET_HELP,
    },
    [CMD_STATUS] = {
        .id = CMD_STATUS, .name = "status", .full = "status", .admin = true,
        .options = A | OPT_BIT(OPT_JSON),
        .usage = "brokerctl [--admin-socket PATH] status [--json]\n",
        .help = "Prints the broker's version, start time, counters (connections, grants,\n"
                "denials, rate_limited, refused_connections), the grant log's health and audit\n"
                "key, and each upstream's health: a table, times in RFC 3339 UTC.\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP
                "  --json                the same as JSON: the protocol's status reply without\n"
                "                        \"ok\", times as unix seconds\n",
    },
    [CMD_RELOAD] = {
        .id = CMD_RELOAD, .name = "reload", .full = "reload", .admin = true, .options = A,
        .usage = "brokerctl [--admin-socket PATH] reload\n",
        .help = "Makes the broker reread its configuration file. A file with problems is refused\n"
                "with every problem named (exit 1), and the running configuration stays.\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP,
    },
    [CMD_KEYS] = {
        .id = CMD_KEYS, .name = "keys", .full = "keys", .admin = true,
        .options = A | OPT_BIT(OPT_JSON),
        .usage = "brokerctl [--admin-socket PATH] keys [--json]\n",
        .help = "Prints the signing keys: kid, algorithm, state (active, retired, revoked ...)\n"
                "and when each was created, activated, retired and expires: a table, times in\n"
                "RFC 3339 UTC, '-' for never.\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP
                "  --json                the same as JSON: the protocol's keys reply without\n"
                "                        \"ok\", times as unix seconds (0: never)\n",
    },
    [CMD_ROTATE] = {
        .id = CMD_ROTATE, .name = "rotate", .full = "rotate", .admin = true,
        .options = A | OPT_BIT(OPT_ALG),
        .usage = "brokerctl [--admin-socket PATH] rotate [--alg EdDSA|ES256|RS256]\n",
        .help = "Replaces the active key of every algorithm in use (or of one) by a new one; the\n"
                "old keys stay published, retired, until the tokens they signed have expired.\n"
                "Prints the broker's response as JSON.\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP
                "  --alg ALG             only this algorithm's key\n",
    },
    [CMD_REVOKE] = {
        .id = CMD_REVOKE, .name = "revoke", .full = "revoke", .operand = "KID", .admin = true,
        .options = A,
        .usage = "brokerctl [--admin-socket PATH] revoke [--] KID\n",
        .help = "Withdraws a key at once: gone from the JWKS, so that its tokens no longer\n"
                "verify; an active key is replaced. A KID may start with '-': it is taken as it\n"
                "is ('revoke -- KID' works too). 'brokerctl keys' lists the kids. Prints the\n"
                "broker's response as JSON.\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP,
    },
    [CMD_SECRET_SET] = {
        .id = CMD_SECRET_SET, .group = "secret", .name = "set", .full = "secret set",
        .operand = "NAME", .admin = true, .options = A,
        .usage = "brokerctl [--admin-socket PATH] secret set NAME    (the value on stdin)\n",
        .help = "Stores an upstream's secret (client_secret) under NAME, sealed under the master\n"
                "key. The value is read from stdin, never from the command line: one line typed\n"
                "without echo, or everything piped in less one trailing newline.\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP,
    },
    [CMD_SECRET_LIST] = {
        .id = CMD_SECRET_LIST, .group = "secret", .name = "list", .full = "secret list",
        .admin = true, .options = A,
        .usage = "brokerctl [--admin-socket PATH] secret list\n",
        .help = "Prints the stored secrets' names and dates as JSON, never their values.\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP,
    },
    [CMD_SECRET_DELETE] = {
        .id = CMD_SECRET_DELETE, .group = "secret", .name = "delete", .full = "secret delete",
        .operand = "NAME", .admin = true, .options = A,
        .usage = "brokerctl [--admin-socket PATH] secret delete NAME\n",
        .help = "Deletes a stored secret.\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP,
    },
    [CMD_UPSTREAM_TEST] = {
        .id = CMD_UPSTREAM_TEST, .group = "upstream", .name = "test", .full = "upstream test",
        .operand = "NAME", .admin = true, .options = A,
        .usage = "brokerctl [--admin-socket PATH] upstream test NAME\n",
        .help = "Makes one token exchange with an upstream of the configuration, as the broker\n"
                "itself, and prints the outcome as JSON (never the token).\n"
                "\n"
                "Options:\n" ADMIN_SOCKET_HELP,
    },
    [CMD_AUDIT_EXPORT] = {
        .id = CMD_AUDIT_EXPORT, .group = "audit", .name = "export", .full = "audit export",
        .options = OPT_BIT(OPT_DATABASE) | OPT_BIT(OPT_SINCE) | OPT_BIT(OPT_UNTIL) |
                   OPT_BIT(OPT_EVENT) | OPT_BIT(OPT_FORMAT) | OPT_BIT(OPT_OUTPUT) |
                   OPT_BIT(OPT_THREADS),
        .usage = "brokerctl audit export --database PATH [--since TIME] [--until TIME]\n"
                 "                       [--event EVENT[,EVENT]]... [--format jsonl|csv|ocsf]\n"
                 "                       [--output FILE] [--threads N]\n",
        .help = "Prints the grant log's records, read from the database directly (no broker\n"
                "needed): one JSON object a line, CSV, or OCSF. TIME is RFC 3339\n"
                "(2026-11-22T10:00:00Z) or a date (2026-11-22).\n"
                "\n"
                "Options:\n"
                "  --database PATH       the broker's audit database (audit.database)\n"
                "  --since TIME          records from TIME on\n"
                "  --until TIME          records before TIME\n"
                "  --event EVENT         only these events (grant, deny, key_rotated ...); repeat\n"
                "                        or separate with commas\n"
                "  --format FORMAT       jsonl (the default), csv or ocsf\n"
                "  --output FILE         write to FILE instead of stdout\n"
                "  --threads N           threads to use (default: one per CPU for a large log)\n",
    },
    [CMD_AUDIT_VERIFY] = {
        .id = CMD_AUDIT_VERIFY, .group = "audit", .name = "verify", .full = "audit verify",
        .options = OPT_BIT(OPT_DATABASE) | OPT_BIT(OPT_FILE) | OPT_BIT(OPT_AUDIT_KEY) |
                   OPT_BIT(OPT_ALLOW_EMPTY) | OPT_BIT(OPT_THREADS),
        .usage = "brokerctl audit verify --database PATH | --file EXPORT.jsonl [--allow-empty]\n"
                 "                       [--audit-key PUBLIC_KEY|KEY_ID]... [--threads N]\n",
        .help = "Verifies the hash chain and the signatures of a whole audit database or of an\n"
                "exported JSONL file (exit 0 intact, 4 not).\n"
                "\n"
                "Options:\n"
                "  --database PATH       the broker's audit database\n"
                "  --file FILE           an export (audit export --format jsonl); - for stdin\n"
                "  --audit-key KEY       an audit key vouched for (public key or key id, as\n"
                "                        'brokerctl status' shows it); repeat for more\n"
                "  --allow-empty         with --file: an export with no records passes\n"
                "  --threads N           threads to use (default: one per CPU for a large log)\n",
    },
};
/* clang-format on */

static const char *const option_names[_OPT_MAX] = {
    [OPT_SOCKET] = "--socket",
    [OPT_ADMIN_SOCKET] = "--admin-socket",
    [OPT_AUDIENCE] = "--audience",
    [OPT_UPSTREAM] = "--upstream",
    [OPT_SCOPE] = "--scope",
    [OPT_TTL] = "--ttl",
    [OPT_JSON] = "--json",
    [OPT_FORMAT] = "--format",
    [OPT_WRITE] = "--write",
    [OPT_REFRESH] = "--refresh",
    [OPT_MODE] = "--mode",
    [OPT_ALG] = "--alg",
    [OPT_DATABASE] = "--database",
    [OPT_FILE] = "--file",
    [OPT_SINCE] = "--since",
    [OPT_UNTIL] = "--until",
    [OPT_EVENT] = "--event",
    [OPT_OUTPUT] = "--output",
    [OPT_AUDIT_KEY] = "--audit-key",
    [OPT_THREADS] = "--threads",
    [OPT_ALLOW_EMPTY] = "--allow-empty",
};

const char *option_name(OptionId o)
{
        return o < _OPT_MAX ? option_names[o] : "?";
}

const Command *command_find(const char *word, const char *sub)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                const Command *c = &commands[i];

                if (!c->group && strcmp(c->name, word) == 0)
                        return c;
                if (c->group && sub && strcmp(c->group, word) == 0 && strcmp(c->name, sub) == 0)
                        return c;
        }
        return NULL;
}

bool command_is_group(const char *word)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (commands[i].group && strcmp(commands[i].group, word) == 0)
                        return true;
        return false;
}

const char *command_group_choices(const char *group)
{
        if (strcmp(group, "secret") == 0)
                return "set, list or delete";
        if (strcmp(group, "upstream") == 0)
                return "test";
        if (strcmp(group, "audit") == 0)
                return "export or verify";
        return "";
}

/* Each synopsis line of `c`, the first after `first`, the others after `rest`. */
static void print_usage_lines(const Command *c, const char *first, const char *rest, FILE *f)
{
        const char *p = c->usage;
        bool first_line = true;

        while (*p) {
                size_t n = strcspn(p, "\n");
                /* continuation lines are indented already; the prefix keeps them aligned */
                bool continuation = p[0] == ' ';

                if (first_line)
                        fprintf(f, "%s%.*s\n", first, (int) n, p);
                else
                        fprintf(f, "%*s%.*s\n", continuation ? (int) strlen(rest) : 0,
                                continuation ? "" : rest, (int) n, p);
                first_line = false;
                p += n + (p[n] == '\n');
        }
}

void usage_all(FILE *f)
{
        fputs("Usage:\n", f);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                print_usage_lines(&commands[i], "  ", "  ", f);
        fputs("  brokerctl --version\n"
              "\n"
              "Workload commands use the workload socket: --socket PATH, else $BROKER_SOCKET,\n"
              "else " BROKER_DEFAULT_SOCKET ". Admin commands (status, reload, keys,\n"
              "rotate, revoke, secret, upstream) use the admin socket: --admin-socket PATH, else\n"
              "$BROKER_ADMIN_SOCKET, else " BROKER_DEFAULT_ADMIN_SOCKET
              "; only root and the broker's\n"
              "own user may use it. audit reads the grant log's database directly.\n"
              "A command takes only the options its help lists: 'brokerctl COMMAND --help'.\n"
              "DURATION: seconds, or 90s, 15m, 1h, 1d. TIME: RFC 3339 (2026-11-22T10:00:00Z) or a\n"
              "date (2026-11-22).\n"
              "\n"
              "Exit codes:\n"
              "  0  ok\n"
              "  1  usage error or bad request: fix the command (the message says what is wrong)\n"
              "  2  broker unreachable or unavailable: retry later\n"
              "  3  denied: retrying will not help; 'brokerctl whoami', then ask the operator\n"
              "  4  anything else: not found, an error inside the broker; for audit verify, a log\n"
              "     that does not verify\n"
              "  5  rate limited: retry later, with backoff\n",
              f);
}

void usage_group(const char *group, FILE *f)
{
        bool first = true;

        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (commands[i].group && strcmp(commands[i].group, group) == 0) {
                        print_usage_lines(&commands[i], first ? "Usage: " : "       ", "       ",
                                          f);
                        first = false;
                }
        fprintf(f, "\n'brokerctl %s COMMAND --help' describes each of them.\n", group);
}

void usage_command(const Command *c, FILE *f)
{
        print_usage_lines(c, "Usage: ", "       ", f);
        fprintf(f, "\n%s", c->help);
}
