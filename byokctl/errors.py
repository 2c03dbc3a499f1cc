"""Exit codes (SPEC §4) and one exception class per code.

Services raise these; only the CLI entry point turns one into a message and an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of SPEC §4; an error's `.code` (its `.label` is the JSON `code` name)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    NOT_FOUND = 3
    DENIED = 4
    PLAN_GATE = 5
    NO_KEY = 6
    KEY_REJECTED = 7
    RATE_LIMITED = 8
    INSUFFICIENT = 9
    VAULT_LOCKED = 10
    PROVIDER_DOWN = 11
    CONFLICT = 12
    INTEGRITY = 13

    @property
    def label(self) -> str:
        """The spec's name for the code, as used in `--json` errors (`not-found`)."""
        return self.name.lower().replace("_", "-")


class ByokError(Exception):
    """A failure the user can act on: what went wrong, and the fix, kept apart.

    `what` and `fix` are sentences for people; `details` are structured facts for `--json`
    (names, ids, counts: never a secret). The message, `str(e)`, is "what; fix"."""

    code: ExitCode = ExitCode.INTERNAL
    outcome: str | None = None  # a usage record's outcome finer than the code's label ("malformed")
    listing: tuple[str, ...] = ()  # what the sentence counts (missing variables...), one per line

    def __init__(self, what: str, fix: str | None = None, **details: object) -> None:
        self.what = what
        self.fix = fix or None
        self.details: dict[str, object] = details
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """What the user reads: the two parts joined."""
        return f"{self.what}; {self.fix}" if self.fix else self.what

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:  # a copy or pickle keeps the parts, not just the message
        return (_rebuilt, (type(self), self.what, self.fix, self.details, self.outcome,
                           self.listing))

    def __repr__(self) -> str:
        parts = [repr(self.what)] + ([f"fix={self.fix!r}"] if self.fix else [])
        parts += [f"{k}={v!r}" for k, v in self.details.items()]
        return f"{type(self).__name__}({', '.join(parts)})"

    def reworded(self, what: str | None = None, fix: str | None = None) -> ByokError:
        """The same failure (same class, outcome and details) with its parts replaced."""
        new = type(self)(self.what if what is None else what, self.fix if fix is None else fix,
                         **self.details)
        new.outcome, new.listing = self.outcome, self.listing
        return new


def _rebuilt(cls: type[ByokError], what: str, fix: str | None, details: dict[str, object],
             outcome: str | None, listing: tuple[str, ...] = ()) -> ByokError:
    error = cls(what, fix, **details)
    error.outcome, error.listing = outcome, listing
    return error


class UsageError(ByokError):
    """Bad arguments or a malformed request (exit 2)."""

    code = ExitCode.USAGE


class NotFound(ByokError):
    """An org, member, key or model that does not exist (exit 3)."""

    code = ExitCode.NOT_FOUND


class Denied(ByokError):
    """The actor lacks the permission (exit 4)."""

    code = ExitCode.DENIED


class PlanGate(ByokError):
    """BYOK is not allowed on the org's plan, or the plan is unknown (exit 5)."""

    code = ExitCode.PLAN_GATE


class NoKey(ByokError):
    """BYOK is active and no key resolves (exit 6)."""

    code = ExitCode.NO_KEY


class KeyRejected(ByokError):
    """The provider rejected the key (401/403), or its format is invalid (exit 7)."""

    code = ExitCode.KEY_REJECTED


class RateLimited(ByokError):
    """The provider answered 429, or the account is out of quota (exit 8)."""

    code = ExitCode.RATE_LIMITED


class Insufficient(ByokError):
    """No credits left, or the monthly BYOK budget is reached (exit 9)."""

    code = ExitCode.INSUFFICIENT


class VaultLocked(ByokError):
    """No master key, or one that does not open this vault (exit 10)."""

    code = ExitCode.VAULT_LOCKED


class ProviderDown(ByokError):
    """A network error, timeout or 5xx after the retries (exit 11)."""

    code = ExitCode.PROVIDER_DOWN


class Conflict(ByokError):
    """Already exists, a busy vault, or a confirmation refused (exit 12)."""

    code = ExitCode.CONFLICT


class Integrity(ByokError):
    """Tampering or corruption found, or a file that is not a usable vault (exit 13)."""

    code = ExitCode.INTEGRITY


ERROR_CLASSES: dict[ExitCode, type[ByokError]] = {
    cls.code: cls
    for cls in (
        UsageError, NotFound, Denied, PlanGate, NoKey, KeyRejected, RateLimited,
        Insufficient, VaultLocked, ProviderDown, Conflict, Integrity,
    )
}


# What each exit status means: the man page's EXIT STATUS is generated from this, and
# tests/cli/test_docs.py keeps the README's table equal to it.
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "",
    ExitCode.INTERNAL: "a bug: unexpected exception (no traceback, no locals)",
    ExitCode.USAGE: "bad arguments",
    ExitCode.NOT_FOUND: "org, member, key, model unknown",
    ExitCode.DENIED: "the actor lacks the permission",
    ExitCode.PLAN_GATE: "BYOK not allowed on the org's plan",
    ExitCode.NO_KEY: "BYOK active and no key resolves",
    ExitCode.KEY_REJECTED: "the provider rejected the key (401/403) or its format is invalid",
    ExitCode.RATE_LIMITED: "the provider answered 429 / quota exhausted",
    ExitCode.INSUFFICIENT: "no credits left, or the BYOK budget is reached",
    ExitCode.VAULT_LOCKED: "no master key, or it does not open this vault",
    ExitCode.PROVIDER_DOWN: "network error, timeout, 5xx after retries",
    ExitCode.CONFLICT: "already exists, confirmation refused",
    ExitCode.INTEGRITY: "tampering or corruption found; a file that is not a usable vault",
}
INTERRUPTED = 130  # Ctrl-C; not an ExitCode because no error class raises it


def exit_statuses() -> list[tuple[int, str, str]]:
    """(code, name, meaning) for every exit status byokctl uses, in order."""
    return [(int(c), c.label, EXIT_MEANINGS[c]) for c in ExitCode] + [
        (INTERRUPTED, "interrupted", "Ctrl-C")]
