"""Tests for dfpt_core.losses: golden values, independent references, properties, numerics, errors.

Golden values live in tests/fixtures/losses_golden.json. After an *intended* change of a loss,
regenerate them with

    DFPT_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_losses.py -k golden

(the golden test then rewrites the file and skips) and review the diff before committing.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dfpt_core.losses import (
    DEFAULT_FEATURE_COS_WEIGHT,
    dkd_loss,
    feature_kd_loss,
    kd_decomposition,
    kd_loss,
    nckd,
    tckd,
    true_class_confidence,
)

GOLDEN_PATH = Path(__file__).parent / "fixtures" / "losses_golden.json"
REGEN = os.environ.get("DFPT_REGEN_GOLDEN") == "1"

CLASS_COUNTS = (2, 3, 10, 100)
TEMPERATURES = (1.0, 2.0, 4.0, 8.0)


# ------------------------------------------------------------------------------------------
# input generators (seeded, tiny)
# ------------------------------------------------------------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_logits(seed, batch, num_classes, scale=3.0, dtype=torch.float32):
    """Student logits, teacher logits, targets: independent Gaussian logits."""
    g = _gen(seed)
    s = torch.randn(batch, num_classes, generator=g, dtype=torch.float64) * scale
    t = torch.randn(batch, num_classes, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, num_classes, (batch,), generator=g)
    return s.to(dtype), t.to(dtype), y


def realistic_logits(seed, batch, num_classes, dtype=torch.float32):
    """Logits shaped like a trained teacher and a weaker student.

    The teacher puts a clear margin on the (mostly correct) label and has structured non-target
    logits; the student is a noisier, less confident copy. Some samples are misclassified.
    """
    g = _gen(seed)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    shared = torch.randn(batch, num_classes, generator=g, dtype=torch.float64) * 1.5
    margin = 2.0 + 8.0 * torch.rand(batch, generator=g, dtype=torch.float64)
    t = shared.clone()
    t[torch.arange(batch), y] += margin
    s = 0.6 * shared + torch.randn(batch, num_classes, generator=g, dtype=torch.float64)
    s[torch.arange(batch), y] += 0.5 * margin - 1.0
    return s.to(dtype), t.to(dtype), y


def random_features(seed, shapes_s, shapes_t, dtype=torch.float64):
    g = _gen(seed)
    fs = [torch.randn(*sh, generator=g, dtype=torch.float64).to(dtype) for sh in shapes_s]
    ft = [torch.randn(*sh, generator=g, dtype=torch.float64).to(dtype) for sh in shapes_t]
    return fs, ft


# ------------------------------------------------------------------------------------------
# independent references (float64, written the way the papers write the formulas)
# ------------------------------------------------------------------------------------------
def _kl_prob(p, q):
    """sum_i p_i log(p_i / q_i) per row, in probability space (moderate inputs only)."""
    return (p * (p / q).log()).sum(dim=1)


def ref_kd_f64(s, t, temperature):
    """Hinton KD per sample, manual softmax (exp / sum), float64."""
    s, t = s.double() / temperature, t.double() / temperature
    ps = (s - s.max(1, keepdim=True).values).exp()
    ps = ps / ps.sum(1, keepdim=True)
    pt = (t - t.max(1, keepdim=True).values).exp()
    pt = pt / pt.sum(1, keepdim=True)
    return _kl_prob(pt, ps) * temperature**2


def ref_dkd_parts_f64(s, t, y, temperature):
    """TCKD, NCKD, p_t^T per sample from the paper's definitions in probability space."""
    ps = torch.softmax(s.double() / temperature, dim=1)
    pt = torch.softmax(t.double() / temperature, dim=1)
    idx = y.unsqueeze(1)
    pts, ptt = ps.gather(1, idx), pt.gather(1, idx)
    bs, bt = torch.cat([pts, 1 - pts], 1), torch.cat([ptt, 1 - ptt], 1)
    keep = torch.ones_like(ps, dtype=torch.bool).scatter_(1, idx, False)
    n, c = ps.shape
    hs = ps[keep].view(n, c - 1) / (1 - pts)  # p_hat_i = p_i / (1 - p_t)
    ht = pt[keep].view(n, c - 1) / (1 - ptt)
    scale = temperature**2
    return _kl_prob(bt, bs) * scale, _kl_prob(ht, hs) * scale, ptt.squeeze(1)


def ref_dkd_parts_logspace_f64(s, t, y, temperature):
    """Same quantities via a different log-space route, valid at extreme confidence.

    log(1 - p_t) = logsumexp of the non-target *log-probabilities*; log p_hat = log p - log(1-p_t).
    """

    def parts(z):
        logp = torch.log_softmax(z.double() / temperature, dim=1)
        is_t = F.one_hot(y, z.shape[1]).bool()
        log_pt = logp.gather(1, y.unsqueeze(1)).squeeze(1)
        log_not = torch.logsumexp(logp.masked_fill(is_t, -math.inf), dim=1)
        log_hat = (logp - log_not.unsqueeze(1))[~is_t].view(z.shape[0], -1)
        return logp, torch.stack([log_pt, log_not], 1), log_hat

    def kl(lp, lq):
        return (lp.exp() * (lp - lq)).sum(1)

    lp_s, lb_s, lh_s = parts(s)
    lp_t, lb_t, lh_t = parts(t)
    scale = temperature**2
    return {
        "kd": kl(lp_t, lp_s) * scale,
        "tckd": kl(lb_t, lb_s) * scale,
        "nckd": kl(lh_t, lh_s) * scale,
    }


def ref_feature_kd(fs_list, ft_list, cos_weight):
    """Per-sample feature KD with avg_pool2d by an integer factor (test shapes are multiples)."""
    total = 0.0
    for fs, ft in zip(fs_list, ft_list, strict=True):
        fs, ft = fs.double(), ft.double()
        if fs.dim() == 4:
            h, w = min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3])
            fs_p = F.avg_pool2d(fs, (fs.shape[2] // h, fs.shape[3] // w))
            ft_p = F.avg_pool2d(ft, (ft.shape[2] // h, ft.shape[3] // w))
            vs, vt = fs.mean((2, 3)), ft.mean((2, 3))
        else:
            fs_p, ft_p, vs, vt = fs, ft, fs, ft
        mse = ((fs_p - ft_p) ** 2).flatten(1).mean(1)
        cos = (vs * vt).sum(1) / (vs.norm(dim=1) * vt.norm(dim=1))
        total = total + mse + cos_weight * (1 - cos)
    return total


# ------------------------------------------------------------------------------------------
# golden values
# ------------------------------------------------------------------------------------------
FEATURE_SHAPES_S = [(2, 3, 4, 4), (2, 5, 2, 2)]
FEATURE_SHAPES_T = [(2, 3, 8, 8), (2, 5, 2, 2)]


def _golden_cases():
    cases = {}
    for name, (seed, batch, classes) in {"b4_c5": (11, 4, 5), "b3_c10": (12, 3, 10)}.items():
        s, t, y = random_logits(seed, batch, classes, dtype=torch.float64)
        cases[name] = {
            "fingerprint": {"student_sum": float(s.sum()), "teacher_sum": float(t.sum())},
            "target": y.tolist(),
            "kd_T1": kd_loss(s, t, 1.0, reduction="none").tolist(),
            "kd_T4": kd_loss(s, t, 4.0, reduction="none").tolist(),
            "tckd_T4": tckd(s, t, y, 4.0, reduction="none").tolist(),
            "nckd_T4": nckd(s, t, y, 4.0, reduction="none").tolist(),
            "dkd_a1_b8_T4": [float(dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0))],
        }
    fs, ft = random_features(13, FEATURE_SHAPES_S, FEATURE_SHAPES_T)
    cases["feature_kd"] = {
        "fingerprint": {
            "student_sum": float(sum(f.sum() for f in fs)),
            "teacher_sum": float(sum(f.sum() for f in ft)),
        },
        "default_cos_weight": feature_kd_loss(fs, ft, reduction="none").tolist(),
        "cos_weight_0": feature_kd_loss(fs, ft, cos_weight=0.0, reduction="none").tolist(),
        "cos_weight_1": feature_kd_loss(fs, ft, cos_weight=1.0, reduction="none").tolist(),
    }
    return cases


def test_golden_values():
    computed = _golden_cases()
    if REGEN:
        GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "_about": "Golden values for tests/test_losses.py (float64 inputs from seeded "
            "torch.Generator). Regenerate: DFPT_REGEN_GOLDEN=1 pytest tests/test_losses.py "
            "-k golden",
            "torch_version": torch.__version__,
            "cases": computed,
        }
        GOLDEN_PATH.write_text(json.dumps(payload, indent=1) + "\n")
        pytest.skip(f"regenerated {GOLDEN_PATH}; rerun without DFPT_REGEN_GOLDEN to compare")
    golden = json.loads(GOLDEN_PATH.read_text())["cases"]
    assert set(golden) == set(computed)
    for case, values in golden.items():
        # a fingerprint mismatch means torch's RNG stream changed, not the losses
        same_inputs = computed[case]["fingerprint"] == pytest.approx(
            values["fingerprint"], rel=1e-12
        ) and computed[case].get("target") == values.get("target")
        assert same_inputs, f"{case}: generated inputs differ from those of the golden file"
        assert set(values) == set(computed[case])
        for key, expected in values.items():
            if key in ("fingerprint", "target"):
                continue
            assert computed[case][key] == pytest.approx(expected, rel=1e-6, abs=1e-12), (
                f"{case}/{key}"
            )


def test_golden_file_covers_requested_values():
    golden = json.loads(GOLDEN_PATH.read_text())["cases"]
    for case in ("b4_c5", "b3_c10"):
        assert {"kd_T1", "kd_T4", "tckd_T4", "nckd_T4", "dkd_a1_b8_T4"} <= set(golden[case])
        assert all(v > 0 for v in golden[case]["kd_T4"])
    assert all(v > 0 for v in golden["feature_kd"]["default_cos_weight"])


# ------------------------------------------------------------------------------------------
# independent references
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_kd_matches_batchmean_kl_div_and_manual_f64(num_classes, temperature):
    s, t, _ = random_logits(100 + num_classes, 16, num_classes)
    ours = kd_loss(s, t, temperature)
    batchmean = (
        F.kl_div(
            F.log_softmax(s / temperature, dim=1),
            F.softmax(t / temperature, dim=1),
            reduction="batchmean",
        )
        * temperature**2
    )
    manual = ref_kd_f64(s, t, temperature).mean()
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(batchmean.item(), rel=1e-5, abs=1e-6)
    assert ours.item() == pytest.approx(manual.item(), rel=1e-5, abs=1e-6)
    ours64 = kd_loss(s.double(), t.double(), temperature)
    assert ours64.item() == pytest.approx(manual.item(), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_tckd_nckd_dkd_match_paper_definitions_f64(num_classes, temperature):
    s, t, y = realistic_logits(200 + num_classes, 16, num_classes, dtype=torch.float64)
    ref_tckd, ref_nckd, _ = ref_dkd_parts_f64(s, t, y, temperature)
    torch.testing.assert_close(tckd(s, t, y, temperature, reduction="none"), ref_tckd)
    torch.testing.assert_close(nckd(s, t, y, temperature, reduction="none"), ref_nckd)
    expected_dkd = (1.0 * ref_tckd + 8.0 * ref_nckd).mean()
    torch.testing.assert_close(dkd_loss(s, t, y, 1.0, 8.0, temperature), expected_dkd)


def test_kd_is_not_nn_kldivloss_default():
    """nn.KLDivLoss() averages over B*C; ours is batchmean, i.e. C times larger at T=1."""
    s, t, _ = random_logits(3, 8, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about 'mean' itself
        buggy = torch.nn.KLDivLoss()(F.log_softmax(s, 1), F.softmax(t, 1))
    torch.testing.assert_close(kd_loss(s, t, 1.0), buggy * 10)


def test_kd_gradient_is_T_times_prob_difference_over_batch():
    """d/dz_S [T^2 * mean_b KL] = T * (p_S - p_T) / B: the reason for the T^2 factor."""
    s, t, _ = random_logits(4, 6, 7, dtype=torch.float64)
    s.requires_grad_(True)
    temperature = 3.0
    kd_loss(s, t, temperature).backward()
    expected = (
        temperature
        * (torch.softmax(s.detach() / temperature, 1) - torch.softmax(t / temperature, 1))
        / 6
    )
    torch.testing.assert_close(s.grad, expected)


def test_feature_kd_matches_reference_pooling_both_directions():
    # teacher larger (8x8 -> 4x4), student larger (8x8 -> 2x2), mixed axes, and [B, C] vectors
    shapes_s = [(3, 4, 4, 4), (3, 2, 8, 8), (3, 5, 8, 2), (3, 6)]
    shapes_t = [(3, 4, 8, 8), (3, 2, 2, 2), (3, 5, 4, 4), (3, 6)]
    fs, ft = random_features(21, shapes_s, shapes_t)
    for w in (0.0, 0.5, 2.0):
        torch.testing.assert_close(
            feature_kd_loss(fs, ft, cos_weight=w, reduction="none"), ref_feature_kd(fs, ft, w)
        )


def test_feature_kd_sums_over_boundaries_and_is_linear_in_cos_weight():
    fs, ft = random_features(22, FEATURE_SHAPES_S, FEATURE_SHAPES_T)
    whole = feature_kd_loss(fs, ft, cos_weight=0.7)
    parts = feature_kd_loss(fs[:1], ft[:1], cos_weight=0.7) + feature_kd_loss(
        fs[1:], ft[1:], cos_weight=0.7
    )
    torch.testing.assert_close(whole, parts)
    l0, l1, l3 = (feature_kd_loss(fs, ft, cos_weight=w) for w in (0.0, 1.0, 3.0))
    assert (l1 - l0).item() > 0
    torch.testing.assert_close(l3 - l0, 3 * (l1 - l0))
    assert feature_kd_loss(fs, ft).item() == pytest.approx(
        (l0 + DEFAULT_FEATURE_COS_WEIGHT * (l1 - l0)).item(), rel=1e-12
    )
    # the cosine term is scale invariant, the MSE term is not
    scaled = [2 * f for f in fs]
    c_plain = feature_kd_loss(fs, ft, cos_weight=1.0) - feature_kd_loss(fs, ft, cos_weight=0.0)
    c_scaled = feature_kd_loss(scaled, ft, cos_weight=1.0) - feature_kd_loss(
        scaled, ft, cos_weight=0.0
    )
    torch.testing.assert_close(c_plain, c_scaled)


# ------------------------------------------------------------------------------------------
# the decomposition KD = TCKD + (1 - p_t^T) * NCKD
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "realistic"])
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_kd_decomposition_identity(num_classes, temperature, kind):
    make = random_logits if kind == "random" else realistic_logits
    for seed in range(8):
        s64, t64, y = make(1000 * num_classes + seed, 32, num_classes, dtype=torch.float64)
        # float64: the identity is exact up to rounding
        d = kd_decomposition(s64, t64, y, temperature)
        rhs = d["tckd"] + (1 - d["pt_teacher"]) * d["nckd"]
        torch.testing.assert_close(d["kd"], rhs, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(d["kd"], kd_loss(s64, t64, temperature, reduction="none"))
        # float32: 1e-5 on the KL itself (the T^2 factor scales float32 rounding by up to 64)
        s32, t32 = s64.float(), t64.float()
        d32 = kd_decomposition(s32, t32, y, temperature)
        rhs32 = d32["tckd"] + (1 - d32["pt_teacher"]) * d32["nckd"]
        scale = temperature**2
        torch.testing.assert_close(d32["kd"] / scale, rhs32 / scale, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d32["kd"], d["kd"].float(), rtol=1e-4, atol=1e-5 * scale)


def test_kd_decomposition_fields_and_confidences():
    s, t, y = realistic_logits(7, 5, 6)
    d = kd_decomposition(s, t, y, 4.0)
    assert set(d) == {"kd", "tckd", "nckd", "pt_teacher", "pt_student"}
    assert all(v.shape == (5,) for v in d.values())
    torch.testing.assert_close(d["pt_teacher"], torch.softmax(t / 4, 1)[torch.arange(5), y])
    torch.testing.assert_close(d["pt_student"], true_class_confidence(s, y, 4.0))
    torch.testing.assert_close(d["tckd"], tckd(s, t, y, 4.0, reduction="none"))
    torch.testing.assert_close(d["nckd"], nckd(s, t, y, 4.0, reduction="none"))


def test_true_class_confidence():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 100.0, 0.0, 0.0]])
    y = torch.tensor([3, 0, 1])
    p = true_class_confidence(logits, y)
    e2 = math.exp(2)
    torch.testing.assert_close(p, torch.tensor([0.25, e2 / (e2 + 3), 1.0]))
    # higher temperature flattens towards 1/C
    p8 = true_class_confidence(logits, y, temperature=8.0)
    assert p8[0] == pytest.approx(0.25)
    assert 0.25 < p8[1] < p[1]
    # graph kept for the student
    z = logits.clone().requires_grad_(True)
    true_class_confidence(z, y).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_zero_when_student_equals_teacher(num_classes):
    s, _, y = random_logits(31, 8, num_classes)
    for temperature in TEMPERATURES:
        assert kd_loss(s, s.clone(), temperature).item() == 0.0
        assert tckd(s, s.clone(), y, temperature).item() == 0.0
        assert nckd(s, s.clone(), y, temperature).item() == 0.0
        assert dkd_loss(s, s.clone(), y, 1.0, 8.0, temperature).item() == 0.0
    fs, _ = random_features(32, FEATURE_SHAPES_S, FEATURE_SHAPES_S, dtype=torch.float32)
    value = feature_kd_loss(fs, [f.clone() for f in fs], cos_weight=1.0)
    assert abs(value.item()) < 1e-6


@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_non_negative_on_random_inputs(num_classes):
    # KL >= 0. In float32 a near-zero per-sample KL can round to about -1e-7 (before the T^2
    # factor): log-probs of logits ~10 carry ~1e-6 absolute error. Allow that, far below any
    # real value (a sign or direction bug gives O(1) negatives); float64 must be clean.
    for seed in range(10):
        s, t, y = random_logits(seed, 16, num_classes)
        for temperature in (1.0, 4.0):
            tol = -1e-6 * temperature**2
            assert (kd_loss(s, t, temperature, reduction="none") >= tol).all()
            assert (tckd(s, t, y, temperature, reduction="none") >= tol).all()
            assert (nckd(s, t, y, temperature, reduction="none") >= tol).all()
            assert dkd_loss(s, t, y, 1.0, 8.0, temperature) > 0
        s64, t64 = s.double(), t.double()
        assert (kd_loss(s64, t64, 4.0, reduction="none") >= -1e-15).all()
        assert (tckd(s64, t64, y, 4.0, reduction="none") >= -1e-15).all()
        assert (nckd(s64, t64, y, 4.0, reduction="none") >= -1e-15).all()
        assert kd_loss(s, t, 4.0) > 0
        fs, ft = random_features(seed, FEATURE_SHAPES_S, FEATURE_SHAPES_T, dtype=torch.float32)
        assert (feature_kd_loss(fs, ft, reduction="none") > 0).all()


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_temperature_squared_convention(temperature):
    s, t, y = random_logits(41, 8, 10, dtype=torch.float64)
    unscaled = (
        F.kl_div(
            F.log_softmax(s / temperature, 1),
            F.log_softmax(t / temperature, 1),
            reduction="sum",
            log_target=True,
        )
        / s.shape[0]
    )  # summed over classes, averaged over the batch, no T^2
    torch.testing.assert_close(kd_loss(s, t, temperature), temperature**2 * unscaled)
    # tckd/nckd scale the same way: compare against T=1 definitions on pre-divided logits
    st, tt = s / temperature, t / temperature
    torch.testing.assert_close(tckd(s, t, y, temperature), temperature**2 * tckd(st, tt, y, 1.0))
    torch.testing.assert_close(nckd(s, t, y, temperature), temperature**2 * nckd(st, tt, y, 1.0))
    torch.testing.assert_close(
        dkd_loss(s, t, y, 2.0, 3.0, temperature),
        temperature**2 * dkd_loss(st, tt, y, 2.0, 3.0, 1.0),
    )


def test_reductions_are_consistent():
    s, t, y = random_logits(51, 6, 5)
    fs, ft = random_features(52, FEATURE_SHAPES_S, FEATURE_SHAPES_T)
    calls = [
        lambda r: kd_loss(s, t, 2.0, reduction=r),
        lambda r: tckd(s, t, y, 2.0, reduction=r),
        lambda r: nckd(s, t, y, 2.0, reduction=r),
        lambda r: dkd_loss(s, t, y, 1.0, 8.0, 2.0, reduction=r),
        lambda r: feature_kd_loss(fs, ft, reduction=r),
    ]
    for call in calls:
        per_sample = call("none")
        assert per_sample.dim() == 1 and per_sample.shape[0] in (6, 2)
        torch.testing.assert_close(call("mean"), per_sample.mean())
        torch.testing.assert_close(call("sum"), per_sample.sum())
    torch.testing.assert_close(
        dkd_loss(s, t, y, 1.5, 8.0, 2.0, reduction="none"),
        1.5 * tckd(s, t, y, 2.0, reduction="none") + 8.0 * nckd(s, t, y, 2.0, reduction="none"),
    )


def test_two_classes_nckd_is_exactly_zero():
    s, t, y = random_logits(61, 16, 2)
    assert (nckd(s, t, y, 4.0, reduction="none") == 0).all()
    d = kd_decomposition(s, t, y, 4.0)
    assert (d["nckd"] == 0).all()
    torch.testing.assert_close(d["kd"], d["tckd"])  # binary KD is all target-class knowledge
    torch.testing.assert_close(dkd_loss(s, t, y, 1.0, 8.0, 4.0), tckd(s, t, y, 4.0))
    s.requires_grad_(True)
    dkd_loss(s, t, y, 1.0, 8.0, 4.0).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "loss",
    ["kd", "tckd", "nckd", "dkd"],
)
def test_gradients_reach_student_only(loss):
    s, t, y = random_logits(71, 8, 10)
    s.requires_grad_(True)
    t.requires_grad_(True)
    fn = {
        "kd": lambda a, b: kd_loss(a, b, 4.0),
        "tckd": lambda a, b: tckd(a, b, y, 4.0),
        "nckd": lambda a, b: nckd(a, b, y, 4.0),
        "dkd": lambda a, b: dkd_loss(a, b, y, 1.0, 8.0, 4.0),
    }[loss]
    fn(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    # with only the teacher requiring grad there is no graph at all
    assert not fn(s.detach(), t).requires_grad


def test_feature_kd_gradients_reach_student_only():
    fs, ft = random_features(72, FEATURE_SHAPES_S, FEATURE_SHAPES_T, dtype=torch.float32)
    for f in fs + ft:
        f.requires_grad_(True)
    feature_kd_loss(fs, ft).backward()
    assert all(f.grad is None for f in ft)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fs)
    assert not feature_kd_loss([f.detach() for f in fs], ft).requires_grad
    # a dead (all-zero) student feature still gives finite gradients
    zero = [torch.zeros(2, 3, 4, 4, requires_grad=True)]
    feature_kd_loss(zero, [torch.randn(2, 3, 4, 4)]).backward()
    assert torch.isfinite(zero[0].grad).all()


def test_gradcheck_float64():
    s, t, y = realistic_logits(81, 3, 4, dtype=torch.float64)
    s.requires_grad_(True)
    for fn in (
        lambda a: kd_loss(a, t, 2.0),
        lambda a: tckd(a, t, y, 2.0),
        lambda a: nckd(a, t, y, 2.0),
        lambda a: dkd_loss(a, t, y, 1.0, 8.0, 2.0),
    ):
        assert torch.autograd.gradcheck(fn, (s,))
    fs, ft = random_features(82, [(2, 3, 4, 4)], [(2, 3, 2, 2)])
    fs[0].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: feature_kd_loss([a], ft), (fs[0],))


def test_half_precision_inputs_are_computed_in_float32():
    s, t, y = random_logits(91, 8, 10)
    for dtype in (torch.float16, torch.bfloat16):
        out = kd_loss(s.to(dtype), t.to(dtype), 4.0)
        assert out.dtype == torch.float32
        ref = kd_loss(s.to(dtype).float(), t.to(dtype).float(), 4.0)
        torch.testing.assert_close(out, ref)
        assert torch.isfinite(dkd_loss(s.to(dtype), t.to(dtype), y, 1.0, 8.0, 4.0))
    # mixed student float32 / teacher float16 works and promotes to float32
    assert kd_loss(s, t.half(), 4.0).dtype == torch.float32


# ------------------------------------------------------------------------------------------
# extreme confidence (float32)
# ------------------------------------------------------------------------------------------
def _extreme_logits(scenario, margin, num_classes, seed=0):
    g = _gen(seed)
    batch = 6
    y = torch.randint(0, num_classes, (batch,), generator=g)
    s = torch.randn(batch, num_classes, generator=g)
    t = torch.randn(batch, num_classes, generator=g)
    rows = torch.arange(batch)
    if scenario in ("both", "teacher"):
        t[rows, y] += margin
    if scenario in ("both", "student"):
        s[rows, y] += margin
    if scenario == "student_wrong":  # student extremely sure of another class
        t[rows, y] += margin
        s[rows, (y + 1) % num_classes] += margin
    return s, t, y


def _all_losses(s, t, y, temperature):
    d = kd_decomposition(s, t, y, temperature)
    return {
        "kd": kd_loss(s, t, temperature),
        "tckd": tckd(s, t, y, temperature),
        "nckd": nckd(s, t, y, temperature),
        "dkd": dkd_loss(s, t, y, 1.0, 8.0, temperature),
        "decomposition": torch.stack([d["kd"], d["tckd"], d["nckd"]]).sum(),
    }


def _assert_finite_values_and_grads(loss_fn, s, t, y, temperature):
    for name in _all_losses(s, t, y, temperature):
        z = s.clone().requires_grad_(True)
        value = loss_fn(z, t, y, temperature)[name]
        assert torch.isfinite(value), f"{name} value {value} at T={temperature}"
        value.backward()
        assert torch.isfinite(z.grad).all(), f"{name} gradient at T={temperature}"


@pytest.mark.parametrize("scenario", ["both", "teacher", "student", "student_wrong"])
@pytest.mark.parametrize("margin", [50.0, 1e3])
@pytest.mark.parametrize("num_classes", CLASS_COUNTS)
def test_extreme_confidence_is_finite_and_accurate(num_classes, margin, scenario):
    s, t, y = _extreme_logits(scenario, margin, num_classes)
    for temperature in TEMPERATURES:
        _assert_finite_values_and_grads(_all_losses, s, t, y, temperature)
        ours = kd_decomposition(s, t, y, temperature)
        ref = ref_dkd_parts_logspace_f64(s, t, y, temperature)
        for key in ("kd", "tckd", "nckd"):
            # the reference is float64 on the same float32 inputs: agreement up to float32
            # rounding of logits of size ~margin/T
            torch.testing.assert_close(
                ours[key].double(), ref[key], rtol=1e-4, atol=1e-4 * temperature**2
            )
        rhs = ours["tckd"] + (1 - ours["pt_teacher"]) * ours["nckd"]
        torch.testing.assert_close(ours["kd"], rhs, rtol=1e-5, atol=1e-5 * temperature**2)
        if num_classes == 2:
            assert (ours["nckd"] == 0).all()


def test_extreme_confidence_closed_form_tckd():
    """Teacher at +m on the target, all else 0; student uniform: TCKD in closed form."""
    for num_classes in CLASS_COUNTS:
        for m in (50.0, 1e3):
            for temperature in TEMPERATURES:
                t = torch.zeros(1, num_classes)
                t[0, 0] = m
                s = torch.zeros(1, num_classes)
                y = torch.tensor([0])
                a = m / temperature
                log_norm = torch.logaddexp(
                    torch.tensor(a, dtype=torch.float64),
                    torch.tensor(math.log(num_classes - 1), dtype=torch.float64),
                )
                log_pt, log_not = a - log_norm, math.log(num_classes - 1) - log_norm
                pt = log_pt.exp()
                expected = temperature**2 * (
                    pt * (log_pt - math.log(1 / num_classes))
                    + (1 - pt) * (log_not - math.log((num_classes - 1) / num_classes))
                )
                got = tckd(s, t, y, temperature)
                assert got.item() == pytest.approx(expected.item(), rel=1e-5)
                # NCKD: identical non-target logits on both sides -> exactly zero
                assert nckd(s, t, y, temperature).item() == 0.0


def test_extreme_check_detects_naive_probability_space_dkd():
    """Guard on the guard: the finiteness check above fails for the textbook formulation."""

    def naive(s, t, y, temperature):
        ps, pt = torch.softmax(s / temperature, 1), torch.softmax(t / temperature, 1)
        idx = y.unsqueeze(1)
        bs = torch.cat([ps.gather(1, idx), 1 - ps.gather(1, idx)], 1)
        bt = torch.cat([pt.gather(1, idx), 1 - pt.gather(1, idx)], 1)
        return {"tckd": (bt * (bt.log() - bs.log())).sum(1).mean() * temperature**2}

    s, t, y = _extreme_logits("both", 1e3, 10)
    z = s.clone().requires_grad_(True)
    value = naive(z, t, y, 1.0)["tckd"]
    value.backward()
    assert not (torch.isfinite(value) and torch.isfinite(z.grad).all())


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
S, T_, Y = random_logits(99, 4, 5)


@pytest.mark.parametrize(
    "bad", [0, 0.0, -1.0, float("nan"), float("inf"), torch.tensor([1.0, 2.0])]
)
def test_bad_temperature(bad):
    for call in (
        lambda: kd_loss(S, T_, bad),
        lambda: tckd(S, T_, Y, bad),
        lambda: nckd(S, T_, Y, bad),
        lambda: dkd_loss(S, T_, Y, 1.0, 8.0, bad),
        lambda: kd_decomposition(S, T_, Y, bad),
        lambda: true_class_confidence(S, Y, bad),
    ):
        with pytest.raises(ValueError, match="temperature"):
            call()


def test_temperature_wrong_type_and_tensor_scalar():
    with pytest.raises(TypeError, match="temperature"):
        kd_loss(S, T_, "4")
    torch.testing.assert_close(kd_loss(S, T_, torch.tensor(4.0)), kd_loss(S, T_, 4.0))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        kd_loss(S, torch.randn(4, 6), 4.0)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(3, 5\)"):
        dkd_loss(S, torch.randn(3, 5), Y, 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match=r"batch, num_classes.*\(4, 5, 1\)"):
        kd_loss(S.unsqueeze(-1), T_.unsqueeze(-1), 4.0)


@pytest.mark.parametrize(
    "target, exc, pattern",
    [
        (torch.tensor([0, 1, 2, 5]), ValueError, r"\[0, 4\].*\[5\]"),
        (torch.tensor([0, -1, 2, 3]), ValueError, r"out-of-range values \[-1\]"),
        (torch.tensor([0, 1, 2]), ValueError, r"\(4,\).*\(3,\)"),
        (torch.tensor([[0], [1], [2], [3]]), ValueError, r"\(4,\).*\(4, 1\)"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, "integer class indices"),
    ],
)
def test_bad_target(target, exc, pattern):
    for call in (
        lambda: tckd(S, T_, target, 4.0),
        lambda: nckd(S, T_, target, 4.0),
        lambda: dkd_loss(S, T_, target, 1.0, 8.0, 4.0),
        lambda: kd_decomposition(S, T_, target, 4.0),
        lambda: true_class_confidence(S, target),
    ):
        with pytest.raises(exc, match=pattern):
            call()


def test_single_class_and_bad_reduction():
    one = torch.randn(4, 1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(one, one, torch.zeros(4, dtype=torch.long), 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="reduction"):
        kd_loss(S, T_, 4.0, reduction="batchmean")


def test_feature_kd_errors_name_lengths_and_shapes():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"2 and 1.*\(2, 3, 4, 4\)"):
        feature_kd_loss([a, a], [b])
    with pytest.raises(ValueError, match=r"pair 0.*\(2, 3, 4, 4\).*\(2, 5, 4, 4\)"):
        feature_kd_loss([a], [torch.randn(2, 5, 4, 4)])
    with pytest.raises(ValueError, match=r"pair 1.*\(2, 3, 4, 4\).*\(3, 3, 4, 4\)"):
        feature_kd_loss([a, a], [b, torch.randn(3, 3, 4, 4)])
    with pytest.raises(ValueError, match=r"\[B, C, H, W\].*\(2, 3, 4\)"):
        feature_kd_loss([torch.randn(2, 3, 4)], [torch.randn(2, 3, 4)])
    with pytest.raises(ValueError, match="at least one"):
        feature_kd_loss([], [])
    with pytest.raises(TypeError, match="list or tuple"):
        feature_kd_loss(a, b)
    with pytest.raises(ValueError, match="cos_weight"):
        feature_kd_loss([a], [b], cos_weight=-1.0)
