"""Where identities are decided: credentials, registration rules. No Flask here."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PHONE = re.compile(r"1[0-9]{10}")  # ASCII digits only, matched whole
MIN_PASSWORD = 8
_N, _R, _P = 2 ** 14, 8, 1


def hash_password(password: str) -> str:
    """scrypt with a random salt, self-describing so parameters can change later."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    # A corrupt stored hash is a failed login, never a crash.
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                                   dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(candidate, expected)


def registration_problems(phone: str, password: str, display_name: str) -> dict[str, str]:
    """Field -> problem, empty when the registration may go ahead."""
    problems = {}
    if not PHONE.fullmatch(phone):
        problems["phone"] = "Use an 11-digit mainland mobile number."
    if len(password) < MIN_PASSWORD:
        problems["password"] = f"Use at least {MIN_PASSWORD} characters."
    if not display_name.strip():
        problems["display_name"] = "Tell us your name."
    return problems
