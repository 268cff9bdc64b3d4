"""The real `mnistgan` command end to end: training, sampling, and every user error."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from mnistgan.data import cache_path

TINY = [
    "--width",
    "8",
    "--latent-dim",
    "16",
    "--batch-size",
    "32",
    "--threads",
    "2",
    "--eval-every",
    "0",
]

needs_mnist = pytest.mark.skipif(
    not cache_path().exists(), reason="no MNIST cache; run `mnistgan data fetch`"
)


def assert_user_error(r, code, *words):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnistgan: error:"), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny run on 256 real MNIST images, shared by the sampling tests."""
    if not cache_path().exists():
        pytest.skip("no MNIST cache")
    d = tmp_path_factory.mktemp("cli") / "run"
    r = run_cli("train", "--subset", "256", "--epochs", "1", "--run-dir", d, *TINY)
    assert r.returncode == 0, r.stderr
    assert "run folder:" in r.stdout
    return d


@needs_mnist
def test_train_writes_every_output(run_dir):
    for name in ("metrics.csv", "curves.png", "progress.gif", "run.json", "generator.json"):
        assert (run_dir / name).stat().st_size > 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["preset"] == "fast" and info["config"]["width"] == 8
    assert info["versions"]["torch"].startswith("2.13.0")
    assert len(list((run_dir / "checkpoints").glob("ckpt_*.pt"))) == 1


@needs_mnist
@pytest.mark.parametrize("out", ["x.npz", "x.npy", "grid.png", "folder"])
def test_generate_formats(run_dir, tmp_path, out):
    dest = tmp_path / out
    r = run_cli("generate", "--run", run_dir, "--n", "12", "--seed", "3", "--out", dest)
    assert r.returncode == 0, r.stderr
    if out == "x.npz":
        a = np.load(dest)["images"]
        assert a.shape == (12, 28, 28) and a.dtype == np.uint8
    elif out == "x.npy":
        assert np.load(dest).shape == (12, 28, 28)
    elif out == "grid.png":
        assert Image.open(dest).size == (4 * 30 + 2, 3 * 30 + 2)  # 4 per row, 2 px padding
    else:
        assert len(list(dest.glob("*.png"))) == 12
        assert Image.open(dest / "00000.png").size == (28, 28)


@needs_mnist
def test_generate_from_a_checkpoint_matches_run(run_dir, tmp_path):
    ck = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    run_cli("generate", "--checkpoint", ck, "--n", "5", "--out", tmp_path / "a.npy")
    run_cli("generate", "--run", run_dir, "--n", "5", "--out", tmp_path / "b.npy")
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


@needs_mnist
def test_resume_continues_a_run(run_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(run_dir, d)
    r = run_cli("train", "--run-dir", d, "--resume", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and "epoch 2/2" in r.stdout
    assert (d / "samples" / "epoch_002.png").exists()


def test_presets_lists_counts():
    r = run_cli("presets")
    assert r.returncode == 0
    assert "2,330,944" in r.stdout and "375,553" in r.stdout
    assert "1,164,289" in r.stdout and "40,705" in r.stdout and "fast (default)" in r.stdout
    # fast and cgan are conditional: their counts include the digit embedding and projection
    assert r.stdout.count("G 278,017 params, D 67,873 params") == 2


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["print fails", "final flush fails"])
def test_output_survives_the_fast_exit_and_a_closed_pipe(unbuffered):
    """entry() ends the process with os._exit: what was printed must still arrive whole, and
    a reader that stops early (`| head -1`) gets exit status 1 and no traceback."""
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}  # "" counts as unset
    listing = run_cli("presets", env=env).stdout
    assert listing.count("params;") == 4 and listing.endswith("\n")
    p = subprocess.Popen([sys.executable, "-m", "mnistgan", "presets"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)  # fmt: skip
    p.stdout.close()  # the reader is gone before the command writes a byte
    assert p.wait(timeout=60) == 1
    assert p.stderr.read() == b""


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["train", "--preset", "nope"], 2, ["unknown preset 'nope'", "tf-dcgan"]),
        (["train", "--epochs", "0"], 2, ["epochs must be positive"]),
        (["train", "--epochs", "-3"], 2, ["epochs must be positive"]),
        (["train", "--epochs", "ten"], 2, ["epochs must be an integer"]),
        (["train", "--device", "tpu"], 2, ["unknown device 'tpu'"]),
        (["train", "--lr", "abc"], 2, ["must be a number"]),
        (["train", "--bogus", "1"], 2, ["unrecognized arguments: --bogus"]),
        (["train", "--resume"], 2, ["--resume needs --run-dir"]),
        (["train", "--config", "missing.yaml"], 2, ["cannot read config file"]),
        (["generate", "--run", "no/such/run", "--out", "x.png"], 2, ["no such run directory"]),
        (["generate", "--checkpoint", "no.pt", "--out", "x.png"], 1, ["no such"]),
        (["frobnicate"], 2, ["invalid choice"]),
    ],
)
def test_user_errors(tmp_path, args, code, words):
    assert_user_error(run_cli(*args, cwd=tmp_path), code, *words)


def test_existing_run_dir_needs_resume(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.csv").write_text("x")
    assert_user_error(run_cli("train", "--run-dir", tmp_path / "r"), 2, "already exists")
    assert_user_error(
        run_cli("train", "--run-dir", tmp_path / "r", "--resume"), 2, "no checkpoint to resume"
    )
    assert_user_error(
        run_cli("train", "--run-dir", tmp_path / "nope", "--resume"), 2, "no such run directory"
    )


def test_corrupt_and_foreign_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04garbage")
    assert_user_error(
        run_cli("generate", "--checkpoint", bad, "--out", tmp_path / "x.png"), 1, "bad.pt"
    )
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    assert_user_error(
        run_cli("generate", "--checkpoint", foreign, "--out", tmp_path / "x.png"),
        1,
        "not an mnistgan checkpoint",
    )


def test_config_file_and_flag_precedence(tmp_path, tiny_data):
    from mnistgan.config import resolve

    f = tmp_path / "c.yaml"
    f.write_text("epochs: 7\nlr_g: 0.001\nbatch-size: 16\n")
    cfg, _ = resolve("keras-dcgan", f, {"epochs": "9"})
    assert (cfg.epochs, cfg.lr_g, cfg.batch_size, cfg.lr_d) == (9, 0.001, 16, 2e-4)
    f.write_text("epochs: [1, 2]\n")
    assert_user_error(run_cli("train", "--config", f), 2, "epochs must be an integer")
    f.write_text("colour: blue\n")
    assert_user_error(run_cli("train", "--config", f), 2, "unknown config field 'colour'")


@needs_mnist
def test_evaluate_json_on_samples_and_real(run_dir, tmp_path):
    x = tmp_path / "x.npz"
    run_cli("generate", "--run", run_dir, "--n", "300", "--out", x)
    r = run_cli("evaluate", "--samples", x, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    for key in ("n", "fid", "kid", "is", "precision", "recall", "density", "coverage"):
        assert key in s
    assert s["n"] == 300 and len(s["class_hist"]) == 10 and 1 <= s["digits_covered"] <= 10
    real = json.loads(run_cli("evaluate", "--real", "--n", "300", "--json").stdout)
    blur = json.loads(run_cli("evaluate", "--real", "--n", "300", "--blur", "1", "--json").stdout)
    assert real["fid"] < blur["fid"] < s["fid"]  # one epoch on 256 digits is far from real
    folder = tmp_path / "pngs"
    run_cli("generate", "--run", run_dir, "--n", "300", "--out", folder)
    same = json.loads(run_cli("evaluate", "--samples", folder, "--json").stdout)
    assert same["fid"] == pytest.approx(s["fid"])  # PNG folder and array agree


@needs_mnist
def test_training_logs_fid_and_keeps_best(tmp_path):
    d = tmp_path / "r"
    args = [*TINY[:-2], "--eval-every", "1", "--eval-n", "200", "--subset", "512"]
    r = run_cli("train", "--epochs", "2", "--run-dir", d, *args)
    assert r.returncode == 0, r.stderr
    assert "final FID" in r.stdout
    with open(d / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["fid"]]
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    best = json.loads((d / "best" / "generator.json").read_text())
    assert best["fid"] == pytest.approx(min(float(row["fid"]) for row in rows), rel=1e-4)
    assert json.loads((d / "eval.json").read_text())["step"] == 32


def test_evaluate_errors(tmp_path):
    assert_user_error(run_cli("evaluate", "--samples", tmp_path / "no.npz"), 1, "no such file")
    (tmp_path / "bad.npy").write_bytes(b"nonsense")
    assert_user_error(run_cli("evaluate", "--samples", tmp_path / "bad.npy"), 1, "bad.npy")
    assert_user_error(run_cli("evaluate", "--real", "--n", "5"), 2, "--n must be at least 10")
    assert_user_error(run_cli("evaluate"), 2, "one of the arguments")


@needs_mnist
def test_compile_with_the_joint_step_trains(tmp_path):
    """--compile on tf-dcgan, whose joint step takes two gradients from one graph: this crashed
    with a traceback (compiled backward passes donate their buffers). It must train, and stay
    compiled where a C++ compiler is there for inductor."""
    r = run_cli(
        "train", "--preset", "tf-dcgan", "--compile", "--subset", "128", "--batch-size", "32",
        "--epochs", "1", "--eval-every", "0", "--sample-every", "0", "--threads", "2",
        "--run-dir", str(tmp_path / "c"), timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    if shutil.which("c++") or shutil.which("g++"):
        assert "torch.compile failed" not in r.stdout + r.stderr
