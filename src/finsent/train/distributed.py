"""Data-parallel training across the GPUs of a node (or CPU processes), from the same entry point.

``torchrun --nproc_per_node N -m finsent.cli stage train ...`` (or ``accelerate launch``, which sets the
same RANK / WORLD_SIZE / LOCAL_RANK variables) runs one process per device; ``train.processes`` > 1
makes ``finsent stage train`` re-launch itself that way, so dvc.yaml and the Prefect flow need no
change. Each rank trains on its own shard of every epoch's batch order, gradients are averaged
by DistributedDataParallel (the Trainer joins the process group and wraps the model; accelerate deals each
epoch's batches out to the ranks), and only rank 0 writes checkpoints, the bundle and the report (the flow's
MLflow logging reads those, so only rank 0's results are ever logged).
"""

from __future__ import annotations

import os
import sys


def world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the launcher's environment; (0, 0, 1) when launched plainly."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")))


def is_main() -> bool:
    return world()[0] == 0


def sum_across(value: float, device: str) -> float:
    """Sum of ``value`` over all ranks (the tensor lives on ``device``: NCCL reduces GPU tensors only)."""
    if world()[2] == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor[0])


def teardown(timeout_s: float = 120.0) -> None:
    """Leave the process group together: every rank waits for the others before destroying it (a rank that
    destroys it and exits while a peer still talks to it can leave that peer waiting; PyTorch's shutdown
    guidance). On CPU (gloo) the wait is bounded and a rank that never arrives is named in the error."""
    if world()[2] > 1:
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            return
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))
        else:
            dist.barrier()
        dist.destroy_process_group()


def processes_wanted(setting: int | str) -> int:
    if setting == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    return int(setting)


def relaunch_command(processes: int, argv: list[str]) -> list[str]:
    """The torchrun command that runs this same CLI call once per device."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--rdzv-backend=c10d",
            "--rdzv-endpoint=127.0.0.1:0", f"--nproc_per_node={processes}", "-m", "finsent.cli", *argv]


def relaunch_env() -> dict:
    """One node talks to itself: over loopback, whatever the host name resolves to (gloo picks its interface
    from it otherwise)."""
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env
