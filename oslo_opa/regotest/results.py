"""The outcome of one Rego test, as ``opa test`` reports it."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any, ClassVar


@dataclasses.dataclass
class TestResult:
    """The outcome of one test, as ``opa test`` reports it.

    Exactly one of ``passed``, ``failed``, ``skipped`` and ``error`` (not
    None) holds.  ``package`` is ``data.<package>``; ``name`` the test's
    name (``test_x#01`` for a second definition); ``file``, ``row`` and
    ``col`` where its rule starts; ``duration_ns`` its evaluation time.
    ``sub_results`` holds the cases of a test object (opa test's
    ``sub_results``), else None.  ``output`` is what its ``print()``
    calls wrote, in order (over all the queries it was split into).
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    package: str
    name: str
    file: str
    row: int
    col: int = 1
    failed: bool = False
    skipped: bool = False
    error: str | None = None
    error_code: str | None = None
    duration_ns: int = 0
    sub_results: dict[str, Any] | None = None
    output: bytes = b''
    passed: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.passed = not (self.failed or self.skipped) and self.error is None

    @property
    def full_name(self) -> str:
        """``data.pkg.test_name``: what ``run`` is matched against."""
        return f'{self.package}.{self.name}'

    @property
    def outcome(self) -> str:
        """PASS, FAIL, SKIPPED or ERROR."""
        if self.passed:
            return 'PASS'
        if self.failed:
            return 'FAIL'
        return 'SKIPPED' if self.skipped else 'ERROR'

    def as_dict(self) -> dict[str, Any]:
        """The result as ``opa test --format json`` writes it."""
        out: dict[str, Any] = {
            'location': {'file': self.file, 'row': self.row, 'col': self.col},
            'package': self.package,
            'name': self.name,
        }
        if self.failed:
            out['fail'] = True
        if self.skipped:
            out['skip'] = True
        if self.error is not None:
            out['error'] = {
                'code': self.error_code or 'regopy_error',
                'message': self.error,
            }
        out['duration'] = self.duration_ns
        if self.output:
            # Go's []byte: base64 in JSON.
            out['output'] = base64.b64encode(self.output).decode('ascii')
        if self.sub_results:
            out['sub_results'] = self.sub_results
        return out
