"""Teacher outputs shared across runs (`methods.shared_outputs`): a run trained with outputs
another run computed ends with exactly the weights and records of a run that computed its own;
a store never answers for other weights, another batch or another autocast state."""

from __future__ import annotations

import pytest
import torch
from conftest import shipped_checkpoint, untimed
from conftest import tiny_config as tiny

from dfpt_core.methods.shared_outputs import TeacherOutputs, shared_teacher_outputs
from dfpt_core.models import create_model
from dfpt_core.run.build import run


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_a_run_on_shared_teacher_outputs_equals_one_that_computes_them(
    tmp_path, fmnist_root, method
):
    kw = dict(
        method=method, teacher="resnet8", teacher_checkpoint=str(shipped_checkpoint("resnet8"))
    )
    alone = run(tiny(tmp_path / "alone", fmnist_root, **kw))
    with shared_teacher_outputs() as store:
        run(tiny(tmp_path / "other", fmnist_root, **kw, method_args={"ce_weight": 0.5}))
        before = (store.hits, store.misses)
        shared = run(tiny(tmp_path / "shared", fmnist_root, **kw))
    # 3 epochs x (8 training batches + 1 test batch): every teacher forward of the second run
    # was answered by the store
    assert (store.hits - before[0], store.misses - before[1]) == (27, 0)
    assert untimed(shared.history) == untimed(alone.history)
    a, b = alone.distiller.student.state_dict(), shared.distiller.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_store_answers_only_for_the_same_weights_batch_and_autocast():
    torch.manual_seed(0)
    one, other = create_model("resnet8", 10).eval(), create_model("resnet8", 10).eval()
    images = torch.randn(4, 3, 32, 32)
    store = TeacherOutputs()
    with torch.no_grad():
        first = store.get(one, images, lambda: one(images))
        assert torch.equal(store.get(one, images.clone(), lambda: one(images)), first)  # hit
        store.get(other, images, lambda: other(images))  # other weights
        store.get(one, images + 1e-6, lambda: one(images + 1e-6))  # another batch
        cl = images.contiguous(memory_format=torch.channels_last)
        store.get(one, cl, lambda: one(cl))  # another layout: conv bits may differ
        with torch.autocast("cpu", torch.bfloat16):
            store.get(one, images, lambda: one(images))  # another precision
    assert (store.hits, store.misses, len(store)) == (1, 5, 5)


def test_the_store_keeps_within_its_bytes():
    store = TeacherOutputs(max_bytes=3 * 40)  # three outputs of 10 float32 values
    net = torch.nn.Linear(2, 10)
    for k in range(5):
        x = torch.full((1, 2), float(k))
        store.get(net, x, lambda x=x: net(x).detach())
    assert len(store) == 3 and store.bytes == 120
    store.get(net, torch.full((1, 2), 4.0), lambda: pytest.fail("the newest is kept"))
    assert store.hits == 1
