"""cleanup's per-message state, and the ways a message can fail.

One CleanupState lives from the `message` request to the reply: the
envelope as it is being canonicalised and expanded, the headers as they go
through the header pipeline, and what the pipeline noticed (headers seen,
hop count, the first error). A step that fails the message raises Reject or
Defer; the request handler turns them into the reply smtpd, pickup or bounce
gets.

Interface:
    CleanupState(cfg, queue_id, sender, recipients, attrs, flags, arrival_time)
        .settings                      settings_for(cfg)
    settings_for(cfg) -> Settings      the per-message parameters, read once per Config
    Header(name, text)                 one logical header; name None: not a header
    Reject(dsn, reason) / Defer(dsn, reason)
    CleanupError                       the base of both
Reply texts (cleanup_strerror in Postfix) are defined here, once:
    TOO_MANY_HOPS, TOO_BIG, NO_RECIPIENTS, WRITE_ERROR
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pymaster.mail import records
from pymaster.mail.config import Config


class CleanupError(Exception):
    """The message is not accepted: `status` says whether to try again."""
    status = "reject"

    def __init__(self, dsn: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"{dsn} {reason}")
        self.dsn = dsn
        self.reason = reason
        self.code = code        # a milter's own SMTP reply code, else smtpd chooses


class Reject(CleanupError):
    status = "reject"


class Defer(CleanupError):
    status = "defer"


# (dsn, reason) pairs: the texts smtpd puts after its reply code.
TOO_MANY_HOPS = ("5.4.6", "too many hops")
TOO_BIG = ("5.3.4", "message file too big")
NO_RECIPIENTS = ("5.1.0", "no recipients specified")
WRITE_ERROR = ("4.3.0", "queue file write error")


@dataclass
class Header:
    """One logical header: its field name (None when the line is not a
    header, which cannot happen in the primary block) and its full text,
    continuation lines and final newline included."""
    name: str | None
    text: str
    # The lower-case name every step compares, made once: a header meets
    # some ten steps, and a changed header is a new Header.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = (self.name or "").lower()


@dataclass(frozen=True)
class Settings:
    """The parameters cleanup reads for every message, read once per
    Config: Config.int() and .bool() parse the text at each call, and a
    message asks some twenty times."""
    header_size_limit: int
    hopcount_limit: int
    header_address_token_limit: int
    remote_header_rewrite: bool         # remote_header_rewrite_domain is set
    receive_overrides: frozenset[str]
    always_add_missing_headers: bool
    enable_original_recipient: bool
    duplicate_filter_limit: int

    @classmethod
    def of(cls, cfg: Config) -> "Settings":
        return cls(cfg.int("header_size_limit"), cfg.int("hopcount_limit"),
                   cfg.int("header_address_token_limit"),
                   bool(cfg.get("remote_header_rewrite_domain").strip()),
                   frozenset(cfg.list("receive_override_options")),
                   cfg.bool("always_add_missing_headers"),
                   cfg.bool("enable_original_recipient"),
                   cfg.int("duplicate_filter_limit"))


def settings_for(cfg: Config) -> Settings:
    """settings_for - CFG's Settings, built once per process and Config."""
    return cfg.derived(Settings.of)


@dataclass
class CleanupState:
    cfg: Config
    queue_id: str
    sender: str
    recipients: list[records.Recipient]
    attrs: dict[str, str]
    flags: set[str] = field(default_factory=set)
    arrival_time: float = 0.0
    headers_seen: set[str] = field(default_factory=set)
    hop_count: int = 0
    resent: bool = False
    message_id: str = ""
    resent_message_id: str = ""
    submit_uid: int | None = None
    queue_id_placeholder: str = ""    # smtpd's Received: carries it until cleanup knows the ID
    extracted: list[tuple[bool, str]] = field(default_factory=list)   # (resent, address)
    check_actions: list[dict] = field(default_factory=list)   # HOLD, REDIRECT … from checks
    checks_stopped: bool = False      # DISCARD ends header and body inspection
    prepended: list[str] = field(default_factory=list)    # PREPEND headers not yet written
    settings: Settings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.settings = settings_for(self.cfg)

    @property
    def origin(self) -> str:
        return self.attrs.get("origin", "")

    @property
    def header_context(self) -> str:
        """header_context - the rewrite context for header addresses."""
        return self.attrs.get("rewrite_context") or "local"

    @property
    def local_submission(self) -> bool:
        """local_submission - mail that gets missing headers added (Postfix
        2.6+: clients in local_header_rewrite_clients, and local sendmail)."""
        return self.header_context == "local" or self.settings.always_add_missing_headers

    def override(self, option: str) -> bool:
        """override - whether receive_override_options disables OPTION.

        The receiving program's setting arrives as a request flag (smtpd -o
        receive_override_options=... in master.cf), as Postfix's cleanup flags."""
        return option in self.flags or option in self.settings.receive_overrides
