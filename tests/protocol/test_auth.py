"""JWT checks: HS256 / RS256 verification against an explicit ``now``, and issuing tokens."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from tdevlab.exceptions import AuthFailed, InvalidParameters
from tdevlab.protocol.auth import (
    MAX_TOKEN_BYTES,
    MAX_USER_BYTES,
    MIN_SECRET_BYTES,
    ROLES,
    Claims,
    TokenVerifier,
    issue_token,
)

SECRET = "0123456789abcdef0123456789abcdef"
OTHER_SECRET = "fedcba9876543210fedcba9876543210"
NOW = 1_700_000_000.0
LEEWAY = 5.0
FAST = settings(max_examples=150, deadline=None, database=None)


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: Any) -> str:
    """A JWS header or payload segment."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def hs256(payload: dict[str, Any], secret: str | bytes = SECRET) -> str:
    """An HS256 token for any payload (PyJWT does the signing)."""
    return jwt.encode(payload, secret, algorithm="HS256")


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid payload at NOW, with some claims replaced (None removes one)."""
    payload: dict[str, Any] = {"sub": "alice", "role": "viewer", "iat": NOW, "exp": NOW + 60}
    for name, value in overrides.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def verifier(leeway: float = LEEWAY) -> TokenVerifier:
    """The HS256 verifier of SECRET."""
    return TokenVerifier(SECRET, leeway=leeway)


def refused(token: Any, now: float = NOW, check: TokenVerifier | None = None) -> str:
    """Assert the token is refused with AuthFailed; return the message."""
    with pytest.raises(AuthFailed) as info:
        (check or verifier()).verify(token, now)
    assert info.value.code == "AUTH_FAILED"
    return str(info.value)


@pytest.fixture(scope="module")
def other_rsa_private() -> bytes:
    """The private PEM of a second, unrelated RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- valid tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_valid_hs256_token_gives_claims(role: str) -> None:
    """A valid HS256 token yields Claims(user, role, expires_at)."""
    token = hs256(claims(role=role))
    assert verifier().verify(token, NOW) == Claims("alice", role, NOW + 60)  # type: ignore[arg-type]


def test_claims_know_the_operator_role() -> None:
    """Claims.is_operator is true for operators only."""
    assert Claims("a", "operator", NOW).is_operator
    assert not Claims("a", "viewer", NOW).is_operator


def test_expires_at_is_a_float() -> None:
    """An integer exp comes back as a float expires_at."""
    result = verifier().verify(hs256(claims(exp=int(NOW) + 60)), NOW)
    assert isinstance(result.expires_at, float)
    assert result.expires_at == NOW + 60


def test_bytes_secret_works_like_a_str_secret() -> None:
    """A bytes secret verifies tokens signed with the same bytes."""
    token = hs256(claims(), SECRET.encode())
    assert TokenVerifier(SECRET.encode()).verify(token, NOW).user == "alice"


def test_unknown_extra_claims_are_ignored() -> None:
    """Claims the API does not use (aud-less custom fields) do not matter."""
    token = hs256(claims(team="evolution", scopes=["a", "b"]))
    assert verifier().verify(token, NOW).role == "viewer"


# -- refused tokens: algorithm and signature ------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
def test_alg_none_is_refused(alg: str, signature: str) -> None:
    """An unsigned `alg: none` token is refused as a disallowed algorithm."""
    token = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims(role='operator'))}.{signature}"
    assert "algorithm not allowed" in refused(token)


def test_token_signed_with_another_secret_is_refused() -> None:
    """A token signed with another secret has a bad signature."""
    assert "bad signature" in refused(hs256(claims(), OTHER_SECRET))


def test_tampered_payload_is_refused() -> None:
    """Swapping the payload of a signed token (viewer -> operator) breaks the signature."""
    header, _, signature = hs256(claims()).split(".")
    forged = f"{header}.{segment(claims(role='operator'))}.{signature}"
    assert "bad signature" in refused(forged)


def test_hs256_token_is_refused_by_an_rs256_verifier(rsa_keys: tuple[bytes, bytes]) -> None:
    """Algorithm confusion: an HS256 token is not accepted where RS256 is expected."""
    _, public = rsa_keys
    message = refused(hs256(claims()), check=TokenVerifier(public, algorithm="RS256"))
    assert "algorithm not allowed" in message


def test_hs256_token_keyed_with_the_public_key_is_refused(rsa_keys: tuple[bytes, bytes]) -> None:
    """The classic confusion attack (HMAC keyed with the RSA public PEM) is refused."""
    _, public = rsa_keys
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(claims())}"
    mac = hmac.new(public, signing_input.encode("ascii"), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"
    message = refused(token, check=TokenVerifier(public, algorithm="RS256"))
    assert "algorithm not allowed" in message


def test_rs256_token_is_refused_by_an_hs256_verifier(rsa_keys: tuple[bytes, bytes]) -> None:
    """Algorithm confusion: an RS256 token is not accepted where HS256 is expected."""
    private, _ = rsa_keys
    token = jwt.encode(claims(), private, algorithm="RS256")
    assert "algorithm not allowed" in refused(token)


def test_rs256_signs_with_private_and_verifies_with_public(rsa_keys: tuple[bytes, bytes]) -> None:
    """issue_token with the RS256 private key verifies with the public key."""
    private, public = rsa_keys
    token = issue_token(private, "bob", "operator", now=NOW, ttl=120, algorithm="RS256")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert TokenVerifier(public, algorithm="RS256").verify(token, NOW) == Claims(
        "bob", "operator", NOW + 120
    )


def test_rs256_token_of_another_key_is_refused(
    rsa_keys: tuple[bytes, bytes], other_rsa_private: bytes
) -> None:
    """An RS256 token signed by another private key has a bad signature."""
    _, public = rsa_keys
    token = jwt.encode(claims(), other_rsa_private, algorithm="RS256")
    assert "bad signature" in refused(token, check=TokenVerifier(public, algorithm="RS256"))


@pytest.mark.parametrize("algorithm", ["none", "HS512", "ES256", "rs256"])
def test_other_algorithms_cannot_be_configured(algorithm: str) -> None:
    """A verifier only takes HS256 or RS256."""
    with pytest.raises(InvalidParameters, match="HS256"):
        TokenVerifier(SECRET, algorithm=algorithm)


# -- refused tokens: time claims ------------------------------------------------------------


@pytest.mark.parametrize("exp", [NOW - LEEWAY, NOW - LEEWAY - 0.001, NOW - 3600, 0])
def test_expired_token_is_refused(exp: float) -> None:
    """A token whose exp <= now - leeway is expired, and details carry expired_at."""
    with pytest.raises(AuthFailed, match="token expired") as info:
        verifier().verify(hs256(claims(exp=exp)), NOW)
    assert info.value.details == {"expired_at": exp}


@pytest.mark.parametrize("exp", [NOW - LEEWAY + 0.5, NOW - 1, NOW, NOW + 0.001])
def test_exp_within_leeway_is_accepted(exp: float) -> None:
    """A token that expired less than `leeway` seconds ago is still accepted."""
    assert verifier().verify(hs256(claims(exp=exp)), NOW).expires_at == exp


def test_zero_leeway_refuses_exp_equal_to_now() -> None:
    """With no leeway, exp == now is already expired."""
    assert "token expired" in refused(hs256(claims(exp=NOW)), check=verifier(leeway=0))


def test_expiry_depends_only_on_the_now_passed() -> None:
    """The same token is valid before its exp and refused after, by `now` alone."""
    token = hs256(claims(exp=NOW + 60))
    assert verifier().verify(token, NOW + 60 + LEEWAY - 1).user == "alice"
    assert "token expired" in refused(token, now=NOW + 60 + LEEWAY)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_time_claim_in_the_future_is_refused(claim: str) -> None:
    """nbf or iat later than now + leeway: the token is not valid yet, naming the claim."""
    message = refused(hs256(claims(**{claim: NOW + LEEWAY + 1})))
    assert "not valid yet" in message
    assert claim in message


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("offset", [-3600, 0, LEEWAY - 1, LEEWAY])
def test_time_claim_within_leeway_is_accepted(claim: str, offset: float) -> None:
    """nbf or iat in the past, or at most `leeway` in the future, is accepted."""
    assert verifier().verify(hs256(claims(**{claim: NOW + offset})), NOW).user == "alice"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["soon", True, [1], {"t": 1}])
def test_non_numeric_time_claim_is_refused(claim: str, value: Any) -> None:
    """A time claim that is not a number is refused, naming the claim."""
    assert f"'{claim}' must be a number" in refused(hs256(claims(**{claim: value})))


@pytest.mark.parametrize("exp", [float("nan"), float("inf")])
def test_non_finite_exp_is_refused(exp: float) -> None:
    """exp must be a finite number: NaN (never compares expired) and Infinity are refused."""
    token = hs256(claims(exp=exp))  # PyJWT writes the NaN / Infinity literals
    refused(token)


# -- refused tokens: required claims and roles ----------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "sub", "role"])
def test_missing_required_claim_is_refused(claim: str) -> None:
    """A token without exp, sub or role is refused, naming the missing claim."""
    message = refused(hs256(claims(**{claim: None})))
    assert "token rejected" in message
    assert f'"{claim}"' in message


@pytest.mark.parametrize("claim", ["exp", "sub", "role"])
def test_null_required_claim_counts_as_missing(claim: str) -> None:
    """A required claim set to null is refused like a missing one."""
    payload = claims()
    payload[claim] = None
    assert f'"{claim}"' in refused(hs256(payload))


@pytest.mark.parametrize("role", ["admin", "", "Operator", "viewer ", 1, ["viewer"]])
def test_role_outside_viewer_and_operator_is_refused(role: Any) -> None:
    """Only the viewer and operator roles exist; the message names the bad role."""
    payload = claims()
    payload["role"] = role
    message = refused(hs256(payload))
    assert f"role {role!r}" in message
    assert "viewer" in message
    assert "operator" in message


@pytest.mark.parametrize("sub", ["", 5, ["alice"]])
def test_invalid_subject_is_refused(sub: Any) -> None:
    """sub must be a non-empty string."""
    assert "sub" in refused(hs256(claims(sub=sub))).lower()


# -- refused tokens: not a token at all -----------------------------------------------------


@pytest.mark.parametrize("token", [None, 5, 1.5, b"a.b.c", ["a.b.c"], {"token": "x"}, ""])
def test_non_string_or_empty_token_is_refused(token: Any) -> None:
    """Anything but a non-empty string is refused before decoding."""
    assert "token" in refused(token)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "...",
        "eyJ",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "eyJhbGciOiJIUzI1NiJ9.!!!.sig",
        "é.é.é",
        " " * 10,
    ],
)
def test_garbage_string_is_refused(token: str) -> None:
    """Malformed strings are refused as AuthFailed with a reason."""
    assert refused(token).startswith("token rejected")


def test_payload_that_is_not_an_object_is_refused() -> None:
    """A correctly signed token whose payload is a JSON array is refused."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment([1, 2])}"
    mac = hmac.new(SECRET.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    assert refused(f"{signing_input}.{b64url(mac)}").startswith("token rejected")


@FAST
@given(st.text())
def test_arbitrary_text_is_only_ever_refused_with_auth_failed(token: str) -> None:
    """verify() on any string returns Claims or raises AuthFailed, nothing else."""
    with contextlib.suppress(AuthFailed):
        verifier().verify(token, NOW)


@FAST
@given(
    st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="))
)
def test_arbitrary_dotted_segments_are_only_refused_with_auth_failed(parts: list[str]) -> None:
    """Base64url-looking segments joined by dots never escape as another exception."""
    token = ".".join(parts)
    with pytest.raises(AuthFailed):
        verifier().verify(token, NOW)


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", ["", "short", "x" * (MIN_SECRET_BYTES - 1), b"y" * (MIN_SECRET_BYTES - 1)]
)
def test_short_secret_is_refused(secret: str | bytes) -> None:
    """HS256 secrets under 32 bytes are refused by the verifier and by issue_token."""
    with pytest.raises(InvalidParameters, match=str(MIN_SECRET_BYTES)):
        TokenVerifier(secret)
    with pytest.raises(InvalidParameters, match=str(MIN_SECRET_BYTES)):
        issue_token(secret, "alice", "viewer", now=NOW)


def test_secret_length_is_counted_in_bytes() -> None:
    """16 two-byte characters are a 32-byte secret, 31 ASCII characters are not."""
    wide = "é" * 16
    token = issue_token(wide, "alice", "viewer", now=NOW)
    assert TokenVerifier(wide).verify(token, NOW).user == "alice"
    with pytest.raises(InvalidParameters):
        TokenVerifier("é" * 15 + "x")


def test_rs256_verifier_does_not_apply_the_secret_length_rule(
    rsa_keys: tuple[bytes, bytes],
) -> None:
    """An RS256 verifier takes a public key PEM (the HS256 secret rule does not apply)."""
    _, public = rsa_keys
    assert TokenVerifier(public, algorithm="RS256").algorithm == "RS256"


# -- issue_token -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "", "VIEWER", "root"])
def test_issue_token_refuses_unknown_roles(role: str) -> None:
    """issue_token only issues viewer and operator tokens, naming the bad role."""
    with pytest.raises(InvalidParameters, match="role"):
        issue_token(SECRET, "alice", role, now=NOW)


@pytest.mark.parametrize("ttl", [0, 0.0, -1, -3600, float("nan"), float("-inf")])
def test_issue_token_refuses_non_positive_ttl(ttl: float) -> None:
    """A ttl that is not > 0 is refused."""
    with pytest.raises(InvalidParameters, match="ttl"):
        issue_token(SECRET, "alice", "viewer", now=NOW, ttl=ttl)


def test_issue_token_refuses_infinite_ttl() -> None:
    """An infinite ttl is refused with InvalidParameters (not an OverflowError)."""
    with pytest.raises(InvalidParameters, match="ttl"):
        issue_token(SECRET, "alice", "viewer", now=NOW, ttl=float("inf"))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("ttl", [1, 60, 3600, 86400 * 30])
def test_issued_token_verifies_and_expires_after_ttl(role: str, ttl: int) -> None:
    """The issued token verifies with the same secret, with exp = now + ttl."""
    token = issue_token(SECRET, "carol", role, now=NOW, ttl=ttl)
    assert verifier().verify(token, NOW) == Claims("carol", role, NOW + ttl)  # type: ignore[arg-type]
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {"sub": "carol", "role": role, "iat": int(NOW), "exp": int(NOW + ttl)}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_issued_token_default_ttl_is_one_hour() -> None:
    """Without ttl, tokens last 3600 seconds."""
    token = issue_token(SECRET, "carol", "viewer", now=NOW)
    assert verifier().verify(token, NOW).expires_at == NOW + 3600


def test_issued_token_expires_with_now() -> None:
    """An issued token is refused once now passes exp + leeway."""
    token = issue_token(SECRET, "carol", "viewer", now=NOW, ttl=60)
    assert "token expired" in refused(token, now=NOW + 60 + LEEWAY)


def test_issued_token_does_not_verify_with_another_secret() -> None:
    """An issued token is bound to its secret."""
    token = issue_token(SECRET, "carol", "viewer", now=NOW)
    assert "bad signature" in refused(token, check=TokenVerifier(OTHER_SECRET))


# -- sizes and signing ------------------------------------------------------------------------


def test_sub_of_128_bytes_passes_and_of_129_is_refused() -> None:
    """'sub' is at most MAX_USER_BYTES of UTF-8; the refusal does not repeat it."""
    assert verifier().verify(hs256(claims(sub="u" * MAX_USER_BYTES)), NOW).user == "u" * 128
    message = refused(hs256(claims(sub="é" * 65)))  # 130 bytes
    assert "'sub' is 130 bytes" in message
    assert "é" not in message


def test_token_over_8_kib_is_refused_before_decoding() -> None:
    """A token longer than MAX_TOKEN_BYTES is refused, whatever it holds."""
    assert "longer than" in refused("a" * (MAX_TOKEN_BYTES + 1))
    assert "longer than" in refused(hs256(claims(pad="p" * MAX_TOKEN_BYTES)))


@pytest.mark.parametrize("token", [{"a": 1}, ["t"], 5, True, None, ""])
def test_a_token_that_is_not_a_string_is_refused(token: Any) -> None:
    """Only a non-empty string can be a token."""
    assert "JWT string" in refused(token)


@pytest.mark.parametrize("user", ["", "u" * 129, "é" * 65])
def test_issue_token_refuses_a_user_no_verifier_would_accept(user: str) -> None:
    """issue_token refuses an empty user or one over MAX_USER_BYTES."""
    with pytest.raises(InvalidParameters, match="user"):
        issue_token(SECRET, user, "viewer", now=NOW)


def test_hs256_verifier_issues_tokens_it_accepts() -> None:
    """An HS256 verifier signs with its secret."""
    token = verifier().issue("dora", "operator", now=NOW, ttl=60)
    assert verifier().verify(token, NOW) == Claims("dora", "operator", NOW + 60)


def test_rs256_verifier_without_a_private_key_cannot_issue(rsa_keys: tuple[bytes, bytes]) -> None:
    """Only the public key: issue() raises, saying how to sign."""
    _, public = rsa_keys
    with pytest.raises(InvalidParameters, match="signing_key"):
        TokenVerifier(public, "RS256").issue("dora", "viewer", now=NOW)


def test_rs256_verifier_with_its_private_key_issues_tokens_it_accepts(
    rsa_keys: tuple[bytes, bytes],
) -> None:
    """With signing_key, issue() signs RS256 tokens that verify with the public key."""
    private, public = rsa_keys
    check = TokenVerifier(public, "RS256", signing_key=private)
    token = check.issue("dora", "viewer", now=NOW, ttl=60)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert TokenVerifier(public, "RS256").verify(token, NOW) == Claims("dora", "viewer", NOW + 60)


def test_a_signing_key_that_does_not_match_is_refused(
    rsa_keys: tuple[bytes, bytes], other_rsa_private: bytes
) -> None:
    """A private key of another pair, or a second HS256 secret, is refused at once."""
    _, public = rsa_keys
    with pytest.raises(InvalidParameters, match="does not match"):
        TokenVerifier(public, "RS256", signing_key=other_rsa_private)
    with pytest.raises(InvalidParameters, match="own secret"):
        TokenVerifier(SECRET, signing_key=OTHER_SECRET)
