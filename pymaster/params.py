"""The parameter table: every main.cf parameter pymaster knows.

One entry per parameter: its name, type and default (Postfix's default, as
postconf(5) documents it). This table is the single source of truth for the
code's own reads (pymaster.config), for `postconf -d`, for the "unknown
parameter" warnings and for the generated parameter reference in docs/.

Types:
  str   a string, `$name` expanded at use
  bool  yes/no
  int   a whole number
  time  a number with an optional unit s, m, h, d, w (the `unit` field is
        the unit assumed when none is given)
  size  a number of bytes
  list  names separated by commas and/or white space

A default that is None is computed at run time (see pymaster.config), such as
myhostname, which is the machine's fully qualified name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str | None
    unit: str = "s"
    doc: str = ""


PARAMS: dict[str, Param] = {}


def _define(type_: str, rows: str, unit: str = "s") -> None:
    """_define - add "name = default" rows of one type to the table."""
    for row in rows.strip().splitlines():
        row = row.strip()
        if not row or row.startswith("#"):
            continue
        name, _, default = row.partition("=")
        name = name.strip()
        default = default.strip()
        PARAMS[name] = Param(name, type_, None if default == "<computed>" else default, unit)


def param(name: str) -> Param | None:
    """param - the table entry for NAME, or None when pymaster does not know it."""
    return PARAMS.get(name)


# ---------------------------------------------------------------------------
# Identity and installation.
_define("str", """
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
compatibility_level = 0
inet_interfaces = all
inet_protocols = all
proxy_interfaces =
smtp_bind_address =
smtp_bind_address6 =
mynetworks = <computed>
mynetworks_style = host
smtpd_banner = $myhostname ESMTP $mail_name
default_database_type = hash
default_cache_db_type = btree
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
relay_domains =
relayhost =
relay_transport = relay
default_transport = smtp
local_transport = local:$myhostname
virtual_transport = virtual
error_service = error
transport_maps =
fallback_transport =
fallback_relay =
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
virtual_maps =
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
owner_request_special = yes
defer_transports =
hopcount_limit = 50
trace_service_name = trace
bounce_service_name = bounce
defer_service_name = defer
cleanup_service_name = cleanup
queue_service_name = qmgr
pickup_service_name = pickup
showq_service_name = showq
flush_service_name = flush
rewrite_service_name = rewrite
anvil_service_name = anvil
verify_service_name = verify
tlsmgr_service_name = tlsmgr
postlog_service_name = postlog
authorized_mailq_users = static:anyone
authorized_flush_users = static:anyone
authorized_submit_users = static:anyone
authorized_verp_clients = $mynetworks
smtpd_authorized_xforward_hosts =
smtpd_authorized_xclient_hosts =
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
smtpd_client_connection_limit_exceptions =
smtpd_forbid_bare_newline = normalize
smtpd_forbid_bare_newline_exclusions = $mynetworks
smtpd_forbid_bare_newline_reject_code = 550
smtpd_policy_service_default_action = 451 4.3.5 Server configuration problem
smtpd_policy_service_policy_context =
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = $smtpd_sasl_security_options
smtpd_sasl_local_domain =
smtpd_sasl_service = smtp
smtpd_sender_login_maps =
smtpd_null_access_lookup_key = <>
smtpd_expansion_filter = \\t\\40!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~
smtpd_tls_security_level =
smtpd_tls_cert_file =
smtpd_tls_key_file = $smtpd_tls_cert_file
smtpd_tls_chain_files =
smtpd_tls_CAfile =
smtpd_tls_CApath =
smtpd_tls_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1
smtpd_tls_mandatory_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1
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
smtp_tls_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1
smtp_tls_mandatory_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1
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
header_address_token_limit = 10240
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
unverified_recipient_defer_code = 450
unverified_sender_defer_code = 450
unknown_address_tempfail_action = $reject_tempfail_action
reject_tempfail_action = defer_if_permit
unknown_helo_hostname_tempfail_action = $reject_tempfail_action
unverified_recipient_tempfail_action = $reject_tempfail_action
unverified_sender_tempfail_action = $reject_tempfail_action
undisclosed_recipients_header =
biff = yes
prepend_delivered_header = command, file, forward
mailbox_command_maps =
local_command_shell =
command_execution_directory =
command_expansion_filter = 1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ
allow_mail_to_commands = alias, forward
allow_mail_to_files = alias, forward
export_environment = TZ MAIL_CONFIG LANG
local_delivery_status_filter =
smtp_delivery_status_filter =
lmtp_delivery_status_filter =
pipe_delivery_status_filter =
virtual_delivery_status_filter =
in_flow_delay = 1s
mime_boundary_length_limit = 2048
mime_nesting_limit = 100
disable_mime_output_conversion = no
default_filter_nexthop =
tls_random_source = dev:/dev/urandom
smtpd_sasl_authenticated_header = no
transport_retry_time = 60s
postscreen_access_list = permit_mynetworks
""")

_define("bool", """
append_at_myorigin = yes
append_dot_mydomain = no
swap_bangpath = yes
allow_percent_hack = yes
resolve_dequoted_address = yes
resolve_null_domain = no
resolve_numeric_domain = no
parent_domain_matches_subdomains = <computed>
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
smtpd_tls_loglevel_deprecated = no
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
smtp_skip_4xx_greeting = yes
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
sender_based_routing = no
strict_mailbox_ownership = yes
sun_mailtool_compatibility = no
smtputf8_enable = yes
enable_errors_to = no
""")

_define("int", """
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
virtual_destination_concurrency_limit = $default_destination_concurrency_limit
virtual_destination_recipient_limit = $default_destination_recipient_limit
smtp_destination_concurrency_limit = $default_destination_concurrency_limit
smtp_destination_recipient_limit = $default_destination_recipient_limit
relay_destination_concurrency_limit = $default_destination_concurrency_limit
relay_destination_recipient_limit = $default_destination_recipient_limit
lmtp_destination_recipient_limit = $default_destination_recipient_limit
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
smtpd_per_process_session_limit = 100
""")

_define("time", """
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
smtpd_starttls_timeout = 300s
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
""")

_define("size", """
queue_minfree = 0
mailbox_size_limit = 51200000
virtual_mailbox_limit = 51200000
""")

_define("list", """
hash_queue_names = deferred, defer
""")

