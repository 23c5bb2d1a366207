"""Distillation losses as pure functions (no module state).

Every loss here follows one convention, the one of the DKD paper and of mdistiller: a KL
divergence is *summed over classes*, *averaged over the batch* and multiplied by ``T**2`` (Hinton
et al. 2015, Sec. 2: the ``T**2`` factor keeps the gradient magnitude of the soft targets roughly
independent of the temperature). This is what ``F.kl_div(..., reduction="batchmean") * T**2``
computes. It is *not* what ``nn.KLDivLoss()`` computes by default: that default (``"mean"``)
divides by ``B * C`` and silently shrinks the KD term by a factor ``C`` (a bug in the public
TAKD/DGKD code).

Notation, for one sample with logits ``z`` (``C`` classes), target ``t`` and temperature ``T``::

    p_i     = exp(z_i / T) / sum_j exp(z_j / T)                   softmax at temperature T
    b       = [p_t, 1 - p_t]                                      binary target / non-target split
    p_hat_i = exp(z_i / T) / sum_{j != t} exp(z_j / T), i != t    distribution among non-targets

Superscripts ``T`` / ``S`` mark teacher / student. The decomposition of Zhao et al. (Decoupled
Knowledge Distillation, CVPR 2022, Sec. 3.1) is the exact identity::

    KL(p^T || p^S) = KL(b^T || b^S) + (1 - p_t^T) * KL(p_hat^T || p_hat^S)
         KD        =      TCKD      + (1 - p_t^T) *        NCKD

Numerics: everything is computed in log space. ``log p_t`` comes from ``log_softmax``;
``log(1 - p_t)`` is ``logsumexp(non-target logits / T) - logsumexp(all logits / T)``; ``p_hat``
is a ``log_softmax`` over the ``C - 1`` gathered non-target logits. No ``log(0)`` and no
"subtract 1000 from the target logit" mask trick, so values and gradients stay finite when a
network is extremely confident (``p_t -> 1`` in float32). Half-precision inputs are upcast to
float32 before any softmax.

Teacher tensors are always detached inside these functions: a loss never sends gradient into
the teacher, whatever the caller forgot.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "kd_loss",
    "tckd",
    "nckd",
    "dkd_loss",
    "kd_decomposition",
    "feature_kd_loss",
    "true_class_confidence",
    "DEFAULT_FEATURE_COS_WEIGHT",
]

_REDUCTIONS = ("mean", "sum", "none")

#: Default weight of the cosine term in :func:`feature_kd_loss`. The CIFAR-10 capacity study
#: (umutonuryasar/kd-capacity-gap, ``configs/*_feature.yaml``: ``feat_beta: 0.5``, i.e.
#: ``L_feat = L_mse + 0.5 * L_cos``) weights the cosine term by 0.5; we keep that value.
DEFAULT_FEATURE_COS_WEIGHT = 0.5


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                f"temperature must be a positive scalar, got a tensor of shape "
                f"{tuple(temperature.shape)}"
            )
        temperature = float(temperature.item())
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"temperature must be a positive real number, got {type(temperature).__name__}"
        )
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0.0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return temperature


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Common floating dtype of the inputs, at least float32 (softmax in fp16 is unsafe)."""
    dtype = torch.float32
    for x in tensors:
        if not x.is_floating_point():
            raise TypeError(f"logits/features must be floating point tensors, got {x.dtype}")
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def _check_logit_pair(
    logits_student: torch.Tensor, logits_teacher: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``[B, C]`` student/teacher logits; return them (teacher detached) in one dtype."""
    for name, x in (("logits_student", logits_student), ("logits_teacher", logits_teacher)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(
                f"{name} must have shape [batch, num_classes], got shape {tuple(x.shape)}"
            )
    if logits_student.shape != logits_teacher.shape:
        raise ValueError(
            "student and teacher logits must have the same shape, got logits_student "
            f"{tuple(logits_student.shape)} and logits_teacher {tuple(logits_teacher.shape)}"
        )
    dtype = _float_dtype(logits_student, logits_teacher)
    return logits_student.to(dtype), logits_teacher.detach().to(dtype)


def _check_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Validate class indices: integer tensor of shape ``[B]`` with values in ``[0, C)``."""
    batch, num_classes = logits.shape
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor of class indices, got {type(target)}")
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise TypeError(
            f"target must hold integer class indices (e.g. torch.long), got dtype {target.dtype}"
        )
    if target.shape != (batch,):
        raise ValueError(
            f"target must have shape [batch] = ({batch},) to match logits of shape "
            f"{tuple(logits.shape)}, got target shape {tuple(target.shape)}"
        )
    if batch > 0:
        bad = (target < 0) | (target >= num_classes)
        if bool(bad.any()):  # one host sync; an out-of-range gather on CUDA is an opaque assert
            offending = target[bad].unique()[:10].tolist()
            raise ValueError(
                f"target values must lie in [0, {num_classes - 1}] for {num_classes} classes, "
                f"got out-of-range values {offending}"
            )
    return target.to(device=logits.device, dtype=torch.long)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean()


# --------------------------------------------------------------------------------------------
# log-space building blocks (per sample, no T**2 yet)
# --------------------------------------------------------------------------------------------
def _kl_from_log_probs(log_p_teacher: torch.Tensor, log_p_student: torch.Tensor) -> torch.Tensor:
    """Per-row ``sum_i p_T,i * (log p_T,i - log p_S,i)`` from log-probabilities (finite inputs)."""
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(dim=1)


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor, temperature: float):
    """``(log p_t, log(1 - p_t))`` per sample, both computed without forming ``1 - p_t``."""
    z = logits / temperature
    lse_all = torch.logsumexp(z, dim=1)
    log_pt = z.gather(1, target.unsqueeze(1)).squeeze(1) - lse_all
    non_target = _non_target_logits(z, target)
    log_not_pt = torch.logsumexp(non_target, dim=1) - lse_all
    return log_pt, log_not_pt


def _non_target_logits(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The ``C - 1`` non-target entries of each row of ``z``, order kept: shape ``[B, C - 1]``."""
    batch, num_classes = z.shape
    keep = torch.ones_like(z, dtype=torch.bool).scatter_(1, target.unsqueeze(1), False)
    return z.masked_select(keep).view(batch, num_classes - 1)


def _tckd_per_sample(s, t, target, temperature):
    log_pt_s, log_not_s = _binary_log_probs(s, target, temperature)
    log_pt_t, log_not_t = _binary_log_probs(t, target, temperature)
    log_b_s = torch.stack((log_pt_s, log_not_s), dim=1)
    log_b_t = torch.stack((log_pt_t, log_not_t), dim=1)
    return _kl_from_log_probs(log_b_t, log_b_s)


def _nckd_per_sample(s, t, target, temperature):
    log_phat_s = F.log_softmax(_non_target_logits(s / temperature, target), dim=1)
    log_phat_t = F.log_softmax(_non_target_logits(t / temperature, target), dim=1)
    return _kl_from_log_probs(log_phat_t, log_phat_s)


def _require_two_classes(logits: torch.Tensor, what: str) -> None:
    if logits.shape[1] < 2:
        raise ValueError(
            f"{what} needs at least 2 classes (a target and a non-target), got logits of shape "
            f"{tuple(logits.shape)}"
        )


# --------------------------------------------------------------------------------------------
# public losses
# --------------------------------------------------------------------------------------------
def kd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    temperature: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """Hinton KD: ``T**2 * KL(softmax(z^T / T) || softmax(z^S / T))``, batch-averaged.

    Implements Hinton, Vinyals & Dean (2015), Eq. (1) softmax at temperature ``T`` with the
    ``T**2`` gradient correction of their Sec. 2, in the convention of the DKD paper::

        L_KD = T**2 / B * sum_b sum_i p^T_{b,i} * (log p^T_{b,i} - log p^S_{b,i})

    Args:
        logits_student: ``[B, C]`` student logits (gradient flows into them).
        logits_teacher: ``[B, C]`` teacher logits (detached inside: treated as constants).
        temperature: ``T > 0``.
        reduction: ``"mean"`` (over the batch; the convention), ``"sum"``, or ``"none"`` for the
            per-sample vector ``[B]`` (each already multiplied by ``T**2``).

    Equals ``F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T**2``;
    it is not ``nn.KLDivLoss()`` (whose default divides by ``B * C``).
    """
    temperature = _check_temperature(temperature)
    _check_reduction(reduction)
    s, t = _check_logit_pair(logits_student, logits_teacher)
    log_p_s = F.log_softmax(s / temperature, dim=1)
    log_p_t = F.log_softmax(t / temperature, dim=1)
    per_sample = _kl_from_log_probs(log_p_t, log_p_s) * temperature**2
    return _reduce(per_sample, reduction)


def tckd(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """Target-class KD (DKD, Zhao et al. 2022, Sec. 3.1): ``T**2 * KL(b^T || b^S)``.

    ``b = [p_t, 1 - p_t]`` is the binary split of the temperature-``T`` softmax into the target
    class and all the rest::

        TCKD = T**2 * ( p_t^T * (log p_t^T - log p_t^S)
                      + (1 - p_t^T) * (log(1 - p_t^T) - log(1 - p_t^S)) )

    ``log(1 - p_t)`` is computed as ``logsumexp(non-target z / T) - logsumexp(z / T)``, exact and
    finite even when ``p_t`` rounds to 1. Teacher logits are detached. ``reduction`` as in
    :func:`kd_loss`.
    """
    temperature = _check_temperature(temperature)
    _check_reduction(reduction)
    s, t = _check_logit_pair(logits_student, logits_teacher)
    _require_two_classes(s, "tckd")
    target = _check_target(target, s)
    return _reduce(_tckd_per_sample(s, t, target, temperature) * temperature**2, reduction)


def nckd(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """Non-target-class KD (DKD, Zhao et al. 2022, Sec. 3.1): ``T**2 * KL(p_hat^T || p_hat^S)``.

    ``p_hat`` is the softmax at temperature ``T`` over the ``C - 1`` non-target logits only
    (the target class removed, not masked), so::

        NCKD = T**2 * sum_{i != t} p_hat_i^T * (log p_hat_i^T - log p_hat_i^S)

    With ``C == 2`` there is a single non-target class, ``p_hat == [1]`` and NCKD is exactly 0.
    Teacher logits are detached. ``reduction`` as in :func:`kd_loss`.
    """
    temperature = _check_temperature(temperature)
    _check_reduction(reduction)
    s, t = _check_logit_pair(logits_student, logits_teacher)
    _require_two_classes(s, "nckd")
    target = _check_target(target, s)
    return _reduce(_nckd_per_sample(s, t, target, temperature) * temperature**2, reduction)


def dkd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022, Sec. 3.2): ``alpha * TCKD + beta * NCKD``.

    Both parts carry the ``T**2`` factor and are averaged over the batch (``reduction="mean"``;
    ``"sum"``/``"none"`` as in :func:`kd_loss`). Unlike classical KD, NCKD is *not* weighted by
    ``1 - p_t^T``, which is the point of the method. The paper's CIFAR-100 setting is
    ``alpha=1, beta=8, T=4`` (beta is tuned per teacher); the linear warm-up of the DKD weight
    over the first epochs belongs to the training method, not to this function.
    """
    temperature = _check_temperature(temperature)
    _check_reduction(reduction)
    s, t = _check_logit_pair(logits_student, logits_teacher)
    _require_two_classes(s, "dkd_loss")
    target = _check_target(target, s)
    per_sample = (
        alpha * _tckd_per_sample(s, t, target, temperature)
        + beta * _nckd_per_sample(s, t, target, temperature)
    ) * temperature**2
    return _reduce(per_sample, reduction)


def kd_decomposition(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """Per-sample parts of ``KD = TCKD + (1 - p_t^T) * NCKD`` (DKD, Zhao et al. 2022, Sec. 3.1).

    Returns a dict of ``[B]`` tensors:

    - ``kd``, ``tckd``, ``nckd``: the three losses per sample, each times ``T**2``;
    - ``pt_teacher``, ``pt_student``: ``p_t`` of teacher and student at temperature ``T``.

    so that ``kd == tckd + (1 - pt_teacher) * nckd`` holds per sample up to rounding. Values keep
    their graph to the student logits (teacher detached); wrap the call in ``torch.no_grad()``
    when the results are only plotted or logged.
    """
    temperature = _check_temperature(temperature)
    s, t = _check_logit_pair(logits_student, logits_teacher)
    _require_two_classes(s, "kd_decomposition")
    target = _check_target(target, s)
    scale = temperature**2
    log_p_s = F.log_softmax(s / temperature, dim=1)
    log_p_t = F.log_softmax(t / temperature, dim=1)
    idx = target.unsqueeze(1)
    return {
        "kd": _kl_from_log_probs(log_p_t, log_p_s) * scale,
        "tckd": _tckd_per_sample(s, t, target, temperature) * scale,
        "nckd": _nckd_per_sample(s, t, target, temperature) * scale,
        "pt_teacher": log_p_t.gather(1, idx).squeeze(1).exp(),
        "pt_student": log_p_s.gather(1, idx).squeeze(1).exp(),
    }


def true_class_confidence(
    logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Per-sample true-class probability ``p_t = softmax(z / T)_t`` (DKD notation), shape ``[B]``.

    The quantity that couples NCKD to the teacher's confidence in classical KD (the weight
    ``1 - p_t^T``). Keeps the graph of ``logits``; call under ``torch.no_grad()`` for plots.
    """
    temperature = _check_temperature(temperature)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must have shape [batch, num_classes], got {shape}")
    z = logits.to(_float_dtype(logits))
    target = _check_target(target, z)
    log_p = F.log_softmax(z / temperature, dim=1)
    return log_p.gather(1, target.unsqueeze(1)).squeeze(1).exp()


def feature_kd_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    cos_weight: float = DEFAULT_FEATURE_COS_WEIGHT,
    reduction: str = "mean",
) -> torch.Tensor:
    """Feature KD (FitNets-style hint loss, Romero et al. 2015) as in the CIFAR-10 capacity study.

    For every tapped stage boundary ``l`` with (already 1x1-projected) student map ``F_S^l`` and
    teacher map ``F_T^l`` of equal channel count::

        L_feat = sum_l [ MSE(F_S^l, F_T^l)
                         + cos_weight * (1 - cos(GAP(F_S^l), GAP(F_T^l))) ]

    - MSE is the mean squared error over channels and positions (per sample, then reduced over
      the batch). When spatial sizes differ, the larger map is adaptive-average-pooled to the
      smaller size (per axis) before the MSE.
    - ``GAP`` is global average pooling to a ``[B, C]`` vector; ``cos`` is the cosine similarity
      per sample (``F.cosine_similarity``, eps 1e-8).
    - ``cos_weight`` defaults to 0.5 (:data:`DEFAULT_FEATURE_COS_WEIGHT`), the study's
      ``feat_beta`` (``L_mse + 0.5 * L_cos``). This project *sums* over boundaries; the study
      averages over its four ResNet stages, i.e. its value is ours divided by the number of
      boundaries.

    Args:
        student_feats, teacher_feats: equal-length lists/tuples of ``[B, C, H, W]`` maps (or
            ``[B, C]`` vectors, then no pooling is needed). Batch and channel sizes must match
            pairwise. Teacher features are detached inside.
        cos_weight: weight of the cosine term (``>= 0``; 0 gives pure MSE hints).
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` for a ``[B]`` vector.
    """
    _check_reduction(reduction)
    if not isinstance(cos_weight, numbers.Real) or isinstance(cos_weight, bool):
        raise TypeError(f"cos_weight must be a real number, got {type(cos_weight).__name__}")
    cos_weight = float(cos_weight)
    if not math.isfinite(cos_weight) or cos_weight < 0:
        raise ValueError(f"cos_weight must be finite and >= 0, got {cos_weight!r}")
    for name, feats in (("student_feats", student_feats), ("teacher_feats", teacher_feats)):
        if not isinstance(feats, (list, tuple)):
            raise TypeError(
                f"{name} must be a list or tuple of tensors (one per stage boundary), "
                f"got {type(feats).__name__}"
            )
    if len(student_feats) != len(teacher_feats):
        raise ValueError(
            f"student_feats and teacher_feats must have the same length (one tensor per stage "
            f"boundary), got {len(student_feats)} and {len(teacher_feats)}: student shapes "
            f"{_shapes(student_feats)}, teacher shapes {_shapes(teacher_feats)}"
        )
    if len(student_feats) == 0:
        raise ValueError("feature_kd_loss needs at least one stage boundary, got empty lists")

    total = None
    for i, (fs, ft) in enumerate(zip(student_feats, teacher_feats, strict=True)):
        fs, ft = _check_feature_pair(i, fs, ft)
        if fs.dim() == 4:
            size = (min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3]))
            fs_m = fs if tuple(fs.shape[2:]) == size else F.adaptive_avg_pool2d(fs, size)
            ft_m = ft if tuple(ft.shape[2:]) == size else F.adaptive_avg_pool2d(ft, size)
            vs, vt = fs.mean(dim=(2, 3)), ft.mean(dim=(2, 3))
        else:
            fs_m, ft_m, vs, vt = fs, ft, fs, ft
        mse = (fs_m - ft_m).pow(2).flatten(1).mean(dim=1)
        term = mse
        if cos_weight != 0:
            term = term + cos_weight * (1.0 - F.cosine_similarity(vs, vt, dim=1, eps=1e-8))
        total = term if total is None else total + term
    return _reduce(total, reduction)


def _shapes(feats: Sequence[torch.Tensor]) -> list:
    return [tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__ for f in feats]


def _check_feature_pair(i: int, fs: torch.Tensor, ft: torch.Tensor):
    if not isinstance(fs, torch.Tensor) or not isinstance(ft, torch.Tensor):
        raise TypeError(
            f"feature pair {i}: expected tensors, got {type(fs).__name__} and {type(ft).__name__}"
        )
    if fs.dim() != ft.dim() or fs.dim() not in (2, 4):
        raise ValueError(
            f"feature pair {i}: expected two [B, C, H, W] maps (or two [B, C] vectors), got "
            f"student {tuple(fs.shape)} and teacher {tuple(ft.shape)}"
        )
    if fs.shape[:2] != ft.shape[:2]:
        raise ValueError(
            f"feature pair {i}: batch and channel sizes must match (project the student with a "
            f"1x1 conv first), got student {tuple(fs.shape)} and teacher {tuple(ft.shape)}"
        )
    if fs.dim() == 4 and 0 in fs.shape[2:] + ft.shape[2:]:
        raise ValueError(
            f"feature pair {i}: empty spatial size, got student {tuple(fs.shape)} and teacher "
            f"{tuple(ft.shape)}"
        )
    dtype = _float_dtype(fs, ft)
    return fs.to(dtype), ft.detach().to(dtype)
