"""Helpers for the side-by-side tests against Debian's Postfix
(tests/e2e/test_postfix_parity.py): a Postfix instance in a temporary
directory, a raw SMTP dialogue client, and maskers that make log lines and
command output from the two systems comparable."""
