"""Run by tests/test_train.py under `torchrun --nproc_per_node 2`: train a tiny KD run with DDP
(gloo on CPU) and write this rank's view of the result to <out>/rank<R>.json."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from dfpt_core.run.build import run
from dfpt_core.run.config import make_config


def main(out: str, teacher_ckpt: str, data_root: str) -> None:
    torch.set_num_threads(1)
    cfg = make_config(
        dict(
            name="ddp",
            method="kd",
            student="resnet8",
            teacher="resnet8",
            teacher_checkpoint=teacher_ckpt,
            dataset="fashion_mnist",
            data_root=data_root,
            in_chans=1,
            limit_train=256,
            limit_test=64,
            epochs=2,
            batch_size=32,
            lr=0.05,
            milestones=[1],
            out_dir=out,
            progress=False,
            device="cpu",
        )
    )
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
