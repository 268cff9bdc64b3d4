"""Checkpoints: atomic writes survive a kill mid-write; hostile or foreign files are refused."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mnistgan import checkpoint as ckpt
from mnistgan.errors import CheckpointError
from mnistgan.models import build_generator
from mnistgan.sample import load_generator

WRITER = textwrap.dedent(
    """
    import sys, torch
    from mnistgan import checkpoint as ckpt
    run = sys.argv[1]
    big = torch.randn(4_000_000)  # 16 MB, so that a kill often lands inside a write
    step = 0
    while True:
        step += 1
        state = {"config": {}, "epoch": step, "step": step, "G": {"w": big + step}, "D": {},
                 "opt_g": {}, "opt_d": {}}
        ckpt.save_checkpoint(run, state, keep=2)
        print(step, flush=True)
    """
)


def test_kill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    run = tmp_path / "run"
    for attempt in range(5):
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(run)], stdout=subprocess.PIPE, text=True
        )
        p.stdout.readline()  # at least one checkpoint is complete
        time.sleep(0.05 + 0.07 * attempt)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        ckpts = ckpt.list_checkpoints(run)
        assert ckpts, "the last complete checkpoint must survive"
        for path in ckpts:
            s = ckpt.load_checkpoint(path)
            assert torch.equal(s["G"]["w"][:3], s["G"]["w"][:3])
            assert s["G"]["w"].numel() == 4_000_000
        # stray temp files are never taken for checkpoints
        assert all(p.name.startswith("ckpt_") for p in ckpts)


def test_crafted_pickle_is_refused_without_running(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "checkpoints" / "ckpt_e0001_s00000001.pt"
    path.parent.mkdir()
    torch.save({"format": "mnistgan-checkpoint", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a loadable mnistgan checkpoint"):
        ckpt.load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_generator(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_foreign_and_truncated_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an mnistgan checkpoint"):
        ckpt.load_checkpoint(foreign)
    good = tmp_path / "good.pt"
    torch.save({"format": "mnistgan-checkpoint", "version": 1, "x": torch.randn(1000)}, good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:700])
    with pytest.raises(CheckpointError, match="not a loadable"):
        ckpt.load_checkpoint(trunc)
    with pytest.raises(CheckpointError, match="lacks"):
        ckpt.load_checkpoint(good)


def test_exported_generator_round_trip_and_damage(tmp_path):
    G = build_generator("fast", 16, 8)
    meta = {"arch": "fast", "latent_dim": 16, "width": 8}
    path = ckpt.export_generator(G, meta, tmp_path / "generator.safetensors")
    g = load_generator(path)
    assert g.sample(4, seed=0).shape == (4, 28, 28)
    # wrong architecture description for these weights
    (tmp_path / "generator.json").write_text(
        '{"format": "mnistgan-generator", "version": 1, "arch": "fast", "latent_dim": 16, '
        '"width": 16}'
    )
    with pytest.raises(CheckpointError, match="tensor .* is"):
        load_generator(path)
    (tmp_path / "generator.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_generator(path)
    path.write_bytes(path.read_bytes()[:100])
    (tmp_path / "generator.json").write_text(
        '{"format": "mnistgan-generator", "version": 1, "arch": "fast", "latent_dim": 16}'
    )
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_generator(path)
