"""The repository speaks of itself: no tracked text file tells of the place where it was built
(numbered work sessions, issue numbers, a lent or borrowed machine, that place's output variable
or its tools). "session" as an onnxruntime object (InferenceSession, `self.session`, "the ORT
session", pytest's session scope) is fine."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WORDS = re.compile(
    r"""
    \bsessions?\s+\d                                        # "session 14", "sessions 15-18"
  | \b(?:a|an|one|each|every|this|that|next|previous|earlier|later|another|many|several|few|per
       |between|across|over|two|three|four|five)
    \s+(?:(?!ORT\b|onnxruntime\b|inference\b)\w+\s+)?sessions?\b   # "in a session", "many CPU sessions"
  | \bissues?\s*\#?\d                                       # "issue 23", "Issue 21's", "issue #5"
  | \blent\b | \bborrow(?:s|ed|ing)?\b                      # a lent or borrowed machine
  | \$OUT\b                                                 # that place's output variable
  | (?<![a-z0-9])(?:run[\s_]tools?|files_at)(?![a-z0-9])   # its tools (in prose or a name)
""",
    re.IGNORECASE | re.VERBOSE,
)

SELF = Path(__file__).relative_to(ROOT).as_posix()


def hits(text: str) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if WORDS.search(line)]


@pytest.mark.parametrize(
    "line",
    [
        "forward pass 0.99x (one thread, interleaved, session 14)",
        "Session 15 trained epochs 1-121",
        "(sessions 15-18; not shipped)",
        "GPU work, or many CPU sessions",
        "what the CPU cannot give in a session",
        "Checkpoints are not kept between sessions",
        "Issue 23's benchmark",
        "the speed levers of issue #23",
        "training on a lent GPU",
        "a borrowed machine",
        "--out $OUT --minutes 8",
        "within the run tool's limits",
        "def test_split_within_the_run_tools_limits",
        "the returned files (FILES_AT)",
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
        "$OUTPUT_DIR",
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
    for name in sorted(n for n in listed.decode().split("\0") if n and n != SELF):
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
