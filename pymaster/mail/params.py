"""The parameter table: every main.cf parameter pymaster knows.

One entry per parameter: its name, type and default (Postfix 3.7's default,
as postconf(5) documents it; the SMTP smuggling defenses smtpd_forbid_bare_newline
and smtpd_forbid_unauth_pipelining have Postfix 3.10's: normalize and yes). This table is the single source of truth for
the code's own reads (pymaster.mail.config), for `postconf -d`, for the "unknown
parameter" and "unused parameter" warnings and for docs/parameters.md.

Types:
  str   a string, `$name` expanded at use
  bool  yes/no
  int   a whole number
  time  a number with an optional unit s, m, h, d, w (the `unit` field is
        the unit assumed when none is given)
  size  a number of bytes
  list  names separated by commas and/or white space

A default that is None is computed at run time (see pymaster.mail.config), such
as myhostname, which is the machine's fully qualified name.

Postfix 3.6 made some defaults depend on `compatibility_level`. pymaster has
no backwards-compatible mode: the table holds the current defaults, and
compatibility_level defaults to the level they belong to.

Service-defined parameters: a master.cf service that runs a delivery agent
(local, smtp, lmtp, virtual, error, pipe) brings `SERVICE_destination_
concurrency_limit` and the other per-transport qmgr knobs, whose defaults
name the global ones (see service_params()); pipe and spawn services bring
`SERVICE_time_limit`. `param()` answers for such
names whatever the service, so code may read them; postconf lists them only
for the services master.cf defines.

Interface:
    PARAMS                         name -> Param, the built-in table
    param(name) -> Param | None    built-in or service-defined entry
    service_params(service, command) -> list[Param]
    MATCH_LISTS                    parameters whose `/file` entries are read
    Param(name, type, default, unit, doc)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace


# slots: a thousand entries in every process, each without an instance dict.
@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str
    default: str | None
    unit: str = "s"
    doc: str = ""


PARAMS: dict[str, Param] = {}

# Delivery agents whose master.cf services get per-transport parameters.
DELIVERY_AGENTS = frozenset({"local", "smtp", "lmtp", "virtual", "error", "pipe"})

# suffix -> (type, default) of the service-defined parameters.
SERVICE_SUFFIXES: dict[str, tuple[str, str]] = {
    "_delivery_slot_cost": ("int", "$default_delivery_slot_cost"),
    "_delivery_slot_discount": ("int", "$default_delivery_slot_discount"),
    "_delivery_slot_loan": ("int", "$default_delivery_slot_loan"),
    "_destination_concurrency_failed_cohort_limit":
        ("int", "$default_destination_concurrency_failed_cohort_limit"),
    "_destination_concurrency_limit": ("int", "$default_destination_concurrency_limit"),
    "_destination_concurrency_negative_feedback":
        ("str", "$default_destination_concurrency_negative_feedback"),
    "_destination_concurrency_positive_feedback":
        ("str", "$default_destination_concurrency_positive_feedback"),
    "_destination_rate_delay": ("time", "$default_destination_rate_delay"),
    "_destination_recipient_limit": ("int", "$default_destination_recipient_limit"),
    "_extra_recipient_limit": ("int", "$default_extra_recipient_limit"),
    "_initial_destination_concurrency": ("int", "$initial_destination_concurrency"),
    "_minimum_delivery_slots": ("int", "$default_minimum_delivery_slots"),
    "_recipient_limit": ("int", "$default_recipient_limit"),
    "_recipient_refill_delay": ("time", "$default_recipient_refill_delay"),
    "_recipient_refill_limit": ("int", "$default_recipient_refill_limit"),
    "_transport_rate_delay": ("time", "$default_transport_rate_delay"),
}
# pipe(8) services also get a command time limit.
PIPE_SUFFIXES: dict[str, tuple[str, str]] = {"_time_limit": ("time", "$command_time_limit")}

# Match lists (mydestination, mynetworks …): an entry that is an absolute
# path names a file whose words are read in its place (postconf(5)).
MATCH_LISTS = frozenset({
    "mydestination", "mynetworks", "relay_domains", "virtual_alias_domains",
    "virtual_mailbox_domains", "permit_mx_backup_networks", "debug_peer_list",
    "fast_flush_domains", "qmqpd_authorized_clients", "smtpd_authorized_xforward_hosts",
    "smtpd_authorized_xclient_hosts", "smtpd_authorized_verp_clients", "authorized_verp_clients",
    "smtpd_client_event_limit_exceptions", "smtpd_forbid_bare_newline_exclusions",
    "authorized_flush_users", "authorized_mailq_users", "authorized_submit_users",
    "local_header_rewrite_clients", "smtpd_sasl_exceptions_networks",
    "postscreen_forbidden_commands", "smtp_connection_cache_destinations",
    "smtpd_discard_ehlo_keywords", "smtp_discard_ehlo_keywords", "lmtp_discard_lhlo_keywords",
})


def _define(type_: str, rows: str, unit: str | None = None) -> None:
    """_define - add "name = default" rows of one type to the table.

    A time parameter's unit (for a bare number) is UNIT, else the unit its
    default is written in ("5d": days), else seconds."""
    for row in rows.strip().splitlines():
        row = row.strip()
        if not row or row.startswith("#"):
            continue
        name, _, default = row.partition("=")
        name = name.strip()
        default = default.strip()
        old = PARAMS.get(name)
        PARAMS[name] = Param(name, type_, None if default == "<computed>" else default,
                             unit or _unit_of(default), old.doc if old else "")


def _unit_of(default: str) -> str:
    """_unit_of - the time unit a default is written in; `$other` takes other's."""
    m = re.fullmatch(r"\$\{?(\w+)\}?", default)
    if m and m.group(1) in PARAMS:
        return PARAMS[m.group(1)].unit
    return default[-1] if default[-1:] in ("s", "m", "h", "d", "w") and \
        default[:-1].rstrip("}").lstrip("${").split(":{")[-1].isdigit() else "s"


def _document(rows: str) -> None:
    """_document - attach "name: one line" descriptions to table entries."""
    for row in rows.strip().splitlines():
        name, _, text = row.partition(":")
        name = name.strip()
        if name in PARAMS:
            PARAMS[name] = replace(PARAMS[name], doc=text.strip())


def param(name: str) -> Param | None:
    """param - the entry for NAME (built-in or service-defined), or None."""
    found = PARAMS.get(name)
    if found is not None:
        return found
    for suffixes in (SERVICE_SUFFIXES, PIPE_SUFFIXES):
        for suffix, (type_, default) in suffixes.items():
            if name.endswith(suffix) and len(name) > len(suffix):
                return Param(name, type_, default)
    return None


def service_params(service: str, command: str) -> list[Param]:
    """service_params - the parameters a master.cf service of COMMAND defines.

    Names that are already built in (local_destination_recipient_limit)
    keep their built-in entry and are not repeated."""
    if command == "spawn":      # spawn(8): only the command's time limit
        suffixes = dict(PIPE_SUFFIXES)
    elif command not in DELIVERY_AGENTS:
        return []
    else:
        suffixes = dict(SERVICE_SUFFIXES)
    if command == "pipe":
        suffixes.update(PIPE_SUFFIXES)
    return [Param(service + suffix, type_, default)
            for suffix, (type_, default) in sorted(suffixes.items())
            if service + suffix not in PARAMS]


# ---------------------------------------------------------------------------
# The seed areas: identity and installation, relay control, limits, queue,
# rewriting, local delivery, virtual domains, restrictions, SASL, TLS.

# Identity and installation.
_define("str", r"""
myhostname = <computed>
mydomain = <computed>
myorigin = $myhostname
mydestination = $myhostname, localhost.$mydomain, localhost
mail_name = Postfix
mail_version = 3.7.11
syslog_name = ${multi_instance_name?{$multi_instance_name}:{postfix}}
syslog_facility = mail
maillog_file =
maillog_file_prefixes = /var, /dev/stdout
maillog_file_rotate_suffix = %Y%m%d-%H%M%S
maillog_file_compressor = gzip
maillog_file_permissions = 0600
multi_instance_name =
config_directory = <computed>
queue_directory = /var/spool/postfix
daemon_directory = <computed>
command_directory = <computed>
data_directory = /var/lib/postfix
meta_directory = $config_directory
shlib_directory = no
mail_owner = postfix
setgid_group = postdrop
default_privs = nobody
html_directory = no
manpage_directory = /usr/share/man
readme_directory = no
sample_directory = /etc/postfix
sendmail_path = <computed>
newaliases_path = <computed>
mailq_path = <computed>
process_name = <computed>
process_id = <computed>
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME
export_environment = TZ MAIL_CONFIG LANG
compatibility_level = 3.6
inet_interfaces = all
inet_protocols = all
proxy_interfaces =
smtp_bind_address =
smtp_bind_address6 =
mynetworks = <computed>
mynetworks_style = host
smtpd_banner = $myhostname ESMTP $mail_name
default_database_type = hash
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
relay_domains =
relayhost =
relay_transport = relay
default_transport = smtp
local_transport = local:$myhostname
virtual_transport = virtual
transport_maps =
fallback_transport =
smtp_fallback_relay = $fallback_relay
mailbox_transport =
mailbox_command =
home_mailbox =
mail_spool_directory = /var/mail
luser_relay =
forward_path = $home/.forward${recipient_delimiter}${extension}, $home/.forward
recipient_delimiter =
local_recipient_maps = proxy:unix:passwd.byname $alias_maps
relay_recipient_maps =
virtual_alias_maps = $virtual_maps
virtual_alias_domains = $virtual_alias_maps
virtual_mailbox_domains = $virtual_mailbox_maps
virtual_mailbox_maps =
virtual_mailbox_base =
virtual_uid_maps =
virtual_gid_maps =
virtual_mailbox_lock = fcntl, dotlock
mailbox_delivery_lock = fcntl, dotlock
canonical_maps =
sender_canonical_maps =
recipient_canonical_maps =
canonical_classes = envelope_sender, envelope_recipient, header_sender, header_recipient
sender_canonical_classes = envelope_sender, header_sender
recipient_canonical_classes = envelope_recipient, header_recipient
masquerade_domains =
masquerade_exceptions =
masquerade_classes = envelope_sender, header_sender, header_recipient
relocated_maps =
local_header_rewrite_clients = permit_inet_interfaces
remote_header_rewrite_domain =
header_checks =
mime_header_checks = $header_checks
nested_header_checks = $header_checks
body_checks =
milter_header_checks =
always_bcc =
sender_bcc_maps =
recipient_bcc_maps =
content_filter =
receive_override_options =
notify_classes = resource, software
bounce_notice_recipient = postmaster
2bounce_notice_recipient = postmaster
delay_notice_recipient = postmaster
error_notice_recipient = postmaster
bounce_template_file =
double_bounce_sender = double-bounce
empty_address_recipient = MAILER-DAEMON
defer_transports =
trace_service_name = trace
bounce_service_name = bounce
defer_service_name = defer
cleanup_service_name = cleanup
queue_service_name = qmgr
pickup_service_name = pickup
showq_service_name = showq
flush_service_name = flush
rewrite_service_name = rewrite
tlsmgr_service_name = tlsmgr
postlog_service_name = postlog
authorized_mailq_users = static:anyone
authorized_flush_users = static:anyone
authorized_submit_users = static:anyone
smtpd_authorized_xforward_hosts =
smtpd_authorized_xclient_hosts =
authorized_verp_clients =
smtpd_authorized_verp_clients = $authorized_verp_clients
smtpd_restriction_classes =
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination
smtpd_recipient_restrictions =
smtpd_data_restrictions =
smtpd_end_of_data_restrictions =
smtpd_etrn_restrictions =
smtpd_reject_footer =
smtpd_client_event_limit_exceptions = ${smtpd_client_connection_limit_exceptions:$mynetworks}
smtpd_forbid_bare_newline = normalize
smtpd_forbid_bare_newline_exclusions = $mynetworks
smtpd_policy_service_default_action = 451 4.3.5 Server configuration problem
smtpd_policy_service_policy_context =
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = $smtpd_sasl_security_options
smtpd_sasl_local_domain =
smtpd_sasl_service = smtp
smtpd_sasl_db = ${config_directory}/sasldb2
smtpd_sender_login_maps =
smtpd_null_access_lookup_key = <>
smtpd_expansion_filter = \t\40!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~
smtpd_tls_security_level =
smtpd_tls_cert_file =
smtpd_tls_key_file = $smtpd_tls_cert_file
smtpd_tls_chain_files =
smtpd_tls_CAfile =
smtpd_tls_CApath =
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_ciphers = medium
smtpd_tls_mandatory_ciphers = medium
smtpd_tls_exclude_ciphers =
smtpd_tls_fingerprint_digest = sha256
smtpd_tls_session_cache_database =
smtpd_tls_dh1024_param_file =
smtpd_tls_eecdh_grade = auto
relay_clientcerts =
smtp_tls_security_level =
smtp_tls_CAfile =
smtp_tls_CApath =
smtp_tls_cert_file =
smtp_tls_key_file = $smtp_tls_cert_file
smtp_tls_chain_files =
smtp_tls_verify_cert_match = hostname
smtp_tls_secure_cert_match = nexthop, dot-nexthop
smtp_tls_policy_maps =
smtp_tls_protocols = >=TLSv1.2
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_ciphers = medium
smtp_tls_mandatory_ciphers = medium
smtp_tls_fingerprint_digest = sha256
smtp_tls_session_cache_database =
smtp_sasl_password_maps =
smtp_sasl_security_options = noplaintext, noanonymous
smtp_sasl_tls_security_options = $smtp_sasl_security_options
smtp_sasl_mechanism_filter =
smtp_sasl_type = cyrus
smtp_generic_maps =
smtp_host_lookup = dns
smtp_dns_support_level =
smtp_helo_name = $myhostname
lmtp_lhlo_name = $myhostname
lmtp_host_lookup = dns
lmtp_tls_security_level =
lmtp_sasl_password_maps =
smtp_connection_cache_destinations =
rbl_reply_maps =
default_rbl_reply = $rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}
message_reject_characters =
message_strip_characters =
propagate_unmatched_extensions = canonical, virtual
address_verify_map = btree:$data_directory/verify_cache
address_verify_sender = $double_bounce_sender
address_verify_relayhost = $relayhost
address_verify_transport_maps = $transport_maps
address_verify_local_transport = $local_transport
address_verify_virtual_transport = $virtual_transport
address_verify_relay_transport = $relay_transport
address_verify_default_transport = $default_transport
unknown_address_tempfail_action = $reject_tempfail_action
reject_tempfail_action = defer_if_permit
unknown_helo_hostname_tempfail_action = $reject_tempfail_action
unverified_recipient_tempfail_action = $reject_tempfail_action
unverified_sender_tempfail_action = $reject_tempfail_action
undisclosed_recipients_header =
prepend_delivered_header = command, file, forward
mailbox_command_maps =
local_command_shell =
command_execution_directory =
command_expansion_filter = 1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ
allow_mail_to_commands = alias, forward
allow_mail_to_files = alias, forward
local_delivery_status_filter = $default_delivery_status_filter
smtp_delivery_status_filter = $default_delivery_status_filter
lmtp_delivery_status_filter = $default_delivery_status_filter
pipe_delivery_status_filter = $default_delivery_status_filter
virtual_delivery_status_filter = $default_delivery_status_filter
default_filter_nexthop =
tls_random_source = dev:/dev/urandom
postscreen_access_list = permit_mynetworks
""")

_define("bool", r"""
append_at_myorigin = yes
append_dot_mydomain = no
swap_bangpath = yes
allow_percent_hack = yes
resolve_dequoted_address = yes
resolve_null_domain = no
resolve_numeric_domain = no
disable_vrfy_command = no
disable_dns_lookups = no
disable_mime_input_processing = no
smtpd_helo_required = no
smtpd_delay_reject = yes
smtpd_reject_unlisted_sender = no
smtpd_reject_unlisted_recipient = yes
smtpd_sasl_auth_enable = no
smtpd_tls_auth_only = no
smtpd_tls_ask_ccert = no
smtpd_tls_req_ccert = no
smtpd_tls_received_header = no
smtpd_tls_wrappermode = no
smtpd_use_tls = no
smtpd_enforce_tls = no
smtpd_forbid_unauth_pipelining = yes
smtpd_peername_lookup = yes
smtpd_client_port_logging = no
broken_sasl_auth_clients = no
smtpd_tls_always_issue_session_ids = yes
smtp_use_tls = no
smtp_enforce_tls = no
smtp_sasl_auth_enable = no
smtp_sender_dependent_authentication = no
smtp_skip_5xx_greeting = yes
smtp_send_xforward_command = no
smtp_connection_cache_on_demand = yes
smtp_always_send_ehlo = yes
smtp_never_send_ehlo = no
smtp_tls_note_starttls_offer = no
lmtp_sasl_auth_enable = no
soft_bounce = no
always_add_missing_headers = no
strict_rfc821_envelopes = no
strict_7bit_headers = no
strict_8bitmime_body = no
strict_mime_encoding_domain = no
allow_untrusted_routing = no
allow_min_user = no
enable_original_recipient = yes
enable_long_queue_ids = no
show_user_unknown_table_name = yes
strict_mailbox_ownership = yes
sun_mailtool_compatibility = no
smtputf8_enable = yes
owner_request_special = yes
biff = yes
disable_mime_output_conversion = no
smtpd_sasl_authenticated_header = no
""")

_define("int", r"""
message_size_limit = 10240000
header_size_limit = 102400
body_checks_size_limit = 51200
line_length_limit = 2048
smtpd_recipient_limit = 1000
smtpd_recipient_overshoot_limit = 1000
smtpd_soft_error_limit = 10
smtpd_hard_error_limit = ${stress?{1}:{20}}
smtpd_junk_command_limit = ${stress?{1}:{100}}
smtpd_history_flush_threshold = 100
smtpd_client_connection_count_limit = 50
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_auth_rate_limit = 0
smtpd_policy_service_request_limit = 0
smtpd_policy_service_try_limit = 2
smtpd_tls_loglevel = 0
smtp_tls_loglevel = 0
default_process_limit = 100
default_destination_concurrency_limit = 20
default_destination_recipient_limit = 50
default_recipient_limit = 20000
default_extra_recipient_limit = 1000
default_destination_concurrency_failed_cohort_limit = 1
default_delivery_slot_cost = 5
default_delivery_slot_loan = 3
default_delivery_slot_discount = 50
default_minimum_delivery_slots = 3
local_destination_concurrency_limit = 2
local_destination_recipient_limit = 1
initial_destination_concurrency = 5
qmgr_message_active_limit = 20000
qmgr_message_recipient_limit = 20000
qmgr_message_recipient_minimum = 10
qmgr_fudge_factor = 100
max_use = 100
smtp_mx_address_limit = 5
smtp_mx_session_limit = 2
smtp_line_length_limit = 998
virtual_alias_expansion_limit = 1000
virtual_alias_recursion_limit = 1000
virtual_minimum_uid = 100
hash_queue_depth = 1
duplicate_filter_limit = 1000
bounce_size_limit = 50000
delay_logging_resolution_limit = 2
fork_attempts = 5
deliver_lock_attempts = 20
queue_file_attribute_count_limit = 100
hopcount_limit = 50
smtpd_forbid_bare_newline_reject_code = 550
header_address_token_limit = 10240
unverified_recipient_defer_code = 450
unverified_sender_defer_code = 450
mime_boundary_length_limit = 2048
mime_nesting_limit = 100
""")

_define("time", r"""
maximal_queue_lifetime = 5d
bounce_queue_lifetime = 5d
delay_warning_time = 0h
queue_run_delay = 300s
minimal_backoff_time = 300s
maximal_backoff_time = 4000s
max_idle = 100s
ipc_timeout = 3600s
ipc_idle = 5s
ipc_ttl = 1000s
daemon_timeout = 18000s
service_throttle_time = 60s
smtpd_timeout = ${stress?{10}:{300}}s
smtpd_error_sleep_time = 1s
smtpd_starttls_timeout = ${stress?{10}:{300}}s
smtpd_policy_service_timeout = 100s
smtpd_policy_service_max_idle = 300s
smtpd_policy_service_max_ttl = 1000s
smtpd_policy_service_retry_delay = 1s
smtp_connect_timeout = 30s
smtp_helo_timeout = 300s
smtp_mail_timeout = 300s
smtp_rcpt_timeout = 300s
smtp_data_init_timeout = 120s
smtp_data_xfer_timeout = 180s
smtp_data_done_timeout = 600s
smtp_quit_timeout = 300s
smtp_starttls_timeout = 300s
smtp_connection_cache_time_limit = 2s
smtp_connection_reuse_time_limit = 300s
lmtp_connect_timeout = 0s
lmtp_lhlo_timeout = 300s
anvil_rate_time_unit = 60s
anvil_status_update_time = 600s
command_time_limit = 1000s
trigger_timeout = 10s
qmgr_daemon_timeout = 1000s
qmgr_ipc_timeout = 60s
default_destination_rate_delay = 0s
stale_lock_time = 500s
address_verify_positive_expire_time = 31d
address_verify_negative_expire_time = 3d
address_verify_poll_delay = 3s
in_flow_delay = 1s
transport_retry_time = 60s
""")

_define("size", r"""
queue_minfree = 0
mailbox_size_limit = 51200000
virtual_mailbox_limit = 51200000
""")

_define("list", r"""
hash_queue_names = deferred, defer
""")


# One-line descriptions of the parameters an administrator meets first
# (docs/parameters.md); postconf(5) has the full story.
_document("""
myhostname: this machine's fully qualified name, used in the SMTP greeting and as default origin
mydomain: the domain of this machine; by default myhostname minus its first label
myorigin: the domain appended to unqualified addresses of locally posted mail
mydestination: domains delivered locally by local(8), to UNIX accounts and aliases
mynetworks: clients trusted to relay (permit_mynetworks); computed from mynetworks_style
mynetworks_style: how mynetworks is computed: host, subnet or class
relay_domains: domains this machine relays mail to from untrusted clients
relayhost: the next hop for non-local mail instead of MX lookups, e.g. [smtp.example.com]:587
inet_interfaces: the addresses smtpd listens on (all, loopback-only or a list)
inet_protocols: the IP versions used: all, ipv4, ipv6
queue_directory: the spool: queues, service endpoints, pid file
config_directory: where main.cf and master.cf are (postfix -c, MAIL_CONFIG)
daemon_directory: where the service programs the master starts live
mail_owner: the account unprivileged services run as
maillog_file: log to this file instead of syslog (e.g. /dev/stdout)
syslog_name: the first part of the tag of every log line (postfix/smtpd)
alias_maps: aliases(5) tables searched by local(8)
alias_database: the alias tables that newaliases rebuilds
virtual_alias_maps: virtual(5) tables: rewrite recipients to other addresses
virtual_alias_domains: domains whose every address is an alias in virtual_alias_maps
virtual_mailbox_domains: domains delivered by virtual(8) into mailboxes
virtual_mailbox_maps: recipient to mailbox path (ending in / for Maildir) under virtual_mailbox_base
virtual_mailbox_base: the directory virtual(8) mailbox paths are relative to
virtual_uid_maps: the user ID virtual(8) delivers a recipient's mail as
virtual_gid_maps: the group ID virtual(8) delivers a recipient's mail as
transport_maps: recipient or domain to transport:nexthop
canonical_maps: address rewriting for sender and recipient, envelope and headers
message_size_limit: the largest message accepted, in bytes (0: no limit)
mailbox_size_limit: the largest mailbox or maildir file local(8) writes, in bytes
smtpd_recipient_limit: recipients accepted per message by smtpd
smtpd_banner: the text after 220 in the SMTP greeting
smtpd_relay_restrictions: access restrictions that decide relaying, at RCPT TO
smtpd_recipient_restrictions: access restrictions at RCPT TO
smtpd_client_restrictions: access restrictions on the client's address and name
smtpd_helo_restrictions: access restrictions on the HELO/EHLO name
smtpd_sender_restrictions: access restrictions on the MAIL FROM address
smtpd_error_sleep_time: pause before an error reply once soft errors accumulate
smtpd_soft_error_limit: errors after which smtpd sleeps before each reply
smtpd_hard_error_limit: errors after which smtpd disconnects
smtpd_sasl_auth_enable: offer SMTP AUTH
smtpd_tls_security_level: STARTTLS in smtpd: none, may or encrypt
smtpd_tls_cert_file: the server certificate (PEM)
smtpd_tls_key_file: the server private key (PEM)
smtp_tls_security_level: TLS in the SMTP client: none, may, encrypt, verify, secure
queue_run_delay: how often qmgr scans the deferred queue
minimal_backoff_time: the least time a deferred message waits before another try
maximal_backoff_time: the most time a deferred message waits before another try
maximal_queue_lifetime: how long a message may stay deferred before it bounces
bounce_queue_lifetime: maximal_queue_lifetime for bounce messages
delay_warning_time: send a delay notice after this long (0: never)
default_process_limit: maxproc of master.cf services with - in that column
max_idle: seconds a service process waits for work before it exits
max_use: requests a service process handles before it exits
home_mailbox: mailbox path relative to the user's home (ending in / for Maildir)
mailbox_command: a command local(8) runs to deliver instead of writing the mailbox
recipient_delimiter: the character separating user from extension (user+ext)
append_at_myorigin: append @$myorigin to addresses without a domain
append_dot_mydomain: append .$mydomain to hosts without a dot
soft_bounce: turn bounces and 5xx rejects into deferrals and 4xx replies
compatibility_level: the Postfix release whose defaults apply; pymaster implements 3.6
smtpd_per_process_session_limit: SMTP sessions one pymaster smtpd process serves at once
smtpd_forbid_bare_newline: a line ending in bare <LF>: normalize (as Postfix 3.10), reject, or no
smtpd_forbid_bare_newline_exclusions: clients exempt from smtpd_forbid_bare_newline
smtpd_forbid_bare_newline_reject_code: the reply code of smtpd_forbid_bare_newline = reject (521 hangs up)
smtpd_forbid_unauth_pipelining: hang up on clients that pipeline where RFC 2920 forbids it (yes, as Postfix 3.10)
master_service_disable: master.cf services the master does not start: type or name/type, !pattern excludes
authorized_verp_clients: clients allowed the XVERP parameter of MAIL FROM
smtpd_authorized_verp_clients: clients allowed XVERP (MAIL FROM:<list@example.com> XVERP)
default_verp_delimiters: VERP delimiters when XVERP or sendmail -XV names none
verp_delimiter_filter: the characters allowed as VERP delimiters
disable_verp_bounces: send one notice to the list sender, not one per VERP recipient
""")


# ---------------------------------------------------------------------------
# Every other parameter of Postfix 3.7, so that a Postfix main.cf reads without
# "unused parameter" warnings and `postconf -d` shows what Postfix shows.
_define("bool", r"""
address_verify_negative_cache = yes
backwards_bounce_logfile_compatibility = yes
cleanup_replace_stray_cr_lf = yes
confirm_delay_cleared = no
daemon_table_open_error_is_fatal = no
destination_concurrency_feedback_debug = no
detect_8bit_encoding_header = yes
disable_verp_bounces = no
dns_ncache_ttl_fix_enable = no
enable_idna2003_compatibility = no
enable_threaded_bounces = no
expand_owner_alias = no
frozen_delivered_to = yes
helpful_warnings = yes
ignore_mx_lookup_error = no
lmtp_assume_final = no
lmtp_balance_inet_protocols = yes
lmtp_bind_address_enforce = no
lmtp_cname_overrides_servername = no
lmtp_connection_cache_on_demand = yes
lmtp_defer_if_no_mx_address_found = no
lmtp_enforce_tls = no
lmtp_quote_rfc821_envelope = yes
lmtp_randomize_addresses = yes
lmtp_sasl_auth_soft_bounce = yes
lmtp_send_dummy_mail_auth = no
lmtp_send_xforward_command = no
lmtp_sender_dependent_authentication = no
lmtp_skip_5xx_greeting = yes
lmtp_skip_quit_response = no
lmtp_tls_block_early_mail_reply = no
lmtp_tls_connection_reuse = no
lmtp_tls_enforce_peername = yes
lmtp_tls_force_insecure_host_tlsa_lookup = no
lmtp_tls_note_starttls_offer = no
lmtp_tls_wrappermode = no
lmtp_use_tls = no
multi_instance_enable = no
postscreen_bare_newline_enable = no
postscreen_disable_vrfy_command = $disable_vrfy_command
postscreen_enforce_tls = $smtpd_enforce_tls
postscreen_helo_required = $smtpd_helo_required
postscreen_non_smtp_command_enable = no
postscreen_pipelining_enable = no
postscreen_use_tls = $smtpd_use_tls
qmqpd_client_port_logging = no
require_home_directory = no
reset_owner_alias = no
respectful_logging = yes
send_cyrus_sasl_authzid = no
smtp_balance_inet_protocols = yes
smtp_bind_address_enforce = no
smtp_cname_overrides_servername = no
smtp_defer_if_no_mx_address_found = no
smtp_quote_rfc821_envelope = yes
smtp_randomize_addresses = yes
smtp_sasl_auth_soft_bounce = yes
smtp_send_dummy_mail_auth = no
smtp_skip_quit_response = yes
smtp_tls_block_early_mail_reply = no
smtp_tls_connection_reuse = no
smtp_tls_enforce_peername = yes
smtp_tls_force_insecure_host_tlsa_lookup = no
smtp_tls_wrappermode = no
smtpd_delay_open_until_valid_rcpt = yes
smtpd_relay_before_recipient_restrictions = yes
strict_8bitmime = no
strict_smtputf8 = no
tls_append_default_CA = no
tls_fast_shutdown_enable = yes
tls_legacy_public_key_fingerprints = no
tls_preempt_cipherlist = no
tls_wildcard_matches_multiple_labels = yes
tlsproxy_client_enforce_tls = $smtp_enforce_tls
tlsproxy_client_use_tls = $smtp_use_tls
tlsproxy_enforce_tls = $smtpd_enforce_tls
tlsproxy_tls_always_issue_session_ids = $smtpd_tls_always_issue_session_ids
tlsproxy_tls_ask_ccert = $smtpd_tls_ask_ccert
tlsproxy_tls_req_ccert = $smtpd_tls_req_ccert
tlsproxy_use_tls = $smtpd_use_tls
""")

_define("int", r"""
access_map_defer_code = 450
access_map_reject_code = 554
address_verify_pending_request_limit = 5000
address_verify_poll_count = ${stress?{1}:{3}}
debug_peer_level = 2
default_destination_concurrency_negative_feedback = 1
default_destination_concurrency_positive_feedback = 1
default_recipient_refill_limit = 100
defer_code = 450
dont_remove = 0
fault_injection_code = 0
invalid_hostname_reject_code = 501
lmtp_connection_reuse_count_limit = 0
lmtp_line_length_limit = 998
lmtp_min_data_rate = 500
lmtp_mx_address_limit = 5
lmtp_mx_session_limit = 2
lmtp_tcp_port = 24
lmtp_tls_loglevel = 0
lmtp_tls_scert_verifydepth = 9
mail_release_date = 20240304
maps_rbl_reject_code = 554
milter_protocol = 6
multi_recipient_bounce_reject_code = 550
non_fqdn_reject_code = 504
plaintext_reject_code = 450
postscreen_client_connection_count_limit = $smtpd_client_connection_count_limit
postscreen_command_count_limit = 20
postscreen_dnsbl_threshold = 1
postscreen_post_queue_limit = $default_process_limit
postscreen_pre_queue_limit = $default_process_limit
reject_code = 554
relay_domains_reject_code = 554
smtp_connection_reuse_count_limit = 0
smtp_min_data_rate = 500
smtp_tls_scert_verifydepth = 9
smtpd_min_data_rate = 500
smtpd_sasl_response_limit = 12288
smtpd_tls_ccert_verifydepth = 9
tls_daemon_random_bytes = 32
tls_random_bytes = 32
tlsproxy_client_loglevel = $smtp_tls_loglevel
tlsproxy_client_scert_verifydepth = $smtp_tls_scert_verifydepth
tlsproxy_tls_ccert_verifydepth = $smtpd_tls_ccert_verifydepth
tlsproxy_tls_loglevel = $smtpd_tls_loglevel
unknown_address_reject_code = 450
unknown_client_reject_code = 450
unknown_hostname_reject_code = 450
unknown_local_recipient_reject_code = 550
unknown_relay_recipient_reject_code = 550
unknown_virtual_alias_reject_code = 550
unknown_virtual_mailbox_reject_code = 550
unverified_recipient_reject_code = 450
unverified_sender_reject_code = 450
virtual_alias_address_length_limit = 1000
""")

_define("list", r"""
address_verify_sender_dependent_default_transport_maps = $sender_dependent_default_transport_maps
address_verify_sender_dependent_relayhost_maps = $sender_dependent_relayhost_maps
debug_peer_list =
fallback_transport_maps =
fast_flush_domains = $relay_domains
internal_mail_filter_classes =
lmtp_body_checks =
lmtp_discard_lhlo_keyword_address_maps =
lmtp_dns_resolver_options =
lmtp_generic_maps =
lmtp_header_checks =
lmtp_mime_header_checks =
lmtp_nested_header_checks =
lmtp_pix_workaround_maps =
lmtp_sasl_security_options = noplaintext, noanonymous
lmtp_sasl_tls_security_options = $lmtp_sasl_security_options
lmtp_sasl_tls_verified_security_options = $lmtp_sasl_tls_security_options
lmtp_tls_policy_maps =
local_login_sender_maps = static:*
mailbox_transport_maps =
maps_rbl_domains =
permit_mx_backup_networks =
postscreen_discard_ehlo_keyword_address_maps = $smtpd_discard_ehlo_keyword_address_maps
postscreen_reject_footer_maps = $smtpd_reject_footer_maps
proxy_read_maps = $local_recipient_maps $mydestination $virtual_alias_maps $virtual_alias_domains $virtual_mailbox_maps $virtual_mailbox_domains $relay_recipient_maps $relay_domains $canonical_maps $sender_canonical_maps $recipient_canonical_maps $relocated_maps $transport_maps $mynetworks $smtpd_sender_login_maps $sender_bcc_maps $recipient_bcc_maps $smtp_generic_maps $lmtp_generic_maps $alias_maps $smtpd_client_restrictions $smtpd_helo_restrictions $smtpd_sender_restrictions $smtpd_relay_restrictions $smtpd_recipient_restrictions $address_verify_sender_dependent_default_transport_maps $address_verify_sender_dependent_relayhost_maps $address_verify_transport_maps $fallback_transport_maps $lmtp_discard_lhlo_keyword_address_maps $lmtp_pix_workaround_maps $lmtp_sasl_password_maps $lmtp_tls_policy_maps $mailbox_command_maps $mailbox_transport_maps $postscreen_discard_ehlo_keyword_address_maps $rbl_reply_maps $sender_dependent_default_transport_maps $sender_dependent_relayhost_maps $smtp_discard_ehlo_keyword_address_maps $smtp_pix_workaround_maps $smtp_sasl_password_maps $smtp_tls_policy_maps $smtpd_discard_ehlo_keyword_address_maps $smtpd_milter_maps $virtual_gid_maps $virtual_uid_maps $local_login_sender_maps $postscreen_reject_footer_maps $smtpd_reject_footer_maps $tls_server_sni_maps $tlsproxy_client_policy_maps $default_delivery_status_filter $lmtp_delivery_status_filter $lmtp_dns_reply_filter $lmtp_reply_filter $local_delivery_status_filter $pipe_delivery_status_filter $postscreen_command_filter $smtp_delivery_status_filter $smtp_dns_reply_filter $smtp_reply_filter $smtpd_command_filter $smtpd_dns_reply_filter $virtual_delivery_status_filter $body_checks $header_checks $lmtp_body_checks $lmtp_header_checks $lmtp_mime_header_checks $lmtp_nested_header_checks $milter_header_checks $mime_header_checks $nested_header_checks $smtp_body_checks $smtp_header_checks $smtp_mime_header_checks $smtp_nested_header_checks
proxy_write_maps = $smtp_sasl_auth_cache_name $lmtp_sasl_auth_cache_name $address_verify_map $postscreen_cache_map
qmqpd_authorized_clients =
sender_dependent_default_transport_maps =
sender_dependent_relayhost_maps =
smtp_body_checks =
smtp_discard_ehlo_keyword_address_maps =
smtp_dns_resolver_options =
smtp_header_checks =
smtp_mime_header_checks =
smtp_nested_header_checks =
smtp_pix_workaround_maps =
smtp_sasl_tls_verified_security_options = $smtp_sasl_tls_security_options
smtpd_discard_ehlo_keyword_address_maps =
smtpd_milter_maps =
smtpd_proxy_options =
smtpd_reject_footer_maps =
smtpd_sasl_exceptions_networks =
smtputf8_autodetect_classes = sendmail, verify
tls_server_sni_maps =
tls_ssl_options =
tlsproxy_client_policy_maps = ${tlsproxy_client_policy:$smtp_tls_policy_maps}
""")

_define("size", r"""
berkeley_db_create_buffer_size = 16777216
berkeley_db_read_buffer_size = 131072
lmdb_map_size = 16777216
tcp_windowsize = 0
""")

_define("str", r"""
address_verify_service_name = verify
alternate_config_directories =
best_mx_transport =
connection_cache_service_name = scache
cyrus_sasl_config_path =
debugger_command =
default_delivery_status_filter =
default_verp_delimiters = +=
dnsblog_service_name = dnsblog
dnssec_probe = ns:.
empty_address_default_transport_maps_lookup_key = <>
empty_address_local_login_sender_maps_lookup_key = <>
empty_address_relayhost_maps_lookup_key = <>
error_service_name = error
execution_directory_expansion_filter = 1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ
forward_expansion_filter = 1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ
header_from_format = standard
info_log_address_format = external
known_tcp_ports = lmtp=24, smtp=25, smtps=submissions=465, submission=587
lmtp_address_preference = any
lmtp_address_verify_target = rcpt
lmtp_bind_address =
lmtp_bind_address6 =
lmtp_connection_cache_destinations =
lmtp_discard_lhlo_keywords =
lmtp_dns_reply_filter =
lmtp_dns_support_level =
lmtp_fallback_relay =
lmtp_per_request_deadline = ${lmtp_per_record_deadline?{$lmtp_per_record_deadline}:{no}}
lmtp_pix_workarounds = disable_esmtp,delay_dotcrlf
lmtp_reply_filter =
lmtp_sasl_auth_cache_name =
lmtp_sasl_mechanism_filter =
lmtp_sasl_path =
lmtp_sasl_type = cyrus
lmtp_tls_CAfile =
lmtp_tls_CApath =
lmtp_tls_cert_file =
lmtp_tls_chain_files =
lmtp_tls_ciphers = medium
lmtp_tls_dcert_file =
lmtp_tls_dkey_file = $lmtp_tls_dcert_file
lmtp_tls_eccert_file =
lmtp_tls_eckey_file = $lmtp_tls_eccert_file
lmtp_tls_exclude_ciphers =
lmtp_tls_fingerprint_cert_match =
lmtp_tls_fingerprint_digest = sha256
lmtp_tls_key_file = $lmtp_tls_cert_file
lmtp_tls_mandatory_ciphers = medium
lmtp_tls_mandatory_exclude_ciphers =
lmtp_tls_mandatory_protocols = >=TLSv1.2
lmtp_tls_per_site =
lmtp_tls_protocols = >=TLSv1.2
lmtp_tls_secure_cert_match = nexthop
lmtp_tls_servername =
lmtp_tls_session_cache_database =
lmtp_tls_trust_anchor_file =
lmtp_tls_verify_cert_match = hostname
master_service_disable =
message_drop_headers = bcc, content-length, resent-bcc, return-path
milter_connect_macros = j {daemon_name} {daemon_addr} v _
milter_data_macros = i
milter_default_action = tempfail
milter_end_of_data_macros = i
milter_end_of_header_macros = i
milter_helo_macros = {tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}
milter_macro_daemon_name = $myhostname
milter_macro_defaults =
milter_macro_v = $mail_name $mail_version
milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}
milter_rcpt_macros = i {rcpt_addr} {rcpt_host} {rcpt_mailer}
milter_unknown_command_macros =
multi_instance_directories =
multi_instance_group =
multi_instance_wrapper =
non_smtpd_milters =
openssl_path = openssl
parent_domain_matches_subdomains = debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps
postmulti_control_commands = reload flush
postmulti_start_commands = start
postmulti_stop_commands = stop abort drain quick-stop
postscreen_allowlist_interfaces = ${postscreen_whitelist_interfaces?{$postscreen_whitelist_interfaces}:{static:all}}
postscreen_bare_newline_action = ignore
postscreen_cache_map = btree:$data_directory/postscreen_cache
postscreen_command_filter =
postscreen_denylist_action = ${postscreen_blacklist_action?{$postscreen_blacklist_action}:{ignore}}
postscreen_discard_ehlo_keywords = $smtpd_discard_ehlo_keywords
postscreen_dnsbl_action = ignore
postscreen_dnsbl_allowlist_threshold = ${postscreen_dnsbl_whitelist_threshold?{$postscreen_dnsbl_whitelist_threshold}:{0}}
postscreen_dnsbl_max_ttl = ${postscreen_dnsbl_ttl?{$postscreen_dnsbl_ttl}:{1}}h
postscreen_dnsbl_reply_map =
postscreen_dnsbl_sites =
postscreen_expansion_filter = $smtpd_expansion_filter
postscreen_forbidden_commands = $smtpd_forbidden_commands
postscreen_greet_action = ignore
postscreen_greet_banner = $smtpd_banner
postscreen_non_smtp_command_action = drop
postscreen_pipelining_action = enforce
postscreen_reject_footer = $smtpd_reject_footer
postscreen_tls_security_level = $smtpd_tls_security_level
postscreen_upstream_proxy_protocol =
process_id_directory = pid
proxymap_service_name = proxymap
proxywrite_service_name = proxywrite
sendmail_fix_line_endings = always
service_name =
smtp_address_preference = any
smtp_address_verify_target = rcpt
smtp_discard_ehlo_keywords =
smtp_dns_reply_filter =
smtp_per_request_deadline = ${smtp_per_record_deadline?{$smtp_per_record_deadline}:{no}}
smtp_pix_workarounds = disable_esmtp,delay_dotcrlf
smtp_reply_filter =
smtp_sasl_auth_cache_name =
smtp_sasl_path =
smtp_tcp_port = smtp
smtp_tls_CAfile =
smtp_tls_CApath =
smtp_tls_dane_insecure_mx_policy = ${{$smtp_tls_security_level} == {dane} ? {dane} : {may}}
smtp_tls_dcert_file =
smtp_tls_dkey_file = $smtp_tls_dcert_file
smtp_tls_eccert_file =
smtp_tls_eckey_file = $smtp_tls_eccert_file
smtp_tls_exclude_ciphers =
smtp_tls_fingerprint_cert_match =
smtp_tls_mandatory_exclude_ciphers =
smtp_tls_per_site =
smtp_tls_servername =
smtp_tls_trust_anchor_file =
smtpd_command_filter =
smtpd_discard_ehlo_keywords =
smtpd_dns_reply_filter =
smtpd_forbidden_commands = CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}
smtpd_log_access_permit_actions =
smtpd_milters =
smtpd_noop_commands =
smtpd_per_request_deadline = ${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}
smtpd_proxy_ehlo = $myhostname
smtpd_proxy_filter =
smtpd_sasl_mechanism_filter = !external, static:rest
smtpd_service_name = smtpd
smtpd_tls_CAfile =
smtpd_tls_CApath =
smtpd_tls_dcert_file =
smtpd_tls_dh512_param_file =
smtpd_tls_dkey_file = $smtpd_tls_dcert_file
smtpd_tls_eccert_file =
smtpd_tls_eckey_file = $smtpd_tls_eccert_file
smtpd_tls_mandatory_exclude_ciphers =
smtpd_upstream_proxy_protocol =
stress =
tls_config_file = default
tls_config_name =
tls_dane_digests = sha512 sha256
tls_disable_workarounds =
tls_eecdh_auto_curves = X25519 X448 prime256v1 secp521r1 secp384r1
tls_eecdh_strong_curve = prime256v1
tls_eecdh_ultra_curve = secp384r1
tls_export_cipherlist = aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH
tls_high_cipherlist = aNULL:-aNULL:HIGH:@STRENGTH
tls_low_cipherlist = aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH
tls_medium_cipherlist = aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH
tls_null_cipherlist = eNULL:!aNULL
tls_random_exchange_name = ${data_directory}/prng_exch
tls_session_ticket_cipher = aes-256-cbc
tlsproxy_client_CAfile = $smtp_tls_CAfile
tlsproxy_client_CApath = $smtp_tls_CApath
tlsproxy_client_cert_file = $smtp_tls_cert_file
tlsproxy_client_chain_files = $smtp_tls_chain_files
tlsproxy_client_dcert_file = $smtp_tls_dcert_file
tlsproxy_client_dkey_file = $smtp_tls_dkey_file
tlsproxy_client_eccert_file = $smtp_tls_eccert_file
tlsproxy_client_eckey_file = $smtp_tls_eckey_file
tlsproxy_client_fingerprint_digest = $smtp_tls_fingerprint_digest
tlsproxy_client_key_file = $smtp_tls_key_file
tlsproxy_client_loglevel_parameter = smtp_tls_loglevel
tlsproxy_client_per_site = $smtp_tls_per_site
tlsproxy_client_security_level = ${tlsproxy_client_level:$smtp_tls_security_level}
tlsproxy_service_name = tlsproxy
tlsproxy_tls_CAfile = $smtpd_tls_CAfile
tlsproxy_tls_CApath = $smtpd_tls_CApath
tlsproxy_tls_cert_file = $smtpd_tls_cert_file
tlsproxy_tls_chain_files = $smtpd_tls_chain_files
tlsproxy_tls_ciphers = $smtpd_tls_ciphers
tlsproxy_tls_dcert_file = $smtpd_tls_dcert_file
tlsproxy_tls_dh1024_param_file = $smtpd_tls_dh1024_param_file
tlsproxy_tls_dh512_param_file = $smtpd_tls_dh512_param_file
tlsproxy_tls_dkey_file = $smtpd_tls_dkey_file
tlsproxy_tls_eccert_file = $smtpd_tls_eccert_file
tlsproxy_tls_eckey_file = $smtpd_tls_eckey_file
tlsproxy_tls_eecdh_grade = $smtpd_tls_eecdh_grade
tlsproxy_tls_exclude_ciphers = $smtpd_tls_exclude_ciphers
tlsproxy_tls_fingerprint_digest = $smtpd_tls_fingerprint_digest
tlsproxy_tls_key_file = $smtpd_tls_key_file
tlsproxy_tls_mandatory_ciphers = $smtpd_tls_mandatory_ciphers
tlsproxy_tls_mandatory_exclude_ciphers = $smtpd_tls_mandatory_exclude_ciphers
tlsproxy_tls_mandatory_protocols = $smtpd_tls_mandatory_protocols
tlsproxy_tls_protocols = $smtpd_tls_protocols
tlsproxy_tls_security_level = $smtpd_tls_security_level
unverified_recipient_reject_reason =
unverified_sender_reject_reason =
verp_delimiter_filter = -=+
""")

_define("time", r"""
address_verify_positive_refresh_time = 7d
fast_flush_purge_time = 7d
lmtp_sasl_auth_cache_time = 90d
postscreen_bare_newline_ttl = 30d
postscreen_cache_retention_time = 7d
postscreen_greet_ttl = 1d
postscreen_non_smtp_command_ttl = 30d
postscreen_pipelining_ttl = 30d
smtp_sasl_auth_cache_time = 90d
""", unit="d")

_define("time", r"""
address_verify_cache_cleanup_interval = 12h
address_verify_negative_refresh_time = 3h
fast_flush_refresh_time = 12h
postscreen_cache_cleanup_interval = 12h
""", unit="h")

_define("time", r"""
address_verify_sender_ttl = 0s
application_event_drain_time = 100s
connection_cache_protocol_timeout = 5s
connection_cache_status_update_time = 600s
connection_cache_ttl_limit = 2s
default_recipient_refill_delay = 5s
default_transport_rate_delay = 0s
deliver_lock_delay = 1s
dnsblog_reply_delay = 0s
fork_delay = 1s
lmtp_connection_cache_time_limit = 2s
lmtp_connection_reuse_time_limit = 300s
lmtp_data_done_timeout = 600s
lmtp_data_init_timeout = 120s
lmtp_data_xfer_timeout = 180s
lmtp_mail_timeout = 300s
lmtp_pix_workaround_delay_time = 10s
lmtp_pix_workaround_threshold_time = 500s
lmtp_quit_timeout = 300s
lmtp_rcpt_timeout = 300s
lmtp_rset_timeout = 20s
lmtp_starttls_timeout = 300s
lmtp_tls_session_cache_timeout = 3600s
lmtp_xforward_timeout = 300s
milter_command_timeout = 30s
milter_connect_timeout = 30s
milter_content_timeout = 300s
postlogd_watchdog_timeout = 10s
postscreen_command_time_limit = ${stress?{10}:{300}}s
postscreen_dnsbl_min_ttl = 60s
postscreen_dnsbl_timeout = 10s
postscreen_greet_wait = ${stress?{2}:{6}}s
postscreen_upstream_proxy_timeout = 5s
postscreen_watchdog_timeout = 10s
qmgr_clog_warn_time = 300s
qmqpd_error_delay = 1s
qmqpd_timeout = 300s
smtp_pix_workaround_delay_time = 10s
smtp_pix_workaround_threshold_time = 500s
smtp_rset_timeout = 20s
smtp_tls_session_cache_timeout = 3600s
smtp_xforward_timeout = 300s
smtpd_proxy_timeout = 100s
smtpd_tls_session_cache_timeout = 3600s
smtpd_upstream_proxy_timeout = 5s
tls_random_prng_update_period = 3600s
tls_random_reseed_period = 3600s
tlsproxy_watchdog_timeout = 10s
""")


# pymaster's own parameters (no Postfix counterpart).
_define("int", r"""
smtpd_per_process_session_limit = 100
""")


# ---------------------------------------------------------------------------
# Rows grouped by the area that reads them.
# smtpd reply codes of the restriction language.
_define("int", """
access_map_reject_code = 554
access_map_defer_code = 450
reject_code = 554
defer_code = 450
relay_domains_reject_code = 554
unknown_local_recipient_reject_code = 550
unknown_virtual_alias_reject_code = 550
unknown_virtual_mailbox_reject_code = 550
unknown_relay_recipient_reject_code = 550
unknown_client_reject_code = 450
unknown_hostname_reject_code = 450
""")

# The smtp/lmtp client. fallback_relay is Postfix's old name of
# smtp_fallback_relay, whose default refers to it. dns_nameservers is
# pymaster's own: the DNS servers the smtp client asks instead of those in
# /etc/resolv.conf, as ADDRESS or [ADDRESS]:PORT (tests use a loopback one).
_define("str", r"""
fallback_relay =
dns_nameservers =
""")
_document("""
dns_nameservers: pymaster: DNS servers to query instead of /etc/resolv.conf, as ADDRESS or [ADDRESS]:PORT
""")

# The before-queue content filter (services/smtpd/proxy.py); the rows are above.
_document("""
smtpd_proxy_filter: the before-queue content filter smtpd relays each transaction to: host:port, inet:host:port or unix:pathname (relative to the queue directory)
smtpd_proxy_options: speed_adjust: receive the whole message before connecting to the before-queue filter
smtpd_proxy_timeout: time limit for connecting to the before-queue filter and for each read and write
smtpd_proxy_ehlo: the name smtpd gives in its EHLO to the before-queue filter
""")

# Milters: smtpd runs smtpd_milters event by event (services/smtpd/milters.py),
# cleanup non_smtpd_milters and milter_header_checks (services/cleanup/
# milters.py, milter_checks.py); the rows are above.
_document("""
smtpd_milters: milters (inet:host:port, unix:/path, { name, key=value … }) for mail that arrives by SMTP
non_smtpd_milters: milters for mail that does not arrive by SMTP (sendmail, pickup)
milter_default_action: what a milter that cannot be reached or breaks the protocol means: tempfail, accept, reject or quarantine
milter_protocol: the milter protocol version offered
milter_connect_timeout: time limit for connecting to a milter
milter_command_timeout: time limit for a milter's answer to an SMTP event
milter_content_timeout: time limit for a milter's answer to message content
milter_connect_macros: macros sent with the CONNECT event
milter_helo_macros: macros sent with the HELO event
milter_mail_macros: macros sent with the MAIL FROM event
milter_rcpt_macros: macros sent with each RCPT TO event
milter_data_macros: macros sent with the DATA event
milter_end_of_header_macros: macros sent at the end of the headers
milter_end_of_data_macros: macros sent at the end of the message
milter_unknown_command_macros: macros sent with an unknown SMTP command (the UNKNOWN event)
milter_header_checks: header_checks-style tables for the headers milters add, insert or change (PREPEND not implemented)
milter_macro_daemon_name: the {daemon_name} macro value
milter_macro_v: the v macro value
milter_macro_defaults: name=value defaults for macros pymaster has no value for
""")
