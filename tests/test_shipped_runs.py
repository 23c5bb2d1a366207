"""The runs shipped in data/runs/cpu/ (the cpu book's teachers and students): intact, within the
size budget, found by the notebooks' run cache for the book's cpu parameters (nothing trains),
and their weights as accurate as their records say."""

import json
import shutil

import pytest

import dfpt_core.run.build
import dfpt_core.workbook as nb
from dfpt_core.engine.runtime import native_bf16
from dfpt_core.models.checkpoint import XZ_MAGIC
from dfpt_core.workbook.book import load_params
from dfpt_core.workbook.cache import shipped_manifest, shipped_run
from dfpt_core.workbook.checkout import SHIPPED_DIR

MANIFEST = shipped_manifest()
CPU = load_params("cpu")
BUDGET_MIB = 60  # teachers and shipped runs together


def test_manifest_lists_intact_files_within_the_budget():
    assert MANIFEST["runs"], "nothing shipped"
    assert {"dfpt_core", "torch", "regenerate"} <= set(MANIFEST)
    for name, entry in MANIFEST["runs"].items():
        assert shipped_run(name) == SHIPPED_DIR / name
        assert entry["arch"] == entry["config"]["student"]
        assert entry["method"] == entry["config"]["method"]
        record = json.loads((SHIPPED_DIR / name / "metrics.json").read_text())
        assert record["best"]["student_top1"] == entry["test_top1"]
        assert record["selection"] == entry["selection"] == "val_student_top1"
    size = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert size < BUDGET_MIB * 2**20


def test_every_shipped_file_is_in_the_manifest():
    listed = {f"{name}/{rel}" for name, e in MANIFEST["runs"].items() for rel in e["files"]}
    on_disk = {
        str(p.relative_to(SHIPPED_DIR))
        for p in SHIPPED_DIR.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert on_disk == listed


def test_every_shipped_checkpoint_is_xz_compressed():
    """The budget holds because they are (`save_checkpoint(compress=True)`)."""
    checkpoints = sorted(SHIPPED_DIR.rglob("*.pt"))
    assert checkpoints
    assert [p for p in checkpoints if p.read_bytes()[:6] != XZ_MAGIC] == []


@pytest.mark.parametrize("arch", dict.fromkeys([CPU["teacher"], *CPU["gap_teachers"]]))
def test_the_cpu_book_loads_its_teachers_instead_of_training(arch, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{arch} would be trained: no shipped run matches its config")

    monkeypatch.setattr(dfpt_core.run.build, "run", refuse)
    teacher = nb.teacher(arch, tmp_path, nb.preset_common(CPU), CPU["teacher_epochs"])
    entry = MANIFEST["runs"][teacher.run.run_dir.name]
    assert teacher.run.run_dir.parent == SHIPPED_DIR and entry["role"] == "teacher"
    assert teacher.metrics["student_top1"] == entry["test_top1"]
    if arch == CPU["teacher"]:  # ESKD, RCO and notebook 01 read the main teacher's trajectory
        assert sorted(teacher.trajectory) == nb.route_epochs(CPU["teacher_epochs"])


TEACHERS = sorted(n for n, e in MANIFEST.get("runs", {}).items() if e["role"] == "teacher")
STUDENTS = sorted(n for n, e in MANIFEST.get("runs", {}).items() if e["role"] == "student")


@pytest.mark.parametrize("name", TEACHERS + STUDENTS[:2])
def test_shipped_weights_reproduce_their_recorded_accuracy(name):
    """Re-scored on the full test set with the run's own precision and memory format: equal on
    a CPU like the one that trained them (native bf16), within 0.1 points (10 of 10,000 images
    that another CPU's rounding may flip; students are shipped in fp16) elsewhere."""
    entry = MANIFEST["runs"][name]
    config = entry["config"]
    metrics = dfpt_core.run.build.evaluate_checkpoint(
        entry["arch"],
        SHIPPED_DIR / name / "checkpoints" / "best.pt",
        config["dataset"],
        config["in_chans"],
        config["limit_test"],
        device="cpu",
        amp=json.loads((SHIPPED_DIR / name / "metrics.json").read_text())["amp"],
        channels_last=config["channels_last"],
        **config["student_args"],
    )
    exact = entry["role"] == "teacher" and native_bf16()
    tolerance = 1e-6 if exact else 0.1
    assert metrics["student_top1"] == pytest.approx(entry["test_top1"], abs=tolerance)
    assert metrics["student_pt"] == pytest.approx(entry["test_pt"], abs=1e-4 if exact else 2e-3)


def test_a_damaged_shipped_file_is_refused(tmp_path):
    name = TEACHERS[0]
    shutil.copytree(SHIPPED_DIR, tmp_path, dirs_exist_ok=True)
    best = tmp_path / name / "checkpoints" / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0xFF
    best.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="sha256"):
        shipped_run(name, root=tmp_path)
