"""Nothing lost: SIGKILL at random moments and resume exactly, clean stops on SIGINT/SIGTERM,
a full disk or a read-only run folder, and the divergence guard (stop or roll back)."""

from __future__ import annotations

import csv
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import metrics_rows, record, run_cli
from safetensors.torch import load_file

from mnistgan import checkpoint as ckpt
from mnistgan.config import PRESETS
from mnistgan.data import cache_path
from mnistgan.errors import DivergenceError, StorageError
from mnistgan.train import Trainer, train

needs_mnist = pytest.mark.skipif(not cache_path().exists(), reason="no MNIST cache")

# A real `mnistgan train` that checkpoints every epoch (10 steps), so kills land everywhere:
# in start-up, in a step, in a metrics write, in a checkpoint write, in the sample grid.
RUN = [
    "--width", "8", "--latent-dim", "16", "--batch-size", "32", "--threads", "1",
    "--eval-every", "0", "--subset", "320", "--epochs", "12", "--checkpoint-every", "1",
    "--keep-checkpoints", "2", "--sample-every", "10", "--max-minutes", "none",
]  # fmt: skip
KILLS = 21
SEED = int(os.environ.get("MNISTGAN_KILL_SEED", "0"))


def train_cmd(run: Path, resume: bool) -> list[str]:
    extra = ["--resume"] if resume else []
    return [sys.executable, "-m", "mnistgan", "train", "--run-dir", str(run), *RUN, *extra]


def temp_files(run: Path) -> list[Path]:
    return [*run.glob(".*.tmp"), *run.glob("checkpoints/.*.tmp")]


def assert_same_run(run: Path, ref: Path):
    """A resumed run ends exactly where the uninterrupted one did: weights, optimizer state,
    metrics rows (one per step, none torn or repeated), exported generator."""
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(ref))
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    for net in ("G", "D", "G_ema"):
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)
    for opt in ("opt_g", "opt_d"):
        for i, s in a[opt]["state"].items():
            assert torch.equal(s["exp_avg"], b[opt]["state"][i]["exp_avg"]), (opt, i)
    rows, ref_rows = metrics_rows(run), metrics_rows(ref)
    assert [int(r[1]) for r in rows] == list(range(1, b["step"] + 1))
    assert all(len(r) == len(ref_rows[0]) for r in rows)
    assert [r[2:8] for r in rows] == [r[2:8] for r in ref_rows]  # losses and D stats
    ga, gb = load_file(run / "generator.safetensors"), load_file(ref / "generator.safetensors")
    assert all(torch.equal(ga[k], gb[k]) for k in gb)


def assert_loadable(run: Path):
    """After any kill: every checkpoint on disk loads, and there is at most one torn row."""
    for path in ckpt.list_checkpoints(run):
        ckpt.load_checkpoint(path)
    if (run / "metrics.csv").exists():
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.reader(f))[1:]
        assert all(len(r) == len(rows[0]) for r in rows[:-1]), "a torn row before the last"


def wait_for(cond, proc, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if cond():
            return True
        time.sleep(0.0005)
    return False


@pytest.mark.slow
@needs_mnist
def test_sigkill_anywhere_then_resume_is_exact(tmp_path):
    t0 = time.monotonic()
    ref = tmp_path / "ref"
    r = run_cli("train", "--run-dir", ref, *RUN)
    assert r.returncode == 0, r.stderr
    t_ref = time.monotonic() - t0
    rng = random.Random(SEED)
    kills = survived = mid_write = completed = 0
    n_run = 0
    run = tmp_path / f"victim{n_run}"
    while kills < KILLS:
        proc = subprocess.Popen(train_cmd(run, run.exists()), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        mode = kills % 3
        if mode == 0:  # any moment, start-up included
            time.sleep(rng.uniform(0.0, t_ref))
        elif mode == 1:  # a moment of training
            wait_for(lambda r=run: (r / "metrics.csv").exists(), proc, 2 * t_ref)
            time.sleep(rng.uniform(0.0, t_ref / 3))
        else:  # the moment a file write has begun (a temp file exists)
            wait_for(lambda r=run: bool(temp_files(r)), proc, 2 * t_ref)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            kills += 1
            mid_write += bool(temp_files(run))
            assert_loadable(run)
            survived += 1
        else:  # it finished before the kill: it must match the uninterrupted run
            assert proc.returncode == 0, proc.stderr.read()
            assert_same_run(run, ref)
            completed += 1
            n_run += 1
            run = tmp_path / f"victim{n_run}"
    r = subprocess.run(train_cmd(run, run.exists()), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not temp_files(run)
    assert_same_run(run, ref)
    record("SIGKILLs survived (resumed run == uninterrupted run)", survived, kills)
    print(f"\n{kills} SIGKILLs ({mid_write} during a file write), {completed + 1} resumed runs "
          f"equal to the uninterrupted one")  # fmt: skip
    assert mid_write >= 1, "no kill landed inside a write; the harness lost its edge"


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_stop_cleanly_with_a_checkpoint(tmp_path, sig):
    run = tmp_path / "r"
    proc = subprocess.Popen(train_cmd(run, False), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert wait_for(lambda: bool(ckpt.list_checkpoints(run)), proc, 120)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved to" in out and "continue with --resume" in out
    assert err.strip().splitlines() == ["mnistgan: interrupted"]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert int(metrics_rows(run)[-1][1]) == state["step"]  # every step up to it is logged
    assert state["step"] < 120  # it stopped early, not at the end


# ------------------------------------------------------------------ full disk, read-only


def limit_file_size(nbytes: int):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return pre


@needs_mnist
def test_full_disk_ends_with_one_message_and_keeps_the_checkpoint(tmp_path):
    run = tmp_path / "r"
    args = ["--width", "8", "--latent-dim", "16", "--batch-size", "32", "--threads", "1",
            "--eval-every", "0", "--subset", "320"]  # fmt: skip
    r = run_cli("train", "--run-dir", run, *args, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    (good,) = ckpt.list_checkpoints(run)
    before = good.read_bytes()
    # The resumed run's next checkpoint cannot be written: the "disk" is full.
    r = subprocess.run(
        [sys.executable, "-m", "mnistgan", "train", "--run-dir", str(run), "--resume",
         *args, "--epochs", "3"],
        capture_output=True, text=True, preexec_fn=limit_file_size(len(before) // 2),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "ckpt_e0002_s00000020.pt: File too large" in lines[0], lines[0]
    assert f"last complete checkpoint: {good}" in lines[0], lines[0]
    assert ckpt.list_checkpoints(run) == [good] and good.read_bytes() == before
    assert not temp_files(run)
    ckpt.load_checkpoint(good)


def test_read_only_run_folder(tmp_path, tiny_data, monkeypatch):
    import tempfile

    real_mkstemp, calls = tempfile.mkstemp, []

    def mkstemp(*a, **kw):  # the folder turns read-only after the first checkpoint
        if any("ckpt_" in str(kw.get("prefix", "")) for kw in calls):
            raise OSError(30, "Read-only file system", kw.get("dir"))
        calls.append(kw)
        return real_mkstemp(*a, **kw)

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", mkstemp)
    cfg = tiny_cfg(epochs=3)
    with pytest.raises(StorageError, match=r"Read-only file system; training stopped at step "
                       r"\d+, last complete checkpoint: .*ckpt_e0001_s00000019\.pt"):  # fmt: skip
        Trainer(cfg, tmp_path / "r", tiny_data, log=lambda *a: 0).run()
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "r")] == ["ckpt_e0001_s00000019.pt"]
    ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "r"))


# ------------------------------------------------------------------ divergence guard


def tiny_cfg(**kw):
    base = dict(width=8, latent_dim=16, batch_size=32, epochs=2, eval_every=0, sample_every=0,
                threads=2, max_minutes=None, ema=0.0, device="cpu")  # fmt: skip
    return PRESETS["fast"].replace(**{**base, **kw})


class Sabotaged(Trainer):
    """Puts a NaN into G's weights right after the optimizer step of step `at` (the losses of
    that step are still finite: only the weight check can see it), `times` times."""

    at, times = 25, 1

    def train_step(self, real, labels=None):
        if self.step + 1 == self.at and self.times > 0:
            self.times -= 1
            real_step = self.opt_g.step

            def poisoned_step(*a, **kw):
                out = real_step(*a, **kw)
                with torch.no_grad():
                    next(self.G.parameters()).view(-1)[0] = float("nan")
                self.opt_g.step = real_step
                return out

            self.opt_g.step = poisoned_step
        return super().train_step(real, labels)


def test_nan_in_weights_stops_within_one_step(tmp_path, tiny_data):
    logs = []
    t = Sabotaged(tiny_cfg(epochs=3), tmp_path / "r", tiny_data, log=logs.append)
    with pytest.raises(DivergenceError, match=r"diverged at step 25: non-finite weights; last "
                       r"good checkpoint: .*ckpt_e0001_s00000019\.pt; continue from it with "
                       r"`mnistgan train .* --resume --on-divergence rollback`"):  # fmt: skip
        t.run()
    rows = metrics_rows(tmp_path / "r")
    assert [int(r[1]) for r in rows] == list(range(1, 25))  # the good steps, for diagnosis


class ReadEvery4(Sabotaged):
    """Reads the stats every 4 steps, as a GPU run does every 32 (STATS_READ_EVERY)."""

    def _setup(self, resume_state):
        super()._setup(resume_state)
        self.read_every = 4


def test_deferred_stats_reads_name_the_step_that_diverged(tmp_path, tiny_data):
    # step 25 sits inside the read of steps 25-28: the guard still names it and keeps 1-24
    t = ReadEvery4(tiny_cfg(epochs=3), tmp_path / "r", tiny_data, log=lambda *a: 0)
    with pytest.raises(DivergenceError, match=r"diverged at step 25: non-finite weights; last "
                       r"good checkpoint: .*ckpt_e0001_s00000019\.pt"):  # fmt: skip
        t.run()
    assert [int(r[1]) for r in metrics_rows(tmp_path / "r")] == list(range(1, 25))
    good = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "r"))
    assert good["step"] == 19  # nothing from the poisoned steps 25-28 was saved


def test_deferred_stats_reads_train_the_same_run(tmp_path, tiny_data):
    class Clean(ReadEvery4):
        times = 0  # no sabotage

    cfg = tiny_cfg(epochs=2, max_minutes=None)
    train(cfg, tmp_path / "every", data=tiny_data, log=lambda *a: 0)
    Clean(cfg, tmp_path / "by4", tiny_data, log=lambda *a: 0).run()
    a, b = metrics_rows(tmp_path / "every"), metrics_rows(tmp_path / "by4")
    assert [r[:8] for r in a] == [r[:8] for r in b] and len(a) == 38  # 19 steps an epoch
    sa = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "every"))["G"]
    sb = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "by4"))["G"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_rollback_restores_the_checkpoint_lowers_lr_and_goes_on(tmp_path, tiny_data):
    logs = []
    cfg = tiny_cfg(epochs=3, on_divergence="rollback", ema=0.9)
    res = Sabotaged(cfg, tmp_path / "r", tiny_data, log=logs.append).run()
    assert res.finished and res.step == 57
    assert any("rolled back to ckpt_e0001_s00000019.pt (step 19)" in m for m in logs), logs
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "r"))
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr_g / 2)
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr_d / 2)
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    assert [int(r[1]) for r in metrics_rows(tmp_path / "r")] == list(range(1, 58))


def test_rollback_gives_up_after_three(tmp_path, tiny_data):
    class Always(Sabotaged):
        times = 99

    cfg = tiny_cfg(epochs=3, on_divergence="rollback")
    with pytest.raises(DivergenceError, match="gave up after 3 rollbacks"):
        Always(cfg, tmp_path / "r", tiny_data, log=lambda *a: 0).run()


def test_rollback_with_nothing_to_roll_back_to(tmp_path, tiny_data):
    class Early(Sabotaged):
        at = 3

    cfg = tiny_cfg(on_divergence="rollback")
    with pytest.raises(DivergenceError, match="last good checkpoint: none .nothing to roll back"):
        Early(cfg, tmp_path / "r", tiny_data, log=lambda *a: 0).run()


def test_collapsed_discriminator_rule(tmp_path, tiny_data):
    class Collapsed(Trainer):  # D wins outright from step 5 on
        def train_step(self, real, labels=None):
            stats = super().train_step(real, labels)
            if self.step >= 4:
                stats[2], stats[3] = 0.999, 0.001
            return stats

    cfg = tiny_cfg(collapse_steps=6)
    with pytest.raises(DivergenceError, match=r"step 10: discriminator collapsed .* for 6 steps"):
        Collapsed(cfg, tmp_path / "r", tiny_data, log=lambda *a: 0).run()
    # off with 0, and never for a WGAN critic, whose outputs are not probabilities
    for kw in ({"collapse_steps": 0}, {"collapse_steps": 6, "loss": "wgan-gp"}):
        res = Collapsed(tiny_cfg(epochs=1, **kw), tmp_path / str(kw), tiny_data,
                        log=lambda *a: 0).run()  # fmt: skip
        assert res.finished
