"""Teacher outputs shared across runs: runs of a study that see the same batches through the same
frozen teacher need not each recompute its outputs.

Inside `shared_teacher_outputs()`, `Distiller.teacher_logits` (every method's teacher, assistant
and anchor logits, in training and in evaluation) looks its output up by what determines it
exactly: the teacher's weights (a digest of its state), the input batch's bytes, shape, strides,
dtype and device, the autocast state and the thread count. A hit returns the stored tensor,
which is bit-identical to what the forward pass would return, so a run's numbers do not change
(tests/test_shared_outputs.py trains with and without the store and compares every weight).
The batches of runs with the same seed are the same (`data.TensorLoader` draws them from the
seed and epoch), and so is the test set of every epoch's evaluation.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def _bytes(tensor: Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(module: nn.Module) -> str:
    """A digest of a frozen module's parameters and buffers (its names, shapes and bytes),
    computed once per module object."""
    if module not in _FINGERPRINTS:
        h = hashlib.blake2b(digest_size=16)
        for name, tensor in module.state_dict().items():
            h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            h.update(_bytes(tensor))
        _FINGERPRINTS[module] = h.hexdigest()
    return _FINGERPRINTS[module]


def batch_key(images: Tensor) -> tuple:
    """What, besides the weights, determines a forward pass's bits: the batch's bytes and
    layout, its device, the autocast state there and the thread count."""
    kind = images.device.type
    autocast = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind)
    return (
        hashlib.blake2b(_bytes(images), digest_size=16).hexdigest(),
        tuple(images.shape),
        images.stride(),
        images.dtype,
        str(images.device),
        autocast,
        torch.get_num_threads(),
    )


class TeacherOutputs:
    """A bounded store of teacher outputs (least recently used out first) with hit counts."""

    def __init__(self, max_bytes: int = 2**30):
        self.max_bytes, self.bytes = max_bytes, 0
        self.hits = self.misses = 0
        self._outputs: OrderedDict[tuple, Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._outputs)

    def get(self, teacher: nn.Module, images: Tensor, forward: Callable[[], Tensor]) -> Tensor:
        """The stored output of `teacher` on `images`, or `forward()` (then stored)."""
        key = (fingerprint(teacher), *batch_key(images))
        if key in self._outputs:
            self.hits += 1
            self._outputs.move_to_end(key)
            return self._outputs[key]
        self.misses += 1
        out = forward()
        self._outputs[key] = out
        self.bytes += out.nbytes
        while self.bytes > self.max_bytes and self._outputs:
            self.bytes -= self._outputs.popitem(last=False)[1].nbytes
        return out


_ACTIVE: list[TeacherOutputs] = []


def active_store() -> TeacherOutputs | None:
    """The store of the innermost `shared_teacher_outputs()`, or None outside one."""
    return _ACTIVE[-1] if _ACTIVE else None


def share_in_this_process(max_bytes: int = 2**30) -> TeacherOutputs:
    """Share teacher outputs among every run this process trains from now on (a study's
    worker); returns the store."""
    store = TeacherOutputs(max_bytes)
    _ACTIVE.append(store)
    return store


@contextlib.contextmanager
def shared_teacher_outputs(max_bytes: int = 2**30) -> Iterator[TeacherOutputs]:
    """Share teacher outputs among the runs trained inside (in this process); yields the store
    (its `hits` and `misses` say how many forward passes were saved)."""
    store = share_in_this_process(max_bytes)
    try:
        yield store
    finally:
        _ACTIVE.remove(store)
