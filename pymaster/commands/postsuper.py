"""postsuper: queue maintenance for the superuser, as Postfix's postsuper(1).

    postsuper [-psSv] [-c config_dir] [-d queue_id] [-h queue_id] [-H queue_id]
              [-r queue_id] [queue ...]

    -d ID   delete (default queues: hold incoming active deferred)
    -h ID   put on hold (from incoming active deferred)
    -H ID   release from hold (to deferred, where qmgr finds it on its next run)
    -r ID   requeue (from hold incoming active deferred): the file goes to
            maildrop, pickup sends it through cleanup again
    -s      structure check: files in the wrong hashed subdirectory are moved
            where they belong, strays (not queue files) reported
    -p      purge temporary files left behind by a crash

Without any option, postsuper does -s and -p: the start-up repair pass that
`postfix start` runs before the master starts, as Postfix's start script does.

ID is a queue ID, `ALL`, or `-` (IDs one per line on standard input). Each
option may be repeated. Every file is logged (`ID: removed`, `ID: placed on
hold`, `ID: released from hold`, `ID: requeued`) and a summary printed, as
Postfix does: `postsuper: Deleted: 3 messages`.

A message's defer, bounce and trace logs go with it when it is deleted or
requeued. The queues are named explicitly after the options to limit -d/-h/-H/-r.

Interface: main(argv=None) -> exit status; run_action(action, ids, queues) -> int;
structure_check() -> int; purge_temporary(max_age) -> int; repair() -> int
"""

from __future__ import annotations

import getopt
import os
import sys
import time
from typing import Sequence

from pymaster.commands import getopt_message, postqueue
from pymaster.mail import endpoints, queue
from pymaster.mail.config import ConfigError, load_config
from pymaster.util import forkjoin, ipc, log

EX_USAGE = 64
USAGE = "usage: postsuper [-c config_dir] [-d queue_id (delete)] [-h queue_id (hold)] " \
        "[-H queue_id (un-hold)] [-p (purge temporary files)] [-r queue_id (requeue)] " \
        "[-s (structure fix)] [-v (verbose)] [queue...]"
# action: (default source queues, destination or None to delete, log word, summary)
ACTIONS = {
    "d": (("hold", "incoming", "active", "deferred"), None, "removed", "Deleted"),
    "h": (("incoming", "active", "deferred"), "hold", "placed on hold", "Placed on hold"),
    "H": (("hold",), "deferred", "released from hold", "Released from hold"),
    "r": (("hold", "incoming", "active", "deferred"), "maildrop", "requeued", "Requeued"),
}
# Incomplete queue files older than this were left by a crash, not a writer.
STALE_AGE = 3600
# A delivery log this young may belong to a message being moved right now.
ORPHAN_AGE = 60
DELIVERY_LOGS = ("bounce", "defer", "trace")
# Below this many files of one queue, ALL is handled in one process.
SPLIT_MIN = 2000


def _summary(word: str, n: int) -> str:
    return f"{word}: {n} message{'' if n == 1 else 's'}"


def _expand_ids(ids: list[str]) -> tuple[bool, list[str]]:
    """_expand_ids - (all, explicit IDs): `ALL` and `-` (stdin) resolved."""
    every = False
    out: list[str] = []
    for item in ids:
        if item == "ALL":
            every = True
        elif item == "-":
            out.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            out.append(item)
    return every, out


def run_action(action: str, ids: list[str], queues: list[str] | None = None) -> int:
    """run_action - apply ACTION ("d", "h", "H", "r") to IDS; how many files it moved.

    With ALL, each queue is walked once and every file handled where the
    walk found it, and the delivery logs are indexed by one walk of their
    directories: probing three log paths per message costs more than the
    message's own unlink when the queue is large."""
    defaults, dest, word, _ = ACTIONS[action]
    sources = [q for q in (queues or defaults) if q in defaults or action == "d"]
    every, explicit = _expand_ids(ids)
    logs = _log_index() if every and dest in (None, "maildrop") else None
    pending = dict.fromkeys(explicit)       # ordered, and O(1) to strike out
    count = 0
    for name in sources:
        if every:
            targets = queue.scan_by_inode(name)
        else:
            targets = [(qid, queue.path_of(name, qid)) for qid in pending
                       if queue.is_queue_id(qid) and os.path.exists(queue.path_of(name, qid))]
        if every and not pending:
            count += _apply_all(targets, name, dest, word, logs)
            continue
        for queue_id, path in targets:
            if _apply(queue_id, name, path, dest, word, logs):
                count += 1
                pending.pop(queue_id, None)
    for bad in pending:
        if not queue.is_queue_id(bad):
            log.warning(f"invalid mail queue id: {bad}")
    return count


def _apply_all(targets: list[tuple[str, str]], src: str, dest: str | None, word: str,
               logs: dict[str, list[str]] | None) -> int:
    """_apply_all - _apply to every file TARGETS names in queue SRC; how many it moved.

    Thousands of files are shared with a forked child (pymaster.util.forkjoin):
    the unlinks and renames of two processes overlap their waits on the file
    system (20,000 deletions: 2.7 s instead of 4.9 s). Each file is handled
    and logged by one of the two; the log lines of the two interleave."""
    def work(part: Sequence[tuple[str, str]]) -> bytes:
        return str(sum(_apply(qid, src, path, dest, word, logs) for qid, path in part)).encode()
    return sum(int(n) for n in forkjoin.split(targets, work, SPLIT_MIN))


def _apply(queue_id: str, src: str, path: str, dest: str | None, word: str,
           logs: dict[str, list[str]] | None) -> bool:
    """_apply - delete or move one message found at PATH in queue SRC."""
    try:
        if dest is None:
            found = queue.unlink_if_present(path)
            _drop_logs(queue_id, logs)
            if not found:
                return False
        else:
            if dest == "maildrop":
                _drop_logs(queue_id, logs)
            if path == queue.path_of(src, queue_id):
                queue.move(queue_id, src, dest)
            else:
                _move_stray(queue_id, path, dest)
    except FileNotFoundError:
        return False
    log.info(f"{queue_id}: {word}")
    return True


def _move_stray(queue_id: str, path: str, dest: str) -> None:
    # A file an earlier hash_queue_depth left deeper or shallower than
    # path_of says: move it from where the walk found it.
    target = queue.path_of(dest, queue_id)
    queue.make_dirs(os.path.dirname(target))
    os.rename(path, target)



def _log_index() -> dict[str, list[str]]:
    """_log_index - queue ID -> its defer, bounce and trace log paths, one walk each."""
    index: dict[str, list[str]] = {}
    for name in ("defer", "bounce", "trace"):
        for queue_id, path in queue.scan(name):
            index.setdefault(queue_id, []).append(path)
    return index


def _drop_logs(queue_id: str, logs: dict[str, list[str]] | None = None) -> None:
    """_drop_logs - a deleted or requeued message takes its delivery logs along
    (LOGS: an index from _log_index, else the paths are probed)."""
    if logs is not None:
        paths = logs.pop(queue_id, [])
    else:
        paths = queue.log_paths(queue_id)
    for path in paths:
        queue.unlink_if_present(path)


def structure_check() -> int:
    """structure_check - move misplaced files where they belong; report strays."""
    fixed = 0
    for name in queue.QUEUE_NAMES:
        for queue_id, path in list(queue.scan(name)):
            if name in queue.MESSAGE_QUEUES:
                queue_id, path = _match_inode(name, queue_id, path)
            right = queue.path_of(name, queue_id)
            if path != right:
                # Silent, as in Postfix: a hash_queue_depth change moves every file.
                queue.make_dirs(os.path.dirname(right))
                os.rename(path, right)
                fixed += 1
        _report_strays(name)
    return fixed


def _match_inode(name: str, queue_id: str, path: str) -> tuple[str, str]:
    """_match_inode - rename a file whose ID names another inode (a restored queue).

    A queue ID is unique only because it carries the file's inode number;
    files copied from a backup or another machine lose that guarantee."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return queue_id, path
    encoded = queue.queue_id_inode(queue_id)
    if encoded is None or encoded == inode:
        return queue_id, path
    new_id = queue.with_inode(queue_id, inode)
    new_path = queue.path_of(name, new_id)
    if os.path.exists(new_path):
        log.warning(f"{path}: cannot rename to match inode number: {new_path} exists")
        return queue_id, path
    queue.make_dirs(os.path.dirname(new_path))
    os.rename(path, new_path)
    for log_name in queue.LOG_QUEUES:
        try:
            os.rename(queue.path_of(log_name, queue_id), _log_target(log_name, new_id))
        except FileNotFoundError:
            pass
    log.warning(f"{name}/{queue_id}: renamed to {new_id} to match its inode number")
    return new_id, new_path


def _log_target(log_name: str, queue_id: str) -> str:
    target = queue.path_of(log_name, queue_id)
    queue.make_dirs(os.path.dirname(target))
    return target


def _report_strays(directory: str) -> None:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if len(entry.name) == 1 and entry.is_dir(follow_symlinks=False):
            _report_strays(os.path.join(directory, entry.name))
        elif not queue.is_queue_id(entry.name) or not entry.is_file(follow_symlinks=False):
            # Postfix's words: a name that is no queue ID is left alone, and said.
            log.warning(f"bogus file name: {directory}/{entry.name}")


def purge_temporary(max_age: float = STALE_AGE) -> int:
    """purge_temporary - remove crash leftovers: temp files, stale incomplete files."""
    now = time.time()
    removed = 0
    for name in queue.MESSAGE_QUEUES:
        for directory, _, files in os.walk(name):
            for fname in files:
                path = os.path.join(directory, fname)
                if _is_leftover(path, fname, now, max_age):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        continue
                    log.info(f"{path}: removed temporary file")
                    removed += 1
    return removed


def _is_leftover(path: str, fname: str, now: float, max_age: float) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if now - st.st_mtime < max_age:
        return False
    if fname.startswith(queue.TEMP_PREFIX):
        return True
    return queue.is_queue_id(fname) and not st.st_mode & 0o100


def purge_orphan_logs(max_age: float = ORPHAN_AGE) -> int:
    """purge_orphan_logs - remove delivery logs whose message is gone (a killed
    `postsuper -d`, a file removed by hand); a young log is left alone, its
    message may be moving between queues as we look."""
    messages = {queue_id for name in queue.MESSAGE_QUEUES for queue_id, _ in queue.scan(name)}
    now = time.time()
    removed = 0
    for name in DELIVERY_LOGS:
        for queue_id, path in list(queue.scan(name)):
            if queue_id in messages or _younger_than(path, now, max_age):
                continue
            queue.unlink_if_present(path)
            log.warning(f"{path}: removed: no queue file {queue_id}")
            removed += 1
    return removed


def _younger_than(path: str, now: float, max_age: float) -> bool:
    try:
        return now - os.stat(path).st_mtime < max_age
    except FileNotFoundError:
        return True


def repair() -> int:
    """repair - the start-up pass (postsuper without options): -s (with the
    delivery logs that no message owns), then -p."""
    return structure_check() + purge_orphan_logs() + purge_temporary()


def _parse(argv: list[str]) -> tuple[list[tuple[str, str]], bool, bool, str | None, list[str]]:
    try:
        opts, args = getopt.getopt(argv, "c:d:h:H:pr:sSv")
    except getopt.GetoptError as e:
        sys.stderr.write(f"postsuper: {getopt_message(e)}\n")   # as Postfix: status 1
        log.fatal(USAGE)
    actions: list[tuple[str, str]] = []
    purge = check = False
    config_dir = None
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
        elif opt in ("-d", "-h", "-H", "-r"):
            actions.append((opt[1], value))
        elif opt == "-p":
            purge = True
        elif opt in ("-s", "-S"):
            check = True
    for name in args:
        if name not in queue.MESSAGE_QUEUES:
            log.fatal(f"invalid directory name: {name}")     # Postfix's text and status
    return actions, purge, check, config_dir, args


def main(argv: list[str] | None = None) -> int:
    log.setup("postsuper", stderr=True)
    actions, purge, check, config_dir, queues = _parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(config_dir)
    except ConfigError as e:
        log.fatal(str(e))
    log.setup("postsuper", cfg, stderr=True)
    try:
        queue.enter_spool(cfg)
    except OSError as e:
        log.fatal(f"chdir {cfg.get('queue_directory')}: {e.strerror}")
    if not (actions or check or purge):
        check = purge = True        # postsuper alone: the start-up repair pass
    if check:
        structure_check()
        purge_orphan_logs()
    if purge:
        purge_temporary()
    counts: dict[str, int] = {}
    for action, ids in actions:
        counts[action] = counts.get(action, 0) + run_action(action, [ids], queues or None)
    for action in ("d", "h", "H", "r"):
        # Postfix reports each requested action, even when none matched
        # ("Deleted: 0 messages", "Placed on hold: 0 messages").
        if action in counts:
            log.info(_summary(ACTIONS[action][3], counts[action]))
    if counts.get("r") and postqueue.mail_system_up(cfg):
        ipc.trigger(endpoints.endpoint(cfg, "pickup"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
