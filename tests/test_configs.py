"""Run configurations: the runs of the paper's table, resolved from one recipe per scale and the
table of pairs (dfpt_core/run/recipes.py), and the config files a user writes (and the ImageNet
and CUB-200 ones under configs/). Every (scale, pair, method) resolves and validates; the full
set follows the paper's recipe and equals the hand-written files it replaced; cpu overlays full
and smoke overlays cpu in the documented keys only; the per-pair choices (lr per student family,
DKD's beta per pair, the teacher's weights) are the published ones; `dfpt config` prints files
that train the same run; bad names and broken files fail naming the key. No training here."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from dfpt_core import cli
from dfpt_core.data import dataset_info
from dfpt_core.run.config import ConfigError, load_config, make_config, read_yaml
from dfpt_core.run.recipes import (
    DFPT_CIFAR100,
    PAIR_METHODS,
    PAIRS,
    RECIPES,
    SCALES,
    pair_config,
    pair_notes,
    pair_values,
    recipe,
)
from dfpt_core.run.weights import PUBLISHED

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

SAME_FAMILY = [
    ("resnet32x4", "resnet8x4"),
    ("resnet110", "resnet32"),
    ("resnet56", "resnet20"),
    ("wrn_40_2", "wrn_40_1"),
    ("wrn_40_2", "wrn_16_2"),
    ("vgg13", "vgg8"),
]
CROSS_FAMILY = [
    ("resnet32x4", "ShuffleV1"),
    ("wrn_40_2", "ShuffleV1"),
    ("vgg13", "MobileNetV2"),
    ("ResNet50", "MobileNetV2"),
    ("resnet32x4", "ShuffleV2"),
]
TABLE = SAME_FAMILY + CROSS_FAMILY
NAMES = [f"{t}-{s}" for t, s in TABLE]
METHODS = ("kd", "dkd", "dfpt_kd", "dfpt_kdt")
MOBILE = {"ShuffleV1", "ShuffleV2", "MobileNetV2"}
# mdistiller's configs/cifar100/dkd/*.yaml: BETA per pair; CFG.DKD.BETA = 8.0 for the others
DKD_BETA = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("vgg13", "vgg8"): 6.0,
    ("vgg13", "MobileNetV2"): 6.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
}
# what cpu changes in full, and smoke in cpu: the book's values of each scale
CPU_OVERLAY = {
    "dataset": "fashion_mnist",
    "in_chans": 1,
    "limit_train": 5000,
    "val_size": 2000,
    "epochs": 4,
    "schedule": "cosine",
    "milestones": [],
    "channels_last": True,
    "amp": "auto",
    "out_dir": "runs/cpu",
    "teachers": "trained",
    "teacher_epochs": 15,
}
SMOKE_OVERLAY = {
    "limit_train": 1000,
    "limit_test": 500,
    "val_size": 500,
    "epochs": 2,
    "device": "cpu",
    "amp": "none",
    "out_dir": "runs/smoke",
    "teacher_epochs": 2,
}

FILES = sorted(CONFIGS.rglob("*.yaml"))


def fingerprint(values) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def explicit(values: dict) -> dict:
    """The values as the validated config holds them (ints made floats where floats are due)."""
    cfg = make_config(values)
    return {k: getattr(cfg, k) for k in values}


def run_config(*argv: str) -> tuple[int, str, str]:
    """`dfpt config ...` through the command line: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["config", *argv])
    return code, out.getvalue(), err.getvalue()


# --- the table -----------------------------------------------------------------------------


def test_the_table_is_the_papers():
    assert list(PAIRS) == NAMES and list(DFPT_CIFAR100) == TABLE
    assert PAIR_METHODS == METHODS and SCALES == ("smoke", "cpu", "full")
    assert set(RECIPES) == set(SCALES)


@pytest.mark.parametrize("pair", NAMES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_run_of_the_table_resolves_and_validates(scale, pair, method):
    cfg = pair_config(scale, pair, method)  # make_config runs TrainConfig.validate()
    teacher, student = PAIRS[pair]
    assert (cfg.teacher, cfg.student, cfg.method) == (teacher, student, method)
    assert cfg.name == f"{teacher}-{student}-{method}"
    assert cfg.lr == (0.01 if student in MOBILE else 0.05)
    assert type(cfg.lr) is float
    assert cfg.out_dir == f"runs/{scale}"
    assert "input_size" not in cfg.method_args  # filled from the dataset's image size
    if method == "dkd":
        assert cfg.method_args["beta"] == DKD_BETA.get((teacher, student), 8.0)
    else:
        assert cfg.method_args == {}


def test_full_set_follows_the_papers_recipe():
    for pair in NAMES:
        teacher, student = PAIRS[pair]
        for method in METHODS:
            cfg = pair_config("full", pair, method)
            assert cfg.dataset == "cifar100" and cfg.in_chans == 3
            assert cfg.limit_train is None and cfg.limit_test is None
            assert cfg.epochs == 240 and cfg.batch_size == 64
            assert cfg.momentum == 0.9 and not cfg.nesterov and cfg.weight_decay == 5e-4
            assert cfg.schedule == "multistep" and cfg.milestones == [150, 180, 210]
            assert cfg.gamma == 0.1 and cfg.warmup_epochs == 0
            assert cfg.seed == 0 and cfg.device == "auto" and cfg.fast_loader
            assert not cfg.channels_last
            assert teacher in PUBLISHED and cfg.teacher_checkpoint == "published"
            if method == "dkd":  # 240 epochs: DKD's own 20-epoch warm-up
                assert cfg.method_args == {"beta": DKD_BETA.get((teacher, student), 8.0)}


def test_full_set_equals_the_files_it_replaced():
    """The 44 files of configs/full/cifar100/ (deleted): their values (recipe.yaml's and the pair
    file's, as the config held them) hashed, and one of them in full."""
    full = [explicit(pair_values("full", p, m)) for p in NAMES for m in METHODS]
    assert fingerprint(full) == "25e2d65a037920bd"
    assert pair_values("full", "resnet32x4-ShuffleV1", "dkd") == {
        "dataset": "cifar100",
        "in_chans": 3,
        "epochs": 240,
        "batch_size": 64,
        "lr": 0.01,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 0.0005,
        "schedule": "multistep",
        "milestones": [150, 180, 210],
        "gamma": 0.1,
        "warmup_epochs": 0,
        "seed": 0,
        "device": "auto",
        "fast_loader": True,
        "out_dir": "runs/full",
        "name": "resnet32x4-ShuffleV1-dkd",
        "method": "dkd",
        "teacher": "resnet32x4",
        "student": "ShuffleV1",
        "teacher_checkpoint": "published",
        "method_args": {"beta": 8.0},
    }


def test_cpu_set_keeps_the_per_run_choices_of_the_files_it_replaced():
    """configs/cpu/<pair>/*.yaml and configs/cpu/teachers/*.yaml (deleted): names, teachers,
    students, teacher checkpoints, lr and method_args (DKD: beta and warm-up 1) are the same;
    only the recipe moved to the book's cpu values."""
    keys = ("name", "method", "teacher", "student", "teacher_checkpoint", "lr", "method_args")
    runs = [{k: getattr(pair_config("cpu", p, m), k) for k in keys} for p in NAMES for m in METHODS]
    assert fingerprint(runs) == "8b141610ce7abf99"
    teacher_keys = ("name", "method", "student", "teacher", "lr")
    teachers = [
        {k: getattr(pair_config("cpu", p, role="teacher"), k) for k in teacher_keys} for p in NAMES
    ]
    assert fingerprint(teachers) == "e9192847aec361d6"


def test_lr_is_001_exactly_for_shufflenet_and_mobilenet_students():
    for scale in SCALES:
        for pair, (_, student) in PAIRS.items():
            lr = pair_config(scale, pair, "kd").lr
            assert lr == (0.01 if student in MOBILE else 0.05), (scale, pair)
    assert {s for _, s in TABLE} & MOBILE == MOBILE  # each family is in the table


def test_dkd_beta_per_pair_is_mdistillers():
    betas = {pair: pair_config("full", pair, "dkd").method_args["beta"] for pair in NAMES}
    assert betas == {
        "resnet32x4-resnet8x4": 8.0,
        "resnet110-resnet32": 2.0,
        "resnet56-resnet20": 2.0,
        "wrn_40_2-wrn_40_1": 6.0,
        "wrn_40_2-wrn_16_2": 6.0,
        "vgg13-vgg8": 6.0,
        "resnet32x4-ShuffleV1": 8.0,
        "wrn_40_2-ShuffleV1": 8.0,
        "vgg13-MobileNetV2": 6.0,
        "ResNet50-MobileNetV2": 8.0,
        "resnet32x4-ShuffleV2": 8.0,
    }
    for scale in ("cpu", "smoke"):  # same beta, the warm-up scaled to 1 epoch
        for pair in NAMES:
            args = pair_config(scale, pair, "dkd").method_args
            assert args == {"beta": betas[pair], "warmup": 1}


# --- scales: overlays ----------------------------------------------------------------------


def changed(base: dict, over: dict) -> dict:
    return {k: v for k, v in over.items() if base.get(k, object()) != v}


def test_cpu_is_full_overlaid_with_the_books_cpu_values():
    assert RECIPES["cpu"]["base"] == "full" and RECIPES["smoke"]["base"] == "cpu"
    assert changed(recipe("full"), recipe("cpu")) == CPU_OVERLAY
    assert {k for k in RECIPES["cpu"] if k != "base"} == set(CPU_OVERLAY)  # states no more
    cpu = pair_config("cpu", "resnet56-resnet20", "kd")
    assert (cpu.batch_size, cpu.lr, cpu.weight_decay, cpu.device) == (64, 0.05, 5e-4, "auto")


def test_smoke_is_cpu_overlaid_with_the_books_smoke_values():
    assert changed(recipe("cpu"), recipe("smoke")) == SMOKE_OVERLAY
    assert {k for k in RECIPES["smoke"] if k != "base"} == set(SMOKE_OVERLAY)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pair", NAMES)
def test_runs_differ_across_scales_only_in_the_overlay(pair, method):
    full, cpu, smoke = (pair_config(s, pair, method).to_dict() for s in ("full", "cpu", "smoke"))
    derived = {"teacher_checkpoint", "method_args"}  # the teacher's weights, DKD's warm-up
    assert set(changed(full, cpu)) <= set(CPU_OVERLAY) | derived
    assert set(changed(cpu, smoke)) <= set(SMOKE_OVERLAY) | derived


def test_recipes_are_fresh_copies():
    recipe("cpu")["milestones"].append(1)
    recipe("full")["milestones"].append(1)
    assert recipe("cpu")["milestones"] == [] and recipe("full")["milestones"] == [150, 180, 210]


# --- teachers ------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ("cpu", "smoke"))
@pytest.mark.parametrize("pair", NAMES)
def test_pair_runs_find_the_teacher_run_of_their_scale(scale, pair):
    teacher, _ = PAIRS[pair]
    tcfg = pair_config(scale, pair, role="teacher")
    assert tcfg.method == "ce" and tcfg.student == teacher and tcfg.teacher is None
    assert tcfg.name == f"teacher-{teacher}" and tcfg.epochs == recipe(scale)["teacher_epochs"]
    for method in METHODS:
        cfg = pair_config(scale, pair, method)
        assert (tcfg.dataset, tcfg.in_chans, tcfg.out_dir) == (
            cfg.dataset,
            cfg.in_chans,
            cfg.out_dir,
        )
        assert tcfg.student_args == cfg.teacher_args
        run_dir = Path(tcfg.out_dir) / tcfg.name
        assert Path(cfg.teacher_checkpoint) == run_dir / "checkpoints" / "best.pt"
    # same place when the runs go elsewhere
    moved = pair_config(scale, pair, "kd", overrides=["out_dir=/scratch/r"])
    assert moved.teacher_checkpoint == f"/scratch/r/teacher-{teacher}/checkpoints/best.pt"
    assert pair_config(scale, pair, role="teacher", overrides=["out_dir=/scratch/r"]).out_dir == (
        "/scratch/r"
    )


def test_a_teacher_run_is_the_recipe_with_cross_entropy_for_teacher_epochs():
    assert pair_values("cpu", "resnet56-resnet20", "ce", role="teacher") == {
        **{k: v for k, v in recipe("cpu").items() if k not in ("teachers", "teacher_epochs")},
        "name": "teacher-resnet56",
        "method": "ce",
        "student": "resnet56",
        "epochs": 15,
    }


# --- overrides and errors ------------------------------------------------------------------


def test_overrides_apply_last_and_derived_choices_follow():
    cfg = pair_config(
        "full",
        "resnet56-resnet20",
        "dkd",
        overrides=["epochs=3", "device=cpu", "method_args.warmup=5"],
    )
    assert cfg.epochs == 3 and cfg.device == "cpu"
    assert cfg.method_args == {"beta": 2.0, "warmup": 5}  # merged, beta kept
    assert cfg.lr == 0.05 and cfg.milestones == [150, 180, 210]  # the rest untouched
    # DKD's warm-up follows the epochs: 20 of 240 -> 2 of 24
    assert pair_config("full", "vgg13-vgg8", "dkd", overrides=["epochs=24"]).method_args == {
        "beta": 6.0,
        "warmup": 2,
    }
    assert pair_config("cpu", "vgg13-MobileNetV2", "kd", overrides=["lr=0.1"]).lr == 0.1
    assert pair_config("cpu", "vgg13-vgg8", "kd", overrides=["lr=1"]).lr == 1.0  # a float
    assert pair_config("full", "resnet56-resnet20", "dkd").epochs == 240


@pytest.mark.parametrize(
    "args,message",
    [
        (("huge", "resnet56-resnet20", "kd"), "scale: unknown 'huge'; allowed: smoke, cpu, full"),
        (("cpu", "resnet9-resnet8", "kd"), "pair: unknown 'resnet9-resnet8'; allowed: "),
        (("cpu", "resnet56-resnet20", "ce"), "method: unknown 'ce'; allowed: kd, dkd, dfpt_kd"),
        (("cpu", "resnet56-resnet20", None), "method: none given; allowed: kd, dkd"),
    ],
)
def test_unknown_scale_pair_or_method_lists_the_valid_ones(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        pair_config(*args)
    if "pair" in message:
        assert all(name in str(error.value) for name in NAMES)
    with pytest.raises(ConfigError, match="--role teacher"):
        pair_config("cpu", "resnet56-resnet20", "kd", role="teacher")
    with pytest.raises(ConfigError, match="epochs"):
        pair_config("cpu", "resnet56-resnet20", "kd", overrides=["epochs=0"])


# --- dfpt config ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_dfpt_config_prints_a_file_that_trains_the_same_run(scale, tmp_path):
    for pair in NAMES:
        for method in (*METHODS, None):
            argv = ["--scale", scale, "--pair", pair]
            argv += ["--role", "teacher"] if method is None else ["--method", method]
            code, out, err = run_config(*argv)
            assert code == 0, err
            path = tmp_path / "run.yaml"
            path.write_text(out)
            role = "teacher" if method is None else "student"
            assert load_config(path) == pair_config(scale, pair, method, role)
            head = out.splitlines()[0]
            assert head == f"# dfpt config {' '.join(argv)}"


def test_dfpt_config_names_the_published_figure_it_reproduces():
    expected = {
        ("resnet32x4", "resnet8x4", "dfpt_kdt"): "78.63",
        ("vgg13", "MobileNetV2", "kd"): "67.37",
        ("wrn_40_2", "ShuffleV1", "dkd"): "76.70",
        ("resnet110", "resnet32", "dfpt_kd"): "73.92",
        ("resnet56", "resnet20", "kd"): "70.66",
    }
    for (t, s, m), top1 in expected.items():
        notes = pair_notes("full", f"{t}-{s}", m)
        assert notes[0].startswith("Reproduces:") and f"top-1 {top1}" in notes[0], notes
        code, out, _ = run_config("--scale", "full", "--pair", f"{t}-{s}", "--method", m)
        comments = " ".join(line[2:] for line in out.splitlines() if line.startswith("# "))
        assert code == 0 and f"published top-1 {top1}" in comments
        cpu = " ".join(pair_notes("cpu", f"{t}-{s}", m))
        assert top1 in cpu and f"--pair {t}-{s} --role teacher" in cpu


def test_dfpt_config_resolves_a_users_file_and_lists_the_table(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        f"base: {CONFIGS / 'imagenet' / 'recipe.yaml'}\nname: mine\nepochs: 5\n"
    )
    code, out, _ = run_config("--config", str(tmp_path / "mine.yaml"), "lr=0.1")
    assert code == 0
    values = yaml.safe_load(out)
    assert values["name"] == "mine" and values["epochs"] == 5 and values["lr"] == 0.1
    assert values["dataset"] == "imagenet" and "base" not in values
    code, out, _ = run_config("--list")
    assert code == 0 and all(name in out for name in NAMES)
    assert re.search(r"resnet56-resnet20\s+0\.05\s+2\s", out)
    assert re.search(r"vgg13-MobileNetV2\s+0\.01\s+6\s", out)
    code, out, _ = run_config("--list", "--scale", "cpu")
    assert "runs/cpu/teacher-ResNet50/checkpoints/best.pt" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--scale", "huge", "--pair", "resnet56-resnet20", "--method", "kd"], "scale: unknown"),
        (["--scale", "cpu", "--pair", "x", "--method", "kd"], "pair: unknown 'x'; allowed:"),
        (["--scale", "cpu", "--pair", "vgg13-vgg8", "--method", "fitnet"], "method: unknown"),
        (["--scale", "cpu", "--pair", "vgg13-vgg8"], "method: none given"),
        (["--pair", "vgg13-vgg8", "--method", "kd"], "give --config FILE, or a run of the"),
        (["--config", "x.yaml", "--scale", "cpu"], "not both"),
    ],
)
def test_dfpt_config_errors(argv, message):
    code, out, err = run_config(*argv)
    assert code == 2 and out == "" and message in err


def test_the_core_reads_no_file_of_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the recipes are in the package
    assert pair_config("cpu", "resnet56-resnet20", "kd").name == "resnet56-resnet20-kd"


# --- the files under configs/: ImageNet and CUB-200 ----------------------------------------


def test_configs_holds_only_the_imagenet_and_cub200_files():
    assert {p.relative_to(CONFIGS).parts[0] for p in FILES} == {"imagenet", "cub200"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_loads_and_validates(path):
    cfg = load_config(path)
    assert path.read_text().startswith("#"), "start with a comment saying what the file is for"
    if path.name != "recipe.yaml":
        assert cfg.name != "run", "a run file names its run"
    # torchvision ResNets on 224 px data need the ImageNet stem (the default is the CIFAR one)
    if dataset_info(cfg.dataset).image_size >= 224:
        for arch, args in ((cfg.student, cfg.student_args), (cfg.teacher, cfg.teacher_args)):
            if arch and arch.startswith("tv_resnet"):
                assert args.get("stem") == "imagenet", f"{arch} needs stem: imagenet"


def test_run_names_are_unique_per_out_dir():
    seen: dict[tuple[str, str], str] = {}
    runs = [(str(p), load_config(p)) for p in FILES if p.name != "recipe.yaml"]
    runs += [
        (f"{scale} {pair} {m}", pair_config(scale, pair, m))
        for scale in SCALES
        for pair in NAMES
        for m in METHODS
    ]
    runs += [(f"{s} {p} teacher", pair_config(s, p, role="teacher")) for s in SCALES for p in NAMES]
    for what, cfg in runs:
        key = (cfg.out_dir, cfg.name)
        if "teacher" in what and key in seen and "teacher" in seen[key]:
            continue  # pairs with the same teacher share its run
        assert key not in seen, f"{what} and {seen[key]} write to the same run dir"
        seen[key] = what


def test_imagenet_recipe_is_the_standard_one():
    cfg = load_config(CONFIGS / "imagenet" / "recipe.yaml")
    assert cfg.dataset == "imagenet" and cfg.epochs == 100
    assert cfg.milestones == [30, 60, 90] and cfg.gamma == 0.1
    assert cfg.weight_decay == 1e-4 and cfg.momentum == 0.9 and cfg.schedule == "multistep"
    assert cfg.batch_size in (256, 512) and cfg.lr == pytest.approx(0.1 * cfg.batch_size / 256)


@pytest.mark.parametrize(
    "folder,pair,checkpoint",
    [
        ("imagenet", ("tv_resnet34", "tv_resnet18"), "torchvision"),
        ("imagenet", ("tv_resnet50", "tv_mobilenet_v2"), "torchvision"),
        ("cub200", ("tv_resnet50", "tv_resnet18"), None),
    ],
)
def test_large_image_pairs(folder, pair, checkpoint):
    root = CONFIGS / folder / "-".join(pair)
    assert {p.stem for p in root.glob("*.yaml")} == {"kd", "dfpt_kd", "dfpt_kdt"}
    for path in root.glob("*.yaml"):
        cfg = load_config(path)
        assert (cfg.teacher, cfg.student, cfg.method) == (*pair, path.stem)
        assert cfg.name == f"{folder}-{pair[0]}-{pair[1]}-{path.stem}"
        assert cfg.out_dir == "runs/full"
        assert "input_size" not in cfg.method_args  # filled from the dataset's image size
        if checkpoint is not None:
            assert cfg.teacher_checkpoint == checkpoint
        else:  # the CUB teacher comes from teacher.yaml's run
            tcfg = load_config(CONFIGS / folder / "teacher.yaml")
            assert tcfg.method == "ce" and tcfg.student == cfg.teacher
            assert tcfg.student_args == cfg.teacher_args and tcfg.dataset == cfg.dataset
            run_dir = Path(tcfg.out_dir) / tcfg.name
            assert Path(cfg.teacher_checkpoint) == run_dir / "checkpoints" / "best.pt"


# --- the commands in the READMEs -----------------------------------------------------------


def readme_commands(path: Path) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [shlex.split(line) for line in lines if re.match(r"dfpt (train|config) ", line)]
    return [words[: words.index(">")] if ">" in words else words for words in commands]


@pytest.mark.parametrize("readme", ["configs/README.md", "README.md"])
def test_readme_commands_resolve(readme, tmp_path):
    commands = readme_commands(REPO / readme)
    assert commands
    for words in commands:
        args = cli.build_parser().parse_args(words[1:])
        if args.config is not None and not Path(args.config).is_absolute():
            if args.config.parts[0] == "configs":
                args.config = REPO / args.config
                assert args.config.is_file(), words
            else:  # a file the reader saves first (`dfpt config ... > my_run.yaml`)
                code, out, _ = run_config("--scale", "cpu", "--pair", NAMES[0], "--method", "kd")
                args.config = tmp_path / args.config
                args.config.write_text(out)
        if args.command == "config" and args.list:
            continue
        cfg, _, notes = cli.selected(args)  # resolves and validates, trains nothing
        assert cfg.name != "run" and notes, words


# --- config files: inheritance and broken files --------------------------------------------


@pytest.fixture
def full_recipe_file(tmp_path):
    """The full recipe as a user's base file."""
    path = tmp_path / "recipe.yaml"
    values = {k: v for k, v in recipe("full").items() if k not in ("teachers", "teacher_epochs")}
    path.write_text(yaml.safe_dump(values))
    return path


def test_overrides_apply_on_top_of_a_file(full_recipe_file):
    cfg = load_config(full_recipe_file, ["epochs=3", "device=cpu", "method=dkd"])
    assert cfg.epochs == 3 and cfg.device == "cpu" and cfg.method == "dkd"
    assert cfg.lr == 0.05 and cfg.milestones == [150, 180, 210]
    assert load_config(full_recipe_file).epochs == 240


def test_base_is_relative_to_the_file_and_chains(tmp_path, full_recipe_file):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mid.yaml").write_text(f"base: {full_recipe_file}\nepochs: 10\n")
    (tmp_path / "run.yaml").write_text("base: a/mid.yaml\nname: chained\nlr: 0.2\n")
    cfg = load_config(tmp_path / "run.yaml")
    assert (cfg.name, cfg.epochs, cfg.lr, cfg.batch_size) == ("chained", 10, 0.2, 64)


@pytest.mark.parametrize(
    "body,key",
    [
        ("epoch: 3\n", "epoch"),  # unknown key
        ("epochs: ten\n", "epochs"),  # wrong type
        ("weight_decay: small\n", "weight_decay"),  # text where a float is expected
        ("fast_loader: 1\n", "fast_loader"),
        ("milestones: [180, 150]\n", "milestones"),
        ("method: dkd\nmethod_args: {betta: 2.0}\n", "method_args"),
        ("method: nope\n", "method"),
        ("teacher: resnet999\n", "teacher"),
    ],
)
def test_broken_file_fails_naming_the_key(tmp_path, full_recipe_file, body, key):
    path = tmp_path / "broken.yaml"
    path.write_text(f"base: {full_recipe_file}\n{body}")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(path)


def test_broken_base_fails(tmp_path):
    (tmp_path / "base.yaml").write_text("lr: fast\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\nname: x\n")
    with pytest.raises(ConfigError, match="lr"):
        load_config(tmp_path / "run.yaml")
    (tmp_path / "orphan.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "orphan.yaml")


def test_base_loop_fails(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nepochs: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nepochs: 2\n")
    with pytest.raises(ConfigError, match="loop"):
        read_yaml(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "self.yaml")
