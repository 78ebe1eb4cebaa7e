/* brokerctl's commands: their names, operands, the options each takes and their help. The one
 * place that says which option applies to which command: brokerctl refuses any other as a usage
 * error (an option a command would ignore is a mistake its caller should hear about), `--help`
 * lists exactly these, and the bash completion (brokerctl.bash-completion) offers them; the
 * integration tests hold the three together. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

typedef enum OptionId {
        OPT_SOCKET,
        OPT_ADMIN_SOCKET,
        OPT_AUDIENCE,
        OPT_UPSTREAM,
        OPT_SCOPE,
        OPT_TTL,
        OPT_JSON,
        OPT_FORMAT,
        OPT_WRITE,
        OPT_REFRESH,
        OPT_MODE,
        OPT_ALG,
        OPT_DATABASE,
        OPT_FILE,
        OPT_SINCE,
        OPT_UNTIL,
        OPT_EVENT,
        OPT_OUTPUT,
        OPT_AUDIT_KEY,
        OPT_THREADS,
        OPT_ALLOW_EMPTY,
        _OPT_MAX,
} OptionId;

#define OPT_BIT(o) (1u << (o))

typedef enum CommandId {
        CMD_TOKEN,
        CMD_CREDENTIALS,
        CMD_WHOAMI,
        CMD_JWKS,
        CMD_PING,
        CMD_STATUS,
        CMD_RELOAD,
        CMD_KEYS,
        CMD_ROTATE,
        CMD_REVOKE,
        CMD_SECRET_SET,
        CMD_SECRET_LIST,
        CMD_SECRET_DELETE,
        CMD_UPSTREAM_TEST,
        CMD_AUDIT_EXPORT,
        CMD_AUDIT_VERIFY,
        _CMD_MAX,
} CommandId;

typedef struct Command {
        CommandId id;
        const char *group;   /* "secret", "upstream", "audit"; NULL for a one-word command */
        const char *name;    /* "token"; in a group, the second word ("set") */
        const char *full;    /* "token", "secret set": as messages name it */
        const char *operand; /* its one operand ("KID", "NAME"), or NULL for none */
        bool admin;          /* talks to the admin socket */
        unsigned options;    /* OPT_BIT()s of the options it takes */
        const char *usage;   /* its synopsis lines, each "brokerctl ..." */
        const char *help;    /* what it does, then "Options:" with one "  --name" line each */
} Command;

extern const Command commands[_CMD_MAX];

/* "--socket" for OPT_SOCKET. */
const char *option_name(OptionId o);

/* The command named by `word` (a one-word command) or `word sub` (a group's); NULL if none.
 * `sub` may be NULL. */
const Command *command_find(const char *word, const char *sub);

/* Whether `word` names a group ("audit"), and its subcommands as "export or verify". */
bool command_is_group(const char *word);
const char *command_group_choices(const char *group);

/* The global usage (brokerctl --help), a group's (brokerctl audit --help), a command's. */
void usage_all(FILE *f);
void usage_group(const char *group, FILE *f);
void usage_command(const Command *c, FILE *f);
