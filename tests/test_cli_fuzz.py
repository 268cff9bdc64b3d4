"""Every command with missing, malformed, out-of-range and contradictory arguments: a one-line
`mnistgan: error: ...` on stderr and exit status 2 (1 for a file that exists but is bad),
never a traceback. The table below is what was tried; the count is printed at the end of the
test run.

The commands run in-process through `mnistgan.cli.main` (a subprocess each would take minutes);
training itself is replaced by a tripwire, so an argument set that is wrongly accepted fails
fast instead of training."""

from __future__ import annotations

import importlib
import json

import pytest
from conftest import record

from mnistgan import cli
from mnistgan.checkpoint import export_generator
from mnistgan.models import build_generator

M, F = "missing", "malformed"
R, C = "out-of-range", "contradictory"

# (kind, argv with {plain}/{cond}/{tmp} placeholders, exit status, words the message must hold)
TABLE = [
    (M, [], 2, "required: COMMAND"),
    (F, ["frobnicate"], 2, "invalid choice"),
    (F, ["--nope"], 2, "required: COMMAND"),
    (F, ["presets", "extra"], 2, "unrecognized arguments"),
    # --- train
    (F, ["train", "--preset", "nope"], 2, "unknown preset"),
    (M, ["train", "--epochs"], 2, "expected one argument"),
    (F, ["train", "--epochs", "x"], 2, "epochs must be an integer"),
    (F, ["train", "--epochs", "2.5"], 2, "epochs must be an integer"),
    (R, ["train", "--epochs", "0"], 2, "epochs must be positive"),
    (R, ["train", "--epochs", "-3"], 2, "epochs must be positive"),
    (F, ["train", "--batch-size", "1.5"], 2, "batch_size must be an integer"),
    (R, ["train", "--batch-size", "0"], 2, "batch_size must be positive"),
    (F, ["train", "--lr", "abc"], 2, "must be a number"),
    (R, ["train", "--lr", "0"], 2, "lr_g must be positive"),
    (R, ["train", "--lr", "nan"], 2, "finite"),
    (R, ["train", "--lr-d", "inf"], 2, "finite"),
    (R, ["train", "--lr-g", "1e400"], 2, "finite"),
    (R, ["train", "--beta1", "1"], 2, "beta1 must be in [0, 1)"),
    (R, ["train", "--beta2", "-0.1"], 2, "beta2 must be in [0, 1)"),
    (R, ["train", "--ema", "1.5"], 2, "ema must be in [0, 1)"),
    (F, ["train", "--loss", "mse"], 2, "loss must be one of"),
    (F, ["train", "--precision", "fp8"], 2, "precision must be one of"),
    (F, ["train", "--device", "tpu"], 2, "unknown device"),
    (F, ["train", "--device", "cuda:x"], 2, "unknown device"),
    (F, ["train", "--arch", "resnet"], 2, "arch must be one of"),
    (F, ["train", "--schedule", "sometimes"], 2, "schedule must be one of"),
    (F, ["train", "--real-sampling", "maybe"], 2, "real_sampling must be one of"),
    (F, ["train", "--data-source", "ftp"], 2, "data_source must be one of"),
    (F, ["train", "--on-divergence", "retry"], 2, "on_divergence must be one of"),
    (F, ["train", "--diffaugment", "color"], 2, "unknown diffaugment policy color"),
    (F, ["train", "--conditional", "yes"], 2, "unrecognized arguments: yes"),
    (F, ["train", "--spectral-norm=1"], 2, "ignored explicit argument"),
    (R, ["train", "--subset", "1"], 2, "subset must be at least 2"),
    (R, ["train", "--eval-n", "5"], 2, "eval_n must be at least 100"),
    (R, ["train", "--max-minutes", "0"], 2, "max_minutes must be positive"),
    (R, ["train", "--max-minutes", "-1"], 2, "max_minutes must be positive"),
    (R, ["train", "--threads", "0"], 2, "threads must be positive"),
    (R, ["train", "--width", "100000"], 2, "width must be at most 1024"),
    (R, ["train", "--latent-dim", "0"], 2, "latent_dim must be positive"),
    (R, ["train", "--grid-size", "1000"], 2, "grid_size must be at most 32"),
    (R, ["train", "--collapse-steps", "-1"], 2, "collapse_steps must not be negative"),
    (R, ["train", "--label-smoothing", "1"], 2, "label_smoothing must be in [0, 1)"),
    (R, ["train", "--instance-noise", "-0.1"], 2, "instance_noise must not be negative"),
    (R, ["train", "--r1", "-1"], 2, "r1 must not be negative"),
    (R, ["train", "--gp-weight", "-1"], 2, "gp_weight must not be negative"),
    (R, ["train", "--keep-checkpoints", "0"], 2, "keep_checkpoints must be positive"),
    (R, ["train", "--d-steps", "0"], 2, "d_steps must be positive"),
    (R, ["train", "--grad-accum", "-2"], 2, "grad_accum must be positive"),
    (R, ["train", "--seed", "-1"], 2, "seed must not be negative"),
    (R, ["train", "--sample-every", "-1"], 2, "sample_every must not be negative"),
    (C, ["train", "--schedule", "joint", "--loss", "wgan-gp"], 2, "joint schedule"),
    (C, ["train", "--preset", "tf-dcgan", "--d-steps", "2"], 2, "joint schedule"),
    (C, ["train", "--preset", "tf-dcgan", "--r1", "1"], 2, "joint schedule"),
    (C, ["train", "--preset", "tf-dcgan", "--precision", "fp16"], 2, "fp16 needs loss scaling"),
    (C, ["train", "--half-batch-d", "--batch-size", "1"], 2, "half_batch_d needs batch_size"),
    (M, ["train", "--config", "{tmp}/missing.yaml"], 2, "cannot read config file"),
    (F, ["train", "--config", "{tmp}/list.yaml"], 2, "must hold a mapping"),
    (F, ["train", "--config", "{tmp}/broken.json"], 2, "cannot parse config file"),
    (F, ["train", "--config", "{tmp}/unknown.json"], 2, "unknown config field 'wdith'"),
    (F, ["train", "--config", "{tmp}/typed.json"], 2, "epochs must be an integer"),
    (M, ["train", "--resume"], 2, "--resume needs --run-dir"),
    (M, ["train", "--resume", "--run-dir", "{tmp}/nope"], 2, "no such run directory"),
    (C, ["train", "--run-dir", "{plain}"], 2, "already exists; add --resume"),
    # --- generate
    (M, ["generate"], 2, "the following arguments are required"),
    (M, ["generate", "--run", "{plain}"], 2, "the following arguments are required: --out"),
    (M, ["generate", "--run", "{plain}", "--out"], 2, "expected one argument"),
    (
        C,
        [
            "generate",
            "--run",
            "{plain}",
            "--checkpoint",
            "{plain}/generator.safetensors",
            "--out",
            "{tmp}/x.png",
        ],
        2,
        "not allowed with",
    ),  # fmt: skip
    (M, ["generate", "--run", "{tmp}/nope", "--out", "{tmp}/x.png"], 2, "no such run directory"),
    (
        M,
        ["generate", "--checkpoint", "{tmp}/nope.safetensors", "--out", "{tmp}/x.png"],
        1,
        "no such file",
    ),  # fmt: skip
    (
        F,
        ["generate", "--checkpoint", "{tmp}/junk.safetensors", "--out", "{tmp}/x.png"],
        1,
        "junk.json: missing",
    ),  # fmt: skip
    (
        F,
        ["generate", "--checkpoint", "{tmp}/junk.pt", "--out", "{tmp}/x.png"],
        1,
        "not a loadable mnistgan checkpoint",
    ),  # fmt: skip
    (R, ["generate", "--run", "{plain}", "--n", "0", "--out", "{tmp}/x.png"], 2, "--n must be"),
    (R, ["generate", "--run", "{plain}", "--n", "-5", "--out", "{tmp}/x.png"], 2, "--n must be"),
    (
        R,
        ["generate", "--run", "{plain}", "--n", "100000000", "--out", "{tmp}/x.npz"],
        2,
        "--n must be between 1 and 1,000,000",
    ),  # fmt: skip
    (
        F,
        ["generate", "--run", "{plain}", "--n", "ten", "--out", "{tmp}/x.png"],
        2,
        "invalid int value",
    ),  # fmt: skip
    (
        F,
        ["generate", "--run", "{plain}", "--seed", "x", "--out", "{tmp}/x.png"],
        2,
        "invalid int value",
    ),  # fmt: skip
    (F, ["generate", "--run", "{plain}", "--out", "{tmp}/x.jpg"], 2, ".png"),
    (
        C,
        ["generate", "--run", "{plain}", "--digit", "7", "--out", "{tmp}/x.png"],
        2,
        "not conditional",
    ),  # fmt: skip
    (R, ["generate", "--run", "{cond}", "--digit", "11", "--out", "{tmp}/x.png"], 2, "0-9"),
    (F, ["generate", "--run", "{cond}", "--digit", "seven", "--out", "{tmp}/x.png"], 2, "0-9"),
    (R, ["generate", "--run", "{cond}", "--digit", "-1", "--out", "{tmp}/x.png"], 2, "0-9"),
    (
        R,
        ["generate", "--run", "{plain}", "--truncation", "0", "--out", "{tmp}/x.png"],
        2,
        "truncation must be positive",
    ),  # fmt: skip
    (
        R,
        ["generate", "--run", "{plain}", "--truncation", "nan", "--out", "{tmp}/x.png"],
        2,
        "truncation must be positive",
    ),  # fmt: skip
    (
        R,
        ["generate", "--run", "{plain}", "--nrow", "0", "--out", "{tmp}/x.png"],
        2,
        "--nrow must be positive",
    ),  # fmt: skip
    (
        F,
        ["generate", "--run", "{plain}", "--device", "tpu", "--out", "{tmp}/x.png"],
        2,
        "unknown device",
    ),  # fmt: skip
    (
        C,
        ["generate", "--run", "{plain}", "--out", "{plain}/generator.safetensors/x.png"],
        1,
        "cannot write",
    ),  # fmt: skip
    # --- interpolate
    (M, ["interpolate", "--run", "{plain}", "--to", "2", "--out", "{tmp}/x.png"], 2, "--from"),
    (
        F,
        ["interpolate", "--run", "{plain}", "--from", "a", "--to", "2", "--out", "{tmp}/x.png"],
        2,
        "invalid int value",
    ),  # fmt: skip
    (
        F,
        [
            "interpolate",
            "--run",
            "{plain}",
            "--device",
            "tpu",
            "--from",
            "1",
            "--to",
            "2",
            "--out",
            "{tmp}/x.png",
        ],
        2,
        "unknown device",
    ),  # fmt: skip
    (
        R,
        [
            "interpolate",
            "--run",
            "{plain}",
            "--from",
            "1",
            "--to",
            "2",
            "--steps",
            "1",
            "--out",
            "{tmp}/x.png",
        ],
        2,
        "--steps",
    ),  # fmt: skip
    (
        R,
        [
            "interpolate",
            "--run",
            "{plain}",
            "--from",
            "1",
            "--to",
            "2",
            "--steps",
            "100000",
            "--out",
            "{tmp}/x.png",
        ],
        2,
        "--steps",
    ),  # fmt: skip
    (
        F,
        ["interpolate", "--run", "{plain}", "--from", "1", "--to", "2", "--out", "{tmp}/x.txt"],
        2,
        ".png strip or a .gif",
    ),  # fmt: skip
    (
        R,
        ["interpolate", "--run", "{cond}", "--from", "12", "--to", "2", "--out", "{tmp}/x.png"],
        2,
        "0-9",
    ),  # fmt: skip
    (
        R,
        ["interpolate", "--run", "{plain}", "--from", "-1", "--to", "2", "--out", "{tmp}/x.png"],
        2,
        "seed",
    ),  # fmt: skip
    (
        C,
        [
            "interpolate",
            "--run",
            "{plain}",
            "--checkpoint",
            "{plain}/generator.safetensors",
            "--from",
            "1",
            "--to",
            "2",
            "--out",
            "{tmp}/x.png",
        ],
        2,
        "not allowed with",
    ),  # fmt: skip
    # --- evaluate
    (M, ["evaluate"], 2, "one of the arguments"),
    (C, ["evaluate", "--real", "--run", "{plain}"], 2, "not allowed with"),
    (R, ["evaluate", "--real", "--n", "5"], 2, "--n must be at least 10"),
    (F, ["evaluate", "--real", "--split", "val"], 2, "invalid choice"),
    (R, ["evaluate", "--real", "--blur", "-1"], 2, "--blur must be positive"),
    (R, ["evaluate", "--real", "--blur", "nan"], 2, "--blur must be positive"),
    (C, ["evaluate", "--samples", "{tmp}/imgs.npy", "--split", "test"], 2, "--split"),
    (M, ["evaluate", "--samples", "{tmp}/nope.npz"], 1, "no such file"),
    (F, ["evaluate", "--samples", "{tmp}/notimages"], 1, "not a readable image"),
    (F, ["evaluate", "--samples", "{tmp}/wrong.npy"], 1, "expected an array of shape"),
    (F, ["evaluate", "--samples", "{tmp}/x.txt"], 1, "expected a .npz, .npy"),
    (F, ["evaluate", "--samples", "{tmp}/empty"], 1, "no .png files"),
    (R, ["evaluate", "--samples", "{tmp}/imgs.npy", "--n", "-4"], 2, "--n must be at least"),
    # --- data
    (M, ["data"], 2, "required: ACTION"),
    (F, ["data", "wipe"], 2, "invalid choice"),
    (F, ["data", "fetch", "--source", "ftp"], 2, "invalid choice: 'ftp'"),
    (M, ["data", "fetch", "--source", "path"], 2, "--data-path"),
    (M, ["data", "fetch", "--data-path", "{tmp}/nope"], 1, "nope"),
    (F, ["data", "fetch", "--data-path", "{tmp}/x.txt"], 1, "x.txt"),
    (C, ["data", "info", "--force"], 2, "unrecognized arguments"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    import numpy as np

    tmp = tmp_path_factory.mktemp("clifuzz")
    for name, cond in (("plain", False), ("cond", True)):
        G = build_generator("fast", 8, 4, conditional=cond)
        meta = {"arch": "fast", "latent_dim": 8, "width": 4, "pixel_range": "tanh",
                "conditional": cond}  # fmt: skip
        export_generator(G, meta, tmp / name / "generator.safetensors")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "broken.json").write_text('{"epochs": ')
    (tmp / "unknown.json").write_text(json.dumps({"wdith": 3}))
    (tmp / "typed.json").write_text(json.dumps({"epochs": "many"}))
    (tmp / "junk.safetensors").write_bytes(b"\x00" * 100)
    (tmp / "junk.pt").write_bytes(b"PK\x03\x04 not really")
    (tmp / "notimages").mkdir()
    (tmp / "notimages" / "a.png").write_text("this is text")
    (tmp / "empty").mkdir()
    (tmp / "x.txt").write_text("x")
    np.save(tmp / "imgs.npy", np.zeros((12, 28, 28), np.uint8))
    np.save(tmp / "wrong.npy", np.zeros((12, 32, 32), np.uint8))
    return {"tmp": str(tmp), "plain": str(tmp / "plain"), "cond": str(tmp / "cond")}


def test_cli_argument_table(places, capsys, monkeypatch):
    def tripwire(*a, **kw):
        raise AssertionError("this argument set was accepted and would have trained")

    # the module, not the function of the same name that mnistgan/__init__ exports
    monkeypatch.setattr(importlib.import_module("mnistgan.train"), "train", tripwire)
    failures = []
    for kind, argv, code, words in TABLE:
        argv = [a.format(**places) for a in argv]
        try:
            got = cli.main(argv)
        except SystemExit as e:  # only --help/--version may exit through argparse
            got = e.code
        except BaseException as e:  # a traceback the user would see
            failures.append((kind, argv, f"escaped: {type(e).__name__}: {e}"))
            continue
        err = capsys.readouterr().err.strip().splitlines()
        ok = (
            got == code
            and len(err) == 1
            and err[0].startswith("mnistgan: error: ")
            and words in err[0]
        )
        if not ok:
            failures.append((kind, argv, f"exit {got}, stderr {err}"))
    kinds = {k: sum(1 for row in TABLE if row[0] == k) for k in (M, F, R, C)}
    record("CLI argument sets (one-line error, right exit status, no traceback)",
           len(TABLE) - len(failures), len(TABLE))  # fmt: skip
    print(f"\n{len(TABLE)} argument sets: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    assert not failures, "\n".join(map(str, failures))
