"""INVITEs with a wrong digest password, by SIPp against the real server: each guess is challenged again
(407) and counted; past the configured number of failures the user and source are refused with 403
without a password check, so a password cannot be guessed by brute force."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import DATA, DOMAIN, Server, SipUsers, run_sipp_uac

pytestmark = pytest.mark.e2e

FAILURES_ALLOWED = 3
SERVER_ENV = {
    "UC_EDGE_SIP_DIGEST_ALGORITHMS": "MD5",  # SIPp answers only an MD5 challenge
    "UC_EDGE_AUTH_FAILURES_PER_WINDOW": str(FAILURES_ALLOWED),
    "UC_EDGE_AUTH_FAILURE_WINDOW_SECONDS": "600",
}
GUESSES = 8
SECRET = "the-real-secret"


def guess_with_sipp(server: Server, csv: Path, workdir: Path) -> tuple[int, str, str]:
    """Run the guesses; SIPp's exit code, its output and its message trace."""
    # One guess at a time, so the order of 407s and 403s is the order of the guesses.
    scenario = DATA / "invite_wrong_password.xml"
    result = run_sipp_uac(
        server, scenario, csv, workdir, calls=GUESSES, rate=20, limit=1, extra=["-trace_msg"]
    )
    (messages,) = workdir.glob("*_messages.log")
    log = messages.read_text(errors="replace")
    return result.returncode, result.stdout, log


async def test_guessed_passwords_are_challenged_then_refused(
    server: Server, sip_users: SipUsers, tmp_path: Path
) -> None:
    caller, callee = await sip_users.create(2, SECRET, label="guess")
    csv = tmp_path / "guesses.csv"
    rows = [
        f"{caller};{callee};{DOMAIN};[authentication username={caller} password=guess{n}]"
        for n in range(GUESSES - 1)
    ]
    # The last guess is right, but it comes during the ban: refused all the same, so a ban cannot be used
    # as an oracle (a 407 for wrong, something else for right).
    rows.append(f"{caller};{callee};{DOMAIN};[authentication username={caller} password={SECRET}]")
    csv.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    before = server.metrics()

    returncode, stdout, log = guess_with_sipp(server, csv, tmp_path)

    assert returncode == 0, stdout[-2000:] + log[-3000:] + server.stderr_tail()
    # The answers to the INVITEs that carried credentials, in order: 407 while guesses are allowed, then 403.
    answers = re.findall(r"SIP/2\.0 ([2-6]\d\d) [^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*?CSeq: 2 INVITE", log)
    assert len(answers) == GUESSES, answers
    challenged = answers.count("407")
    assert answers == ["407"] * challenged + ["403"] * (GUESSES - challenged), answers
    # The allowed failures, then the one that goes over the limit and bans; every later guess is refused.
    assert challenged == FAILURES_ALLOWED + 1, answers
    assert "Too many failed authentication attempts" in log

    after = server.metrics()

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew("uc_sip_auth_failures_total") == challenged
    assert grew("uc_sip_auth_bans_total") >= 1
    assert grew("uc_sip_auth_blocked_total") >= GUESSES - challenged
