"""SIP digest HA1 values and account password hashes: the only form in which secrets are stored.

Pure functions (hashlib only), shared by the PostgreSQL adapter and the in-memory fake.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

# RFC 3261 §25.1 user part: unreserved / user-unreserved characters (no ':', '@', '%', spaces).
_USERNAME = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,64}$")
_REALM = re.compile(r'^[^\s":\\]{1,255}$')
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
MAX_PASSWORD_LENGTH = 1024

#: RFC 7616 algorithm names -> hashlib names; "-sess" variants use the same stored HA1 input.
_ALGORITHMS = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


class InvalidAccountInput(ValueError):
    """A username, realm, password or e-mail that cannot be stored; the message names which and why."""


@dataclass(frozen=True, slots=True)
class ScryptCost:
    n: int = 2**14
    r: int = 8
    p: int = 1


DEFAULT_SCRYPT_COST = ScryptCost()


def check_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise InvalidAccountInput(
            f"SIP username {username!r} must be 1-64 characters of letters, digits and -_.!~*'()&=+$,;?/"
        )
    return username


def check_realm(realm: str) -> str:
    if not isinstance(realm, str) or not _REALM.match(realm):
        raise InvalidAccountInput(f"realm {realm!r} must be 1-255 characters without spaces, quotes or ':'")
    return realm


def check_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidAccountInput("password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidAccountInput(f"password is longer than {MAX_PASSWORD_LENGTH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in password):
        raise InvalidAccountInput("password must not contain control characters")
    return password


def check_email(email: str | None) -> str | None:
    if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
        raise InvalidAccountInput(f"e-mail address {email!r} is not of the form name@domain")
    return email


def digest_algorithm(algorithm: str) -> str | None:
    """hashlib name for an RFC 7616 ``algorithm`` (``-sess`` accepted), None when unsupported."""
    return _ALGORITHMS.get(algorithm.upper().removesuffix("-SESS"))


def digest_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username:realm:password) in lower-case hex (RFC 7616 §3.4.2)."""
    name = digest_algorithm(algorithm)
    if name is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r} (use MD5, SHA-256 or SHA-512-256)")
    return hashlib.new(name, f"{username}:{realm}:{password}".encode()).hexdigest()


def hash_password(password: str, cost: ScryptCost = DEFAULT_SCRYPT_COST) -> str:
    """``scrypt$n$r$p$salt$key`` (base64) with a fresh random salt."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=cost.n, r=cost.r, p=cost.p, dklen=32)
    return "$".join(["scrypt", str(cost.n), str(cost.r), str(cost.p), _b64(salt), _b64(key)])


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a :func:`hash_password` value (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
