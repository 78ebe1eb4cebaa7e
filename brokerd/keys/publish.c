#include "keys/publish.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "pathsafe.h"

json_t *publish_discovery(const char *issuer, const bool algs[_ALG_MAX])
{
        _cleanup_free_ char *jwks_uri = NULL;
        json_t *alg_list = json_array();

        if (!alg_list || asprintf(&jwks_uri, "%s/jwks.json", issuer) < 0) {
                json_decref(alg_list);
                return NULL;
        }
        for (int a = 0; a < _ALG_MAX; a++)
                if (algs[a] && json_array_append_new(alg_list, json_string(alg_to_string(a))) < 0) {
                        json_decref(alg_list);
                        return NULL;
                }
        return json_pack("{s:s, s:s, s:[s], s:[s], s:o, s:[s,s,s,s,s,s,s,s]}", "issuer", issuer,
                         "jwks_uri", jwks_uri, "response_types_supported", "id_token",
                         "subject_types_supported", "public",
                         "id_token_signing_alg_values_supported", alg_list, "claims_supported",
                         "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope");
}

static int fsync_dir(const char *dir)
{
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

/* Write to a temporary file in the same directory, make it durable, then rename over the old
 * one: rename(2) is atomic, so readers never see a half-written document. */
static int write_atomic(const char *dir, const char *name, json_t *doc)
{
        _cleanup_free_ char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
        _cleanup_free_ char *tmp = NULL, *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t len, off = 0;

        if (!text || asprintf(&tmp, "%s/.%s.XXXXXX", dir, name) < 0 ||
            asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "Cannot create %s: %m", tmp);
        len = strlen(text);
        while (off < len) {
                ssize_t n = write(fd, text + off, len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        goto fail;
                off += (size_t) n;
        }
        if (write(fd, "\n", 1) != 1 || fchmod(fd, 0644) < 0 || fsync(fd) < 0 ||
            rename(tmp, path) < 0)
                goto fail;
        return fsync_dir(dir);
fail:;
        int r = log_error_errno(errno, "Cannot write %s: %m", path);
        (void) unlink(tmp);
        return r;
}

int publish_write(const char *dir, const char *issuer, json_t *jwks, const bool algs[_ALG_MAX])
{
        _cleanup_(json_decrefp) json_t *disc = publish_discovery(issuer, algs);
        _cleanup_free_ char *wk = NULL;
        char err[512];
        int r;

        if (!disc || asprintf(&wk, "%s/.well-known", dir) < 0)
                return log_oom();
        /* Readable by the web server that serves it, writable only by us. */
        r = path_make_dir(dir, 0755, false, false, err, sizeof(err));
        if (r >= 0)
                r = path_make_dir(wk, 0755, false, false, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Unsafe publish_directory: %s", err);
        r = write_atomic(dir, "jwks.json", jwks);
        if (r >= 0)
                r = write_atomic(wk, "openid-configuration", disc);
        return r;
}
