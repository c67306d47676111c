#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Generate oslo_opa/rego/oslo_opa/casefold.rego (py_lower).

oslo.policy compares roles with Python's ``str.lower()``.  Neither Rego
engine has an equivalent builtin: regopy's ``lower()`` only maps ASCII
letters and OPA's is Go's ``strings.ToLower`` (simple case mapping, no
final sigma).  This script derives from the running Python the tables
that ``data.oslo_opa.lib.py_lower`` needs to reproduce ``str.lower()``
exactly, and writes them out with the function as a Rego v1 module.

The tables are derived from ``str.lower()`` itself, so they are
CPython's by construction:

* the lowercase of every code point whose ``lower()`` differs from it
  (context free for every character but U+03A3, capital sigma);
* for the Final_Sigma rule (CPython's ``handle_capital_sigma``), the
  Case_Ignorable characters, and the Cased characters that are not
  Case_Ignorable: the only two classes that rule tells apart.

Usage::

    python3 tools/gen_casefold.py           # (re)write the module
    python3 tools/gen_casefold.py --check   # exit 1 if it is out of date

Standard library only.  The output depends on nothing but the Python
``major.minor`` version (which fixes ``unicodedata.unidata_version``):
running it twice gives identical output.  Another Python version may
have other Unicode tables, so ``--check`` fails there.
"""

import argparse
import base64
import difflib
import os
import sys
import unicodedata

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(
    REPO_ROOT, 'oslo_opa', 'rego', 'oslo_opa', 'casefold.rego'
)

CAPITAL_SIGMA = '\u03a3'
SMALL_SIGMA = '\u03c3'
SMALL_FINAL_SIGMA = '\u03c2'


def _code_points():
    for cp in range(sys.maxunicode + 1):
        if not 0xD800 <= cp <= 0xDFFF:  # no lone surrogates in Rego strings
            yield chr(cp)


def _sigma_is_final(s, i):
    """True if s[i] is a capital sigma that s.lower() makes final
    (every character before s[i] lowers to a single code point)."""
    return s.lower()[i] == SMALL_FINAL_SIGMA


def derive_tables():
    """Return (lower_map, case_ignorable, cased), from str.lower().

    lower_map maps every character c with c.lower() != c to c.lower()
    (U+03A3 to its non-final form, U+03C3).

    CPython lowers U+03A3 to U+03C2 when the closest character before it
    that is not Case_Ignorable exists and is Cased, and the closest one
    after it that is not Case_Ignorable does not exist or is not Cased.
    A character that is both Cased and Case_Ignorable is skipped like any
    Case_Ignorable one, so the two classes that matter are
    case_ignorable, and cased (Cased and not Case_Ignorable), told apart
    by lowering:

    * in x + 'Σ' the sigma is final iff x is cased (an ignorable x is
      skipped, and then nothing precedes the sigma);
    * in 'A' + x + 'Σ' it is final iff x is cased or case-ignorable.
    """
    lower_map = {}
    case_ignorable = []
    cased = []
    for c in _code_points():
        low = c.lower()
        if low != c:
            lower_map[c] = low
        if _sigma_is_final(c + CAPITAL_SIGMA, -1):
            cased.append(c)
        elif _sigma_is_final('A' + c + CAPITAL_SIGMA, -1):
            case_ignorable.append(c)
    _verify(lower_map, set(case_ignorable), set(cased))
    return lower_map, case_ignorable, cased


def _verify(lower_map, case_ignorable, cased):
    """Check the assumptions py_lower relies on."""
    # Lowering is idempotent: a lowercase never lowers again.
    for low in lower_map.values():
        for d in low:
            assert d.lower() == d, (low, d)
    assert lower_map[CAPITAL_SIGMA] == SMALL_SIGMA
    assert CAPITAL_SIGMA in cased
    # Only U+03A3 depends on its context.
    probes = ['A', 'a', '\u0301', "'", ' ', '\u0130']
    for c, low in lower_map.items():
        if c != CAPITAL_SIGMA:
            for p in probes:
                got = (p + c + p).lower()
                assert got == p.lower() + low + p.lower(), hex(ord(c))
    # The after-sigma half of the rule sees the same two classes: in
    # 'AΣ' + x the sigma is final unless x is cased.
    for c in _code_points():
        final = _sigma_is_final('A' + CAPITAL_SIGMA + c, 1)
        assert final == (c not in cased), hex(ord(c))
        if c in case_ignorable:
            # ... and an ignorable x is skipped: 'AΣ' + x + 'b'.
            assert not _sigma_is_final('A' + CAPITAL_SIGMA + c + 'b', 1)


def _rego_str(s):
    """A Rego string literal of s, written raw.

    regopy does not unescape string literals and OPA rejects some
    invisible characters (U+FEFF) raw, so only characters that need no
    escape and are visible are allowed here.
    """
    for c in s:
        assert c not in '"\\', s
        assert unicodedata.category(c)[0] in 'LMNPS', hex(ord(c))
    return '"%s"' % s


def _rego_base64(s):
    b64 = base64.b64encode(s.encode('utf-8')).decode('ascii')
    return 'base64.decode("%s")' % b64


HEADER = """\
# Code generated by tools/gen_casefold.py; DO NOT EDIT.
#
# Generated with Python {python} (unicodedata.unidata_version {unidata}).
# Regenerate with: python3 tools/gen_casefold.py
"""

# Keep lines within 79 columns (ruff), and this as `opa fmt` writes it.
FUNCTIONS = """\
package oslo_opa.lib

# py_lower(s) is Python's s.lower() (what oslo.policy compares roles with),
# for every string s, in both OPA and regopy (rego-cpp).
#
# Neither engine's lower() builtin can be used on non-ASCII strings:
# regopy's only maps ASCII letters, OPA's is Go's strings.ToLower (simple
# case mapping, no final sigma).  So:
#   * an ASCII string goes to lower() (the fast path);
#   * any other string is lowered code point by code point with tables
#     generated from Python, and U+03A3 (capital sigma) becomes U+03C2
#     (final sigma) or U+03C3 following CPython's Final_Sigma rule.
#
# Written for both engines:
#   * regopy's regex.match is std::regex on UTF-8 bytes: no pattern here
#     looks at non-ASCII characters, and [[:cntrl:]] names the control
#     characters (regopy rejects \\x.. escapes).  No pattern has a
#     quantifier either: std::regex recurses per repetition and overflows
#     the stack on long strings.
#   * regopy builds objects and sets in quadratic time, so the tables are
#     strings searched with contains and indexof: indexof and substring
#     count code points in both engines, and the UTF-8 encoding of a code
#     point can only be found at a code point boundary of a UTF-8 string.
#   * regopy 1.5 rejects a whole bundle ("bundle verify: raw index N >=
#     local_count M") when a number literal comes after more string
#     constants than the bundle has locals, so this module has no number
#     literals, and one string literal per table.
#   * Comprehensions only read variables bound in the rule body: regopy
#     does not see function parameters inside comprehensions.
py_lower(s) := lower(s) if {
	not regex.match(`[^[:cntrl:] -~]`, s)
} else := _py_lower_chars(s) if {
	not contains(s, "\u03a3")
} else := _py_lower_with_sigma(s)

# s lowered code point by code point, ignoring the Final_Sigma rule.
_py_lower_chars(s) := concat("", lowered) if {
	chars := split(s, "")
	lowered := [x | some c in chars; x := _py_lower_char(c)]
}

# The lowercase of the code point c, ignoring the Final_Sigma rule.
# (count(c) is 1, and no number literal.)
_py_lower_char(c) := substring(_py_lower_to, i, count(c)) if {
	contains(_py_lower_from, c)
	i := indexof(_py_lower_from, c)
} else := object.get(_py_lower_multi, c, c)

# s lowered with the Final_Sigma rule: a capital sigma is final when the
# closest character before it that is not Case_Ignorable exists and is
# Cased, and the closest one after it that is not Case_Ignorable does not
# exist or is not Cased.
_py_lower_with_sigma(s) := concat("", [x |
	some k
	part := parts[k]
	x := concat("", [forms[k], _py_lower_chars(part)])
]) if {
	chars := split(s, "")
	ignorable := _py_lower_case_ignorable

	# The indices in chars of the characters that are not Case_Ignorable,
	# and the same shifted by one and two places (null-padded): for every
	# t, prev[t], mid[t] and next[t] are consecutive such indices.
	# (Shifted arrays, because there is no number literal.)
	solid := [j | some j; c := chars[j]; not contains(ignorable, c)]
	next := array.concat(solid, [null])
	mid := array.concat([null], next)
	prev := array.concat([null], mid)

	# The lowercase of each capital sigma, in order, after an empty string:
	# forms[k] goes before parts[k].
	forms := array.concat([""], [f |
		some t
		j := mid[t]
		chars[j] == "\u03a3"
		f := _py_lower_sigma(chars, prev[t], next[t])
	])
	parts := split(s, "\u03a3")
}

# The lowercase of a capital sigma whose closest characters that are not
# Case_Ignorable are chars[p] before it and chars[n] after it (null when
# there is none).
_py_lower_sigma(chars, p, n) := "\u03c2" if {
	contains(_py_lower_cased, chars[p])
	not _py_lower_is_cased(chars, n)
} else := "\u03c3"

# Undefined when j is null.
_py_lower_is_cased(chars, j) if contains(_py_lower_cased, chars[j])
"""


def generate():
    """The text of casefold.rego."""
    lower_map, case_ignorable, cased = derive_tables()
    single = sorted(c for c in lower_map if len(lower_map[c]) == 1)
    multi = sorted(c for c in lower_map if len(lower_map[c]) != 1)
    multi_items = ', '.join(
        '%s: %s' % (_rego_str(c), _rego_str(lower_map[c])) for c in multi
    )
    parts = [
        HEADER.format(
            python='%d.%d' % sys.version_info[:2],
            unidata=unicodedata.unidata_version,
        ),
        FUNCTIONS,
        '\n# The %d characters whose lowercase is another single code point,\n'
        '# and (at the same index) their lowercase.\n' % len(single),
        '_py_lower_from := %s\n' % _rego_str(''.join(single)),
        '\n',
        '_py_lower_to := %s\n'
        % _rego_str(''.join(lower_map[c] for c in single)),
        '\n# The characters whose lowercase has several code points.\n',
        '_py_lower_multi := {%s}\n' % multi_items,
        '\n# The %d Cased characters that are not Case_Ignorable.\n'
        % len(cased),
        '_py_lower_cased := %s\n' % _rego_str(''.join(cased)),
        '\n# The %d Case_Ignorable characters, as base64 of their UTF-8:\n'
        '# mostly combining marks and invisible format characters.\n'
        % len(case_ignorable),
        '_py_lower_case_ignorable := %s\n'
        % _rego_base64(''.join(case_ignorable)),
    ]
    return ''.join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Generate %s.' % os.path.relpath(OUTPUT, REPO_ROOT)
    )
    parser.add_argument(
        '--check',
        action='store_true',
        help='only compare: exit 1 if the file is not what would be written',
    )
    parser.add_argument('--output', default=OUTPUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        try:
            with open(args.output, encoding='utf-8') as f:
                current = f.read()
        except FileNotFoundError:
            current = ''
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(True),
            text.splitlines(True),
            args.output,
            'generated',
            n=0,
        )
        for line in diff:  # the tables are long lines
            if len(line) > 160:
                line = line[:150] + ' [...]\n'
            sys.stderr.write(line)
        sys.stderr.write(
            '\n%s is not what this Python (%d.%d, Unicode %s) generates; '
            'run: python3 tools/gen_casefold.py\n'
            % (
                args.output,
                *sys.version_info[:2],
                unicodedata.unidata_version,
            )
        )
        return 1
    with open(args.output, 'w', encoding='utf-8', newline='\n') as f:
        f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
