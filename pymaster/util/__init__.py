"""pymaster's generic utilities: no knowledge of mail (Postfix's util/).

Safe file writes, thread-local ids, exit statuses, DNS lookups, zeromq
messaging, Postfix-shaped log lines, string lists and lookup tables.

The layer rule: util imports nothing else of pymaster; mail (pymaster.mail)
imports util; the master and service runtime (pymaster.master) import mail
and util; the commands (pymaster.commands) and the service programs
(services/) sit on top and may import any layer. No module of the library
imports a command or a service.
"""
