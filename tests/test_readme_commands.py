"""README's commands work as written: a renamed module or flag fails here.

Every ``python -m`` command in README's code blocks is found.  Each one's module must answer
``--help``, and its arguments must pass the command's own parser (``parse_args``) where it
has one.  The marker in the HTML comment before a block says what more is done:

- ``readme-test: run [EXTRA ...]``: the commands run, with EXTRA appended (README's
  shortening, e.g. ``--limit 4 --epochs 1``; ``{tmp}`` is a temporary folder); a ``python``
  block runs as a script;
- ``readme-test: run, and its output as shown``: also the output below each ``$`` command
  must be what the command prints;
- ``readme-test: parse (why)``: the commands are only parsed (a long run, a GPU, ...).
A block with commands and no marker is parsed.  ``../shared/esc50`` stands for ESC-50, found
through ``$ESC50_DIR``.
"""
import importlib
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DATA_IN_README = "../shared/esc50"


def blocks():
    """(marker or None, language, lines) of every fenced block of README."""
    lines = open(README, encoding="utf-8").read().splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            language = lines[i][3:].strip()
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            found = re.match(r"<!-- readme-test: (.*) -->", lines[k]) if k >= 0 else None
            out.append((found.group(1) if found else None, language, lines[i + 1:j]))
            i = j
        i += 1
    return out


def commands(lines):
    """[(argv after "python -m", expected output lines or None)] of a block: lines that start
    a command (``$ python -m``, ``python -m``, ``pip ... && python -m``), continuations
    joined; with ``$`` prompts, the lines up to the next prompt are the expected output."""
    prompted = any(line.startswith("$ ") for line in lines)
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        text = line[2:] if prompted and line.startswith("$ ") else (None if prompted else line)
        i += 1
        if text is None or "python -m" not in text:
            continue
        while text.endswith("\\"):
            text = text[:-1] + " " + lines[i].strip()
            i += 1
        command = text.split("&&")[-1]
        command = next(part for part in command.split("|") if "python -m" in part)
        words = shlex.split(command)
        expected = None
        if prompted:
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
        out.append((words[words.index("-m") + 1:], expected))
    return out


# Python blocks run where marked (others, such as the deployment example that must not import
# this package, are run by their own tests).
CASES = [(marker, language, lines) for marker, language, lines in blocks()
         if (language == "python" and (marker or "").startswith("run")) or
         (language != "python" and commands(lines))]


def with_data(words, data):
    return [w.replace(DATA_IN_README, data) for w in words]


def test_readme_has_its_commands_and_markers():
    modules = {cmd[0] for _, _, lines in CASES for cmd, _ in commands(lines)}
    assert {"experiments.train_esc50", "experiments.classify", "experiments.evaluate",
            "experiments.gradient_flow", "benchmarks.shape_set"} <= modules
    assert all(m is None or m.split()[0].rstrip(",") in ("run", "parse")
               for m, _, _ in CASES)


@pytest.mark.parametrize("marker, language, lines", CASES,
                         ids=[f"block{i}" for i in range(len(CASES))])
def test_readme_block(marker, language, lines, esc50_root, tmp_path):
    env = dict(os.environ, ESC50_DIR=esc50_root, PYTHONPATH=ROOT)
    action = (marker or "parse").split(",")[0].split()[0]
    extra = [w.format(tmp=tmp_path) for w in (marker or "").split()[1:]] \
        if action == "run" and "," not in (marker or "") else []
    if language == "python":
        assert action == "run"
        script = tmp_path / "example.py"
        script.write_text("\n".join(lines) + "\n")
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return
    for words, expected in commands(lines):
        module, argv = words[0], with_data(words[1:], esc50_root)
        helped = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert helped.returncode == 0 and "usage:" in helped.stdout, (module, helped.stderr)
        loaded = importlib.import_module(module)
        if hasattr(loaded, "parse_args"):
            loaded.parse_args(argv)  # a renamed flag or a bad value exits 2 here
        if action != "run":
            continue
        done = subprocess.run([sys.executable, "-m", module, *argv, *extra], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (words, done.stderr[-3000:])
        if marker and "output as shown" in marker:
            shown = [line for line in with_data(expected, esc50_root) if line.strip()]
            assert_output(done.stdout.splitlines(), shown)


def assert_output(printed, shown):
    """Printed lines against README's, a JSON line compared as data (``...`` in a string
    stands for the start of a path)."""
    assert len(printed) == len(shown), (printed, shown)
    for got, want in zip(printed, shown):
        if want.startswith("{"):
            got, want = json.loads(got), json.loads(want)
            assert set(got) == set(want), (got, want)
            for key, value in want.items():
                if isinstance(value, str) and value.startswith("..."):
                    assert got[key].endswith(value[3:]), (key, got[key], value)
                else:
                    assert got[key] == value, (key, got[key], value)
        else:
            assert got == want
