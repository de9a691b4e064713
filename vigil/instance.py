"""Guarantees one running Vigil per database with an exclusive lock held for the process lifetime."""
import fcntl
import os


class AlreadyRunning(Exception):
    """Another process holds the database's lock."""


def lock(db_path):
    """Returns the open lock file (keep it referenced); raises AlreadyRunning naming the holder's pid."""
    path = f"{db_path}.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise AlreadyRunning(f"another Vigil (pid {holder}) is running on {db_path}; refusing to start") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
