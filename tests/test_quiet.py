"""A user's mistake is one line on stderr on every CPU: the command lines reject bad
input before TensorFlow is imported, and importing it through the project prints
nothing (on AVX-512 CPUs TensorFlow itself writes start-up lines that no log level
silences: trainer/tfimport.py).

Each command runs in a fresh interpreter with every TF_* variable removed, as a
user's shell has them, and reports whether `tensorflow` ended up in sys.modules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.bot_helpers import REPO
from tests.trainer_helpers import account_posts

# Runs `python -m MODULE ARGS...` in-process, then says on stdout whether TensorFlow
# was imported; the command's own exit status is kept.
PROBE = """
import runpy, sys
module, sys.argv = sys.argv[1], [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    print("TENSORFLOW-IMPORTED" if "tensorflow" in sys.modules else "TENSORFLOW-NOT-IMPORTED")
"""


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "TWITTER_", "BOT_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def probe(module: str, *args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, module, *args], capture_output=True, text=True,
                          timeout=180, env=env or user_env(), cwd=cwd or REPO)


def assert_one_line_error(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "TENSORFLOW-NOT-IMPORTED" in r.stdout, "the failing path imported TensorFlow"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_base_path):
    d = tmp_path_factory.mktemp("inputs")
    (d / "few.txt").write_text("only a few\nposts here\n")
    (d / "empty.txt").write_text("")
    (d / "many.txt").write_text("\n".join(p.text.replace("\n", " ") for p in account_posts()[:300]))
    for name, posts in (("few.jsonl", account_posts()[:5]), ("many.jsonl", account_posts()[:300])):
        (d / name).write_text("".join(json.dumps({"id": p.id, "text": p.text}) + "\n" for p in posts))
    (d / "broken.zip").write_bytes(b"PK\x03\x04 broken")
    with zipfile.ZipFile(d / "not-a-model.zip", "w") as z:
        z.writestr("readme.txt", "a zip file, but no model in it")
    return d, tiny_base_path


TRAINER_CASES = {
    "finetune: missing posts": ["finetune", "--posts", "{d}/missing.jsonl.gz", "--out", "{d}/o.zip", "--base", "{base}"],
    "finetune: too few posts": ["finetune", "--posts", "{d}/few.txt", "--out", "{d}/o.zip", "--base", "{base}"],
    "finetune: empty posts": ["finetune", "--posts", "{d}/empty.txt", "--out", "{d}/o.zip", "--base", "{base}"],
    "finetune: corrupt base": ["finetune", "--posts", "{d}/many.txt", "--out", "{d}/o.zip", "--base", "{d}/broken.zip"],
    "finetune: zip, no model": ["finetune", "--posts", "{d}/many.txt", "--out", "{d}/o.zip", "--base", "{d}/not-a-model.zip"],
    "finetune: missing base": ["finetune", "--posts", "{d}/many.txt", "--out", "{d}/o.zip", "--base", "{d}/none.zip"],
    "evaluate: too few posts": ["evaluate", "--posts", "{d}/few.txt", "--base", "{base}"],
    "sample: corrupt model": ["sample", "--model", "{d}/broken.zip"],
    "base: missing corpus": ["base", "--data", "{d}/missing.txt", "--out", "{d}/b.zip"],
    "base: corrupt init": ["base", "--data", "{d}/many.txt", "--out", "{d}/b.zip", "--init", "{d}/broken.zip"],
}


@pytest.mark.parametrize("case", sorted(TRAINER_CASES))
def test_trainer_cli_rejects_bad_input_before_tensorflow(inputs, case):
    d, base = inputs
    args = [a.format(d=d, base=base) for a in TRAINER_CASES[case]]
    assert_one_line_error(probe("trainer", *args))
    assert not (d / "o.zip").exists() and not (d / "b.zip").exists()


def test_bot_cli_rejects_bad_input_before_tensorflow(inputs, tmp_path):
    d, base = inputs
    env = user_env(BOT_DATA_DIR=str(tmp_path / "data"), BOT_BASE_MODEL=str(base))
    cases = [
        ["train", "nobody_here"],  # not a target
        ["import", "someone", str(d / "missing.jsonl.gz")],
        ["targets", "add", "someone", "--import", str(d / "empty.txt")],
    ]
    for args in cases:
        assert_one_line_error(probe("bot", *args, env=env, cwd=tmp_path))
    # a target with too few posts to fine-tune: refused before a child is started
    assert probe("bot", "targets", "add", "someone", "--import", str(d / "few.jsonl"), env=env, cwd=tmp_path).returncode == 0
    r = probe("bot", "train", "someone", env=env, cwd=tmp_path)
    assert_one_line_error(r)
    assert "at least 100" in r.stderr
    # a broken base model
    assert probe("bot", "import", "someone", str(d / "many.jsonl"), env=env, cwd=tmp_path).returncode == 0
    r = probe("bot", "train", "someone", env={**env, "BOT_BASE_MODEL": str(d / "broken.zip")}, cwd=tmp_path)
    assert_one_line_error(r)
    assert "not a valid model file" in r.stderr


def test_importing_tensorflow_through_the_project_prints_nothing():
    # Fails on a CPU where TensorFlow announces oneDNN (AVX-512 VNNI) if the import is not
    # quieted; elsewhere it checks that nothing else reaches stderr either.
    code = ("from trainer.model import build_model, ModelConfig\n"
            "m = build_model(ModelConfig(units=8, embedding=4), 30)\n"
            "import numpy as np\n"
            "print(m(np.zeros((1, 5), 'int32')).shape)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                       env=user_env(), cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 5, 30)"
    assert r.stderr == "", r.stderr
