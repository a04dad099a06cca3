"""Digest authentication: published vectors, stateless nonces, stale, replay, bounded memory."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.sip.digest import (
    AuthOutcome,
    Challenge,
    Credentials,
    DigestAlgorithm,
    DigestAuthenticator,
    build_authorization,
    compute_response,
    ha1,
    parse_auth_params,
)

SECRET = b"0123456789abcdef-test-secret"
REALM = "uc-edge.test"
URI = "sip:uc-edge.test"
T0 = 1_700_000_000.0


def counter_bytes() -> object:
    counter = itertools.count()
    return lambda size: next(counter).to_bytes(size, "big")


def make_authenticator(**kwargs: object) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, SECRET, random_bytes=counter_bytes(), **kwargs)  # type: ignore[arg-type]


def answer(
    challenge: Challenge, *, password: str = "secret", nc: int = 1, uri: str = URI, user: str = "alice"
) -> Credentials:
    return build_authorization(
        challenge, username=user, method="REGISTER", uri=uri, cnonce="c0ffee", nc=nc, password=password
    )


def stored_ha1(user: str = "alice", password: str = "secret") -> dict[DigestAlgorithm, str]:
    return {alg: ha1(user, REALM, password, alg) for alg in DigestAlgorithm}


# ---- published vectors ------------------------------------------------------------------------


def test_rfc2617_section_3_5_md5_example() -> None:
    header = (
        'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    credentials = Credentials.parse(header)
    assert credentials.nc == 1 and credentials.cnonce == "0a4f113b"
    assert credentials.algorithm is DigestAlgorithm.MD5
    expected = compute_response(
        ha1("Mufasa", "testrealm@host.com", "Circle Of Life"),
        algorithm=DigestAlgorithm.MD5,
        nonce=credentials.nonce,
        method="GET",
        uri=credentials.uri,
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
    )
    assert expected == credentials.response == "6629fae49393a05397450978507c4ef1"


RFC7616_CHALLENGE_PARAMS = (
    'realm="http-auth@example.org", qop="auth, auth-int", '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, expected: str) -> None:
    challenge = Challenge.parse(f"Digest {RFC7616_CHALLENGE_PARAMS}, algorithm={algorithm}")
    assert challenge.qop == ("auth", "auth-int")
    credentials = build_authorization(
        challenge,
        username="Mufasa",
        method="GET",
        uri="/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nc=1,
        password="Circle of Life",
    )
    assert credentials.response == expected
    header = credentials.header_value()
    assert f'response="{expected}"' in header and "nc=00000001" in header and "qop=auth" in header
    assert Credentials.parse(header) == credentials


def test_sha512_256_uses_the_truncated_sha512_variant() -> None:
    assert DigestAlgorithm.SHA_512_256.hash("abc") == (
        "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    )


# ---- header parsing ---------------------------------------------------------------------------


def test_parse_auth_params_handles_quotes_escapes_and_spacing() -> None:
    scheme, params = parse_auth_params('Digest  realm = "a\\"b,c" ,nonce=xyz,, Opaque="",algorithm=MD5')
    assert scheme == "Digest"
    assert params == {"realm": 'a"b,c', "nonce": "xyz", "opaque": "", "algorithm": "MD5"}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "no scheme"),
        ('Basic realm="x"', "not Digest"),
        ('Digest realm="x', "unterminated"),
        ("Digest realm", "has no value"),
        ('Digest realm="a" nonce="b"', "expected ','"),
        ('Digest realm="a", realm="b"', "twice"),
        ('Digest username="a", realm="r", nonce="n", uri="u"', "'response' is missing"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="zz"', "hex digits"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="' + "0" * 32 + '", qop=auth', "'nc'"),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="'
            + "0" * 32
            + '", algorithm=MD5-sess',
            "MD5-sess",
        ),
        ("Digest " + "a=b," * 2000, "longer than"),
    ],
)
def test_malformed_credentials_raise_value_error(header: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Credentials.parse(header)


@settings(max_examples=400)
@given(st.text(max_size=200))
def test_random_headers_only_raise_value_error(header: str) -> None:
    for parser in (Credentials.parse, Challenge.parse):
        try:
            parser(header)
        except ValueError:
            pass


# ---- server: challenges and verification ------------------------------------------------------


def test_challenge_has_one_header_per_algorithm_sha256_first() -> None:
    auth = make_authenticator()
    headers = auth.challenge_headers(T0)
    assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    assert "algorithm=SHA-256" in headers[0][1] and "algorithm=MD5" in headers[1][1]
    assert 'qop="auth"' in headers[0][1] and "stale" not in headers[0][1]
    proxy = auth.challenge_headers(T0, stale=True, proxy=True)
    assert proxy[0][0] == "Proxy-Authenticate" and "stale=true" in proxy[0][1]
    parsed = [Challenge.parse(value) for _, value in headers]
    assert parsed[0].nonce == parsed[1].nonce and parsed[0].opaque == auth.opaque


@pytest.mark.parametrize("algorithm", list(DigestAlgorithm))
def test_correct_password_is_accepted_for_each_algorithm(algorithm: DigestAlgorithm) -> None:
    auth = make_authenticator(algorithms=(algorithm,))
    (challenge,) = auth.challenges(T0)
    credentials = Credentials.parse(answer(challenge).header_value())
    result = auth.verify(
        credentials, method="REGISTER", request_uri=URI, ha1_value=stored_ha1()[algorithm], now=T0 + 1
    )
    assert result.ok and result.username == "alice"
    assert auth.stats.accepted == 1


def test_wrong_password_unknown_user_and_wrong_realm_are_invalid() -> None:
    auth = make_authenticator()
    challenge = auth.challenges(T0)[0]
    wrong = auth.verify(
        answer(challenge, password="guess"),
        method="REGISTER",
        request_uri=URI,
        ha1_value=stored_ha1()[DigestAlgorithm.SHA_256],
        now=T0,
    )
    assert wrong.outcome is AuthOutcome.INVALID and wrong.reason == "wrong credentials"
    unknown = auth.verify(answer(challenge, nc=2), method="REGISTER", request_uri=URI, ha1_value=None, now=T0)
    assert unknown.outcome is AuthOutcome.INVALID
    other_realm = Challenge("elsewhere", challenge.nonce, challenge.algorithm, opaque=challenge.opaque)
    result = auth.verify(
        answer(other_realm),
        method="REGISTER",
        request_uri=URI,
        ha1_value=stored_ha1()[DigestAlgorithm.SHA_256],
        now=T0,
    )
    assert result.outcome is AuthOutcome.INVALID and result.reason == "realm mismatch"
    assert auth.stats.invalid == 3


def test_nonce_from_another_node_with_the_same_secret_is_valid() -> None:
    node_a, node_b = make_authenticator(), DigestAuthenticator(REALM, SECRET)
    challenge = node_a.challenges(T0)[0]
    result = node_b.verify(
        answer(challenge),
        method="REGISTER",
        request_uri=URI,
        ha1_value=stored_ha1()[DigestAlgorithm.SHA_256],
        now=T0 + 2,
    )
    assert result.ok
    other_secret = DigestAuthenticator(REALM, b"another-secret-of-16+bytes")
    forged = other_secret.verify(
        answer(challenge, nc=2),
        method="REGISTER",
        request_uri=URI,
        ha1_value=stored_ha1()[DigestAlgorithm.SHA_256],
        now=T0 + 2,
    )
    assert forged.outcome is AuthOutcome.INVALID


def test_forged_or_tampered_nonce_is_invalid() -> None:
    auth = make_authenticator()
    challenge = auth.challenges(T0)[0]
    tampered_nonce = ("B" if challenge.nonce[0] != "B" else "C") + challenge.nonce[1:]
    for nonce in (tampered_nonce, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "!" * 43):
        forged = Challenge(REALM, nonce, challenge.algorithm, opaque=challenge.opaque)
        result = auth.verify(
            answer(forged),
            method="REGISTER",
            request_uri=URI,
            ha1_value=stored_ha1()[DigestAlgorithm.SHA_256],
            now=T0,
        )
        assert result.outcome is AuthOutcome.INVALID, nonce


def test_expired_nonce_with_right_password_is_stale_and_wrong_password_is_invalid() -> None:
    auth = make_authenticator(nonce_lifetime=60.0)
    challenge = auth.challenges(T0)[0]
    ha1_value = stored_ha1()[DigestAlgorithm.SHA_256]
    late = T0 + 61
    stale = auth.verify(answer(challenge), method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=late)
    assert stale.outcome is AuthOutcome.STALE and stale.outcome.rechallenge_stale
    wrong = auth.verify(
        answer(challenge, password="x", nc=2),
        method="REGISTER",
        request_uri=URI,
        ha1_value=ha1_value,
        now=late,
    )
    assert wrong.outcome is AuthOutcome.INVALID
    just_in_time = auth.verify(
        answer(challenge, nc=3), method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0 + 60
    )
    assert just_in_time.ok


def test_nonce_from_the_future_is_invalid() -> None:
    auth = make_authenticator(clock_skew=5.0)
    challenge = auth.challenges(T0 + 100)[0]
    result = auth.verify(
        answer(challenge),
        method="REGISTER",
        request_uri=URI,
        ha1_value=stored_ha1()[DigestAlgorithm.SHA_256],
        now=T0,
    )
    assert result.outcome is AuthOutcome.INVALID and "future" in result.reason


def test_nonce_count_must_increase() -> None:
    auth = make_authenticator()
    challenge = auth.challenges(T0)[0]
    ha1_value = stored_ha1()[DigestAlgorithm.SHA_256]

    def verify(nc: int) -> AuthOutcome:
        return auth.verify(
            answer(challenge, nc=nc), method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0 + nc
        ).outcome

    assert verify(1) is AuthOutcome.OK
    assert verify(1) is AuthOutcome.REPLAYED
    assert verify(3) is AuthOutcome.OK
    assert verify(2) is AuthOutcome.REPLAYED
    assert verify(4) is AuthOutcome.OK
    assert auth.stats.replayed == 2
    assert AuthOutcome.REPLAYED.rechallenge_stale


def test_uri_must_match_request_uri() -> None:
    auth = make_authenticator()
    challenge = auth.challenges(T0)[0]
    result = auth.verify(
        answer(challenge, uri="sip:other.test"),
        method="REGISTER",
        request_uri=URI,
        ha1_value=stored_ha1()[DigestAlgorithm.SHA_256],
        now=T0,
    )
    assert result.outcome is AuthOutcome.BAD_REQUEST


def test_opaque_mismatch_and_missing_qop_and_userhash_are_invalid() -> None:
    auth = make_authenticator()
    challenge = auth.challenges(T0)[0]
    ha1_value = stored_ha1()[DigestAlgorithm.SHA_256]
    bad_opaque = Challenge(REALM, challenge.nonce, challenge.algorithm, opaque="nope")
    assert (
        auth.verify(
            answer(bad_opaque), method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0
        ).outcome
        is AuthOutcome.INVALID
    )
    no_qop = Challenge(REALM, challenge.nonce, challenge.algorithm, qop=(), opaque=challenge.opaque)
    legacy = answer(no_qop)
    assert legacy.qop is None
    assert (
        auth.verify(legacy, method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0).outcome
        is AuthOutcome.INVALID
    )
    hashed = Credentials.parse(answer(challenge).header_value() + ", userhash=true")
    assert (
        auth.verify(hashed, method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0).reason
        == "userhash is not supported"
    )


def test_algorithm_not_offered_is_invalid() -> None:
    auth = make_authenticator(algorithms=(DigestAlgorithm.SHA_256,))
    nonce = auth.challenges(T0)[0].nonce
    md5 = Challenge(REALM, nonce, DigestAlgorithm.MD5, opaque=auth.opaque)
    assert (
        auth.verify(
            answer(md5),
            method="REGISTER",
            request_uri=URI,
            ha1_value=stored_ha1()[DigestAlgorithm.MD5],
            now=T0,
        ).outcome
        is AuthOutcome.INVALID
    )


def test_nonce_record_is_bounded_and_evicted_nonces_turn_stale_not_replayable() -> None:
    auth = make_authenticator(max_tracked_nonces=10)
    ha1_value = stored_ha1()[DigestAlgorithm.SHA_256]
    first = auth.challenges(T0)[0]
    assert auth.verify(answer(first), method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0).ok
    for i in range(1, 50):
        challenge = auth.challenges(T0 + i)[0]
        assert auth.verify(
            answer(challenge), method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0 + i
        ).ok
        assert auth.tracked_nonces <= 10
    assert auth.stats.tracked_nonce_evictions >= 40
    # The first nonce's record is gone; replaying it must not be accepted.
    replay = auth.verify(answer(first), method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0 + 50)
    assert replay.outcome is AuthOutcome.STALE


def test_expired_records_are_pruned_as_new_ones_arrive() -> None:
    auth = make_authenticator(nonce_lifetime=10.0)
    ha1_value = stored_ha1()[DigestAlgorithm.SHA_256]
    for i in range(100):
        challenge = auth.challenges(T0 + i)[0]
        assert auth.verify(
            answer(challenge), method="REGISTER", request_uri=URI, ha1_value=ha1_value, now=T0 + i
        ).ok
    assert auth.tracked_nonces <= 12
    assert auth.stats.tracked_nonce_evictions == 0


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        DigestAuthenticator(REALM, b"short")


def test_client_side_needs_exactly_one_secret_form() -> None:
    challenge = Challenge(REALM, "n")
    with pytest.raises(ValueError, match="exactly one"):
        build_authorization(challenge, username="a", method="INVITE", uri=URI, cnonce="c")
    by_ha1 = build_authorization(
        challenge, username="a", method="INVITE", uri=URI, cnonce="c", ha1_value=ha1("a", REALM, "pw")
    )
    by_password = build_authorization(
        challenge, username="a", method="INVITE", uri=URI, cnonce="c", password="pw"
    )
    assert by_ha1 == by_password
