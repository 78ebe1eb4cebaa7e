/* brokerctl's `secret` commands: set (the value from standard input only, never argv: argv is
 * visible to every user through /proc), list (names and dates, never values) and delete, on
 * the admin socket. Each returns an exit code (exitcode.h). */
#pragma once

int secret_set(const char *admin_socket, const char *name);
int secret_list(const char *admin_socket);
int secret_delete(const char *admin_socket, const char *name);
