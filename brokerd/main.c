/* brokerd: wires the parts together. */
#include <getopt.h>
#include <curl/curl.h>
#include <libxml/parser.h>
#include <sodium.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "policy/config.h"
#include "identity/identity.h"
#include "transport/listener.h"
#include "log.h"
#include "macro.h"
#include "pathsafe.h"
#include "keys/seal.h"
#include "daemon/preflight.h"
#include "daemon/server.h"
#include "version.h"

#ifdef BROKERD_SANITIZER_BUILD
#define BUILD_FLAVOR " (sanitizer build: stays dumpable for LeakSanitizer)"
#else
#define BUILD_FLAVOR ""
#endif

static void usage(FILE *f)
{
        fputs("Usage: brokerd --config PATH [--check]\n"
              "       brokerd --generate-master-key PATH\n"
              "\n"
              "  -c, --config PATH              configuration file (JSON)\n"
              "      --check                    validate the configuration and exit (0 valid, 1 "
              "not)\n"
              "      --generate-master-key PATH create a new master key (mode 0600; never\n"
              "                                 overwrites); load it with the systemd credential\n"
              "                                 master.key or master_key_file\n"
              "      --version                  show the version and build\n"
              "  -h, --help                     show this help\n",
              f);
}

/* `user`: from here on every ownership check means that user, also while brokerd is still root
 * (it drops to the user once what needs root is done: server_new(), privileges.h). */
static int run_as_user(const Config *c)
{
        if (!c->user)
                return 0;
        if (geteuid() != 0 && geteuid() != c->user_uid)
                return log_error_errno(EPERM,
                                       "%s: user: brokerd runs as uid %u, neither root nor \"%s\" "
                                       "(uid %u): it cannot become that user",
                                       c->path, (unsigned) geteuid(), c->user,
                                       (unsigned) c->user_uid);
        path_set_daemon_user(c->user_uid, c->user_gid);
        return 0;
}

static int check_config(const char *path)
{
        _cleanup_(config_unrefp) Config *c = NULL;
        _cleanup_strv_free_ char **errors = NULL, **warnings = NULL;
        int r = config_load(path, &c, &errors);

        /* Then all that a start checks before it creates anything (files, modes, owners, the
         * master key, directories, sockets), creating nothing. */
        if (r >= 0)
                r = run_as_user(c);
        if (r >= 0)
                r = preflight_run(c, PREFLIGHT_CHECK, &errors, &warnings);
        for (char **w = warnings; w && *w; w++)
                fprintf(stderr, "%s: warning: %s\n", path, *w);
        if (r >= 0) {
                printf("%s: configuration is valid (%zu rules)\n", path, c->n_rules);
                return 0;
        }
        if (errors)
                for (char **e = errors; *e; e++)
                        fprintf(stderr, "%s: %s\n", path, *e);
        else
                fprintf(stderr, "%s: %s\n", path, strerror(-r));
        return 1;
}

/* Secrets must not end up in a core file, and no other process of our uid may ptrace us. */
static void protect_process(void)
{
        struct rlimit no_core = {0, 0};

        (void) setrlimit(RLIMIT_CORE, &no_core);
#ifndef BROKERD_SANITIZER_BUILD
        /* LeakSanitizer needs to ptrace the process at exit, so sanitizer builds keep it. */
        (void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"config", required_argument, NULL, 'c'},
            {"check", no_argument, NULL, 'k'},
            {"generate-master-key", required_argument, NULL, 'g'},
            {"version", no_argument, NULL, 'v'},
            {"help", no_argument, NULL, 'h'},
            {},
        };
        _cleanup_strv_free_ char **errors = NULL;
        const char *config_path = NULL, *new_master_key = NULL;
        bool check = false;
        Config *config = NULL;
        Server *server = NULL;
        int c, r;

        log_setup("brokerd");
        while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) >= 0)
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case 'k':
                        check = true;
                        break;
                case 'g':
                        new_master_key = optarg;
                        break;
                case 'v':
                        printf("brokerd " BROKERD_VERSION "%s\n", BUILD_FLAVOR);
                        return 0;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 1;
                }
        if (new_master_key) {
                if (config_path || check || optind < argc || sodium_init() < 0) {
                        usage(stderr);
                        return 1;
                }
                umask(0077);
                if (master_key_generate(new_master_key) < 0)
                        return 1;
                printf("%s: new master key written (back it up with the broker's state: "
                       "without it the keys cannot be unsealed)\n",
                       new_master_key);
                return 0;
        }
        if (!config_path || optind < argc) {
                usage(stderr);
                return 1;
        }
        if (check)
                return check_config(config_path);

        protect_process();
        umask(0077);
        if (sodium_init() < 0) {
                log_error("Cannot initialise libsodium");
                return 1;
        }
        /* Before any thread: libcurl's global state (TLS) is not set up thread-safely. */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                log_error("Cannot initialise libcurl");
                return 1;
        }
        /* libxml2 (AWS STS answers) likewise, once, before any thread. */
        xmlInitParser();
        r = identity_probe_kernel();
        if (r == -EPROTONOSUPPORT) {
                log_error("This kernel has no SO_PEERPIDFD (Linux 6.5 or later is required to "
                          "identify callers without a PID-reuse race); refusing to start");
                return 1;
        }
        if (r < 0) {
                log_error_errno(r, "Cannot probe the kernel for SO_PEERPIDFD: %m");
                return 1;
        }

        r = config_load(config_path, &config, &errors);
        if (r < 0) {
                if (errors)
                        for (char **e = errors; *e; e++)
                                log_error("%s: %s", config_path, *e);
                else
                        log_error_errno(r, "Cannot read %s: %m", config_path);
                return 1;
        }
        r = run_as_user(config);
        if (r < 0) {
                config_unref(config);
                return 1;
        }

        r = listener_collect_activation();
        if (r >= 0)
                r = server_new(config, &server); /* owns config from here on */
        else
                config_unref(config);
        if (r >= 0)
                r = server_run(server);
        server_free(server);
        curl_global_cleanup();
        return r < 0 ? 1 : 0;
}
