"""Tests for dfpt_core.models: the zoo, its checkpoint compatibility, counts, stages, checkpoints.

Golden reference (tests/fixtures/zoo_reference.json)
----------------------------------------------------
The zoo promises parameter names and shapes identical to the public RepDistiller definitions
(HobbitLong/RepDistiller, models/resnet.py, resnetv2.py, wrn.py, vgg.py, mobilenetv2.py,
ShuffleNetv1.py, ShuffleNetv2.py), so that the published CIFAR-100 teacher checkpoints
(`torch.load(f)["model"]`) load with strict=True and give the same logits. The fixture was produced
OUTSIDE this repository, by a throw-away script that imported those seven public files unchanged
(their code is deliberately not part of this project), with RepDistiller's name mapping (vggN ->
vggN_bn, MobileNetV2 -> mobile_half(num_classes), ResNet18/34/50 -> resnetv2). For every CIFAR zoo
name (the 23 of the API contract plus ResNet34, also defined in resnetv2.py) at num_classes=100
the script
  1. built the reference model and recorded its state-dict entries in order, parameters AND
     buffers (BN running stats, num_batches_tracked), as [key, shape] ("state");
  2. replaced every entry by `fill_state` below (values derived from the entry's name only),
     switched to eval mode and ran `reference_input()` (float64 evaluation of the float32-filled
     weights), recording all 2 x 100 logits to 7 significant digits ("logits");
  3. recorded [shape, mean, mean |x|] of the reference feature taps f0..fN returned by
     `forward(x, is_feat=True)` (the features RepDistiller's Feature-KD methods read) as
     "feature_taps".
"_meta" holds the source commits and the torch version. To regenerate after an intended change
of the reference procedure, re-run such a script against the public files (never commit it); the
zoo itself must never be used to produce this fixture.

Logits are compared with rtol 1e-4 and atol 1e-5 * max(1, max |reference logit|): a deep
residual net with random weights has logits up to ~1e5, where float32 rounding alone exceeds a
fixed 1e-5. Observed float32-vs-reference errors are ~1-3 % of that tolerance.
"""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dfpt_core.models import (
    CheckpointError,
    MissingStageSpecError,
    Stages,
    StageSpec,
    count_flops,
    count_macs,
    count_params,
    create_model,
    get_stage_spec,
    list_models,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from dfpt_core.models.stages import flatten, global_avg_pool, relu

FIXTURE = Path(__file__).parent / "fixtures" / "zoo_reference.json"
REFERENCE = json.loads(FIXTURE.read_text())
REFERENCE_NAMES = [k for k in REFERENCE if not k.startswith("_")]

# The names of the public API contract (DESIGN.md).
CIFAR_ZOO = [
    *("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"),
    *("resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"),
    *("vgg8", "vgg11", "vgg13", "vgg16", "vgg19"),
    *("ResNet18", "ResNet50", "MobileNetV2", "ShuffleV1", "ShuffleV2"),
]
TV_RESNETS = ("tv_resnet18", "tv_resnet34", "tv_resnet50")
ALL_MODELS = list_models()


# ------------------------------------------------------------------------------------------
# the fixture generator's procedure (kept here so the test can repeat it)
# ------------------------------------------------------------------------------------------
def fill_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Deterministic values for every state entry, derived from its NAME (and shape) only.

    This is exactly the procedure the fixture generator applied to the reference models. Each
    entry gets its own `torch.Generator` seeded with crc32(name); values are drawn in float64 and
    cast to the entry's dtype:
      num_batches_tracked  crc32(name) % 1000
      running_var          0.5 + U(0, 1)                     (positive)
      running_mean         0.02 * N(0, 1)
      1-d "weight"         0.5 + 0.5 * U(0, 1)               (norm-layer scale)
      "bias"               0.02 * N(0, 1)
      other weights        N(0, 1) * sqrt(2 / fan_in)        (conv / linear, He scale)
    """
    out = {}
    for name, ref in state.items():
        seed = zlib.crc32(name.encode("utf-8"))
        g = torch.Generator().manual_seed(seed)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            value = torch.tensor(seed % 1000)
        elif leaf == "running_var":
            value = 0.5 + torch.rand(ref.shape, generator=g, dtype=torch.float64)
        elif leaf == "running_mean":
            value = 0.02 * torch.randn(ref.shape, generator=g, dtype=torch.float64)
        elif leaf == "weight" and ref.dim() == 1:
            value = 0.5 + 0.5 * torch.rand(ref.shape, generator=g, dtype=torch.float64)
        elif leaf == "bias":
            value = 0.02 * torch.randn(ref.shape, generator=g, dtype=torch.float64)
        else:
            fan_in = ref[0].numel()
            value = torch.randn(ref.shape, generator=g, dtype=torch.float64) * (2.0 / fan_in) ** 0.5
        out[name] = value.to(ref.dtype)
    return out


def reference_input() -> torch.Tensor:
    """The fixture's input batch: two seeded 3x32x32 Gaussian images."""
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(
        actual.double(), expected, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}"
    )


def shape_diff(expected: dict, actual: dict) -> str:
    """Readable difference of two {key: shape} maps ('' when equal)."""
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    shapes = [
        f"{k}: reference {expected[k]} vs ours {actual[k]}"
        for k in expected
        if k in actual and expected[k] != actual[k]
    ]
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if unexpected:
        parts.append(f"unexpected {unexpected}")
    return "; ".join(parts + shapes)


@pytest.fixture(scope="module", params=ALL_MODELS)
def zoo_model(request):
    """(name, model) at the defaults (100 classes, 3 channels); shared read-only per name
    (pytest groups the tests by name, so only one model is alive at a time)."""
    torch.manual_seed(0)
    return request.param, create_model(request.param)


# ------------------------------------------------------------------------------------------
# golden reference: checkpoint compatibility with the public definitions
# ------------------------------------------------------------------------------------------
def test_reference_fixture_covers_the_cifar_zoo():
    assert set(CIFAR_ZOO) <= set(REFERENCE_NAMES)
    assert set(REFERENCE_NAMES) <= set(ALL_MODELS)
    for name in REFERENCE_NAMES:
        keys = [k for k, _ in REFERENCE[name]["state"]]
        assert len(keys) == len(set(keys)), name
        assert any(k.endswith("num_batches_tracked") for k in keys), name  # buffers recorded
        assert len(REFERENCE[name]["logits"]) == 2
        assert all(len(row) == 100 for row in REFERENCE[name]["logits"])


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_compatibility(name, tmp_path):
    ref = REFERENCE[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=100)
    expected = {k: list(s) for k, s in ref["state"]}
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == expected, f"{name} state dict differs from the reference: " + shape_diff(
        expected, own
    )

    # a teacher file in RepDistiller's format, loaded through the public loader (strict)
    state = fill_state(model.state_dict())
    path = tmp_path / f"{name}_best.pth"
    torch.save({"epoch": 240, "model": state, "best_acc": torch.tensor(77.5)}, path)
    ckpt = load_checkpoint(model, path)
    assert ckpt["epoch"] == 240
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), f"{key} not loaded"

    model.eval()
    with torch.no_grad():
        logits = model(reference_input())
        feats, stage_logits = Stages(model).features(reference_input())
    assert logits.shape == (2, 100)
    assert_close_to_reference(
        logits, torch.tensor(ref["logits"], dtype=torch.float64), f"{name} logits"
    )
    assert torch.equal(stage_logits, logits)

    # Feature-KD and DFPT-KD tap the stage boundaries: they are the public features f0..fN
    taps = ref["feature_taps"]
    assert [list(f.shape) for f in feats] == [shape for shape, _, _ in taps]
    for i, (f, (_, mean, mean_abs)) in enumerate(zip(feats, taps, strict=True)):
        got = torch.tensor([f.mean().item(), f.abs().mean().item()], dtype=torch.float64)
        want = torch.tensor([mean, mean_abs], dtype=torch.float64)
        torch.testing.assert_close(
            got, want, rtol=1e-4, atol=1e-5 * mean_abs, msg=lambda m, i=i: f"{name} f{i}: {m}"
        )


# ------------------------------------------------------------------------------------------
# building, counts
# ------------------------------------------------------------------------------------------
def test_list_models_has_the_contract_names():
    assert len(ALL_MODELS) == len(set(ALL_MODELS))
    assert set(CIFAR_ZOO) | set(TV_RESNETS) <= set(ALL_MODELS)


def _check_forward(model: nn.Module, num_classes: int, in_chans: int) -> None:
    model.eval()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_chans
    with torch.no_grad():
        y = model(torch.randn(2, in_chans, 32, 32))
    assert y.shape == (2, num_classes)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert not torch.equal(y[0], y[1])


@pytest.mark.parametrize(("num_classes", "in_chans"), [(10, 1), (10, 3), (100, 1)])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_builds_and_forward_shape(name, num_classes, in_chans):
    torch.manual_seed(0)
    _check_forward(
        create_model(name, num_classes=num_classes, in_chans=in_chans), num_classes, in_chans
    )


def test_default_build_and_forward_shape(zoo_model):
    """The (num_classes=100, in_chans=3) case of the build matrix, on the shared models."""
    _check_forward(zoo_model[1], 100, 3)


# Community numbers (CRD / DKD tables, RepDistiller), millions of parameters at 100 classes.
PARAMS_M = {
    "resnet8": 0.08,
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "vgg8": 3.97,
    "vgg13": 9.46,
    "ShuffleV1": 0.95,
    "ShuffleV2": 1.36,
    "MobileNetV2": 0.81,
    "ResNet50": 23.71,
}


@pytest.mark.parametrize(("name", "millions"), PARAMS_M.items())
def test_parameter_counts_match_community_tables(name, millions):
    model = create_model(name, num_classes=100)
    assert round(count_params(model) / 1e6, 2) == millions


def test_count_params_counts_shared_once_and_trainable_only():
    lin = nn.Linear(4, 3)  # 15 parameters
    tied = nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 4), lin)
    assert count_params(tied) == 15 + 16
    tied[2].weight.requires_grad_(False)
    assert count_params(tied, trainable_only=True) == 15 + 4
    assert count_params(tied) == 31


@pytest.mark.parametrize(
    ("name", "macs_m", "tol"), [("resnet56", 125.75, 0.005), ("wrn_40_2", 327.6, 0.05)]
)
def test_macs_match_community_tables(name, macs_m, tol):
    model = create_model(name, num_classes=100)
    macs = count_macs(model)
    assert abs(macs / 1e6 - macs_m) <= tol, macs
    assert count_flops(model) == 2 * macs


def _hook_macs(model: nn.Module, input_size) -> int:
    """Multiply-adds of convolutions and linear layers, counted from their output shapes."""
    total = 0

    def conv_hook(m, _inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, _inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    handles = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    finally:
        for h in handles:
            h.remove()
    return total


def test_count_macs_equals_independent_conv_linear_count(zoo_model):
    name, model = zoo_model
    was_training = model.train().training
    macs = count_macs(model)
    assert model.training == was_training  # mode restored
    assert macs == _hook_macs(model, (3, 32, 32)) > 0
    assert count_flops(model) == 2 * macs


# ------------------------------------------------------------------------------------------
# stage interface
# ------------------------------------------------------------------------------------------
def test_stages_reproduce_forward_in_eval_and_train(zoo_model):
    name, model = zoo_model
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        assert torch.equal(Stages(model).forward(x), model(x)), name

    # train mode: two copies see the same batch (and the same dropout masks) through model(x)
    # and through the stages; outputs, gradients and updated BN statistics must be identical
    a, b = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    torch.manual_seed(5)
    ya = a(x)
    torch.manual_seed(5)
    yb = Stages(b).forward(x)
    assert torch.equal(ya, yb), name
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (ka, pa), (kb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert ka == kb and torch.equal(pa.grad, pb.grad), ka
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    counters = [v for k, v in sa.items() if k.endswith("num_batches_tracked")]
    assert counters and all(c.item() == 1 for c in counters)  # each BN ran exactly once


def test_features_agree_with_boundaries(zoo_model):
    name, model = zoo_model
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    model.train()
    before = copy.deepcopy(model.state_dict())
    stages = Stages(model)
    bounds = stages.boundaries((3, 32, 32))
    assert model.training  # mode restored
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BN update by boundaries

    model.eval()
    with torch.no_grad():
        feats, logits = stages.features(x)
        assert torch.equal(logits, model(x))
        assert len(feats) == stages.num_stages + 1 == len(bounds)
        for i, (f, bd) in enumerate(zip(feats, bounds, strict=True)):
            assert bd.index == i
            assert tuple(f.shape) == (2, bd.channels, bd.height, bd.width), (name, i)
        # Stage-by-stage calls on private copies reproduce the features: no stage changed its
        # input in place, so a boundary tensor is safe to share between two forward paths.
        h = stages.stem(x)
        assert torch.equal(h, feats[0])
        for i in range(1, stages.num_stages + 1):
            h = stages.stage(i, h.clone())
            assert torch.equal(h, feats[i]), (name, i)
        assert torch.equal(stages.head(feats[-1].clone()), logits)
    with pytest.raises(IndexError):
        stages.stage(stages.num_stages + 1, feats[-1])
    with pytest.raises(IndexError):
        stages.stage(0, x)


def test_boundaries_of_a_one_channel_model():
    model = create_model("resnet8x4", num_classes=10, in_chans=1)
    bounds = Stages(model).boundaries((1, 32, 32))
    assert [(b.channels, b.height, b.width) for b in bounds] == [
        (32, 32, 32),
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
    ]


@pytest.mark.parametrize(
    ("arch", "widths"),
    [
        ("tv_resnet18", [64, 64, 128, 256, 512]),
        ("tv_resnet34", [64, 64, 128, 256, 512]),
        ("tv_resnet50", [64, 256, 512, 1024, 2048]),
    ],
)
def test_tv_resnet_stems(arch, widths):
    cifar = create_model(arch, num_classes=10, stem="cifar")
    imagenet = create_model(arch, num_classes=10, stem="imagenet")

    b_cifar = Stages(cifar).boundaries((3, 32, 32))
    b_imagenet = Stages(imagenet).boundaries((3, 32, 32))
    assert [b.channels for b in b_cifar] == widths == [b.channels for b in b_imagenet]
    assert [b.height for b in b_cifar] == [32, 32, 16, 8, 4]
    assert [b.height for b in b_imagenet] == [8, 8, 4, 2, 1]
    with torch.no_grad():
        x = torch.zeros(2, 3, 32, 32)
        assert Stages(cifar.eval()).stem(x).shape[-2:] == (32, 32)
        assert Stages(imagenet.eval()).stem(x).shape[-2:] == (8, 8)

    # the ImageNet stem keeps torchvision's exact state dict (pretrained files load); the
    # CIFAR stem differs only in the 3x3 conv1
    tv = getattr(torchvision.models, arch.removeprefix("tv_"))(weights=None, num_classes=10)
    tv_shapes = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in imagenet.state_dict().items()} == tv_shapes
    cifar_shapes = {k: tuple(v.shape) for k, v in cifar.state_dict().items()}
    assert cifar_shapes == {**tv_shapes, "conv1.weight": (64, 3, 3, 3)}
    assert isinstance(cifar.maxpool, nn.Identity) and cifar.conv1.stride == (1, 1)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d) and imagenet.conv1.stride == (2, 2)


def test_tv_resnet_default_stem_is_cifar_and_imagenet_stem_takes_one_channel():
    default = create_model("tv_resnet18", num_classes=10)
    assert default.conv1.weight.shape == (64, 3, 3, 3)
    assert [b.height for b in Stages(default).boundaries()] == [32, 32, 16, 8, 4]
    one = create_model("tv_resnet18", num_classes=10, in_chans=1, stem="imagenet").eval()
    assert one.conv1.weight.shape == (64, 1, 7, 7) and one.conv1.stride == (2, 2)
    with torch.no_grad():
        assert one(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("arch", TV_RESNETS)
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_tv_resnet_width_scales_every_channel_and_keeps_the_structure(arch, stem):
    full = create_model(arch, num_classes=10, in_chans=1, stem=stem)
    narrow = create_model(arch, num_classes=10, in_chans=1, stem=stem, width=0.25)
    assert (
        create_model(arch, num_classes=10, in_chans=1, stem=stem, width=1.0).state_dict().keys()
        == full.state_dict().keys()
    )
    # the same modules (torchvision's names, blocks and depths), each with a quarter of the
    # channels: every weight's channel dims divided by 4, except the 1-channel input and the
    # 10 classes
    full_sd, narrow_sd = full.state_dict(), narrow.state_dict()
    assert full_sd.keys() == narrow_sd.keys()
    for key, value in full_sd.items():
        shape = list(value.shape)
        if value.dim() == 4:  # conv: out, in, kh, kw
            shape[0] //= 4
            shape[1] = shape[1] if key == "conv1.weight" else shape[1] // 4
        elif key == "fc.weight":
            shape[1] //= 4
        elif value.dim() == 1 and key != "fc.bias":
            shape[0] //= 4
        assert list(narrow_sd[key].shape) == shape, key
    assert [b.channels * 4 for b in Stages(narrow).boundaries((1, 32, 32))] == [
        b.channels for b in Stages(full).boundaries((1, 32, 32))
    ]
    assert [b.height for b in Stages(narrow).boundaries((1, 32, 32))] == [
        b.height for b in Stages(full).boundaries((1, 32, 32))
    ]
    for m in narrow.modules():
        if isinstance(m, nn.BatchNorm2d):  # torchvision's initialisation
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
    with pytest.raises(ValueError, match="width must be > 0"):
        create_model(arch, width=0)


class TinyNet(nn.Module):
    """A user model that knows nothing about stages."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Sequential(
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 24, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.body(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


TINY_SPEC = StageSpec(
    stem=("conv", "bn", relu),
    stages=(("body.0", "body.1"), ("body.2", "body.3")),
    head=(global_avg_pool, flatten, "fc"),
)


def test_user_model_without_spec_gets_instructions_then_works_with_one():
    model = TinyNet().eval()
    with pytest.raises(MissingStageSpecError) as info:
        Stages(model)
    msg = str(info.value)
    assert "TinyNet" in msg and "model.stage_spec = StageSpec(" in msg and "spec=" in msg
    assert isinstance(info.value, TypeError)

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        by_argument = Stages(model, TINY_SPEC).forward(x)
        model.stage_spec = TINY_SPEC
        assert get_stage_spec(model) is TINY_SPEC
        stages = Stages(model)
        assert torch.equal(stages.forward(x), model(x))
        assert torch.equal(by_argument, model(x))
    assert stages.num_stages == 2
    assert [(b.index, b.channels, b.height, b.width) for b in stages.boundaries()] == [
        (0, 8, 32, 32),
        (1, 16, 16, 16),
        (2, 24, 8, 8),
    ]


@pytest.mark.parametrize("bad", ["bodyy.1", "body.9", "conv.weight"])
def test_spec_naming_a_missing_submodule_is_a_value_error(bad):
    spec = StageSpec(stem=("conv", "bn", relu), stages=(("body.0", bad),), head=("fc",))
    with pytest.raises(ValueError, match=bad.replace(".", r"\.")) as info:
        Stages(TinyNet(), spec)
    assert "TinyNet" in str(info.value)


def test_malformed_specs():
    with pytest.raises(ValueError, match="at least one stage"):
        StageSpec(stem=("conv",), stages=(), head=("fc",))
    with pytest.raises(TypeError, match="module path or a callable"):
        Stages(TinyNet(), StageSpec(stem=("conv", 3), stages=(("body",),), head=("fc",)))


# ------------------------------------------------------------------------------------------
# create_model errors
# ------------------------------------------------------------------------------------------
def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="resnet_32x4") as info:
        create_model("resnet_32x4")
    for name in ALL_MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize("in_chans", [0, 2, 4, "3"])
def test_bad_in_chans(in_chans):
    with pytest.raises(ValueError, match="in_chans"):
        create_model("resnet8", in_chans=in_chans)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet8", num_classes=num_classes)


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(TypeError, match="depth") as info:
        create_model("tv_resnet18", depth=2)  # torchvision ResNets take a stem and a width
    assert "stem" in str(info.value) and "width" in str(info.value)
    with pytest.raises(TypeError, match="stem") as info:
        create_model("resnet8", stem="cifar")  # CIFAR ResNets take a width, no stem
    assert "width" in str(info.value)
    with pytest.raises(TypeError, match="width") as info:
        create_model("wrn_16_2", width=2)  # the other CIFAR zoo models take no options
    assert "none" in str(info.value)


def test_bad_stem_value():
    with pytest.raises(ValueError, match="stem") as info:
        create_model("tv_resnet18", stem="tiny")
    assert "cifar" in str(info.value) and "imagenet" in str(info.value)


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------
def _source_state() -> dict[str, torch.Tensor]:
    """resnet8 weights that differ from any fresh initialisation."""
    return fill_state(create_model("resnet8", num_classes=10).state_dict())


def _optimizer_state() -> dict:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return opt.state_dict()


FORMATS = {
    "model": lambda sd: {
        "epoch": 7,
        "model": sd,
        "best_acc": 71.2,
        "optimizer": _optimizer_state(),
    },
    "state_dict": lambda sd: {"epoch": 7, "state_dict": sd},
    "model_state_dict": lambda sd: {
        "epoch": 7,
        "model_state_dict": sd,
        "optimizer_state_dict": _optimizer_state(),
    },
    "bare": lambda sd: dict(sd),
    "module_prefix": lambda sd: {
        "epoch": 7,
        "state_dict": {f"module.{k}": v for k, v in sd.items()},
    },
    "bare_module_prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "name_then_weights": lambda sd: {"epoch": 7, "model": "resnet8", "state_dict": sd},
}


@pytest.mark.parametrize("writer", ["save_checkpoint", "save_checkpoint_xz", "torch.save"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_checkpoint_round_trip(fmt, writer, tmp_path):
    source = _source_state()
    path = tmp_path / "ckpt.pth"
    obj = FORMATS[fmt](source)
    if writer.startswith("save_checkpoint"):
        assert save_checkpoint(obj, path, compress=writer.endswith("xz")) == path
        assert (path.read_bytes()[:6] == b"\xfd7zXZ\x00") == writer.endswith("xz")
    else:
        torch.save(obj, path)

    model = create_model("resnet8", num_classes=10)
    assert not torch.equal(model.state_dict()["conv1.weight"], source["conv1.weight"])
    ckpt = load_checkpoint(model, path)
    state = model.state_dict()
    assert state.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(state[key], value), key
    if fmt.startswith("bare"):
        assert "epoch" not in ckpt
    else:
        assert ckpt["epoch"] == 7


def test_compressed_checkpoint_is_smaller_and_damage_is_named(tmp_path):
    model = create_model("resnet8", num_classes=10)
    plain = save_checkpoint({"model": model.state_dict()}, tmp_path / "plain.pt")
    packed = save_checkpoint({"model": model.state_dict()}, tmp_path / "packed.pt", compress=True)
    assert packed.stat().st_size < plain.stat().st_size
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(packed.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="damaged.pt is a damaged xz-compressed"):
        read_checkpoint(damaged)


def test_save_checkpoint_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "runs" / "a" / "last.pth"
    save_checkpoint({"epoch": 1, "model": {"w": torch.zeros(2)}}, path)
    save_checkpoint({"epoch": 2, "model": {"w": torch.ones(2)}}, path)
    ckpt = read_checkpoint(path)
    assert ckpt["epoch"] == 2 and torch.equal(ckpt["model"]["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]  # no temp files


@pytest.mark.parametrize(
    "exc", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"]
)
def test_save_checkpoint_is_atomic(exc, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"epoch": 1, "model": {"w": torch.arange(4.0)}}, path)
    before = path.read_bytes()
    calls = []

    def broken_save(obj, f, *args, **kwargs):
        calls.append(obj)
        f.write(b"half a checkpoint" * 64)
        raise exc

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(type(exc)):
        save_checkpoint({"epoch": 2, "model": {"w": torch.ones(4)}}, path)
    monkeypatch.undo()
    assert calls, "the patched torch.save was never called"
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]
    ckpt = read_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["w"], torch.arange(4.0))


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "teacher.pth"
    with pytest.raises(FileNotFoundError, match="teacher.pth"):
        load_checkpoint(create_model("resnet8"), path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(create_model("resnet8"), tmp_path)  # a folder is not a file


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "content", [b"", b"epoch,acc\n1,0.5\n", b"\x80\x04garbage"], ids=["empty", "csv", "bad-pickle"]
)
def test_file_that_is_not_a_checkpoint(content, tmp_path):
    path = tmp_path / "teacher.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="teacher.pth"):
        load_checkpoint(create_model("resnet8"), path)


def test_checkpoint_that_is_not_a_dict_or_holds_no_tensors(tmp_path):
    path = tmp_path / "t.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="Tensor"):
        load_checkpoint(create_model("resnet8"), path)
    torch.save({"epoch": 3, "best_acc": 70.1}, path)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_checkpoint(create_model("resnet8"), path)


def _create_marker(path: str) -> dict:
    """Side effect a malicious pickle would trigger on load."""
    Path(path).write_text("pickled code ran")
    return {}


class CodeOnLoad:
    """Pickles as 'call _create_marker(path)' — only an unsafe torch.load would run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_create_marker, (str(self.marker),))


def test_pickle_that_needs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"model": _source_state(), "extra": CodeOnLoad(marker)}, path)
    assert not marker.exists()

    model = create_model("resnet8", num_classes=10)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(model, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(path)
    assert not marker.exists(), "the checkpoint's code ran"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    # the payload is live: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def _assert_unchanged(model, before):
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "model changed by a failed load"


@pytest.mark.parametrize("fmt", ["model", "module_prefix"])
def test_key_and_shape_mismatches_name_the_keys(fmt, tmp_path):
    state = _source_state()
    del state["fc.bias"], state["layer2.0.bn1.running_var"]
    state["layer4.0.conv1.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(16, 3, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(FORMATS[fmt](state), path)

    model = create_model("resnet8", num_classes=10)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    msg = str(info.value)
    assert "bad.pth" in msg and "ResNet" in msg
    assert "missing keys" in msg and "fc.bias" in msg and "layer2.0.bn1.running_var" in msg
    assert "unexpected keys" in msg and "layer4.0.conv1.weight" in msg
    assert "shape mismatches" in msg
    assert "conv1.weight: checkpoint (16, 3, 5, 5) vs model (16, 3, 3, 3)" in msg
    assert "module." not in msg
    _assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("kind", "edit", "expected"),
    [
        (
            "missing",
            lambda sd: sd.pop("bn1.num_batches_tracked"),
            "missing keys: bn1.num_batches_tracked",
        ),
        ("unexpected", lambda sd: sd.update(extra=torch.ones(1)), "unexpected keys: extra"),
        ("shape", lambda sd: sd.update({"fc.bias": torch.ones(11)}), "fc.bias: checkpoint (11,)"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_each_kind_of_mismatch_alone_is_an_error(kind, edit, expected, tmp_path):
    state = _source_state()
    edit(state)
    path = tmp_path / f"{kind}.pth"
    torch.save({"model": state}, path)
    model = create_model("resnet8", num_classes=10)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError, match=r"does not fit") as info:
        load_checkpoint(model, path)
    assert expected in str(info.value)
    _assert_unchanged(model, before)


OTHER_ARCHITECTURES = [
    ("resnet8", "resnet14", ["missing keys", "layer1.1.conv1.weight", "more)"]),
    ("resnet14", "resnet8", ["unexpected keys", "layer1.1.conv1.weight"]),
    ("resnet8x4", "resnet8", ["conv1.weight: checkpoint (32, 3, 3, 3) vs model (16, 3, 3, 3)"]),
    ("resnet8", "wrn_16_1", ["missing keys", "block1.layer.0.conv1.weight", "unexpected keys"]),
    (
        "ResNet18",
        "tv_resnet18",
        ["missing keys: layer2.0.downsample.0.weight", "unexpected keys: layer2.0.shortcut."],
    ),
]


@pytest.mark.parametrize(
    ("saved", "target", "expected"),
    [pytest.param(*case, id=f"{case[0]}-into-{case[1]}") for case in OTHER_ARCHITECTURES],
)
def test_checkpoint_of_another_architecture(saved, target, expected, tmp_path):
    path = tmp_path / f"{saved}_best.pth"
    torch.save({"model": create_model(saved, num_classes=10).state_dict()}, path)
    model = create_model(target, num_classes=10)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    for text in expected:
        assert text in str(info.value)
    _assert_unchanged(model, before)


def test_cifar100_teacher_into_a_10_class_model(tmp_path):
    path = tmp_path / "wrn_40_2_best.pth"
    torch.save({"model": create_model("wrn_16_1", num_classes=100).state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(create_model("wrn_16_1", num_classes=10), path)
    msg = str(info.value)
    assert "fc.weight: checkpoint (100, 64) vs model (10, 64)" in msg
    assert "fc.bias: checkpoint (100,) vs model (10,)" in msg
    assert "missing keys" not in msg and "unexpected keys" not in msg
