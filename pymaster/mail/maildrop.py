"""The maildrop queue: where local submissions wait for pickup.

sendmail (as root or mail_owner), postdrop (for everyone else, through its
set-group-ID wrapper) and smtpd's stand-alone mode (`sendmail -bs`) write one
complete queue file here and wake pickup; when the mail system is down the
file waits until pickup runs after `postfix start`.

Interface:
    MAILDROP, MAILDROP_MODE
    drop(data, uid, cfg) -> queue_id     a whole queue file from postdrop's input
    write_maildrop(arrival_time, sender, recipients, attrs, content) -> queue_id
    wake_pickup(cfg)                     trigger pickup when the master runs
"""

from __future__ import annotations

from pymaster.mail import endpoints, queue, records
from pymaster.mail.config import Config
from pymaster.mail.pidfile import master_running
from pymaster.util import ipc

MAILDROP = "maildrop"
# Readable by pickup, which runs as mail_owner while the file is the user's.
MAILDROP_MODE = 0o644


def drop(data: bytes, uid: int, cfg: Config) -> str:
    """drop - write the queue file DATA into maildrop as user UID; its queue ID.

    The working directory must be the queue directory. Raises
    CorruptQueueFile for bad input and OSError when the write fails."""
    msg = records.parse_message(data)
    attrs = dict(msg.attrs)
    attrs["uid"] = str(uid)
    return write_maildrop(msg.arrival_time, msg.sender, msg.recipients, attrs,
                          msg.read_content())


def write_maildrop(arrival_time: float, sender: str, recipients: list[records.Recipient],
                   attrs: dict[str, str], content: bytes) -> str:
    """write_maildrop - one complete file in maildrop/; its queue ID."""
    with queue.create(MAILDROP, mode=MAILDROP_MODE) as w:
        w.write_envelope(arrival_time, sender, recipients, attrs)
        w.write_content([content])
        return w.commit()


def wake_pickup(cfg: Config) -> None:
    """wake_pickup - trigger pickup when the master runs; else the file waits."""
    if master_running(cfg.get("queue_directory")):
        ipc.trigger(endpoints.endpoint(cfg, "pickup"))
