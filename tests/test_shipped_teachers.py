"""The cpu-scale teachers shipped in data/teachers/cpu/: intact, small, found by the notebooks'
run cache for the book's cpu parameters, and as accurate as their manifest says."""

import shutil

import pytest

import dfpt_core.run.build
import dfpt_core.workbook as nb
from dfpt_core.workbook.book import load_params
from dfpt_core.workbook.cache import shipped_manifest, shipped_run
from dfpt_core.workbook.checkout import SHIPPED_DIR

MANIFEST = shipped_manifest()
CPU = load_params("cpu")


def test_manifest_lists_intact_files_under_20_mib():
    assert MANIFEST["runs"], "no shipped teachers"
    for name, entry in MANIFEST["runs"].items():
        assert shipped_run(name) == SHIPPED_DIR / name
        assert entry["config"]["method"] == "ce" and entry["arch"] == entry["config"]["student"]
        assert {"dfpt_core", "torch"} <= set(MANIFEST)
    size = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert size < 20 * 2**20


@pytest.mark.parametrize("arch", dict.fromkeys([CPU["teacher"], *CPU["gap_teachers"]]))
def test_the_cpu_book_loads_its_teachers_instead_of_training(arch, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{arch} would be trained: no shipped run matches its config")

    monkeypatch.setattr(dfpt_core.run.build, "run", refuse)
    teacher = nb.teacher(arch, tmp_path, nb.preset_common(CPU), CPU["teacher_epochs"])
    entry = MANIFEST["runs"][teacher.run.run_dir.name]
    assert teacher.run.run_dir.parent == SHIPPED_DIR
    assert teacher.metrics["student_top1"] == entry["test_top1"]
    if arch == CPU["teacher"]:  # ESKD and RCO read the main teacher's trajectory
        assert sorted(teacher.trajectory) == nb.route_epochs(CPU["teacher_epochs"])


@pytest.mark.parametrize("name", sorted(MANIFEST.get("runs", {})))
def test_shipped_weights_reproduce_their_recorded_accuracy(name):
    entry = MANIFEST["runs"][name]
    metrics = nb.evaluate_checkpoint(
        entry["arch"], SHIPPED_DIR / name / "checkpoints" / "best.pt", nb.preset_common(CPU)
    )
    assert metrics["student_top1"] == pytest.approx(entry["test_top1"], abs=1e-6)
    assert metrics["student_pt"] == pytest.approx(entry["test_pt"], abs=1e-4)


def test_a_damaged_shipped_file_is_refused(tmp_path):
    name = next(iter(MANIFEST["runs"]))
    shutil.copytree(SHIPPED_DIR, tmp_path, dirs_exist_ok=True)
    best = tmp_path / name / "checkpoints" / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0xFF
    best.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="sha256"):
        shipped_run(name, root=tmp_path)
    assert shipped_run("resnet8-ce-0000000000", root=tmp_path) is None


def test_cache_keys_without_extra_networks_are_unchanged_and_networks_are_portable():
    """A run without extra networks keeps the key it had before `networks` existed (the shipped
    teachers are found by such keys); a network's checkpoint of another cached run counts by
    that run's folder, as `teacher_checkpoint` does."""
    from dfpt_core.run.config import TrainConfig
    from dfpt_core.workbook.cache import config_key

    kd = TrainConfig(
        method="kd",
        student="resnet8",
        teacher="resnet20",
        teacher_checkpoint="/cache/resnet20-ce-0123456789/checkpoints/best.pt",
        dataset="fashion_mnist",
        in_chans=1,
        epochs=3,
    )
    assert config_key(kd.to_dict()) == "5814c05180"  # computed before `networks` existed

    def takd(checkpoint: str) -> str:
        ta = {"arch": "resnet14", "checkpoint": checkpoint}
        cfg = TrainConfig(method="takd", teacher="resnet20", networks={"assistants": [ta]})
        return config_key(cfg.to_dict())

    here = takd("/cache/resnet14-kd-0123456789/checkpoints/best.pt")
    assert here == takd("../elsewhere/resnet14-kd-0123456789/checkpoints/best.pt")
    assert here != takd("/cache/resnet14-kd-9876543210/checkpoints/best.pt")
    assert here != config_key(TrainConfig(method="takd", teacher="resnet20").to_dict())
