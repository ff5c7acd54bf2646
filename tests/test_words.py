"""The repository speaks of itself: no tracked text file tells of the place where it was built
(numbered work periods, tracker numbers, a machine on loan, that place's output variable or its
tools). An onnxruntime session (InferenceSession, `self.session`, "the ORT session", pytest's
session scope) is fine. The words are put together from pieces here, so that this file passes its
own test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SES, ISSUE, LOAN, BORR = "sess" + "ion", "iss" + "ue", "le" + "nt", "borr" + "ow"
OUT_VAR, TOOL, RETURNED = "$" + "OUT", "run" + " tool", "files" + "_at"

WORDS = re.compile(
    rf"""
    \b{SES}s?\s+\d                                        # a numbered work period
  | \b(?:a|an|one|each|every|this|that|next|previous|earlier|later|another|many|several|few|per
       |between|across|over|two|three|four|five)
    \s+(?:(?!ORT\b|onnxruntime\b|inference\b)\w+\s+)?{SES}s?\b   # work periods counted or spent
  | \b{ISSUE}s?\s*\#?\d                                     # a tracker number
  | \b{LOAN}\b | \b{BORR}(?:s|ed|ing)?\b                  # a machine on loan
  | {re.escape(OUT_VAR)}\b                                  # that place's output variable
  | (?<![a-z0-9])(?:run[\s_]tools?|{RETURNED})(?![a-z0-9])  # its tools (in prose or a name)
""",
    re.IGNORECASE | re.VERBOSE,
)


def hits(text: str) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if WORDS.search(line)]


@pytest.mark.parametrize(
    "line",
    [
        f"forward pass 0.99x (one thread, interleaved, {SES} 14)",
        f"{SES.title()} 15 trained epochs 1-121",
        f"({SES}s 15-18; not shipped)",
        f"GPU work, or many CPU {SES}s",
        f"what the CPU cannot give in a {SES}",
        f"Checkpoints are not kept between {SES}s",
        f"{ISSUE.title()} 23's benchmark",
        f"the speed levers of {ISSUE} #23",
        f"training on a {LOAN} GPU",
        f"a {BORR}ed machine",
        f"--out {OUT_VAR} --minutes 8",
        f"within the {TOOL}'s limits",
        f"def test_split_within_the_{TOOL.replace(' ', '_')}s_limits",
        f"the returned files ({RETURNED.upper()})",
    ],
)
def test_the_words_are_caught(line: str) -> None:
    assert WORDS.search(line), line


@pytest.mark.parametrize(
    "line",
    [
        "return ort.InferenceSession(path, sess_options=opts)",
        "opts = ort.SessionOptions()",
        "self.session = make_session(self.path, providers, threads)",
        '@pytest.fixture(scope="session")',
        "outs = self.session.run(names, feeds)",
        "one ORT session per file",
        "builds onnxruntime sessions",
        "sharing this one's session",
        "dt, sessions, default_none = out.split()",
        "the issue tracker",
        "an excellent result",
        f"{OUT_VAR}PUT_DIR",
        "a test run",
        "Raise unless the session has YuNet's outputs",
    ],
)
def test_onnxruntime_sessions_and_plain_words_pass(line: str) -> None:
    assert not WORDS.search(line), line


def test_no_tracked_file_speaks_of_the_place_it_was_built() -> None:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (git ls-files failed)")
    found = []
    for name in sorted(n for n in listed.decode().split("\0") if n):
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree, not yet in git
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{name}:{n}: {line[:160]}" for n, line in hits(text)]
    assert not found, (
        "words of the place where this was built, not of the project (describe the thing itself):\n" + "\n".join(found)
    )
