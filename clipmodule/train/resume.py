"""What exact resume needs beyond Lightning's checkpoint, and the check that a checkpoint fits the model.

Lightning writes the checkpoint on rank 0 only, so the loader position it records (`loops.fit_loop.state_dict.
combined_loader`) and any random state are rank 0's, and every rank would restore them: rank 1 would replay
rank 0's samples. Here every rank's loader state and random generators (CPU, and CUDA where used: patch dropout
draws from the device's generator) are gathered into the checkpoint under `rank_states`, and each rank puts back
its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from clipmodule.checkpoints.io import mismatch_summary
from clipmodule.errors import ClipModuleError

RANK_STATES = "rank_states"


def _loop_state(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict")


def rank_state(checkpoint: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """This rank's loader position (as Lightning just put it in `checkpoint`) and random generators."""
    state: dict[str, Any] = {"cpu_rng": torch.get_rng_state()}
    loop = _loop_state(checkpoint)
    if loop is not None and "combined_loader" in loop:
        state["combined_loader"] = loop["combined_loader"]
    if device.type == "cuda" and torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def gather_objects(item: Any, world_size: int) -> list[Any]:
    """`item` from every rank, in rank order (a collective: every rank must call it)."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [item]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, item)
    return gathered


def store_rank_states(checkpoint: dict[str, Any], device: torch.device, world_size: int,
                      gather: Callable[[Any, int], list[Any]] = gather_objects) -> None:
    """Adds every rank's `rank_state` to `checkpoint` (called on all ranks; rank 0's copy is written)."""
    checkpoint[RANK_STATES] = gather(rank_state(checkpoint, device), world_size)


def take_rank_state(checkpoint: dict[str, Any], rank: int, world_size: int, source: str,
                    fitting: bool = True) -> dict[str, Any] | None:
    """Puts this rank's loader position into the loop state Lightning is about to restore and returns its
    random generators (None if the checkpoint has none). A fit on a different number of ranks is refused:
    the shards are split by rank, so no rank's position would mean anything."""
    states = checkpoint.get(RANK_STATES)
    if states is None:  # a checkpoint of an earlier version: rank 0's generator only
        return {"cpu_rng": checkpoint["rng_state"]} if "rng_state" in checkpoint else None
    if len(states) != world_size:
        if fitting:
            raise ClipModuleError(f"checkpoint {source} was written by {len(states)} ranks and cannot resume on "
                                  f"{world_size}: use {len(states)} devices in all")
        return None
    own = states[rank]
    loop = _loop_state(checkpoint)
    if loop is not None and "combined_loader" in own:
        loop["combined_loader"] = own["combined_loader"]
    return {name: own[name] for name in ("cpu_rng", "cuda_rng") if name in own}


def restore_generators(state: dict[str, Any] | None, device: torch.device) -> None:
    if not state:
        return
    torch.set_rng_state(state["cpu_rng"])
    if "cuda_rng" in state and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def check_state_fits(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """One line naming the checkpoint and how its tensors differ from the model's, instead of PyTorch's
    list of every mismatched key."""
    problem = mismatch_summary(saved, expected)
    if problem:
        raise ClipModuleError(f"checkpoint {source} is of another architecture than the configured model: {problem}")
