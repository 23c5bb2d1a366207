"""Run by tests/test_train.py under `torchrun --nproc_per_node 2` with a config file (the suite's
tiny KD run): train it with DDP (gloo on CPU) and write this rank's view of the result to
<out_dir>/rank<R>.json."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from dfpt_core.run.build import run
from dfpt_core.run.config import load_config


def main(config: str) -> None:
    torch.set_num_threads(1)
    cfg = load_config(config)
    out = cfg.out_dir
    trainer = run(cfg)
    rank = trainer.dist.rank
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.distiller.student.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    Path(out, f"rank{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "world_size": trainer.dist.world_size,
                "student_sha256": digest.hexdigest(),
                "final": trainer.history[-1],
                "train_batches": len(trainer.train_loader),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
