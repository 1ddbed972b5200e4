"""Helpers the tests share; nothing here is a test, and nothing here is pymaster.

Instances and peers that tests run against:
    instance        a real pymaster instance in a temporary directory (the master
                    started with `postfix start`), its log, free loopback ports
    parity/         Debian's Postfix in a temporary directory, a raw dialogue client
                    and maskers, for the side-by-side parity tests
    dnsserver       a loopback DNS server answering from a dict (MX, A, TXT, TLSA)
    smtpscript      a scripted SMTP/LMTP server that records what it received
    sink            Debian's smtp-sink as a relay's next hop (skips when not installed)
    milterpeer      a scripted milter speaking the libmilter wire format
    served          a request handler served from a thread on a service's socket
                    (ipc.Server), and listen(path): a bare listening unix socket

Clients, fixtures and readers:
    smtpclient      a byte-level SMTP client (bare LFs, pipelining, half chunks)
    queue_fixtures  a config directory and spool in tmp_path, a message queued in it
    local_helpers   a spool, queue file, delivery request and recording cleanup
                    stand-in for the local and virtual agents' unit tests
    accounts        temporary system accounts for deliveries to a real user (root)
    dsnreport       parsing delivery status notifications found in mailboxes

tests/services/ is not a helper library: it holds service programs written for
the tests, which the master starts like any other.
"""
