"""Where identities are decided: credentials, registration rules. No Flask here."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PHONE = re.compile(r"^1\d{10}$")
MIN_PASSWORD = 8
_N, _R, _P = 2 ** 14, 8, 1


def hash_password(password: str) -> str:
    """scrypt with a random salt, self-describing so parameters can change later."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                               dklen=len(bytes.fromhex(digest)))
    return hmac.compare_digest(candidate.hex(), digest)


def registration_problems(phone: str, password: str, display_name: str) -> dict[str, str]:
    """Field -> problem, empty when the registration may go ahead."""
    problems = {}
    if not PHONE.match(phone):
        problems["phone"] = "Use an 11-digit mainland mobile number."
    if len(password) < MIN_PASSWORD:
        problems["password"] = f"Use at least {MIN_PASSWORD} characters."
    if not display_name.strip():
        problems["display_name"] = "Tell us your name."
    return problems
