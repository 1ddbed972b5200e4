"""pymaster's mail-wide library (Postfix's global/).

What every mail program shares: main.cf and the parameter table, addresses
and their rewriting and resolution, queue files and records, delivery
requests and status, DSNs, headers and MIME, mailboxes, milters, SASL, TLS
settings, the clients of the cleanup and verify services, the maildrop and
the master's pid file. Imports pymaster.util only.
"""
