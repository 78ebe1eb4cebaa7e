/* Token files: the file a cloud SDK reads a token from (AWS_WEB_IDENTITY_TOKEN_FILE,
 * AZURE_FEDERATED_TOKEN_FILE, Google file-sourced credentials, a projected token volume, the
 * output_file of Google's executable-sourced credentials), written so that a reader opening it at
 * any moment sees either the old content or the new one, never a part.
 *
 * Contract:
 * - token_file_write() puts exactly `len` bytes in PATH with exactly `mode` (the umask does not
 *   apply), owned by the caller. The bytes go to a temporary name in PATH's own directory,
 *   created with O_CREAT|O_EXCL|O_NOFOLLOW under a random name (a name planted there in advance,
 *   symlink or not, is never opened: another random name is drawn), are written and fsync()ed,
 *   the temporary name is rename()d over PATH, and the directory is fsync()ed so that the rename
 *   survives a crash (best effort). rename() replaces the directory entry itself: when PATH is
 *   a symlink, the link is replaced and its target is never opened or written. On failure the
 *   temporary name is removed and PATH is as it was. Returns 0 or -errno; logs nothing (the
 *   caller knows what the file is for).
 * - token_file_check_dir() says early whether PATH can be a token file at all: its directory
 *   opens and PATH is not itself a directory. 0 or -errno.
 * - token_file_mode_parse() reads the mode of a token file strictly: 1 to 4 octal digits and
 *   nothing else ("0640", "640"). Refused (-EPERM): execute for anyone, write for group or others,
 *   setuid, setgid or sticky (TOKEN_FILE_MODE_REFUSED), and a mode that lets nobody read. -EINVAL
 *   on bad syntax. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#define TOKEN_FILE_MODE_DEFAULT 0600
#define TOKEN_FILE_MODE_REFUSED 07133

int token_file_write(const char *path, const void *data, size_t len, mode_t mode);
int token_file_check_dir(const char *path);
int token_file_mode_parse(const char *s, mode_t *ret);
