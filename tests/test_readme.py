"""Every example of the README runs, in order, as a user would type it: the shell commands
(`$ ...` lines, with their documented output where the README shows one) and the Python
blocks. STL-10 and the ResNet-50 weights come from a loopback HTTP server standing in for
their real hosts (the mirror variables the README documents)."""

import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lookalike.features.resnet import ResNet50Trunk
from lookalike.sources.sample import photo_paths
from tests.sources.test_fetch import _archive

README = Path(__file__).parents[1] / "README.md"


def examples():
    """(kind, text, expected output lines) in README order."""
    out = []
    for lang, body in re.findall(r"```(console|python)\n(.*?)```", README.read_text(), flags=re.S):
        if lang == "python":
            out.append(("python", body, []))
            continue
        current = None
        for line in body.splitlines():
            if line.startswith("$ "):
                current = ["console", line[2:], []]
                out.append(current)
            elif current is not None and line.strip():
                current[2].append(line)
    return out


@pytest.fixture
def workdir(tmp_path, http_server, monkeypatch):
    url, www, _, _ = http_server
    _archive(www, n=24)
    state = ResNet50Trunk().state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(state, tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    name = f"resnet50-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (www / name).write_bytes(data)
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    for p in photo_paths():
        Image.open(p).convert("RGB").save(work / "photos" / f"{p.stem}.png")
    Image.open(work / "photos" / "chelsea.png").save(work / "photos" / "cat.png")
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_CACHE"}
    env |= {"HOME": str(tmp_path / "home"), "LOOKALIKE_STL10_URL": f"{url}/stl10_binary.tar.gz",
            "LOOKALIKE_RESNET50_URL": f"{url}/{name}", "TORCH_HOME": str(tmp_path / "torch")}
    return work, env


def test_readme_examples_run(workdir):
    work, env = workdir
    ran = []
    for kind, text, expected in examples():
        if kind == "python":
            proc = subprocess.run([sys.executable, "-c", text], cwd=work, env=env, capture_output=True, text=True)
            assert proc.returncode == 0, f"README python example failed:\n{text}\n{proc.stderr}"
        else:
            argv = shlex.split(text)
            assert argv[0] == "lookalike"
            proc = subprocess.run([sys.executable, "-m", "lookalike", "-q", *argv[1:]], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=900)
            if expected:
                assert (proc.stdout + proc.stderr).strip().splitlines() == expected, text
            else:
                assert proc.returncode == 0, f"{text}\n{proc.stderr}"
        ran.append(text.split("\n")[0])
    commands = {shlex.split(t)[1] for k, t, _ in examples() if k == "console"}
    assert commands >= {"fetch", "show", "embed", "model", "index", "search", "grid", "bench", "calibrate", "demo"}
    assert (work / "demo-out" / "report.md").is_file() and (work / "grid.png").is_file()


def test_exit_codes_are_documented():
    """The README's table of exit statuses is the CLI's, no more and no less."""
    from lookalike import cli

    table = re.search(r"\| status \| meaning \|\n\|---\|---\|\n((?:\|.*\n)+)", README.read_text())
    documented = {int(row.split("|")[1]) for row in table.group(1).splitlines()}
    assert documented == {v for k, v in vars(cli).items() if k.startswith("EXIT_")}
    assert cli.BUG in README.read_text()
