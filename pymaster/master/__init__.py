"""The master daemon and the runtime of the programs it starts (Postfix's master/).

daemon: the master itself (master.cf, endpoints, supervision, reload, stop);
mastercf: the master.cf parser; handoff: passing connections (postscreen);
service: what every service program runs between the master and its work.
Imports pymaster.mail and pymaster.util.
"""
