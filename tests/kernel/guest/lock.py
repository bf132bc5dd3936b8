"""POSIX (fcntl) lock helper for the kernel guest checks, run by chroot into the host root.

    lock.py hold FILE HELD RELEASE   lock FILE exclusively (waiting), create HELD, wait for
                                     RELEASE, then write through the descriptor (an NFS client
                                     that lost the lock fails that write) and exit 0
    lock.py try FILE                 print "granted" or "denied" for a non-blocking attempt
"""
import errno
import fcntl
import os
import sys
import time


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    fd = os.open(path, os.O_RDWR)
    if cmd == "try":
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                print("denied")
                return 0
            raise
        print("granted")
        return 0
    held, release = sys.argv[3], sys.argv[4]
    fcntl.lockf(fd, fcntl.LOCK_EX)
    open(held, "w").close()
    while not os.path.exists(release):
        time.sleep(0.1)
    os.pwrite(fd, b"still mine\n", 0)
    os.fsync(fd)
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
