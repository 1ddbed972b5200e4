"""Host/network lists for smtpd: the list itself lives in pymaster.mail.netlist.

postscreen's access list needs the same matching (permit_mynetworks), so the
code moved to the library; smtpd's modules keep importing it from here.
"""

from pymaster.mail.netlist import NetList

__all__ = ["NetList"]
