"""Unit tests of credentials and registration rules (``services/gateway/identity.py``); no I/O."""
from __future__ import annotations

import pytest

from services.gateway.identity import MIN_PASSWORD, hash_password, registration_problems, verify_password

PASSWORD = "correct horse 光芒"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password(PASSWORD)


# ---- password hashes ---------------------------------------------------------------------------

def test_a_hash_is_self_describing_and_hides_the_password(stored: str) -> None:
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
    assert PASSWORD not in stored


def test_the_same_password_hashes_differently_each_time(stored: str) -> None:
    again = hash_password(PASSWORD)
    assert again != stored
    assert verify_password(PASSWORD, again)


def test_the_right_password_verifies(stored: str) -> None:
    assert verify_password(PASSWORD, stored) is True


@pytest.mark.parametrize("attempt", ["correct horse 光", "Correct horse 光芒", "", PASSWORD + " "])
def test_a_wrong_password_does_not_verify(stored: str, attempt: str) -> None:
    assert verify_password(attempt, stored) is False


def _flip_last_hex(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def test_a_tampered_digest_does_not_verify(stored: str) -> None:
    assert verify_password(PASSWORD, _flip_last_hex(stored)) is False


def test_a_tampered_salt_does_not_verify(stored: str) -> None:
    parts = stored.split("$")
    parts[4] = _flip_last_hex(parts[4])
    assert verify_password(PASSWORD, "$".join(parts)) is False


def test_a_tampered_cost_does_not_verify(stored: str) -> None:
    parts = stored.split("$")
    parts[1] = "8192"
    assert verify_password(PASSWORD, "$".join(parts)) is False


@pytest.mark.parametrize("malformed", [
    "",
    "not a hash",
    "scrypt$16384$8$1$abcd",
    "bcrypt$16384$8$1$00ff$00ff",
    "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
])
def test_a_malformed_stored_hash_does_not_verify(malformed: str) -> None:
    assert verify_password(PASSWORD, malformed) is False


@pytest.mark.parametrize("malformed", [
    "scrypt$abc$8$1$00ff$00ff",
    "scrypt$16384$8$1$zz$00ff",
    "scrypt$16384$8$1$00ff$not-hex",
    "scrypt$16384$8$1$00ff$",
    "scrypt$1000$8$1$00ff$00ff",
])
def test_a_corrupt_scrypt_hash_does_not_verify(malformed: str) -> None:
    assert verify_password(PASSWORD, malformed) is False


# ---- registration --------------------------------------------------------------------------------

def test_good_input_has_no_problems() -> None:
    assert registration_problems("13800000001", "x" * MIN_PASSWORD, "王小明") == {}


@pytest.mark.parametrize("phone", ["", "1380000000", "138000000012", "23800000001", "1380000000a",
                                   "+8613800000001", "138 0000 0001", " 13800000001"])
def test_a_bad_phone_is_a_problem(phone: str) -> None:
    assert set(registration_problems(phone, "long-enough-pw", "王小明")) == {"phone"}


@pytest.mark.parametrize("phone", ["13800000001\n", "1３８０００００００１", "1٣800000001"],
                         ids=["trailing-newline", "full-width-digits", "arabic-indic-digit"])
def test_a_phone_that_only_looks_like_eleven_digits_is_a_problem(phone: str) -> None:
    assert set(registration_problems(phone, "long-enough-pw", "王小明")) == {"phone"}


def test_a_short_password_is_a_problem() -> None:
    problems = registration_problems("13800000001", "x" * (MIN_PASSWORD - 1), "王小明")
    assert set(problems) == {"password"}
    assert str(MIN_PASSWORD) in problems["password"]


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_an_empty_name_is_a_problem(name: str) -> None:
    assert set(registration_problems("13800000001", "long-enough-pw", name)) == {"display_name"}


def test_every_problem_is_reported_at_once() -> None:
    problems = registration_problems("12", "short", " ")
    assert set(problems) == {"phone", "password", "display_name"}
    assert all(isinstance(message, str) and message for message in problems.values())
