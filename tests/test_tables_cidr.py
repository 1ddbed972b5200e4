"""cidr: tables (pymaster.util.tables.cidr), per cidr_table(5)."""

import pytest

from pymaster.util.tables import create_table
from pymaster.util.tables.cidr import parse_cidr_rules

TABLE = """\
# clients
192.168.1.1          single
192.168.0.0/16       private
2001:db8::/32        documentation
[2001:db8:1::]/48    never reached
if 10.0.0.0/8
10.1.0.0/16          ten-one
!10.1.0.0/16         ten-other
endif
::/0                 any-ipv6
"""


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "clients.cidr"
    path.write_text(TABLE)
    return create_table(f"cidr:{path}")


@pytest.mark.parametrize("key, value", [
    ("192.168.1.1", "single"),
    ("192.168.7.9", "private"),
    ("2001:db8:1::5", "documentation"),
    ("2001:DB8::1", "documentation"),
    ("10.1.2.3", "ten-one"),
    ("10.2.3.4", "ten-other"),
    ("fe80::1", "any-ipv6"),
    ("172.16.0.1", None),
    ("not-an-address", None),
    ("", None),
])
def test_first_match_wins(table, key, value):
    assert table.lookup(key) == value


def test_ipv4_block_never_matches_ipv6(tmp_path):
    path = tmp_path / "t"
    path.write_text("0.0.0.0/0 v4\n")
    table = create_table(f"cidr:{path}")
    assert table.lookup("::1") is None
    assert table.lookup("127.0.0.1") == "v4"
    assert not table.fixed


def test_bad_lines_are_warned_with_file_and_line():
    warnings = []
    text = "1.2.3.4/24 x\n1.2.3.0/33 x\nfoo x\n1.2.3.0/24\nendif\n1.2.3.0/24 ok\n"
    rules = parse_cidr_rules(text.splitlines(), "/etc/postfix/c", warnings.append)
    assert len(rules) == 1
    assert warnings[0] == ('cidr map /etc/postfix/c, line 1: non-null host address bits in '
                           '"1.2.3.4/24", perhaps you should use "1.2.3.0/24" instead: '
                           'skipping this rule')
    assert "line 2: bad mask length in \"1.2.3.0/33\"" in warnings[1]
    assert "line 3: bad address pattern" in warnings[2]
    assert "line 4: no lookup result" in warnings[3]
    assert "line 5: ENDIF without IF: skipping this rule" in warnings[4]


def test_repeated_negations(tmp_path):
    path = tmp_path / "t"
    path.write_text("! ! 10.0.0.0/8 ten\n!!! 0.0.0.0/0 never\n")
    table = create_table(f"cidr:{path}")
    assert table.lookup("10.1.2.3") == "ten"
    assert table.lookup("11.1.2.3") is None
