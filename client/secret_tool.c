#include "secret_tool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "broker.h"
#include "exitcode.h"
#include "hints.h"
#include "json-util.h"
#include "macro.h"
#include "message.h"

/* The value: one line typed at a terminal without echo, or everything piped in, less one
 * trailing newline. At most SECRET_VALUE_MAX bytes; wiped by the caller. */
static int read_value(char *buf, size_t cap, size_t *ret_len)
{
        struct termios old, quiet;
        bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
        size_t n = 0;
        ssize_t k;

        if (tty) {
                fputs("Secret value (not echoed): ", stderr);
                fflush(stderr);
                quiet = old;
                quiet.c_lflag &= ~(tcflag_t) ECHO;
                quiet.c_lflag |= ICANON;
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        while (n < cap && (k = read(STDIN_FILENO, buf + n, cap - n)) != 0) {
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                n += (size_t) k;
                if (tty && buf[n - 1] == '\n')
                        break; /* one line */
        }
        if (tty) {
                (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
                fputc('\n', stderr);
        }
        if (n == cap) {
                fprintf(stderr, "brokerctl: the secret is longer than %u bytes\n",
                        SECRET_VALUE_MAX);
                return EXIT_USAGE;
        }
        if (n > 0 && buf[n - 1] == '\n')
                n--;
        if (n == 0) {
                fprintf(stderr, "brokerctl: no secret on standard input (pipe it in, or type it "
                                "at the prompt)\n");
                return EXIT_USAGE;
        }
        buf[n] = 0;
        if (strlen(buf) != n) {
                fprintf(stderr, "brokerctl: the secret holds a NUL byte\n");
                return EXIT_USAGE;
        }
        *ret_len = n;
        return EXIT_OK;
}

/* Sends `req` on the admin socket and prints the answer, or reports the failure as `ctx` says.
 * `req` is wiped as text. */
static int admin_call(const char *admin_socket, json_t *req, CallContext *ctx)
{
        _cleanup_free_ char *resp = NULL;
        char *text = json_dumps(req, JSON_COMPACT);
        broker_error err = {};
        broker *b = NULL;
        int r;

        if (!text) {
                fprintf(stderr, "brokerctl: out of memory (or the value is not UTF-8 text)\n");
                return EXIT_USAGE;
        }
        r = broker_open(admin_socket, 0, &b, &err);
        ctx->connecting = r < 0;
        if (r >= 0)
                r = broker_call(b, text, &resp, &err);
        broker_close(b);
        explicit_bzero(text, strlen(text));
        free(text);
        if (r < 0)
                return failure_report(&err, ctx);
        printf("%s\n", resp);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OTHER;
}

int secret_set(const char *admin_socket, const char *name)
{
        _cleanup_(json_decrefp) json_t *req = NULL;
        char *buf = malloc(SECRET_VALUE_MAX + 2);
        size_t len = 0;
        json_t *v;
        int r;

        if (!buf) {
                fprintf(stderr, "brokerctl: out of memory\n");
                return EXIT_OTHER;
        }
        r = read_value(buf, SECRET_VALUE_MAX + 1, &len);
        if (r == EXIT_OK && !(v = json_stringn(buf, len))) {
                fprintf(stderr, "brokerctl: the secret must be UTF-8 text\n");
                r = EXIT_USAGE;
        } else if (r == EXIT_OK) {
                req = json_pack("{s:s, s:s, s:o}", "op", "secret_set", "name", name, "value", v);
                /* jansson's copy of the value is wiped before the request is freed */
                r = req ? admin_call(admin_socket, req,
                                     &(CallContext){.command = "secret set", .admin = true})
                        : EXIT_OTHER;
                explicit_bzero((char *) json_string_value(v), len);
        }
        explicit_bzero(buf, SECRET_VALUE_MAX + 2);
        free(buf);
        return r;
}

int secret_list(const char *admin_socket)
{
        _cleanup_(json_decrefp) json_t *req = json_pack("{s:s}", "op", "secret_list");

        if (!req)
                return EXIT_OTHER;
        return admin_call(admin_socket, req,
                          &(CallContext){.command = "secret list", .admin = true});
}

int secret_delete(const char *admin_socket, const char *name)
{
        _cleanup_(json_decrefp) json_t *req =
            json_pack("{s:s, s:s}", "op", "secret_delete", "name", name);

        if (!req)
                return EXIT_USAGE;
        return admin_call(admin_socket, req,
                          &(CallContext){.command = "secret delete",
                                         .admin = true,
                                         .operand = name,
                                         .if_not_found = "'brokerctl secret list' lists them"});
}
