"""Tests for dfpt_core.methods: every distillation method on real Fashion-MNIST with real teachers.

The networks the methods need are the trained cpu teachers the project ships (conftest's
`shipped_teacher`, loaded once per session): the resnet20 teacher (ce, 15 epochs), two
checkpoints its training kept on the way (after epochs 4 and 8: RCO's anchors; the later one is
the early-stopped ESKD teacher) and the shipped resnet8 as teacher assistant (TAKD, DGKD).
Students are resnet8. Images are Fashion-MNIST padded to 32x32, as the teachers were trained.

Generic checks (every method, including DFPT-KD/KDt): loss keys, gradients reach exactly the
student and the method's extras, teachers are frozen by `create`, never change and stay in eval
mode, and 80 SGD steps (batch 16, a 512-image subset) lower the training loss. Then each
method's own behaviour.
"""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import batches, load_shipped, predict, shipped_checkpoint, tiny_config

from dfpt_core.losses import dkd_loss, feature_kd_loss, kd_loss
from dfpt_core.methods import (
    DEFAULT_CONTEXT,
    RunContext,
    create,
    hyperparameters,
    list_methods,
    method_class,
)
from dfpt_core.methods.dkd import DKD_BETA, dkd_beta, dkd_recipe
from dfpt_core.methods.rco import equal_interval_switches
from dfpt_core.models import Stages, create_model, read_checkpoint
from dfpt_core.run.config import ConfigError, TrainConfig, load_config, make_config
from dfpt_core.run.recipes import takd_stage_configs
from dfpt_core.workbook.cache import shipped_manifest

METHODS = ("ce", "kd", "dkd", "fitnet", "takd", "dgkd", "eskd", "rco", "dfpt_kd", "dfpt_kdt")
INPUT = (1, 32, 32)
RUN = RunContext(10, INPUT, DEFAULT_CONTEXT.epochs)  # the run `create` is told of (240 epochs)
EPOCH = 30  # epoch passed in the generic checks: past DKD's warm-up, on RCO's final anchor
STEPS, WINDOW, BATCH = 40, 8, 16  # loss-drop check: steps, window averaged at both ends (measured
# last/first window ratio 0.29-0.60 across the methods, DKD highest; the bound is 0.75)
DFPT_PROMPT = {"prompt_teacher", "prompt_student"}
# DFPT-KDt's backbone copy keeps the teacher's classifier for its state dict, frozen: the
# prompt path ends in `new_head` instead
DFPT_KDT_FROZEN_HEAD = {"dual.backbone.fc.weight", "dual.backbone.fc.bias"}
LOSS_KEYS = {
    "ce": {"ce"},
    "kd": {"ce", "kd"},
    "dkd": {"ce", "dkd"},
    "fitnet": {"ce", "hint"},
    "takd": {"ce", "kd"},
    "dgkd": {"ce", "kd"},
    "eskd": {"ce", "kd"},
    "rco": {"ce", "kd"},
    "dfpt_kd": {"ce", "kd", "kd_prompt", *DFPT_PROMPT},
    "dfpt_kdt": {"ce", "kd", "kd_prompt", *DFPT_PROMPT},
}
EVAL_KEYS = {
    "ce": {"student"},
    "kd": {"student", "teacher"},
    "dkd": {"student", "teacher"},
    "fitnet": {"student", "teacher"},
    "takd": {"student", "teacher", "assistant"},
    "dgkd": {"student", "teacher", "assistant0"},
    "eskd": {"student", "teacher"},
    "rco": {"student", "teacher", "anchor"},
    "dfpt_kd": {"student", "teacher", "prompt"},
    "dfpt_kdt": {"student", "teacher", "prompt"},
}


# ------------------------------------------------------------------------------------------
# real data and real networks
# ------------------------------------------------------------------------------------------
def train_steps(distiller, stream, steps, lr=0.05, epoch=EPOCH, clip=None) -> list[float]:
    """SGD (momentum 0.9, wd 5e-4) over `distiller.param_groups`, as the Trainer does (with
    `clip`: gradient-norm clipping of `clip_parameters()`, the Trainer's `clip_grad_norm`);
    returns the total loss of every step."""
    opt = torch.optim.SGD(distiller.param_groups(lr, 5e-4), lr=lr, momentum=0.9)
    distiller.train()
    history = []
    for _ in range(steps):
        images, targets = next(stream)
        _, losses = distiller(images, targets, epoch=epoch)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(distiller.clip_parameters(), clip)
        opt.step()
        history.append(float(loss.detach()))
    opt.zero_grad(set_to_none=True)
    return history


def net(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(arch, num_classes=10, in_chans=1)


def top1(model, x, y) -> float:
    """Test accuracy in %, as the trainer reports it."""
    return 100.0 * float((predict(model, x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def zoo(shipped_teacher, fmnist_tensors):
    """Real teachers, trained on this data: the shipped resnet20, the checkpoints kept after
    epochs 4 and 8 of its training (RCO's anchors; ESKD's early-stopped teacher is the later),
    and the shipped resnet8 as teacher assistant; all frozen and in eval mode."""
    x, y, xt, yt = fmnist_tensors
    anchors = [shipped_teacher.route[4], shipped_teacher.route[8]]
    assistant = load_shipped("resnet8")
    return SimpleNamespace(
        teacher=shipped_teacher.model,
        anchors=anchors,
        early=anchors[1],  # the ESKD teacher: the checkpoint kept after epoch 8 of 15
        assistant=assistant,
        x=x,
        y=y,
        top1={
            "teacher": top1(shipped_teacher.model, xt, yt),
            "early": top1(anchors[0], xt, yt),
            "assistant": top1(assistant, xt, yt),
        },
    )


def thawed(zoo) -> SimpleNamespace:
    """Deep copies of the zoo's networks as a run builder hands them over: train mode,
    trainable."""

    def thaw(model):
        model = copy.deepcopy(model).train()
        return model.requires_grad_(True)

    anchors = [thaw(a) for a in zoo.anchors]
    return SimpleNamespace(
        teacher=thaw(zoo.teacher), anchors=anchors, early=anchors[1], assistant=thaw(zoo.assistant)
    )


@pytest.fixture
def batch(zoo):
    return zoo.x[:32], zoo.y[:32]


def build(method: str, zoo, student_seed: int = 0, context: RunContext = RUN, **hp):
    """`create(method, ...)` with the networks the method needs, from the zoo, for a run of
    `context` (32x32 images, 240 epochs by default)."""
    nets = {} if method == "ce" else {"teacher": zoo.teacher}
    if method in ("takd", "dgkd"):
        nets["assistants"] = [zoo.assistant]
    if method == "rco":
        nets["anchors"] = zoo.anchors
        hp.setdefault("epochs_per_anchor", 2)
    if method == "eskd":
        nets["teacher"] = zoo.early
    return create(method, student=net("resnet8", seed=student_seed), **nets, context=context, **hp)


def frozen_state(distiller) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in distiller.teachers.state_dict().items()}


def assert_teachers_unchanged(distiller, before) -> None:
    after = distiller.teachers.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"teacher tensor {k} changed"
    assert not any(m.training for m in distiller.teachers.modules())


def test_the_teachers_are_real(zoo, shipped_teacher):
    # each scores, on these 1000 test images (in fp32), within 2 points of the test accuracy its
    # training recorded on all 10,000 (the manifest; the early one: its checkpoint); a sample of
    # 1000 has a standard error near 1 point; far above chance (10 %); the route improves
    assert zoo.top1["teacher"] == pytest.approx(shipped_teacher.entry["test_top1"], abs=2.0)
    manifest = shipped_manifest()["runs"]
    assistant = shipped_checkpoint("resnet8").parent.parent.name
    assert zoo.top1["assistant"] == pytest.approx(manifest[assistant]["test_top1"], abs=2.0)
    early = read_checkpoint(shipped_checkpoint("resnet20", 4))["accuracy"]
    assert zoo.top1["early"] == pytest.approx(early, abs=2.0)
    assert zoo.top1["teacher"] > zoo.top1["early"] + 1
    assert min(zoo.top1.values()) > 60


def test_create_freezes_the_networks_it_is_given(zoo):
    """The zoo's networks come frozen (conftest); `create` freezes networks handed over
    trainable, in train mode, as a run builder's freshly loaded ones are."""
    for method in METHODS:
        distiller = build(method, thawed(zoo))
        assert bool(distiller.teachers) == (method != "ce")
        for name, network in distiller.teachers.items():
            assert not network.training, (method, name)
            assert not any(p.requires_grad for p in network.parameters()), (method, name)


# ------------------------------------------------------------------------------------------
# generic checks, every method
# ------------------------------------------------------------------------------------------
def test_every_method_is_registered():
    assert list_methods() == list(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_exactly_the_trainable_parameters(method, zoo, batch):
    distiller = build(method, zoo)
    before = frozen_state(distiller)
    student = {id(p) for p in distiller.student.parameters()}
    extra = {id(p) for p in distiller.extra_parameters()}
    frozen = {id(p) for p in distiller.teachers.parameters()}
    if method == "dfpt_kdt":
        named = dict(distiller.named_parameters())
        frozen |= {id(named[n]) for n in DFPT_KDT_FROZEN_HEAD}
        assert not any(named[n].requires_grad for n in DFPT_KDT_FROZEN_HEAD)
    for name, p in distiller.named_parameters():  # every parameter has exactly one role
        assert (id(p) in student) + (id(p) in extra) + (id(p) in frozen) == 1, name
    grouped = [id(p) for g in distiller.param_groups(0.05, 5e-4) for p in g["params"]]
    assert len(grouped) == len(set(grouped)) and set(grouped) == student | extra
    assert bool(extra) == (method in ("fitnet", "dfpt_kd", "dfpt_kdt"))

    distiller.train()
    assert not any(m.training for m in distiller.teachers.modules())
    images, targets = batch
    logits, losses = distiller(images, targets, epoch=EPOCH)
    assert logits.shape == (32, 10)
    assert set(losses) == LOSS_KEYS[method]
    for key, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), key
    sum(losses.values()).backward()
    for name, p in distiller.student.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if extra:
        assert any(
            p.grad.abs().sum() > 0 for p in distiller.extra_parameters() if p.grad is not None
        )
    unused = {n for n, p in distiller.named_parameters() if id(p) in extra and p.grad is None}
    assert unused == set()  # every trainable parameter is used (DDP needs no unused-param scan)
    for p in distiller.teachers.parameters():
        assert p.grad is None and not p.requires_grad

    opt = torch.optim.SGD(distiller.param_groups(0.05, 5e-4), lr=0.05, momentum=0.9)
    for _ in range(3):
        opt.step()
        opt.zero_grad(set_to_none=True)
        sum(distiller(images, targets, epoch=EPOCH)[1].values()).backward()
    opt.step()
    assert_teachers_unchanged(distiller, before)

    outs = distiller.eval_logits(images)
    assert set(outs) == EVAL_KEYS[method]
    assert all(v.shape == (32, 10) for v in outs.values())
    distiller.eval()
    assert torch.equal(distiller(images), distiller.student(images))


@pytest.mark.parametrize("method", METHODS)
def test_training_lowers_the_loss(method, zoo):
    distiller = build(method, zoo)
    before = frozen_state(distiller)
    # FitNet's default hint weight (100, on an unnormalised MSE) diverges at lr 0.05 without
    # gradient clipping; it trains as the capacity study ran it: clipped (Trainer's
    # clip_grad_norm, which covers the projections through clip_parameters())
    clip = 5.0 if method == "fitnet" else None
    stream = batches(zoo.x[:512], zoo.y[:512], batch_size=BATCH, seed=3)
    history = train_steps(distiller, stream, STEPS, clip=clip)
    assert all(torch.isfinite(torch.tensor(history)))
    first, last = sum(history[:WINDOW]) / WINDOW, sum(history[-WINDOW:]) / WINDOW
    assert last < 0.75 * first, f"{method}: mean loss {first:.3f} -> {last:.3f}"
    assert_teachers_unchanged(distiller, before)


def test_unknown_hyperparameters_list_the_valid_ones(zoo):
    student = net("resnet8")
    with pytest.raises(TypeError, match=r"\['bogus'\].*valid: .*drop_num=1"):
        create("dgkd", student=student, teacher=zoo.teacher, assistants=[zoo.assistant], bogus=1)
    with pytest.raises(TypeError, match=r"boundaries=\(2,\).*clip_projections=True"):
        create("fitnet", student=student, teacher=zoo.teacher, hint_layer=2)
    with pytest.raises(TypeError, match="assistants"):  # kd takes no assistants
        create("kd", student=student, teacher=zoo.teacher, assistants=[zoo.assistant])


def test_networks_are_not_hyperparameters():
    assert "assistants" not in hyperparameters("takd")
    assert "assistants" not in hyperparameters("dgkd")
    assert "anchors" not in hyperparameters("rco")
    with pytest.raises(ConfigError, match="method_args"):
        make_config({"method": "takd", "teacher": "resnet20", "method_args": {"assistants": []}})


@pytest.mark.parametrize(
    ("method", "arg"), [("takd", "assistants"), ("dgkd", "assistants"), ("rco", "anchors")]
)
def test_missing_networks_are_clear_errors(method, arg, zoo):
    with pytest.raises(ValueError, match=rf"{method}.*needs {arg}=\[\.\.\.\]"):
        create(method, student=net("resnet8"), teacher=zoo.teacher)
    with pytest.raises(ValueError, match=rf"needs {arg}="):
        create(method, student=net("resnet8"), teacher=zoo.teacher, **{arg: []})
    with pytest.raises(ValueError, match="needs a teacher"):
        create(method, student=net("resnet8"), **{arg: [zoo.assistant]})


# ------------------------------------------------------------------------------------------
# the method contract: declared networks, hyperparameter dataclasses, the run context
# ------------------------------------------------------------------------------------------
REQUIRES = {
    "ce": (),
    "kd": ("teacher",),
    "dkd": ("teacher",),
    "fitnet": ("teacher",),
    "takd": ("teacher", "assistants"),
    "dgkd": ("teacher", "assistants"),
    "eskd": ("teacher",),
    "rco": ("teacher", "anchors"),
    "dfpt_kd": ("teacher",),
    "dfpt_kdt": ("teacher",),
}


def test_methods_declare_the_networks_they_require():
    assert {m: method_class(m).requires for m in METHODS} == REQUIRES


@pytest.mark.parametrize("method", METHODS)
def test_the_hyperparameter_dataclass_holds_the_defaults(method, zoo):
    cls = method_class(method)
    assert dataclasses.is_dataclass(cls.Hparams)
    assert dataclasses.asdict(cls.Hparams()) == hyperparameters(method)
    assert [f.name for f in dataclasses.fields(cls.Hparams)] == list(hyperparameters(method))
    # networks, optional inputs and facts of the run are not hyperparameters
    others = {"input_size", "total_epochs", "epochs", "context", *cls.requires, *cls.optional}
    assert not others & set(hyperparameters(method))
    given = {"epochs_per_anchor": 2} if method == "rco" else {}  # what build() sets
    assert build(method, zoo).hp == cls.Hparams(**given)


@pytest.mark.parametrize("method", METHODS)
def test_metric_temperature_is_the_methods_own_temperature(method, zoo):
    """The trainer's KD-decomposition metrics run at `metric_temperature`: the method's T, or
    4.0 for methods without one (ce, fitnet)."""
    assert build(method, zoo).metric_temperature == 4.0
    if "temperature" in hyperparameters(method):
        assert build(method, zoo, temperature=2.5).metric_temperature == 2.5


def test_facts_of_the_run_are_not_hyperparameters(zoo):
    with pytest.raises(TypeError, match=r"\['total_epochs'\].*valid: .*epochs_per_anchor=None"):
        create(
            "rco",
            student=net("resnet8"),
            teacher=zoo.teacher,
            anchors=zoo.anchors,
            total_epochs=10,
        )
    with pytest.raises(TypeError, match=r"\['input_size'\].*valid: .*head_init='random'"):
        create("dfpt_kd", student=net("resnet8"), teacher=zoo.teacher, input_size=INPUT)
    with pytest.raises(ConfigError, match=r"method_args: \['input_size'\]"):
        make_config({"method": "fitnet", "teacher": "resnet20", "method_args": {"input_size": 1}})
    with pytest.raises(TypeError, match="context must be a RunContext"):
        create("kd", student=net("resnet8"), teacher=zoo.teacher, context=(1, 16, 16))
    default = DEFAULT_CONTEXT
    assert (default.num_classes, default.input_size, default.epochs) == (100, (3, 32, 32), 240)


@pytest.mark.parametrize("method", METHODS)
def test_every_tensor_has_one_state_dict_key(method, zoo):
    seen = {}
    for key, value in build(method, zoo).state_dict().items():
        if value.numel():
            assert value.data_ptr() not in seen, f"{key} is {seen[value.data_ptr()]} again"
            seen[value.data_ptr()] = key


@pytest.mark.parametrize("method", ("dfpt_kd", "dfpt_kdt"))
def test_the_dual_path_teacher_owns_the_teacher(method, zoo):
    """The teacher is registered once, as `dual.original`; `teachers` views it (frozen, in eval
    mode), so the state dict holds the student and the dual path teacher, nothing twice."""
    d = build(method, zoo)
    assert d.dual.original is d.teacher is d.teachers["teacher"] is zoo.teacher
    keys = list(d.state_dict())
    teacher_keys = [f"dual.original.{k}" for k in d.teacher.state_dict()]
    assert [k for k in keys if k.startswith("dual.original.")] == teacher_keys
    assert not [k for k in keys if k.startswith("teachers.")]
    assert len(keys) == len(d.student.state_dict()) + len(d.dual.state_dict())
    d.train()
    assert not d.teacher.training and not any(p.requires_grad for p in d.teacher.parameters())
    copy.deepcopy(d).load_state_dict(d.state_dict())  # strict: the same keys both ways


def test_the_builder_builds_exactly_what_the_method_requires(
    zoo, fmnist_root, tmp_path, restore_determinism
):
    from dfpt_core.run.build import build as build_run
    from dfpt_core.run.build import build_networks

    base = tiny_config(
        tmp_path / "runs",
        fmnist_root,
        method="kd",
        teacher="resnet20",
        teacher_checkpoint=str(shipped_checkpoint("resnet20")),
        limit_train=64,
        limit_test=32,
        epochs=6,
        eval_batch_size=32,
        milestones=[],
    )
    assert set(build_networks(dataclasses.replace(base, method="ce"), 10)) == {"student"}
    assert set(build_networks(dataclasses.replace(base, method="kd"), 10)) == {"student", "teacher"}
    takd = dataclasses.replace(base, method="takd").validate()
    with pytest.raises(
        ValueError, match=r"'takd' needs networks\.assistants.*networks: \{assistants"
    ):
        build_networks(takd, 10)
    # RCO: anchors in the teacher's architecture (the default), spaced over the config's epochs
    anchors = [{"checkpoint": str(shipped_checkpoint("resnet20", e))} for e in (4, 8)]
    rco = dataclasses.replace(base, method="rco", networks={"anchors": anchors}).validate()
    distiller = build_run(rco)[0]
    assert distiller.route == ("anchor0", "anchor1", "teacher")
    assert distiller.switch_epochs == (2, 4)  # 6 epochs over 3 points of the route
    for name, anchor in zip(distiller.route, zoo.anchors, strict=False):
        for k, v in distiller.teachers[name].state_dict().items():
            assert torch.equal(v, anchor.state_dict()[k]), (name, k)
    # FitNet: its projections are sized for the dataset's input size, from the context
    fitnet = build_run(dataclasses.replace(base, method="fitnet").validate())[0]
    assert fitnet.input_size == (1, 32, 32)


def test_networks_in_a_config_are_validated_naming_the_key():
    base = {"method": "takd", "student": "resnet8", "teacher": "resnet20"}

    def refused(networks, match, **values):
        with pytest.raises(ConfigError, match=match):
            make_config({**base, **values, "networks": networks})

    ta = {"arch": "resnet14", "checkpoint": "ta.pt"}
    refused(
        {"assistants": [{**ta, "arch": "resnet999"}]},
        r"networks\.assistants\[0\]\.arch: unknown model 'resnet999'",
    )
    refused(
        {"assistants": [{"arch": "resnet14"}]}, r"networks\.assistants\[0\]\.checkpoint: required"
    )
    refused(
        {"assistants": [{**ta, "weights": 1}]},
        r"networks\.assistants\[0\]: unknown key\(s\) \['weights'\]",
    )
    refused(
        {"assistants": [{**ta, "args": [1]}]},
        r"networks\.assistants\[0\]\.args: expected a mapping",
    )
    refused({"assistants": ta}, r"networks\.assistants: expected a list")
    refused(
        {"anchors": [ta]},
        r"networks\.anchors: method 'takd' takes no 'anchors' networks \(it takes: assistants\)",
    )
    refused({"teacher": [ta]}, r"networks\.teacher: .*teacher_checkpoint")
    refused(
        {"anchors": [{"checkpoint": "a.pt"}]},
        r"networks\.anchors\[0\]\.arch: missing",
        method="rco",
        teacher=None,
    )
    cfg = make_config({**base, "networks": {"assistants": [ta]}})
    assert cfg.networks_of("assistants") == [{**ta, "args": {}}]
    # an anchor without `arch` is a checkpoint of the teacher: its architecture and options
    rco = make_config(
        {
            "method": "rco",
            "teacher": "tv_resnet18",
            "teacher_args": {"stem": "cifar"},
            "networks": {"anchors": [{"checkpoint": "a.pt"}, {**ta, "checkpoint": "b.pt"}]},
        }
    )
    assert rco.networks_of("anchors") == [
        {"arch": "tv_resnet18", "checkpoint": "a.pt", "args": {"stem": "cifar"}},
        {"arch": "resnet14", "checkpoint": "b.pt", "args": {}},
    ]
    # and from the command line
    over = [
        "method=takd",
        "teacher=resnet20",
        "networks.assistants=[{arch: resnet14, checkpoint: ta.pt}]",
    ]
    assert load_config(None, over).networks == {"assistants": [ta]}


# ------------------------------------------------------------------------------------------
# DKD
# ------------------------------------------------------------------------------------------
def test_dkd_warmup_scales_the_dkd_term(zoo, batch):
    images, targets = batch
    distiller = build("dkd", zoo).eval()  # eval: the same student outputs at every epoch
    with torch.no_grad():
        parts = {e: distiller.forward_train(images, targets, epoch=e)[1] for e in (0, 9, 19, 20)}
        full = dkd_loss(distiller.student(images), zoo.teacher(images), targets, 1.0, 8.0, 4.0)
        ce = F.cross_entropy(distiller.student(images), targets)
    torch.testing.assert_close(parts[0]["dkd"], full / 20)
    torch.testing.assert_close(parts[9]["dkd"], full * 10 / 20)
    torch.testing.assert_close(parts[19]["dkd"], full)
    torch.testing.assert_close(parts[20]["dkd"], full)
    for p in parts.values():
        torch.testing.assert_close(p["ce"], ce)
    assert [distiller.warmup_factor(e) for e in (0, 19, 100)] == [0.05, 1.0, 1.0]
    assert build("dkd", zoo, warmup=0).warmup_factor(0) == 1.0
    with pytest.raises(ValueError, match="warmup"):
        build("dkd", zoo, warmup=-1)


def test_dkd_published_beta_per_pair(zoo):
    assert dkd_beta("resnet56", "resnet20") == dkd_beta("resnet110", "resnet32") == 2.0
    for pair in [
        ("vgg13", "vgg8"),
        ("vgg13", "MobileNetV2"),
        ("wrn_40_2", "wrn_16_2"),
        ("wrn_40_2", "wrn_40_1"),
    ]:
        assert dkd_beta(*pair) == 6.0
    assert dkd_beta("resnet32x4", "resnet8x4") == dkd_beta("ResNet50", "MobileNetV2") == 8.0
    assert dkd_beta("resnet20", "resnet56") == 8.0  # order matters: (teacher, student)
    assert len(DKD_BETA) == 6
    assert hyperparameters("dkd")["beta"] == 8.0
    assert build("dkd", zoo, beta=dkd_beta("resnet56", "resnet20")).beta == 2.0


def test_dkd_recipe_scales_the_warmup_and_keeps_only_non_defaults():
    assert hyperparameters("dkd")["warmup"] == 20
    assert dkd_recipe("resnet32x4", "resnet8x4", 240) == {}
    assert dkd_recipe("resnet56", "resnet20", 240) == {"beta": 2.0}
    assert dkd_recipe("resnet20", "resnet8", 4) == {"warmup": 1}  # 20/240 of 4 epochs, at least 1
    assert dkd_recipe("vgg13", "vgg8", 24) == {"warmup": 2, "beta": 6.0}


# ------------------------------------------------------------------------------------------
# FitNet
# ------------------------------------------------------------------------------------------
def test_fitnet_projections_map_student_to_teacher_channels():
    teacher = create_model("resnet8x4", num_classes=10, in_chans=1)  # widths 32/64/128/256
    distiller = create(
        "fitnet", student=net("resnet8"), teacher=teacher, boundaries=[3, 1], context=RUN
    )
    assert distiller.boundaries == (1, 3)
    shapes = [tuple(p.weight.shape) for p in distiller.projections]
    assert shapes == [(64, 16, 1, 1), (256, 64, 1, 1)]
    assert all(p.bias is None for p in distiller.projections)
    assert hyperparameters("fitnet")["boundaries"] == (2,)
    for bad in [(4,), (), (1, 1), ("2",)]:
        with pytest.raises(ValueError, match="boundar"):
            create("fitnet", student=net("resnet8"), teacher=teacher, boundaries=bad, context=RUN)


def test_fitnet_hint_is_feature_kd_loss_of_projected_features(zoo, batch):
    images, targets = batch
    distiller = build("fitnet", zoo, boundaries=(1, 2)).eval()
    with torch.no_grad():
        _, losses = distiller.forward_train(images, targets)
        fs, logits = Stages(distiller.student).features(images)
        ft, _ = Stages(zoo.teacher).features(images)
        hints = [proj(fs[b]) for proj, b in zip(distiller.projections, (1, 2), strict=True)]
        expected = 100.0 * feature_kd_loss(hints, [ft[1], ft[2]], 0.5)
    torch.testing.assert_close(losses["hint"], expected)
    torch.testing.assert_close(losses["ce"], F.cross_entropy(logits, targets))


def test_fitnet_projections_are_trained_and_clipped(zoo, batch):
    images, targets = batch
    for clip_projections in (True, False):
        distiller = build("fitnet", zoo, clip_projections=clip_projections)
        projections = list(distiller.projections.parameters())
        groups = {g["name"]: g["params"] for g in distiller.param_groups(0.05, 5e-4)}
        assert list(groups) == ["student", "projections"]
        assert groups["projections"] == projections
        clip = {id(p) for p in distiller.clip_parameters()}
        assert {id(p) for p in distiller.student.parameters()} <= clip
        assert all((id(p) in clip) == clip_projections for p in projections)
        # what the trainer does with clip_grad_norm set: the projections' gradients are
        # rescaled with the student's, or (the study's bug) left at full size
        distiller.train()
        sum(distiller(images, targets, epoch=0)[1].values()).backward()
        raw = [p.grad.clone() for p in projections]
        torch.nn.utils.clip_grad_norm_(distiller.clip_parameters(), max_norm=1e-3)
        for p, g in zip(projections, raw, strict=True):
            assert torch.equal(p.grad, g) != clip_projections


# ------------------------------------------------------------------------------------------
# TAKD
# ------------------------------------------------------------------------------------------
def test_takd_student_learns_from_the_last_assistant(zoo, batch):
    images, targets = batch
    chain = [zoo.anchors[1], zoo.assistant]  # any chain: the student learns from the last
    distiller = create("takd", student=net("resnet8"), teacher=zoo.teacher, assistants=chain)
    distiller.eval()
    with torch.no_grad():
        logits, losses = distiller.forward_train(images, targets)
        torch.testing.assert_close(losses["kd"], 0.9 * kd_loss(logits, zoo.assistant(images), 4.0))
        torch.testing.assert_close(losses["ce"], 0.1 * F.cross_entropy(logits, targets))
        outs = distiller.eval_logits(images)
        assert torch.equal(outs["teacher"], zoo.teacher(images))
        assert torch.equal(outs["assistant"], zoo.assistant(images))


def test_takd_stage_configs(tmp_path):
    base = TrainConfig(
        name="r8",
        method="takd",
        student="resnet8",
        teacher="resnet20",
        teacher_checkpoint="teacher.pt",
        dataset="fashion_mnist",
        in_chans=1,
        out_dir=str(tmp_path),
        method_args={"temperature": 2.0},
    )
    stage1, stage2 = takd_stage_configs(base, "resnet14")
    assert (stage1.method, stage1.student, stage1.teacher) == ("kd", "resnet14", "resnet20")
    assert stage1.teacher_checkpoint == "teacher.pt" and stage1.networks == {}
    assert stage1.name == "r8-ta1-resnet14" and stage1.method_args == {"temperature": 2.0}
    best = str(tmp_path / "r8-ta1-resnet14" / "checkpoints" / "best.pt")
    assert (stage2.method, stage2.student, stage2.teacher) == ("takd", "resnet8", "resnet20")
    assert stage2.networks == {"assistants": [{"arch": "resnet14", "checkpoint": best}]}
    assert stage2.name == "r8" and stage2.method_args == {"temperature": 2.0}
    assert dataclasses.replace(stage2, networks={}) == dataclasses.replace(base, networks={})
    chain = takd_stage_configs(base, ["resnet32", "resnet14"])
    assert [
        (c.method, c.student, [a["arch"] for a in c.networks.get("assistants", [])]) for c in chain
    ] == [
        ("kd", "resnet32", []),
        ("takd", "resnet14", ["resnet32"]),
        ("takd", "resnet8", ["resnet32", "resnet14"]),
    ]
    checkpoint = chain[2].networks["assistants"][1]["checkpoint"]
    assert checkpoint.endswith("r8-ta2-resnet14/checkpoints/best.pt")
    with pytest.raises(ValueError, match="teacher"):
        takd_stage_configs(dataclasses.replace(base, teacher=None), "resnet14")


@pytest.fixture
def restore_determinism():
    """`run.build.build` seeds and switches on deterministic algorithms: undo it afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(previous)


def test_takd_stage_configs_run_end_to_end(zoo, fmnist_root, tmp_path, restore_determinism):
    from dfpt_core.run.build import build as build_run
    from dfpt_core.run.build import run

    base = tiny_config(
        tmp_path / "runs",
        fmnist_root,
        name="r8",
        method="takd",
        teacher="resnet20",
        teacher_checkpoint=str(shipped_checkpoint("resnet20")),
        limit_train=64,
        limit_test=32,
        epochs=1,
        eval_batch_size=32,
        milestones=[],
    )
    stage1, stage2 = takd_stage_configs(base, "resnet14")
    trainer = run(stage1)
    distiller = build_run(stage2)[0]
    assert type(distiller).method_name == "takd"
    trained_ta = trainer.distiller.student.state_dict()
    for k, v in distiller.assistant.state_dict().items():
        assert torch.equal(v, trained_ta[k]), k
    for k, v in distiller.teacher.state_dict().items():
        assert torch.equal(v, zoo.teacher.state_dict()[k]), k


# ------------------------------------------------------------------------------------------
# DGKD
# ------------------------------------------------------------------------------------------
def dgkd(zoo, **hp):
    guides = [zoo.assistant, zoo.anchors[1]]  # teacher + 2 assistants = 3 guides
    return create("dgkd", student=net("resnet8"), teacher=zoo.teacher, assistants=guides, **hp)


def test_dgkd_drops_guides_stochastically_but_never_all(zoo):
    for drop_num in (1, 2):
        distiller = dgkd(zoo, drop_num=drop_num)
        torch.manual_seed(0)
        masks = [distiller.sample_kept() for _ in range(600)]
        assert all(sum(m) == 3 - drop_num >= 1 for m in masks)
        dropped = [sum(not m[i] for m in masks) for i in range(3)]
        # uniform: each guide dropped drop_num/3 of the time (600 draws: +-~6 sd margin)
        assert all(abs(d - 200 * drop_num) < 80 for d in dropped), dropped
        assert len({tuple(m) for m in masks}) == 3
    assert dgkd(zoo, drop_num=0).sample_kept() == [True, True, True]
    with pytest.raises(ValueError, match="at least one guide"):
        dgkd(zoo, drop_num=3)


def test_dgkd_draws_are_reproducible_from_the_global_seed(zoo):
    distiller = dgkd(zoo)

    def draws(seed):
        torch.manual_seed(seed)
        return [tuple(distiller.sample_kept()) for _ in range(40)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_dgkd_loss_sums_the_kept_guides(zoo, batch):
    images, targets = batch
    distiller = dgkd(zoo).eval()
    guides = {g: distiller.teachers[g] for g in distiller.guide_names}
    seen = set()
    with torch.no_grad():
        for seed in range(12):
            torch.manual_seed(seed)
            mask = distiller.sample_kept()
            torch.manual_seed(seed)  # the same draw inside forward_train
            logits, losses = distiller.forward_train(images, targets)
            kept = tuple(g for g, k in zip(distiller.guide_names, mask, strict=True) if k)
            assert distiller.last_kept == kept and len(kept) == 2
            seen.add(kept)
            expected = sum(kd_loss(logits, guides[g](images), 4.0) for g in kept)
            torch.testing.assert_close(losses["kd"], 0.9 * expected)
    assert len(seen) > 1
    mean = dgkd(zoo, kd_reduction="mean").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        _, losses = mean.forward_train(images, targets)
        logits = mean.student(images)
        expected = sum(kd_loss(logits, guides[g](images), 4.0) for g in mean.last_kept) / 2
    torch.testing.assert_close(losses["kd"], 0.9 * expected)


# ------------------------------------------------------------------------------------------
# ESKD
# ------------------------------------------------------------------------------------------
def test_eskd_stop_epoch_removes_the_kd_term(zoo, batch):
    images, targets = batch
    distiller = build("eskd", zoo, stop_epoch=5).eval()
    assert distiller.teacher is zoo.early  # the early-stopped checkpoint is the teacher
    calls = []
    hook = zoo.early.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            logits, before = distiller.forward_train(images, targets, epoch=4)
            assert len(calls) == 1
            _, after = distiller.forward_train(images, targets, epoch=5)
            _, later = distiller.forward_train(images, targets, epoch=100)
            assert len(calls) == 1  # the teacher is not even run once KD is off
    finally:
        hook.remove()
    ce = F.cross_entropy(logits, targets)
    torch.testing.assert_close(before["kd"], 0.9 * kd_loss(logits, zoo.early(images), 4.0))
    torch.testing.assert_close(before["ce"], 0.1 * ce)
    for losses in (after, later):
        assert losses["kd"].item() == 0.0
        torch.testing.assert_close(losses["ce"], ce)  # plain CE training after the stop
    assert [distiller.kd_active(e) for e in (0, 4, 5, 6)] == [True, True, False, False]
    assert build("eskd", zoo).kd_active(10**6)  # default: never stop
    with pytest.raises(ValueError, match="stop_epoch"):
        build("eskd", zoo, stop_epoch=-1)


# ------------------------------------------------------------------------------------------
# RCO
# ------------------------------------------------------------------------------------------
def test_rco_switches_anchors_at_the_configured_epochs(zoo, batch):
    images, targets = batch
    distiller = build("rco", zoo, epochs_per_anchor=None, switch_epochs=(3, 7)).eval()
    assert distiller.route == ("anchor0", "anchor1", "teacher")
    assert [distiller.anchor_index(e) for e in range(10)] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    route = [*zoo.anchors, zoo.teacher]
    with torch.no_grad():
        for epoch, guide in [(0, route[0]), (5, route[1]), (8, route[2])]:
            logits, losses = distiller.forward_train(images, targets, epoch=epoch)
            torch.testing.assert_close(losses["kd"], 0.9 * kd_loss(logits, guide(images), 4.0))
            distiller.on_epoch_start(epoch)
            outs = distiller.eval_logits(images)
            assert torch.equal(outs["anchor"], guide(images))
            assert torch.equal(outs["teacher"], zoo.teacher(images))


def test_rco_anchor_depends_only_on_the_epoch(zoo, batch):
    images, _ = batch
    distiller = build("rco", zoo, epochs_per_anchor=None, switch_epochs=(3, 7))
    distiller.on_epoch_start(8)
    distiller.on_epoch_start(2)  # going back: no hysteresis, no counter
    assert torch.equal(distiller.eval_logits(images)["anchor"], zoo.anchors[0](images))
    # a "resumed" copy: the state dict carries no schedule, re-passing the epoch is enough
    resumed = build("rco", zoo, student_seed=5, epochs_per_anchor=None, switch_epochs=(3, 7))
    resumed.load_state_dict(distiller.state_dict())
    assert all(k.startswith(("student.", "teachers.")) for k in distiller.state_dict())
    distiller.on_epoch_start(5)
    resumed.on_epoch_start(5)
    torch.testing.assert_close(
        resumed.eval_logits(images)["anchor"], distiller.eval_logits(images)["anchor"]
    )
    assert resumed.anchor_name(5) == "anchor1"


def test_rco_equal_interval_schedules_and_errors(zoo):
    assert build("rco", zoo, epochs_per_anchor=None).switch_epochs == (80, 160)  # 240 / 3
    ten_epochs = RunContext(10, INPUT, epochs=10)  # the run's length comes from the context
    assert build("rco", zoo, context=ten_epochs, epochs_per_anchor=None).switch_epochs == (3, 6)
    assert build("rco", zoo, epochs_per_anchor=10).switch_epochs == (10, 20)
    assert equal_interval_switches(4, 240) == (60, 120, 180)
    with_teacher = create(
        "rco",
        student=net("resnet8"),
        teacher=zoo.teacher,
        anchors=[*zoo.anchors, zoo.teacher],  # the converged teacher as last anchor: not doubled
        epochs_per_anchor=1,
    )
    assert with_teacher.route == ("anchor0", "anchor1", "teacher")
    for bad in [(3,), (7, 3), (0, 3), (3, 3)]:
        with pytest.raises(ValueError, match="switch_epochs"):
            build("rco", zoo, epochs_per_anchor=None, switch_epochs=bad)
    with pytest.raises(ValueError, match="not both"):
        build("rco", zoo, switch_epochs=(3, 7))  # build() also sets epochs_per_anchor
    with pytest.raises(ValueError, match="cannot split 2 epochs into 3"):
        build("rco", zoo, context=RunContext(10, INPUT, epochs=2), epochs_per_anchor=None)
