"""SASL mechanism properties and the *_sasl_security_options filter.

postconf(5) smtpd_sasl_security_options: noplaintext, noactive,
nodictionary, noanonymous, forward_secrecy, mutual_auth. Each excludes the
mechanisms that lack the property (or have the weakness) it names.

Interface:
    PROPERTIES                      mechanism -> set of weaknesses/strengths
    parse_options(words) -> set[str]    raises ValueError on an unknown word
    allowed(mech, options, props=None) -> bool
    filter_mechanisms(mechs, options, props=None) -> list[str]
"""

from __future__ import annotations

OPTIONS = {"noplaintext", "noactive", "nodictionary", "noanonymous", "forward_secrecy",
           "mutual_auth"}

# Weaknesses: plaintext, dictionary, anonymous, active; strengths: mutual-auth, forward-secrecy.
PROPERTIES: dict[str, set[str]] = {
    "PLAIN": {"plaintext", "dictionary"},
    "LOGIN": {"plaintext", "dictionary"},
    "CRAM-MD5": {"dictionary"},
    "DIGEST-MD5": {"dictionary", "mutual-auth"},
    "ANONYMOUS": {"anonymous"},
    "EXTERNAL": set(),
}


def parse_options(words: list[str]) -> set[str]:
    """parse_options - the option words, checked (an empty list means none)."""
    out = set()
    for word in words:
        word = word.lower()
        if word not in OPTIONS:
            raise ValueError(f"unknown SASL security option \"{word}\"")
        out.add(word)
    return out


def allowed(mech: str, options: set[str], props: set[str] | None = None) -> bool:
    """allowed - may MECH be offered under OPTIONS?"""
    props = PROPERTIES.get(mech.upper(), {"dictionary", "plaintext"}) if props is None else props
    if "noplaintext" in options and "plaintext" in props:
        return False
    if "noanonymous" in options and "anonymous" in props:
        return False
    if "nodictionary" in options and "dictionary" in props:
        return False
    if "noactive" in options and "active" in props:
        return False
    if "mutual_auth" in options and "mutual-auth" not in props:
        return False
    if "forward_secrecy" in options and "forward-secrecy" not in props:
        return False
    return True


def filter_mechanisms(mechs: list[str], options: set[str],
                      props: dict[str, set[str]] | None = None) -> list[str]:
    return [m for m in mechs if allowed(m, options, (props or {}).get(m))]
