"""JWT checks for the API (spec: "Authentication"), as pure functions of the token and ``now``.

Tokens carry ``sub`` (the user, at most :data:`MAX_USER_BYTES`), ``role`` (``viewer`` or
``operator``) and ``exp`` (required); a token is at most :data:`MAX_TOKEN_BYTES`. The
algorithm allow-list is fixed per verifier (HS256 with a shared secret by
default, RS256 with a public key as an option), so ``alg: none`` and algorithm confusion
are refused. Time claims are checked against the ``now`` the caller passes (with a small
leeway), which keeps this module free of clocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from tdevlab.exceptions import AuthFailed, InvalidParameters
from tdevlab.protocol.envelope import shown, utf8_size

__all__ = ["MAX_TOKEN_BYTES", "MAX_USER_BYTES", "ROLES", "Claims", "TokenVerifier", "issue_token"]

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
#: HMAC secrets shorter than this are refused (RFC 7518 3.2: at least the hash size).
MIN_SECRET_BYTES = 32
#: The longest user name (``sub``) accepted, in UTF-8 bytes: it is repeated in the auth
#: ack and in errors, and it keys the per-user limits.
MAX_USER_BYTES = 128
#: The longest token accepted (a JWT with these claims is a few hundred bytes; an RS256
#: one under 1 KB). Longer ones are refused before any decoding.
MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True)
class Claims:
    """What a valid token says."""

    user: str
    role: Role
    expires_at: float

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


class TokenVerifier:
    """Verifies tokens with one key and one algorithm, and issues them when it can sign.

    Args:
        key: The HS256 secret (at least 32 bytes), or an RS256 public key (PEM).
        algorithm: ``"HS256"`` (default) or ``"RS256"``.
        leeway: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        signing_key: For RS256, the private key (PEM) matching ``key``, so :meth:`issue`
            can sign; without it an RS256 verifier only verifies. HS256 signs with ``key``.

    Raises:
        InvalidParameters: for another algorithm, a secret that is too short, or a
            signing key that does not match ``key``.
    """

    def __init__(
        self,
        key: str | bytes,
        algorithm: str = "HS256",
        leeway: float = 5.0,
        *,
        signing_key: str | bytes | None = None,
    ) -> None:
        if algorithm not in ("HS256", "RS256"):
            raise InvalidParameters(f"algorithm {algorithm!r}: use 'HS256' or 'RS256'")
        if algorithm == "HS256":
            _check_secret(key)
            if signing_key is not None and signing_key != key:
                raise InvalidParameters("an HS256 verifier signs with its own secret")
        self.key = key
        self.algorithm = algorithm
        self.leeway = leeway
        self.signing_key = key if algorithm == "HS256" else signing_key
        # Time claims are checked below with the caller's `now`; PyJWT reads its own clock.
        self._jwt = jwt.PyJWT(
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "require": ["exp", "sub", "role"],
                "enforce_minimum_key_length": True,
            }
        )
        if self.signing_key is not None and algorithm != "HS256":
            probe = self.issue("probe", "viewer", now=0.0, ttl=60.0)
            try:
                self._jwt.decode(probe, key, algorithms=[algorithm])
            except jwt.PyJWTError as exc:
                raise InvalidParameters(
                    f"signing_key does not match the verifying key: a token it signs is "
                    f"refused ({exc})"
                ) from exc

    def issue(self, user: str, role: str, *, now: float, ttl: float = 3600.0) -> str:
        """Return a token this verifier accepts for ``user`` with ``role`` (:func:`issue_token`).

        Raises:
            InvalidParameters: if this verifier cannot sign (RS256 with only the public
                key), or as :func:`issue_token`.
        """
        if self.signing_key is None:
            raise InvalidParameters(
                f"this verifier checks {self.algorithm} tokens with a public key and cannot "
                "sign them: give TokenVerifier(public_key, 'RS256', signing_key=private_key), "
                "or issue tokens where the private key is"
            )
        return issue_token(self.signing_key, user, role, now=now, ttl=ttl, algorithm=self.algorithm)

    def verify(self, token: Any, now: float) -> Claims:
        """Return the token's claims.

        Raises:
            AuthFailed: naming why: malformed, bad signature or algorithm, a missing or
                invalid claim, expired, or not yet valid.
        """
        if not isinstance(token, str) or not token:
            raise AuthFailed("a token (a JWT string) is required")
        if utf8_size(token) > MAX_TOKEN_BYTES:
            raise AuthFailed(f"token rejected: longer than {MAX_TOKEN_BYTES} bytes")
        try:
            payload = self._jwt.decode(token, self.key, algorithms=[self.algorithm])
        except jwt.MissingRequiredClaimError as exc:
            raise AuthFailed(f"token rejected: {exc}") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise AuthFailed(f"token rejected: algorithm not allowed ({exc})") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthFailed("token rejected: bad signature") from exc
        except jwt.PyJWTError as exc:
            raise AuthFailed(f"token rejected: {exc}") from exc
        exp = _number_claim(payload, "exp")
        if exp <= now - self.leeway:
            raise AuthFailed("token expired", details={"expired_at": exp})
        for claim in ("nbf", "iat"):
            if claim in payload and _number_claim(payload, claim) > now + self.leeway:
                raise AuthFailed(f"token not valid yet ({claim} is in the future)")
        sub, role = payload["sub"], payload["role"]
        if not isinstance(sub, str) or not sub:
            raise AuthFailed("token rejected: 'sub' must be a non-empty string")
        if utf8_size(sub) > MAX_USER_BYTES:
            raise AuthFailed(
                f"token rejected: 'sub' is {utf8_size(sub)} bytes; at most {MAX_USER_BYTES}"
            )
        if role not in ROLES:
            raise AuthFailed(f"token rejected: role {shown(role)} is not one of {list(ROLES)}")
        return Claims(sub, role, exp)


def issue_token(
    secret: str | bytes,
    user: str,
    role: str,
    *,
    now: float,
    ttl: float = 3600.0,
    algorithm: str = "HS256",
) -> str:
    """Return a signed token for ``user`` with ``role``, valid for ``ttl`` seconds from ``now``.

    Raises:
        InvalidParameters: for an unknown role, a user that is empty or over
            :data:`MAX_USER_BYTES`, a non-positive ttl or a short secret.
    """
    if role not in ROLES:
        raise InvalidParameters(f"role {role!r} must be one of {list(ROLES)}")
    if not isinstance(user, str) or not user or utf8_size(user) > MAX_USER_BYTES:
        raise InvalidParameters(
            f"user {shown(user, 64)} must be a non-empty string of at most {MAX_USER_BYTES} bytes"
        )
    if not (ttl > 0 and math.isfinite(ttl)):
        raise InvalidParameters(f"ttl={ttl} must be a finite number of seconds > 0")
    if algorithm == "HS256":
        _check_secret(secret)
    payload = {"sub": user, "role": role, "iat": int(now), "exp": int(now + ttl)}
    return jwt.encode(payload, secret, algorithm=algorithm)


def _check_secret(key: str | bytes) -> None:
    size = len(key.encode() if isinstance(key, str) else key)
    if size < MIN_SECRET_BYTES:
        raise InvalidParameters(
            f"the HS256 secret is {size} bytes; use at least {MIN_SECRET_BYTES} "
            "(for example `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


def _number_claim(payload: dict[str, Any], name: str) -> float:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthFailed(f"token rejected: '{name}' must be a number")
    if not _finite(value):
        raise AuthFailed(f"token rejected: '{name}' must be finite, got {value!r}")
    return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
