#include "keys/publish.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "json-util.h"
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

/* Beside jwks.json, one JWKS per algorithm. */
static const char *const alg_files[_ALG_MAX] = {
    [ALG_EDDSA] = "jwks-eddsa.json",
    [ALG_ES256] = "jwks-es256.json",
    [ALG_RS256] = "jwks-rs256.json",
};

/* {"keys": [...]}: the keys of `jwks` whose "alg" is `alg`, in their order. */
static json_t *jwks_of_alg(json_t *jwks, Alg alg)
{
        _cleanup_(json_decrefp) json_t *keys = json_array();
        json_t *k;
        size_t i;

        if (!keys)
                return NULL;
        json_array_foreach (json_object_get(jwks, "keys"), i, k) {
                const char *a = json_string_value(json_object_get(k, "alg"));

                if (a && strcmp(a, alg_to_string(alg)) == 0 && json_array_append(keys, k) < 0)
                        return NULL;
        }
        return json_pack("{s:O}", "keys", keys);
}

/* fsync() wants a descriptor opened for reading; the walk hands out O_PATH ones. */
static int fsync_dir(int dir_fd)
{
        _cleanup_close_ int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

/* A temporary name of our own in `dir_fd`: O_EXCL, so nothing already there is opened. */
static int create_temp(int dir_fd, const char *name, char **ret_tmp)
{
        for (int i = 0; i < 100; i++) {
                _cleanup_free_ char *tmp = NULL;
                uint32_t rnd;
                int fd;

                if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                        return -errno;
                if (asprintf(&tmp, ".%s.%08" PRIx32, name, rnd) < 0)
                        return -ENOMEM;
                fd =
                    openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        *ret_tmp = TAKE_PTR(tmp);
                        return fd;
                }
                if (errno != EEXIST)
                        return -errno;
        }
        return -EEXIST;
}

/* Write to a temporary file in the same directory, make it durable, then rename over the old
 * one: rename(2) is atomic, so readers never see a half-written document. Everything happens
 * relative to the directory that was checked, never through its path again. */
static int write_atomic(int dir_fd, const char *dir, const char *name, json_t *doc, char *err,
                        size_t errlen)
{
        _cleanup_free_ char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t len, off = 0;
        int r;

        if (!text) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        /* What we replace must be ours: only root or we could have put it there. */
        r = path_check_own_file(dir_fd, dir, name, err, errlen);
        if (r < 0)
                return r;
        fd = create_temp(dir_fd, name, &tmp);
        if (fd < 0) {
                snprintf(err, errlen, "%s: cannot create a temporary file: %s", dir, strerror(-fd));
                return fd;
        }
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
            renameat(dir_fd, tmp, dir_fd, name) < 0)
                goto fail;
        r = fsync_dir(dir_fd);
        if (r < 0)
                snprintf(err, errlen, "%s: cannot sync: %s", dir, strerror(-r));
        return r;
fail:
        r = -errno;
        snprintf(err, errlen, "%s/%s: cannot write: %s", dir, name, strerror(errno));
        (void) unlinkat(dir_fd, tmp, 0);
        return r;
}

int publish_write(const char *dir, const char *issuer, json_t *jwks, const bool algs[_ALG_MAX],
                  char *err, size_t errlen)
{
        _cleanup_(json_decrefp) json_t *disc = publish_discovery(issuer, algs);
        _cleanup_close_ int dir_fd = -EBADF, wk_fd = -EBADF;
        _cleanup_free_ char *wk = NULL;
        char e[512];
        int r;

        if (!disc || asprintf(&wk, "%s/.well-known", dir) < 0) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        /* Readable by the web server that serves it, writable only by us; walked without
         * following a link someone else planted where a directory was to be made. */
        r = path_open_dir(dir, PATH_CREATE | PATH_STRICT, 0755, &dir_fd, err, errlen);
        if (r >= 0)
                r = path_open_dir(wk, PATH_CREATE | PATH_STRICT, 0755, &wk_fd, err, errlen);
        if (r < 0)
                return r;
        r = write_atomic(dir_fd, dir, "jwks.json", jwks, err, errlen);
        for (int a = 0; a < _ALG_MAX; a++) {
                _cleanup_(json_decrefp) json_t *only = jwks_of_alg(jwks, a);
                int q =
                    only ? write_atomic(dir_fd, dir, alg_files[a], only, e, sizeof(e)) : -ENOMEM;

                if (r >= 0 && q < 0) {
                        snprintf(err, errlen, "%s", only ? e : "out of memory");
                        r = q;
                }
        }
        int q = write_atomic(wk_fd, wk, "openid-configuration", disc, e, sizeof(e));
        if (r >= 0 && q < 0) {
                snprintf(err, errlen, "%s", e);
                r = q;
        }
        return r;
}
