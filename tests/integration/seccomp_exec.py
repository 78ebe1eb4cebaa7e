"""Runs a command under a seccomp allow list, as systemd's SystemCallFilter= with
SystemCallErrorNumber=EPERM does: the listed system calls are allowed, any other fails with
EPERM. Usage: seccomp_exec.py SYSCALL[,SYSCALL...] -- COMMAND [ARG...]

Needs no_new_privs (setpriv --no-new-privs) or CAP_SYS_ADMIN, as any seccomp filter does."""

import errno
import os
import sys

import seccomp


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in sys.argv[1].split(","):
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a system call of this architecture (systemd skips those too)
    f.load()
    os.execv(sys.argv[3], sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
