"""Exceptions raised by oslo.opa."""


class OsloOpaError(Exception):
    """Base class of every error oslo.opa raises on purpose."""


class ConversionError(OsloOpaError):
    """Input that cannot be converted: a bad file, option or rule.

    The message names the file and line, or the rule, at fault.
    """


class StrictModeError(ConversionError):
    """A conversion warning promoted to an error by ``strict``."""

    def __init__(self, warnings: list[str]) -> None:
        self.warnings = list(warnings)
        super().__init__(
            'strict mode: %d warning(s) treated as errors:\n%s'
            % (len(warnings), '\n'.join(warnings))
        )


class PolicyLoadError(OsloOpaError):
    """A converted directory that cannot be loaded or compiled.

    :ivar first: for Rego that does not compile, the first error, as
        ``file:row:col: message``; else None.
    """

    def __init__(self, message: str, first: str | None = None) -> None:
        super().__init__(message)
        self.first = first


class BundleSignatureError(OsloOpaError):
    """An OPA bundle signature that cannot be made or does not verify.

    The message is one line naming the file, claim or key at fault.
    """
