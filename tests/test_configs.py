"""The example run configurations under configs/: every file loads and validates, the full
CIFAR-100 set is complete and follows the paper's recipe, the cpu set mirrors it pair for pair
with teacher checkpoints that the cpu teacher configs produce, and broken files fail naming the
key. No training happens here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dfpt_core.data import dataset_info
from dfpt_core.methods.dkd import dkd_beta
from dfpt_core.run.config import ConfigError, load_config, read_yaml
from dfpt_core.run.weights import PUBLISHED

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
FULL = CONFIGS / "full" / "cifar100"
CPU = CONFIGS / "cpu"

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
PAIRS = SAME_FAMILY + CROSS_FAMILY
METHODS = ("kd", "dkd", "dfpt_kd", "dfpt_kdt")
MOBILE = {"ShuffleV1", "ShuffleV2", "MobileNetV2"}
# what a pair file may state beyond its recipe
PAIR_KEYS = {"base", "name", "method", "teacher", "student", "teacher_checkpoint", "lr"}
PAIR_KEYS |= {"method_args"}

ALL_YAML = sorted(CONFIGS.rglob("*.yaml"))


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def pair_dirs(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and p.name != "teachers"}


def raw(path: Path) -> dict:
    """The file's own keys, without its base."""
    return yaml.safe_load(path.read_text()) or {}


# --- every file ----------------------------------------------------------------------------


def test_there_are_configs():
    assert len(ALL_YAML) >= 2 * len(PAIRS) * len(METHODS)


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_every_file_loads_and_validates(path):
    cfg = load_config(path)  # make_config runs TrainConfig.validate()
    assert path.read_text().startswith("#"), "start with a comment saying what the file is for"
    if path.name not in ("recipe.yaml",):
        assert cfg.name != "run", "a run file names its run"
    # torchvision ResNets on 224 px data need the ImageNet stem (the default is the CIFAR one)
    if dataset_info(cfg.dataset).image_size >= 224:
        for arch, args in ((cfg.student, cfg.student_args), (cfg.teacher, cfg.teacher_args)):
            if arch and arch.startswith("tv_resnet"):
                assert args.get("stem") == "imagenet", f"{arch} needs stem: imagenet"


def test_run_names_are_unique_per_out_dir():
    seen: dict[tuple[str, str], Path] = {}
    for path in ALL_YAML:
        if path.name == "recipe.yaml":
            continue
        cfg = load_config(path)
        key = (cfg.out_dir, cfg.name)
        assert key not in seen, f"{rel(path)} and {rel(seen[key])} write to the same run dir"
        seen[key] = path


# --- full CIFAR-100 ------------------------------------------------------------------------


def test_full_cifar100_recipe():
    cfg = load_config(FULL / "recipe.yaml")
    assert cfg.dataset == "cifar100" and cfg.in_chans == 3
    assert cfg.epochs == 240 and cfg.batch_size == 64 and cfg.lr == 0.05
    assert cfg.momentum == 0.9 and not cfg.nesterov and cfg.weight_decay == 5e-4
    assert cfg.schedule == "multistep" and cfg.milestones == [150, 180, 210] and cfg.gamma == 0.1
    assert cfg.warmup_epochs == 0 and cfg.seed == 0 and cfg.device == "auto"
    assert cfg.fast_loader and cfg.out_dir == "runs/full"


def test_full_cifar100_set_is_complete():
    assert pair_dirs(FULL) == {f"{t}-{s}" for t, s in PAIRS}
    for t, s in PAIRS:
        assert {p.stem for p in (FULL / f"{t}-{s}").glob("*.yaml")} == set(METHODS)


@pytest.mark.parametrize("teacher,student", PAIRS, ids=lambda v: v)
@pytest.mark.parametrize("method", METHODS)
def test_full_cifar100_pair_follows_recipe(teacher, student, method):
    path = FULL / f"{teacher}-{student}" / f"{method}.yaml"
    cfg = load_config(path)
    assert (cfg.teacher, cfg.student, cfg.method) == (teacher, student, method)
    assert cfg.name == f"{teacher}-{student}-{method}"
    assert teacher in PUBLISHED and cfg.teacher_checkpoint == "published"
    assert cfg.dataset == "cifar100" and cfg.epochs == 240 and cfg.batch_size == 64
    assert cfg.milestones == [150, 180, 210] and cfg.weight_decay == 5e-4
    assert cfg.lr == (0.01 if student in MOBILE else 0.05)
    assert cfg.out_dir == "runs/full"
    if method == "dkd":
        assert cfg.method_args == {"beta": dkd_beta(teacher, student)}
    else:
        assert cfg.method_args == {}
    own = raw(path)
    assert own["base"] == "../recipe.yaml"
    assert set(own) <= PAIR_KEYS, f"states recipe keys itself: {sorted(set(own) - PAIR_KEYS)}"
    if "lr" in own:
        assert own["lr"] != raw(FULL / "recipe.yaml")["lr"], "repeats the recipe's lr"


def test_full_cifar100_comments_quote_published_figures():
    """The first comment names the top-1 it targets; spot-check against REFERENCE_RESULTS."""
    expected = {
        ("resnet32x4", "resnet8x4", "dfpt_kdt"): "78.63",
        ("vgg13", "MobileNetV2", "kd"): "67.37",
        ("wrn_40_2", "ShuffleV1", "dkd"): "76.70",
        ("resnet110", "resnet32", "dfpt_kd"): "73.92",
    }
    for (t, s, m), top1 in expected.items():
        head = (FULL / f"{t}-{s}" / f"{m}.yaml").read_text().splitlines()[0]
        assert head.startswith("# Reproduces:") and top1 in head, head


# --- cpu scale -----------------------------------------------------------------------------


def test_cpu_recipe():
    cfg = load_config(CPU / "recipe.yaml")
    assert cfg.dataset == "fashion_mnist" and cfg.in_chans == 1
    assert (cfg.limit_train, cfg.limit_test) == (10000, 2000)
    assert cfg.batch_size == 64 and cfg.lr == 0.05 and cfg.schedule == "cosine"
    assert 1 <= cfg.epochs <= 10 and cfg.device == "auto" and cfg.out_dir == "runs/cpu"


def test_cpu_set_mirrors_full_set():
    assert pair_dirs(CPU) == pair_dirs(FULL)
    for pair in pair_dirs(FULL):
        full_methods = {p.stem for p in (FULL / pair).glob("*.yaml")}
        assert {p.stem for p in (CPU / pair).glob("*.yaml")} == full_methods


@pytest.mark.parametrize("teacher,student", PAIRS, ids=lambda v: v)
@pytest.mark.parametrize("method", METHODS)
def test_cpu_pair_matches_full_pair_and_its_teacher_config(teacher, student, method):
    cfg = load_config(CPU / f"{teacher}-{student}" / f"{method}.yaml")
    full = load_config(FULL / f"{teacher}-{student}" / f"{method}.yaml")
    for key in ("name", "method", "teacher", "student", "lr"):
        assert getattr(cfg, key) == getattr(full, key), key
    if method == "dkd":
        assert cfg.method_args["beta"] == full.method_args["beta"]
    else:
        assert cfg.method_args == full.method_args
    assert cfg.dataset == "fashion_mnist" and cfg.in_chans == 1

    teacher_file = CPU / "teachers" / f"{teacher}.yaml"
    assert teacher_file.is_file(), f"no cpu teacher config for {teacher}"
    tcfg = load_config(teacher_file)
    assert tcfg.method == "ce" and tcfg.student == teacher and tcfg.name == f"teacher-{teacher}"
    assert tcfg.student_args == cfg.teacher_args
    assert (tcfg.dataset, tcfg.in_chans) == (cfg.dataset, cfg.in_chans)
    run_dir = Path(tcfg.out_dir) / tcfg.name
    assert Path(cfg.teacher_checkpoint) == run_dir / "checkpoints" / "best.pt"


def test_cpu_teachers_are_exactly_the_pairs_teachers():
    assert {p.stem for p in (CPU / "teachers").glob("*.yaml")} == {t for t, _ in PAIRS}


# --- ImageNet and CUB-200 ------------------------------------------------------------------


def test_imagenet_recipe_is_the_standard_one():
    cfg = load_config(CONFIGS / "full" / "imagenet" / "recipe.yaml")
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
    root = CONFIGS / "full" / folder / "-".join(pair)
    assert {p.stem for p in root.glob("*.yaml")} == {"kd", "dfpt_kd", "dfpt_kdt"}
    for path in root.glob("*.yaml"):
        cfg = load_config(path)
        assert (cfg.teacher, cfg.student, cfg.method) == (*pair, path.stem)
        assert cfg.name == f"{folder}-{pair[0]}-{pair[1]}-{path.stem}"
        assert "input_size" not in cfg.method_args  # filled from the dataset's image size
        if checkpoint is not None:
            assert cfg.teacher_checkpoint == checkpoint
        else:  # the CUB teacher comes from teacher.yaml's run
            tcfg = load_config(CONFIGS / "full" / folder / "teacher.yaml")
            assert tcfg.method == "ce" and tcfg.student == cfg.teacher
            assert tcfg.student_args == cfg.teacher_args and tcfg.dataset == cfg.dataset
            run_dir = Path(tcfg.out_dir) / tcfg.name
            assert Path(cfg.teacher_checkpoint) == run_dir / "checkpoints" / "best.pt"


def test_readme_commands_name_existing_files():
    blocks = re.findall(r"```bash\n(.*?)```", (CONFIGS / "README.md").read_text(), re.S)
    named = set(re.findall(r"configs/[\w./-]+\.yaml", "".join(blocks)))
    assert named
    for name in named:
        assert (REPO / name).is_file(), name


# --- overrides and broken files ------------------------------------------------------------


def test_overrides_apply_on_top_of_a_file():
    path = FULL / "resnet56-resnet20" / "dkd.yaml"
    cfg = load_config(path, ["epochs=3", "device=cpu", "method_args.warmup=5"])
    assert cfg.epochs == 3 and cfg.device == "cpu"
    assert cfg.method_args == {"beta": 2.0, "warmup": 5}  # merged, beta kept
    assert cfg.lr == 0.05 and cfg.milestones == [150, 180, 210]  # the rest untouched
    assert load_config(path).epochs == 240


def test_base_is_relative_to_the_file_and_chains(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mid.yaml").write_text(f"base: {FULL / 'recipe.yaml'}\nepochs: 10\n")
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
def test_broken_file_fails_naming_the_key(tmp_path, body, key):
    path = tmp_path / "broken.yaml"
    path.write_text(f"base: {FULL / 'recipe.yaml'}\n{body}")
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
