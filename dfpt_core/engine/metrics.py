"""Evaluation metrics of a Distiller: accuracy of every path, the capacity-gap signature
(true-class confidence p_t of teacher and student, KD split into TCKD and NCKD) and the
agreement between paths (how reachable the prompt path is for the student)."""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from itertools import combinations

import torch
from torch import Tensor

from ..losses import kd_decomposition, kd_loss, true_class_confidence


def topk_correct(logits: Tensor, targets: Tensor, ks=(1, 5)) -> dict[int, int]:
    """Number of samples whose target is among the top-k logits, for each k (k <= C)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top.eq(targets[:, None])
    return {k: int(hit[:, :k].any(dim=1).sum()) for k in ks}


@torch.no_grad()
def evaluate(distiller, loader, temperature: float = 4.0, autocast=None) -> dict[str, float]:
    """Metrics over `loader` (percentages for accuracies and agreement):

    - `<path>_top1`, `<path>_top5`, `<path>_pt` (mean softmax probability of the true class at
      T=1) for every path of `distiller.eval_logits` ("student", "teacher", "prompt", ...);
    - `gap`: teacher top-1 minus student top-1;
    - `kd`, `tckd`, `nckd`, `teacher_pt_T`: the DKD decomposition of KD(teacher -> student) at
      `temperature`, averaged per sample (KD = TCKD + (1 - p_t^T) NCKD holds per sample);
    - `agree_<a>_<b>`: % of samples where paths a and b predict the same class;
    - `kl_<a>_<path>` for every other path (e.g. the prompt path) and a in (teacher, student):
      KL(p_a || p_path) at `temperature`, summed over classes, averaged per sample (without the
      T^2 of the loss): how far that path is from each end of the gap.
    """
    was_training = distiller.training
    distiller.eval()
    sums: dict[str, float] = defaultdict(float)
    n = 0
    try:
        for images, targets in loader:
            with autocast or nullcontext():
                outs = distiller.eval_logits(images)
            outs = {k: v.float() for k, v in outs.items()}
            n += len(targets)
            for path, logits in outs.items():
                hits = topk_correct(logits, targets)
                sums[f"{path}_top1"] += hits[1]
                sums[f"{path}_top5"] += hits[5]
                sums[f"{path}_pt"] += float(true_class_confidence(logits, targets).sum())
            if "teacher" in outs:
                parts = kd_decomposition(outs["student"], outs["teacher"], targets, temperature)
                for key in ("kd", "tckd", "nckd"):
                    sums[key] += float(parts[key].sum())
                sums["teacher_pt_T"] += float(parts["pt_teacher"].sum())
            for path in set(outs) - {"student", "teacher"}:
                for a in ("teacher", "student"):
                    if a in outs:
                        kl = kd_loss(outs[path], outs[a], temperature, reduction="sum")
                        sums[f"kl_{a}_{path}"] += float(kl) / temperature**2
            preds = {k: v.argmax(1) for k, v in outs.items()}
            for a, b in combinations(preds, 2):
                sums[f"agree_{a}_{b}"] += int((preds[a] == preds[b]).sum())
    finally:
        distiller.train(was_training)
    if n == 0:
        raise ValueError("evaluation loader yielded no samples")
    out = {}
    for key, total in sums.items():
        scale = 100.0 if key.endswith(("_top1", "_top5")) or key.startswith("agree_") else 1.0
        out[key] = scale * total / n
    if "teacher_top1" in out:
        out["gap"] = out["teacher_top1"] - out["student_top1"]
    return out
