"""Training checkpoints and generator export: atomic writes, loads that never run code.

A checkpoint (`checkpoints/ckpt_eEEEE_sSSSSSSSS.pt`) is a torch.save'd dict of tensors and plain
values, read back with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects.
The exported generator is `generator.safetensors` (weights only) plus `generator.json`
(the architecture), so sampling needs neither pickle nor the training code's state.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CheckpointError, brief

CKPT_FORMAT = "mnistgan-checkpoint"
GEN_FORMAT = "mnistgan-generator"
VERSION = 1
CKPT_RE = re.compile(r"^ckpt_e(\d{4,})_s(\d{8,})\.pt$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename over the target.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # say which file could not be written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------ checkpoints


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt_e{epoch:04d}_s{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first (by step)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(2)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, state: dict, keep: int) -> Path:
    """Write state atomically, then drop all but the newest `keep` checkpoints."""
    path = Path(run_dir) / "checkpoints" / checkpoint_name(state["epoch"], state["step"])
    atomic_write_bytes(path, _torch_bytes({"format": CKPT_FORMAT, "version": VERSION, **state}))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles; we report them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, refused global: all "not loadable"
        raise CheckpointError(f"{path}: not a loadable mnistgan checkpoint ({brief(e)})") from None
    if not isinstance(state, dict) or not _is(state.get("format"), CKPT_FORMAT):
        raise CheckpointError(f"{path}: not an mnistgan checkpoint")
    if not _is(state.get("version"), VERSION):
        raise CheckpointError(f"{path}: checkpoint version not supported")
    missing = {"config", "epoch", "step", "G", "D", "opt_g", "opt_d"} - state.keys()
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(sorted(missing))}")
    return state


def remove_stale_temps(run_dir: Path) -> int:
    """Delete the temp files of writes that a kill interrupted (see atomic_write_bytes)."""
    n = 0
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def _is(value, expected) -> bool:
    """value == expected, for values of any type (a tensor's == is not a bool)."""
    return type(value) is type(expected) and value == expected


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


# ------------------------------------------------------------------ generator export


def export_generator(G: torch.nn.Module, meta: dict, path: Path) -> Path:
    """generator.safetensors (+ generator.json beside it, same stem)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    atomic_write_bytes(path, st_save(tensors))
    info = {"format": GEN_FORMAT, "version": VERSION, **meta}
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(info, indent=2) + "\n").encode())
    return path


def read_generator_files(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta, state_dict) of an exported generator; every failure is a CheckpointError."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such generator file")
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: missing (it describes the generator's architecture)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({brief(e)})") from None
    if not isinstance(meta, dict) or not _is(meta.get("format"), GEN_FORMAT):
        raise CheckpointError(f"{meta_path}: not an mnistgan generator description")
    try:
        tensors = st_load(path.read_bytes())
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({brief(e)})") from None
    return meta, tensors


def load_state_strict(model: torch.nn.Module, state: dict, where: Path) -> None:
    """load_state_dict, with missing/extra keys or wrong shapes/dtypes as a CheckpointError."""
    own = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(own):
        raise CheckpointError(f"{where}: weights do not match the architecture (different layers)")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor) or v.shape != own[k].shape or v.dtype != own[k].dtype:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise CheckpointError(f"{where}: tensor {k} is {got}, expected {tuple(own[k].shape)}")
    model.load_state_dict(state)
