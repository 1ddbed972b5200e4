"""ldap: tables (pymaster.util.tables.ldap) against a real slapd.

The parity rows run `postmap -q` of pymaster and of Debian's Postfix
(postfix-ldap) on the same .cf file and expect the same answer, warnings
and exit status; the other tests look at reconnection and threads."""

import pytest

from pymaster.util.tables import TableError, create_table
from tests.support.databases import (  # noqa: F401  (fixtures)
    ADMIN_DN,
    BASE_DN,
    DEBIAN_POSTMAP,
    PASSWORD,
    PYMASTER_POSTMAP,
    debian_supports,
    postmap_config,
    postmap_query,
    slapd,
    write_cf,
)
from tests.support.instance import free_port
from tests.support.sqlcases import check_parity, check_query_error, survives_restart

PEOPLE = f"ou=people,{BASE_DN}"

LDIF = f"""\
dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: uid=alice,{PEOPLE}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: A
mail: alice@example.com
mailLocalAddress: alice@example.com
mailRoutingAddress: alice@mail.example.com
mailHost: mx1.example.com

dn: uid=bob,{PEOPLE}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: bob
cn: Bob
sn: B
mail: bob@example.com
mailLocalAddress: bob@example.com
mailLocalAddress: robert@example.com
mailRoutingAddress: bob@mail.example.com

dn: uid=weird,{PEOPLE}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: weird
cn: Weird
sn: W
mailLocalAddress: a*(b)\\c@example.com
mailRoutingAddress: weird@mail.example.com

dn: cn=staff,{BASE_DN}
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: staff
mailLocalAddress: staff@example.com
mailRoutingAddress: staff-owner@mail.example.com
member: uid=alice,{PEOPLE}
member: uid=bob,{PEOPLE}

dn: cn=bobalias,{BASE_DN}
objectClass: alias
objectClass: extensibleObject
cn: bobalias
aliasedObjectName: uid=bob,{PEOPLE}

dn: cn=everyone,{BASE_DN}
objectClass: groupOfURLs
objectClass: inetLocalMailRecipient
cn: everyone
mailLocalAddress: everyone@example.com
memberURL: ldap:///{PEOPLE}??one?(mail=*)
"""


@pytest.fixture(scope="module")
def ldap(slapd):  # noqa: F811
    if not getattr(slapd, "_seeded", False):
        slapd.add(LDIF)
        slapd._seeded = True
    return slapd


def settings(server, **extra) -> dict[str, str]:
    base = {"server_host": server.url, "search_base": BASE_DN,
            "query_filter": "(mailLocalAddress=%s)", "result_attribute": "mailRoutingAddress",
            "version": "3"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


QUERY_ERROR = "postmap: fatal: table {spec}: query error"

# (id, settings, key, stdout or None, stderr line prefixes)
PARITY = [
    ("found", {}, "alice@example.com", "alice@mail.example.com", []),
    ("not found", {}, "nobody@example.com", None, []),
    ("key folded", {}, "Alice@EXAMPLE.com", "alice@mail.example.com", []),
    ("filter without parentheses", {"query_filter": "mailLocalAddress=%s"},
     "bob@example.com", "bob@mail.example.com", []),
    ("star is no wildcard", {}, "*", None, []),
    ("star in an address", {}, "*@example.com", None, []),
    ("parentheses cannot end the filter", {}, "x)(mailLocalAddress=*", None, []),
    ("metacharacters match literally", {}, "a*(b)\\c@example.com",
     "weird@mail.example.com", []),
    ("two result attributes", {"result_attribute": "mailRoutingAddress, mailHost"},
     "alice@example.com", "alice@mail.example.com,mx1.example.com", []),
    ("%u and %d", {"query_filter": "(&(uid=%u)(mail=%u@%d))"}, "bob@example.com",
     "bob@mail.example.com", []),
    ("%d of a bare key: no search", {"query_filter": "(mail=%d)", "search_base": "o=nowhere"},
     "bob", None, []),
    ("special DNs", {"special_result_attribute": "member"}, "staff@example.com",
     "staff-owner@mail.example.com,alice@mail.example.com,bob@mail.example.com", []),
    ("leaf attributes", {"result_attribute": "", "special_result_attribute": "member",
                         "leaf_result_attribute": "mailRoutingAddress"},
     "staff@example.com", "alice@mail.example.com,bob@mail.example.com", []),
    ("terminal attributes", {"terminal_result_attribute": "mailHost"},
     "alice@example.com", "mx1.example.com", []),
    ("terminal attribute absent", {"terminal_result_attribute": "mailHost"},
     "bob@example.com", "bob@mail.example.com", []),
    # The order is the server's (both clients ask the same slapd).
    ("special URL", {"special_result_attribute": "memberURL"}, "everyone@example.com",
     "bob@mail.example.com,alice@mail.example.com", []),
    ("scope one", {"scope": "one"}, "staff@example.com", "staff-owner@mail.example.com", []),
    ("scope one misses the deeper", {"scope": "one"}, "alice@example.com", None, []),
    ("scope base", {"scope": "base", "search_base": f"uid=bob,{PEOPLE}"},
     "robert@example.com", "bob@mail.example.com", []),
    ("search_base from the key", {"search_base": "ou=people,dc=%2,dc=%1"},
     "alice@example.com", "alice@mail.example.com", []),
    ("search_base from the key missing: not found", {"search_base": "ou=people,dc=%2,dc=%1"},
     "alice@example.org", None, []),
    ("fixed search_base missing", {"search_base": f"ou=none,{BASE_DN}"}, "alice@example.com",
     None, ["postmap: warning: dict_ldap_lookup: {path}: Search base "
            f"'ou=none,{BASE_DN}' not found: 32: No such object", QUERY_ERROR]),
    ("result_format", {"result_format": "smtp:[%d]"}, "alice@example.com",
     "smtp:[mail.example.com]", []),
    ("result_filter", {"result_filter": "relay:%s"}, "alice@example.com",
     "relay:alice@mail.example.com", []),
    ("domain listed", {"domain": "example.com"}, "alice@example.com",
     "alice@mail.example.com", []),
    ("domain not listed", {"domain": "example.net"}, "alice@example.com", None, []),
    ("size_limit", {"query_filter": "(|(mail=%s)(objectClass=inetOrgPerson))",
                    "size_limit": "1"}, "x", None,
     ["postmap: warning: dict_ldap_lookup: Search error 4: Size limit exceeded",
      QUERY_ERROR]),
    ("expansion_limit", {"result_attribute": "mailLocalAddress", "expansion_limit": "1"},
     "robert@example.com", None,
     ["postmap: warning: dict_ldap_get_values[1]: {path}: Expansion limit exceeded for "
      "key: 'robert@example.com'", QUERY_ERROR]),
    ("fixed filter", {"query_filter": "(uid=bob)"}, "x", "bob@mail.example.com",
     ["postmap: warning: dict_ldap_open: {path}: Fixed query_filter (uid=bob) is "
      "probably useless"]),
    ("simple bind", {"bind": "yes", "bind_dn": ADMIN_DN, "bind_pw": PASSWORD},
     "alice@example.com", "alice@mail.example.com", []),
    ("bad password", {"bind_dn": ADMIN_DN, "bind_pw": "wrong"}, "alice@example.com", None,
     ["postmap: warning: dict_ldap_connect: Unable to bind to server {url} with dn "
      f"{ADMIN_DN}: 49 (Invalid credentials)", QUERY_ERROR]),
    ("no bind", {"bind": "no"}, "alice@example.com", "alice@mail.example.com", []),
    ("version 2 by default", {"version": None}, "alice@example.com",
     "alice@mail.example.com", []),
    ("alias not dereferenced", {"search_base": f"cn=bobalias,{BASE_DN}", "scope": "base"},
     "bob@example.com", None, []),
    ("alias dereferenced finding the base", {"search_base": f"cn=bobalias,{BASE_DN}",
                                             "scope": "base", "dereference": "2"},
     "bob@example.com", "bob@mail.example.com", []),
    ("dereference and referrals", {"dereference": "3", "chase_referrals": "yes",
                                   "timeout": "5"}, "alice@example.com",
     "alice@mail.example.com", []),
]


@pytest.fixture(scope="module")
def debian(postmap_config):  # noqa: F811
    return debian_supports("ldap", postmap_config)


def _run(program, debian, server, postmap_config, tmp_path, extra, key):  # noqa: F811
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    path = write_cf(tmp_path / "ldap.cf", settings(server, **extra))
    spec = f"ldap:{path}"
    return postmap_query(program, postmap_config, key, spec), spec, path


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
@pytest.mark.parametrize("name, extra, key, stdout, stderr", PARITY,
                         ids=[row[0] for row in PARITY])
def test_postmap_parity(program, debian, ldap, postmap_config, tmp_path,  # noqa: F811
                        name, extra, key, stdout, stderr):
    result, spec, path = _run(program, debian, ldap, postmap_config, tmp_path, extra, key)
    if stderr is not None:
        stderr = [line.replace("{url}", ldap.url) for line in stderr]
    check_parity(result, spec, path, "ldap", stdout, stderr)


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
@pytest.mark.parametrize("hosts", ["ldapi", "sasl external", "host and server_port",
                                   "failover"])
def test_server_forms(program, debian, ldap, postmap_config, tmp_path, hosts):  # noqa: F811
    extra = {"ldapi": {"server_host": ldap.ldapi},
             "sasl external": {"server_host": ldap.ldapi, "bind": "sasl",
                               "sasl_mechs": "EXTERNAL"},
             "host and server_port": {"server_host": "127.0.0.1",
                                      "server_port": str(ldap.port)},
             "failover": {"server_host": f"ldap://127.0.0.1:{free_port()} {ldap.url}"}}[hosts]
    result, _, _ = _run(program, debian, ldap, postmap_config, tmp_path, extra,
                        "alice@example.com")
    assert (result.returncode, result.stdout) == (0, "alice@mail.example.com\n"), \
        result.stderr


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
@pytest.mark.parametrize("how, found", [("ldaps", True), ("start_tls", True),
                                        ("ldaps unverified", False),
                                        ("ldaps not required", True)])
def test_tls(program, debian, ldap, postmap_config, tmp_path, how, found):  # noqa: F811
    """ldaps: and STARTTLS, the server's certificate checked against
    tls_ca_cert_file; one that cannot be verified is a temporary failure."""
    if not ldap.ldaps_url:
        pytest.skip("no certificate for slapd (openssl is not installed)")
    verified = {"tls_require_cert": "yes", "tls_ca_cert_file": ldap.ca_file}
    extra = {"ldaps": {"server_host": ldap.ldaps_url, **verified},
             "start_tls": {"start_tls": "yes", **verified},
             "ldaps unverified": {"server_host": ldap.ldaps_url, "tls_require_cert": "yes",
                                  "tls_ca_cert_file": "/etc/ssl/certs/ca-certificates.crt"},
             "ldaps not required": {"server_host": ldap.ldaps_url}}[how]
    result, spec, _ = _run(program, debian, ldap, postmap_config, tmp_path, extra,
                           "alice@example.com")
    if found:
        assert (result.returncode, result.stdout) == (0, "alice@mail.example.com\n"), \
            result.stderr
    else:
        check_query_error(result, spec)


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
def test_server_down_is_a_temporary_failure(program, debian, ldap, postmap_config,  # noqa: F811
                                            tmp_path):
    dead = f"ldap://127.0.0.1:{free_port()}"
    result, spec, _ = _run(program, debian, ldap, postmap_config, tmp_path,
                           {"server_host": dead}, "alice@example.com")
    check_query_error(result, spec, f"postmap: warning: dict_ldap_connect: Unable to bind to "
                                    f"server {dead} with dn empty or implicit: -1 (Can't "
                                    "contact LDAP server")


def test_reconnects_after_a_restart(ldap, tmp_path):
    table = create_table(f"ldap:{write_cf(tmp_path / 'l.cf', settings(ldap))}")
    assert table.remote
    survives_restart(ldap, table, "alice@example.com", "alice@mail.example.com")


def test_recursion_limit(ldap, tmp_path):
    path = write_cf(tmp_path / "l.cf", settings(ldap, special_result_attribute="member",
                                                recursion_limit="1"))
    table = create_table(f"ldap:{path}")
    assert table.lookup("staff@example.com") is not None
    path = write_cf(tmp_path / "l0.cf", settings(ldap, special_result_attribute="member",
                                                 recursion_limit="0"))
    with pytest.raises(TableError):
        create_table(f"ldap:{path}")
