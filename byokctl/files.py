"""Files only their owner may touch: the checks the vault file and the key files share.

A file or directory another local user owns, or may write to, could be read, planted or swapped
(SPEC §2); both the store (the vault's files) and the vault (the master key file, the audit head
copy) refuse them with these.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from byokctl.errors import ByokError, Integrity


class UnsafeFile(Integrity):
    """A vault file or directory another local user could read, plant or swap."""


def check_private_dir(directory: Path, what: str, error: type[ByokError] = UnsafeFile) -> None:
    """Refuse a directory that is not the user's own or that others may write to (sticky or
    not): anyone who can create files there can plant a -wal, -shm or `.next` for us to read."""
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        return  # not a directory at all: creating a file in it fails with the OS's own error
    if st.st_uid != os.geteuid():
        raise error(
            f"The directory {directory} of the {what} belongs to another user (uid {st.st_uid}), "
            "who could swap its files", f"keep the {what} in a directory of your own with mode 0700"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise error(
            f"The directory {directory} of the {what} is writable by other users, who could "
            "plant or swap its files", f"run `chmod 700 {directory}`, or keep the {what} in a "
            "directory of your own"
        )


def check_private_file(path: Path, st: os.stat_result, what: str,
                       error: type[ByokError] = UnsafeFile) -> None:
    """Refuse a file owned by another user or open to group or others (as ssh does for keys)."""
    if stat.S_ISLNK(st.st_mode):
        raise error(f"The {what} {path} is a symbolic link, which another user could point "
                    "anywhere", f"remove it (`rm {path}`) and run the command again")
    if st.st_uid != os.geteuid():
        raise error(f"The {what} {path} belongs to another user (uid {st.st_uid}), who could read "
                    f"or rewrite it", f"remove it (`rm {path}`) if you did not put it there, or "
                    f"`chown` it to yourself")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(f"The {what} {path} is open to other users", f"run `chmod 600 {path}`")
