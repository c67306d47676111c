"""Generated Rego tests: a ``<rule>_test.rego`` next to each module.

The inputs are chosen from the structure of the rule's own check string
(the rules it references with ``rule:`` count as one check each):

* for every ``or``, each alternative alone true (every other one false),
  so that dropping it changes the decision; and all of them false;
* for every ``and``, all legs true, and each leg alone false (the
  others true), so that each leg is shown to be necessary;
* every role of an allowing input with its case changed (oslo.policy
  compares roles case-insensitively);
* every target key a ``%(key)s`` substitution reads removed from an
  allowing input;
* an allowing input whose roles also hold a non-string, where that
  makes oslo.policy raise (the order of the checks shows, and the
  converted rule's three-valued ``state`` decides).

Where a node sits inside other ``and``/``or`` nodes, its siblings up the
tree are held so that the node alone decides.  A check that has to fail
fails by a near miss where it is the one the case is about (the
credential present with another value than the target's; a caller
holding every other role the policy names), else by a missing value.

A small solver picks the leaf checks' truth values and builds the
smallest credentials and target that give them; random inputs
(:mod:`oslo_opa.probe`) are the fallback.  Every input is then checked
against oslo.policy itself: the structure only decides which inputs to
pick, the expected decision is always oslo.policy's on exactly the input
the test sends (a raise is a deny), so no expectation can be wrong.  A
case no input can be found for (a branch that never holds, one another
branch subsumes, ``!``, ``@``) is left out and named in a comment of the
file.

The modules, each with one job:

* ``targets``: the cases a rule's structure asks for;
* ``leaves``: the leaf checks, as the solver sees them;
* ``solver``: truth values of the leaves that meet a case (and
  ``constant``: the rules their structure alone decides);
* ``materialize``: the smallest credentials and target with those values;
* ``oracle``: oslo.policy's decision on an input, and on each node;
* ``search``: the input of one case, the solver's or a random one;
* ``cases``: every case of every rule, named (``generate``);
* ``render``: the ``_test.rego`` text (``files``).
"""

from oslo_opa.convert.testgen.cases import generate
from oslo_opa.convert.testgen.render import Case, RuleTests, files, term
from oslo_opa.convert.testgen.solver import constant

__all__ = [
    'Case',
    'RuleTests',
    'constant',
    'files',
    'generate',
    'term',
]
