#include "keys/seal.h"

#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "log.h"
#include "macro.h"
#include "pathsafe.h"

#define SEAL_VERSION  1u
#define SEAL_NONCE    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define SEAL_OVERHEAD (1 + SEAL_NONCE + crypto_aead_xchacha20poly1305_ietf_ABYTES)

void master_key_free(MasterKey *m)
{
        if (!m)
                return;
        if (m->key)
                sodium_free(m->key);
        if (m->mac_key)
                sodium_free(m->mac_key);
        free(m->source);
        free(m);
}

int master_key_new(const unsigned char key[MASTER_KEY_BYTES], const char *source, MasterKey **ret)
{
        MasterKey *m = calloc(1, sizeof(MasterKey));

        if (!m || !(m->key = sodium_malloc(MASTER_KEY_BYTES)) ||
            !(m->mac_key = sodium_malloc(crypto_generichash_KEYBYTES)) ||
            !(m->source = strdup(source))) {
                master_key_free(m);
                return -ENOMEM;
        }
        memcpy(m->key, key, MASTER_KEY_BYTES);
        /* One key, one use: the MAC gets its own subkey rather than the AEAD key. */
        crypto_kdf_derive_from_key(m->mac_key, crypto_generichash_KEYBYTES, 1, "brokrmac", m->key);
        sodium_mprotect_readonly(m->key);
        sodium_mprotect_readonly(m->mac_key);
        *ret = m;
        return 0;
}

/* Fills err and returns r; "%m" prints strerror(-r). */
static int key_fail(char *err, size_t errlen, int r, const char *fmt, ...) _printf_(4, 5);
static int key_fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
        va_list ap;

        errno = -r;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        return r;
}

int master_key_read(const char *path, MasterKey **ret, char *err, size_t errlen)
{
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        unsigned char *key;
        ssize_t n;
        int r;

        r = path_check_private_file(path, err, errlen);
        if (r == -ENOENT) {
                size_t len = strlen(err);
                snprintf(err + len, errlen - len,
                         "; create one with brokerd --generate-master-key %s", path);
        }
        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return key_fail(err, errlen, -errno, "%s: cannot open: %m", path);
        if (fstat(fd, &st) < 0)
                return key_fail(err, errlen, -errno, "%s: cannot stat: %m", path);
        if (st.st_size != MASTER_KEY_BYTES)
                return key_fail(err, errlen, -EINVAL,
                                "%s: %lld bytes, wanted exactly %u; create one with brokerd "
                                "--generate-master-key",
                                path, (long long) st.st_size, MASTER_KEY_BYTES);
        if (!ret)
                return 0;

        key = sodium_malloc(MASTER_KEY_BYTES);
        if (!key)
                return key_fail(err, errlen, -ENOMEM, "%s: out of memory", path);
        n = read(fd, key, MASTER_KEY_BYTES);
        if (n != MASTER_KEY_BYTES) {
                r = n < 0 ? -errno : -EIO;
                sodium_free(key);
                return key_fail(err, errlen, r, "%s: cannot read: %m", path);
        }
        r = master_key_new(key, path, ret);
        sodium_free(key);
        if (r < 0)
                return key_fail(err, errlen, r, "%s: out of memory", path);
        return 0;
}

int master_key_locate(const char *file, char **ret_path, bool *ret_credential, char *err,
                      size_t errlen)
{
        const char *creds = secure_getenv("CREDENTIALS_DIRECTORY");
        _cleanup_free_ char *cred_path = NULL;
        char *path;

        if (creds && *creds) {
                struct stat st;

                if (asprintf(&cred_path, "%s/master.key", creds) < 0)
                        return key_fail(err, errlen, -ENOMEM, "out of memory");
                /* lstat: a dangling symlink there is refused by the checks, not skipped */
                if (lstat(cred_path, &st) == 0) {
                        *ret_path = TAKE_PTR(cred_path);
                        *ret_credential = true;
                        return 0;
                }
        }
        if (!file)
                return key_fail(err, errlen, -ENOKEY,
                                "no master key: pass the systemd credential master.key "
                                "(LoadCredential=master.key:PATH or LoadCredentialEncrypted=) or "
                                "set master_key_file in the config; create one with brokerd "
                                "--generate-master-key PATH");
        path = strdup(file);
        if (!path)
                return key_fail(err, errlen, -ENOMEM, "out of memory");
        *ret_path = path;
        *ret_credential = false;
        return 0;
}

int master_key_load(const char *file, MasterKey **ret)
{
        _cleanup_free_ char *path = NULL;
        bool credential;
        char err[1024];
        int r;

        r = master_key_locate(file, &path, &credential, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Cannot load the master key: %s", err);
        if (credential && file)
                log_info("Using the systemd credential master.key, not master_key_file %s", file);
        r = master_key_read(path, ret, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Cannot load the master key: %s", err);
        return 0;
}

int master_key_generate(const char *path)
{
        _cleanup_free_ char *dir_copy = strdup(path);
        _cleanup_close_ int fd = -EBADF;
        unsigned char *key;
        char err[512];
        ssize_t n;
        int r;

        if (!dir_copy)
                return log_oom();
        r = path_check_dir_chain(dirname(dir_copy), false, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Refusing to create %s: %s", path, err);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return log_error_errno(errno, "Cannot create %s: %m%s", path,
                                       errno == EEXIST ? " (never overwritten: a lost master "
                                                         "key means lost signing keys)"
                                                       : "");
        key = sodium_malloc(MASTER_KEY_BYTES);
        if (!key)
                return log_oom();
        randombytes_buf(key, MASTER_KEY_BYTES);
        n = write(fd, key, MASTER_KEY_BYTES);
        sodium_free(key);
        if (n != MASTER_KEY_BYTES || fsync(fd) < 0) {
                r = log_error_errno(n < 0 ? errno : EIO, "Cannot write %s: %m", path);
                (void) unlink(path);
                return r;
        }
        return 0;
}

/* "brokerd/v1" NUL purpose NUL id: binds a blob to what it is and whose it is. */
static int associated_data(const char *purpose, const char *id, unsigned char **ret,
                           size_t *ret_len)
{
        static const char tag[] = "brokerd/v1";
        size_t pl = strlen(purpose), il = strlen(id);
        size_t len = sizeof(tag) + pl + 1 + il;
        unsigned char *ad = malloc(len);

        if (!ad)
                return -ENOMEM;
        memcpy(ad, tag, sizeof(tag));
        memcpy(ad + sizeof(tag), purpose, pl + 1);
        memcpy(ad + sizeof(tag) + pl + 1, id, il);
        *ret = ad;
        *ret_len = len;
        return 0;
}

void master_mac(const MasterKey *m, const char *purpose, const char *id, const void *data,
                size_t len, unsigned char out[MAC_BYTES])
{
        crypto_generichash_state st;

        crypto_generichash_init(&st, m->mac_key, crypto_generichash_KEYBYTES, MAC_BYTES);
        crypto_generichash_update(&st, (const unsigned char *) purpose, strlen(purpose) + 1);
        crypto_generichash_update(&st, (const unsigned char *) id, strlen(id) + 1);
        crypto_generichash_update(&st, data, len);
        crypto_generichash_final(&st, out, MAC_BYTES);
}

int seal(const MasterKey *m, const char *purpose, const char *id, const unsigned char *plain,
         size_t len, unsigned char **ret, size_t *ret_len)
{
        _cleanup_free_ unsigned char *ad = NULL;
        unsigned char *out;
        unsigned long long clen;
        size_t adlen;

        if (associated_data(purpose, id, &ad, &adlen) < 0)
                return -ENOMEM;
        out = malloc(len + SEAL_OVERHEAD);
        if (!out)
                return -ENOMEM;
        out[0] = SEAL_VERSION;
        randombytes_buf(out + 1, SEAL_NONCE);
        crypto_aead_xchacha20poly1305_ietf_encrypt(out + 1 + SEAL_NONCE, &clen, plain, len, ad,
                                                   adlen, NULL, out + 1, m->key);
        *ret = out;
        *ret_len = 1 + SEAL_NONCE + (size_t) clen;
        return 0;
}

int unseal(const MasterKey *m, const char *purpose, const char *id, const unsigned char *blob,
           size_t len, unsigned char **ret, size_t *ret_len)
{
        _cleanup_free_ unsigned char *ad = NULL;
        unsigned char *out;
        unsigned long long plen;
        size_t adlen;

        if (len < SEAL_OVERHEAD || blob[0] != SEAL_VERSION)
                return -EBADMSG;
        if (associated_data(purpose, id, &ad, &adlen) < 0)
                return -ENOMEM;
        out = sodium_malloc(len - SEAL_OVERHEAD + 1);
        if (!out)
                return -ENOMEM;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &plen, NULL, blob + 1 + SEAL_NONCE,
                                                       len - 1 - SEAL_NONCE, ad, adlen, blob + 1,
                                                       m->key) != 0) {
                sodium_free(out);
                return -EBADMSG;
        }
        *ret = out;
        *ret_len = (size_t) plen;
        return 0;
}
