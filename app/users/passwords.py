"""The password policy, NIST SP 800-63B style: long enough, not common, not the username.

No composition rules (a digit, a symbol, ...) and no periodic expiry: those make passwords
predictable, not strong. The common-password list is the 30,000 most frequent passwords of
public breaches, bundled with the `zxcvbn` package (read once, offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated

from fastapi import Depends
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from app.kit.auth import AppSettings
from app.kit.errors import ValidationFailed
from app.kit.settings import Settings

MAX_PASSWORD_LENGTH = 256


class WeakPassword(ValidationFailed):
    code = "weak_password"
    message = "The password is too weak"


@cache
def _common_passwords() -> frozenset[str]:
    return frozenset(FREQUENCY_LISTS["passwords"])


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordPolicy:
        return cls(min_length=settings.auth.password_min_length)

    def check(self, password: str, *, username: str, email: str | None = None) -> None:
        """Raise WeakPassword (422) with the reason when the password breaks the policy."""
        if len(password) < self.min_length:
            raise WeakPassword(f"The password must be at least {self.min_length} characters long")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise WeakPassword(
                f"The password must be at most {MAX_PASSWORD_LENGTH} characters long"
            )
        folded = password.casefold()
        personal = {username.casefold()}
        if email and "@" in email:
            personal.add(email.rsplit("@", 1)[0].casefold())
        if folded in personal:
            raise WeakPassword("The password must not be the username or the e-mail name")
        if folded in _common_passwords():
            raise WeakPassword("This password is among the most common ones; choose another")


def password_policy_of(settings: AppSettings) -> PasswordPolicy:
    """The app's password policy."""
    return PasswordPolicy.from_settings(settings)


AppPasswordPolicy = Annotated[PasswordPolicy, Depends(password_policy_of)]
