"""Whether a path is ours to trust: the one rule for every directory and file the mesh reads
settings or commands from, or puts a socket in.

Another user who owns, or can write, a directory on the way to a file can swap the file,
and a command that file names then runs as us (a MESH_HOME someone else made first ran
their `[pick] gate` as root). So, as sshd's StrictModes does for ~/.ssh, every entry on the
path, from / to the file, must be owned by us (the effective uid) or root and writable by
nobody else. Two exceptions: a directory *above* the path (never the home or the file
itself) may be world-writable when it is sticky and ours or root's (/tmp: the kernel lets
nobody else rename or remove what we own there); and a group-writable entry is fine when
its group has no member but its owner (a user private group, as Debian's sshd allows, so
umask 002 systems work). A private directory (the Redis socket's) must be ours and open
to nobody else at all.

The decisions are pure functions of stat data; `check` and `check_private` do the I/O.
"""

import os
import stat

from .errors import Refused

OWNER = "owner"  # owned by another user
OTHERS = "others"  # writable by other users
GROUP = "group"  # writable by its group (fine when that group is its owner's alone)
OPEN = "open"  # a private directory that others may enter, or no real directory


def fault(uid: int, mode: int, euid: int, above: bool) -> str | None:
    """What is wrong with an entry of owner uid and mode for a user euid, or None; above:
    the entry is a directory on the way to the path, not the path itself. A GROUP fault is
    cleared by the caller when the group is the owner's alone (`_sole_member`)."""
    if uid not in (euid, 0):
        return OWNER
    if stat.S_ISLNK(mode) or not mode & 0o022:  # a symlink's own mode means nothing
        return None
    if above and stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
        return None  # sticky: nobody else may rename or remove what we own in it
    return OTHERS if mode & 0o002 else GROUP


def private_fault(uid: int, mode: int, euid: int) -> str | None:
    """What keeps a directory from being ours alone (a real directory, owned by euid,
    mode 0700 or tighter), or None."""
    if uid != euid:
        return OWNER
    if not stat.S_ISDIR(mode) or mode & 0o077:
        return OPEN
    return None


def refusal(what: str, given: str, entry: str, st: os.stat_result, euid: int,
            private: bool = False) -> str:
    """The one line that says why: the path given, the entry at fault, its owner and mode,
    and what it must be instead."""
    at = "" if entry == given else f" ({entry})"
    if stat.S_ISLNK(st.st_mode):
        found = f"a symlink owned by {_user(st.st_uid)}"
    else:
        found = f"owned by {_user(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}"
    need = ("a directory of yours with mode 0700" if private
            else "yours or root's and writable by nobody else")
    return f"refusing {what} {given}{at}: {found}; it must be {need} (you are uid {euid})"


def check(path, what: str) -> str:
    """path, once every entry on the way to it (as given and with symlinks resolved), and
    path itself if it exists, passes `fault`; else Refused (77) naming the first that
    does not. A part that does not exist yet is not judged: the mesh makes it, ours."""
    path = os.path.abspath(os.fspath(path))
    euid = os.geteuid()
    entries = _existing_prefixes(path)
    for entry, st in entries:
        _judge(what, path, entry, st, euid, above=entry != path)
    if any(stat.S_ISLNK(st.st_mode) for _, st in entries):  # else realpath is path
        real = os.path.realpath(path)
        for entry, st in _existing_prefixes(real):
            _judge(what, path, entry, st, euid, above=entry != real)
    return path


def check_tree(path, what: str) -> str:
    """check(path), and every entry beneath it (symlinks are judged, not followed): for a
    folder whose every file is read as settings (a worktree's .claude/)."""
    path = check(path, what)
    euid = os.geteuid()
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = os.path.join(folder, name)
            _judge(what, path, entry, os.lstat(entry), euid, above=False)
    return path


def _judge(what: str, given: str, entry: str, st: os.stat_result, euid: int,
           above: bool) -> None:
    wrong = fault(st.st_uid, st.st_mode, euid, above)
    if wrong == GROUP and _sole_member(st.st_gid, st.st_uid):
        wrong = None
    if wrong:
        raise Refused(refusal(what, given, entry, st, euid))


def check_private(path, what: str) -> str:
    """path, if it is a real directory (not a symlink) of ours that nobody else may enter;
    else Refused (77). FileNotFoundError if it does not exist."""
    st = os.lstat(path)
    euid = os.geteuid()
    if private_fault(st.st_uid, st.st_mode, euid):
        raise Refused(refusal(what, os.fspath(path), os.fspath(path), st, euid, private=True))
    return path


def _existing_prefixes(path: str) -> list[tuple[str, os.stat_result]]:
    """(prefix, lstat) for /, /a, /a/b, ... of an absolute normalised path, up to the first
    that does not exist."""
    found = []
    prefix = "/"
    for part in [""] + [p for p in path.split("/") if p]:
        prefix = os.path.join(prefix, part) if part else prefix
        try:
            found.append((prefix, os.lstat(prefix)))
        except OSError:  # missing (made later, ours), or unreachable: nothing is read there
            break
    return found


_sole: dict[tuple[int, int], bool] = {}


def _sole_member(gid: int, owner: int) -> bool:
    """Whether group gid can hold nobody but user owner (a user private group): no other
    user has it as primary group or is listed in it. Asked only of a group-writable entry,
    so the user database is read only then."""
    if (gid, owner) not in _sole:
        import grp
        import pwd

        try:
            group, name = grp.getgrgid(gid), pwd.getpwuid(owner).pw_name
        except KeyError:
            _sole[gid, owner] = False
        else:
            primary = [user.pw_uid for user in pwd.getpwall() if user.pw_gid == gid]
            _sole[gid, owner] = (all(member == name for member in group.gr_mem)
                                 and all(uid == owner for uid in primary)
                                 and bool(primary or group.gr_mem))
    return _sole[gid, owner]


def _user(uid: int) -> str:
    """uid 65534 (nobody): the number, and the name where there is one."""
    import pwd  # on the error path only

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"
