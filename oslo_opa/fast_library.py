"""The helper library's files a fast bundle needs, and their variants.

A fast bundle holds only the library files its rule's fast path calls
(regopy's query time grows with all the Rego compiled together): each
helper maps to the file defining it and those it calls in turn.  For an
input whose roles and target values are ASCII, with no list among its
credentials (see ``input_profile``), files are swapped for variants
that call nothing: ``lower()`` for ``py_lower``, ``==`` and ``in`` for
``str_eq`` and ``cred_is``, and the roles as sent when they are lower
case already.  Each variant is the
same function on the inputs it is used for.
"""

from __future__ import annotations

import re

CASEFOLD = 'oslo_opa/casefold.rego'
COMPARE = 'oslo_opa/compare.rego'
PYSTR = 'oslo_opa/pystr.rego'
ROLES = 'oslo_opa/roles.rego'
# Membership in an array is cheaper in regopy than building a set.
ASCII_ROLES = """package oslo_opa.lib

roles_list_lower := [x | some r in input.credentials.roles; x := lower(r)]
"""
# For roles that are all lower case already (as they nearly always are),
# lower() changes none of them; a call per role is a cost worth saving.
LOWER_ROLES = """package oslo_opa.lib

roles_list_lower := input.credentials.roles
"""
SUBST = 'oslo_opa/subst.rego'
# The library files a fast path needs for each helper it calls (the file
# defining it and those it calls in turn); tests/unit/test_engine_library
# checks this against the library.
FAST_LIBRARY: dict[str, tuple[str, ...]] = {
    'roles_list_lower': (ROLES, CASEFOLD),
    'py_lower': (CASEFOLD,),
    'py_str': (PYSTR,),
    'str_eq': (COMPARE, PYSTR),
    'cred_is': (COMPARE, PYSTR),
    'has': (SUBST, PYSTR),
    'subst_text': (SUBST, PYSTR),
    'subst_text_t': (SUBST, PYSTR),
    'cred_eq': (SUBST, PYSTR),
    'items': (SUBST, PYSTR),
    'odd_leaf': (SUBST, PYSTR),
}
# The same for a simple input, where compare.rego and roles.rego are
# swapped for PLAIN_COMPARE and ASCII_ROLES, which call nothing.
FAST_LIBRARY_SIMPLE = dict(
    FAST_LIBRARY,
    roles_list_lower=(ROLES,),
    str_eq=(COMPARE,),
    cred_is=(COMPARE,),
)
LIB_CALL = re.compile(r'\blib\.([A-Za-z_][A-Za-z0-9_]*)')
PLAIN_COMPARE = """package oslo_opa.lib

str_eq(a, b) if a == b

cred_is(v, values) if v in values
"""
ASCII_CASEFOLD = """package oslo_opa.lib

py_lower(s) := lower(s)
"""


def variant(
    name: str,
    text: str,
    ascii_only: bool = False,
    plain: bool = False,
    lower_roles: bool = False,
) -> str:
    """Module name's text (text as written), or the variant asked."""
    if ascii_only and name == CASEFOLD:
        return ASCII_CASEFOLD
    if plain and name == COMPARE:
        return PLAIN_COMPARE
    if plain and ascii_only and name == ROLES:
        return LOWER_ROLES if lower_roles else ASCII_ROLES
    return text
