"""Run configuration: a typed dataclass, loaded from YAML and `key=value` overrides, validated
before any work starts (unknown keys, wrong types and impossible values name the key)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SCHEDULES = ("multistep", "cosine")
NETWORK_KEYS = ("arch", "checkpoint", "args")  # of each entry of `networks.<role>`
#: "auto": bf16 where the device computes it natively (`engine.runtime.resolve_amp`), else none
AMP_MODES = ("none", "bf16", "fp16", "auto")
#: on a CPU, "keep": freed memory stays in the process for the next step (`engine.runtime.
#: keep_freed_memory`, Linux/glibc); "system": the C library's own policy. Results are the same.
CPU_MALLOC_MODES = ("keep", "system")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the allowed values."""


@dataclass
class TrainConfig:
    """Defaults are the CIFAR-100 recipe of the public KD codebases (CRD/DKD/mdistiller; this
    project assumes DFPT-KD used it too, which the paper's summary does not say): 240 epochs, SGD
    momentum 0.9, batch 64, lr 0.05 (0.01 for ShuffleNet/MobileNet students), x0.1 at
    150/180/210, wd 5e-4."""

    name: str = "run"
    method: str = "kd"
    student: str = "resnet8x4"
    teacher: str | None = None
    teacher_checkpoint: str | None = None
    # start the trained network from weights (path or "torchvision"); a classifier of another
    # size is re-initialised (fine-tuning, e.g. ImageNet -> CUB-200)
    student_checkpoint: str | None = None
    # extra create_model options, e.g. {stem: imagenet} for the torchvision ResNets
    student_args: dict = field(default_factory=dict)
    teacher_args: dict = field(default_factory=dict)
    method_args: dict = field(default_factory=dict)
    # the further networks the method requires, by role (see `networks_of`): e.g. TAKD/DGKD's
    # {assistants: [{arch: resnet14, checkpoint: runs/ta/checkpoints/best.pt}]}, RCO's
    # {anchors: [{checkpoint: runs/teacher/checkpoints/epoch60.pt}, ...]}
    networks: dict = field(default_factory=dict)
    dataset: str = "cifar100"
    data_root: str | None = None
    download: bool = False
    in_chans: int = 3
    limit_train: int | None = None
    limit_test: int | None = None
    # hold out this many training images as a validation split (the same for every run, see
    # data.split_indices): the run's selected epoch (`best`, best.pt) is the one with the highest
    # validation top-1; with 0 it is the last epoch. Never chosen on the test set.
    val_size: int = 0
    epochs: int = 240
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    milestones: list = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0
    clip_grad_norm: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    cpu_malloc: str = "keep"
    fast_loader: bool = True
    num_workers: int = 0
    out_dir: str = "runs"
    checkpoint_every: int = 1
    # also keep the student's weights after these epochs (checkpoints/epoch<k>.pt), e.g. the
    # early-stopped teacher of ESKD or the route of teacher checkpoints of RCO
    keep_checkpoints: list = field(default_factory=list)
    progress: bool = True

    def validate(self) -> TrainConfig:
        """Check values and names against the registries; return self."""
        from ..data import list_datasets
        from ..methods import hyperparameters, list_methods
        from ..models import list_models
        from ..models.registry import model_options

        def need(ok: bool, key: str, msg: str):
            if not ok:
                raise ConfigError(f"{key}: {msg}")

        need(
            self.method in list_methods(),
            "method",
            f"unknown {self.method!r}; allowed: {', '.join(list_methods())}",
        )
        models = list_models()
        need(
            self.student in models,
            "student",
            f"unknown model {self.student!r}; allowed: {', '.join(models)}",
        )
        if self.teacher is not None:
            need(
                self.teacher in models,
                "teacher",
                f"unknown model {self.teacher!r}; allowed: {', '.join(models)}",
            )
        need(
            self.dataset in list_datasets(),
            "dataset",
            f"unknown {self.dataset!r}; allowed: {', '.join(list_datasets())}",
        )
        valid_hp = hyperparameters(self.method)
        unknown = sorted(set(self.method_args) - set(valid_hp))
        need(
            not unknown,
            "method_args",
            f"{unknown} not hyperparameters of {self.method}; valid: {', '.join(valid_hp)}",
        )
        need(
            bool(self.name) and self.name not in (".", "..") and not set(self.name) & set("/\\"),
            "name",
            f"must be a plain folder name inside out_dir (no / or \\, not . or ..), "
            f"got {self.name!r}",
        )
        self._validate_networks(need, models)
        need(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        need(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        need(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.schedule in SCHEDULES, "schedule", f"allowed: {', '.join(SCHEDULES)}")
        need(
            all(isinstance(m, int) and m > 0 for m in self.milestones)
            and list(self.milestones) == sorted(self.milestones),
            "milestones",
            f"must be increasing positive epochs, got {self.milestones}",
        )
        need(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        need(0 <= self.warmup_epochs < self.epochs, "warmup_epochs", "must be in [0, epochs)")
        need(
            self.clip_grad_norm is None or self.clip_grad_norm > 0,
            "clip_grad_norm",
            "must be > 0 or null",
        )
        need(self.amp in AMP_MODES, "amp", f"allowed: {', '.join(AMP_MODES)}")
        need(
            self.cpu_malloc in CPU_MALLOC_MODES,
            "cpu_malloc",
            f"allowed: {', '.join(CPU_MALLOC_MODES)}; got {self.cpu_malloc!r}",
        )
        need(self.in_chans in (1, 3), "in_chans", "allowed: 1, 3")
        need(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
            "device",
            f"allowed: auto, cpu, cuda[:N], mps; got {self.device!r}",
        )
        for key in ("limit_train", "limit_test"):
            v = getattr(self, key)
            need(v is None or v >= 1, key, f"must be >= 1 or null, got {v}")
        need(self.val_size >= 0, "val_size", f"must be >= 0, got {self.val_size}")
        need(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        need(
            all(isinstance(k, int) and 1 <= k <= self.epochs for k in self.keep_checkpoints),
            "keep_checkpoints",
            f"must be epochs in 1..{self.epochs}, got {self.keep_checkpoints}",
        )
        need(self.num_workers >= 0, "num_workers", "must be >= 0")
        for key, arch in (("student_args", self.student), ("teacher_args", self.teacher)):
            unknown = sorted(set(getattr(self, key)) - set(model_options(arch) if arch else ()))
            need(
                not unknown,
                key,
                f"{unknown} are not options of {arch}; allowed: "
                f"{', '.join(model_options(arch)) if arch else 'none (no teacher)'}",
            )
        return self

    def _validate_networks(self, need, models: list[str]) -> None:
        from ..methods import method_class

        roles = [r for r in method_class(self.method).requires if r != "teacher"]
        for role, specs in self.networks.items():
            need(
                role in roles,
                f"networks.{role}",
                f"method {self.method!r} takes no {role!r} networks"
                + (f" (it takes: {', '.join(roles)})" if roles else "")
                + (
                    "; give the teacher with teacher/teacher_checkpoint"
                    if role == "teacher"
                    else ""
                ),
            )
            need(
                isinstance(specs, list),
                f"networks.{role}",
                f"expected a list of {{arch, checkpoint, args}} mappings, got {specs!r}",
            )
            for i, spec in enumerate(specs):
                key = f"networks.{role}[{i}]"
                need(isinstance(spec, dict), key, f"expected a mapping, got {spec!r}")
                unknown = sorted(set(spec) - set(NETWORK_KEYS))
                need(
                    not unknown,
                    key,
                    f"unknown key(s) {unknown}; allowed: {', '.join(NETWORK_KEYS)}",
                )
                arch = spec.get("arch", self.teacher)
                need(
                    arch is not None,
                    f"{key}.arch",
                    "missing, and there is no teacher architecture to default to",
                )
                need(
                    arch in models,
                    f"{key}.arch",
                    f"unknown model {arch!r}; allowed: {', '.join(models)}",
                )
                need(
                    isinstance(spec.get("checkpoint"), str),
                    f"{key}.checkpoint",
                    'required: a checkpoint path, "published" or "torchvision", got '
                    f"{spec.get('checkpoint')!r}",
                )
                need(
                    isinstance(spec.get("args", {}), dict),
                    f"{key}.args",
                    f"expected a mapping of create_model options, got {spec.get('args')!r}",
                )

    def networks_of(self, role: str) -> list[dict]:
        """The networks given for `role`, each as {arch, checkpoint, args} with the defaults
        filled in: `arch` defaults to the teacher's, and then `args` to `teacher_args` (a
        checkpoint of the teacher itself, e.g. RCO's anchors); otherwise `args` defaults to {}."""
        out = []
        for spec in self.networks.get(role, []):
            own = "arch" in spec
            arch = spec["arch"] if own else self.teacher
            args = spec.get("args", {} if own else self.teacher_args)
            out.append({"arch": arch, "checkpoint": spec["checkpoint"], "args": dict(args)})
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(key: str, value, hint) -> object:
    """Coerce int -> float where a float is expected; otherwise the value must match `hint`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_type(key, value, opt)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    base = origin or hint
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-3` (no dot) as text
            return float(value)
        except ValueError:
            pass
    if base is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if base is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, base):
        raise ConfigError(f"{key}: expected {base.__name__}, got {type(value).__name__} {value!r}")
    return value


def make_config(values: dict) -> TrainConfig:
    """A TrainConfig from a plain dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; allowed: {', '.join(hints)}")
    checked = {k: _check_type(k, v, hints[k]) for k, v in values.items()}
    return TrainConfig(**checked).validate()


def parse_overrides(pairs: list[str]) -> dict:
    """["epochs=3", "method_args.beta=2"] -> {"epochs": 3, "method_args": {"beta": 2}} (values
    parsed as YAML scalars)."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not key=value")
        value = yaml.safe_load(raw) if raw else None
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{self.name}, line {key_node.start_mark.line + 1}: key {key!r} is given "
                    "twice; keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(path: Path) -> object:
    """The YAML document in `path`; a syntax error or a repeated key names the file and line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from e
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    finally:
        loader.dispose()


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """A config file's values; a top-level `base: other.yaml` (relative to the file) is read
    first and overridden by the file's own keys, so per-run files state only what differs.
    An empty file, a file that is not a mapping, a YAML error or a repeated key is an error
    naming the file."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in _seen:
        raise ConfigError(f"config files include each other in a loop: {path}")
    values = parse_yaml(path)
    if values is None:
        raise ConfigError(f"config file {path} is empty: give at least `method` and `student`")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    base = values.pop("base", None)
    if base is None:
        return values
    return merge(read_yaml(path.parent / base, (*_seen, path)), values)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (optional, with `base:` inheritance) and apply `key=value`
    overrides; the result is validated."""
    values = read_yaml(path) if path is not None else {}
    return make_config(merge(values, parse_overrides(overrides or [])))
