"""The master daemon and the runtime of the programs it starts (Postfix's master/).

daemon: the master itself (master.cf, endpoints, supervision, reload, stop);
broker: one brokered zeromq endpoint; mastercf: the master.cf parser;
service: what every service program runs between the master and its work.
Imports pymaster.mail and pymaster.util.
"""
