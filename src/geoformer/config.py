"""Run configuration: small dataclasses, TOML presets and ``--set key=value`` overrides.

A run is ``RunConfig(model=GPTConfig, data=DataConfig, train=TrainConfig, seed)``. Presets live in
``configs/NAME.toml`` with the same sections; ``--set`` takes dotted keys (``train.lr=3e-4``,
``model.attn.window=16``) whose values are parsed as TOML literals and checked against the
dataclass field types, so a typo or a wrong type is a one-line error rather than a silent no-op.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoformer import attention, models
from geoformer.coerce import coerce_dataclass
from geoformer.errors import GeoformerError
from geoformer.models.gpt import GPTConfig
from geoformer.train import schedules
from geoformer.train.callbacks import callback_class
from geoformer.train.homotopy import HomotopyOptions

# the sections a preset may hold besides the run's own; read by `compare` / `claims`
EXTRA_SECTIONS = ("compare",)


@dataclass
class DataConfig:
    source: str = "shakespeare"  # "shakespeare" (the shipped corpus) or a path to a UTF-8 file or folder
    include: list[str] = field(default_factory=list)  # a folder's files to read: glob patterns (none: all)
    exclude: list[str] = field(default_factory=list)  # ... and to skip, e.g. ["__pycache__", "*.pyc"]
    tokenizer: str = "char"  # "char" or "bpe" (byte-level BPE trained locally with `tokenizers`)
    bpe_vocab_size: int = 1024
    # a run folder (or tokenizer.json) whose tokenizer encodes this text instead of one trained on it, so a model
    # trained on one corpus can go on training on another (train.init_from); "" = train one here
    tokenizer_from: str = ""
    val_fraction: float = 0.1  # the last fraction of the token stream is validation
    cache_dir: str = ""  # where prepared token arrays go; "" = $GEOFORMER_CACHE or ~/.cache/geoformer


@dataclass
class TrainConfig:
    max_iters: int = 2000
    batch_size: int = 12  # global batch (split across ranks under torchrun)
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    schedule: str = "warmup_cosine"
    optimizer: str = "adamw"  # adamw | muon (Muon on hidden matrices + AdamW) | sgd (momentum beta1) | schedulefree
    homotopy: dict[str, Any] = field(default_factory=dict)  # HomotopyOptions for schedule = "homotopy"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20
    eval_batch_size: int = 0  # 0 = same as batch_size
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # autocast: auto (bf16 autocast on CUDA, fp32 elsewhere) | float32 | bfloat16
    param_dtype: str = "float32"  # weights and optimizer state: float32 | bfloat16 (pure bf16) | float64
    compile: bool = False
    deterministic: bool = True  # torch.use_deterministic_algorithms (warn_only): deterministic CUDA kernels
    threads: int = 0  # torch intra-op threads; 0 = torch's default (all cores)
    dist_timeout_s: float = 600.0  # torchrun: a collective waiting longer than this for a frozen peer fails
    callbacks: list[str] = field(default_factory=list)  # registered callback names, e.g. ["attn_stats"]
    # a run folder (or ckpt.pt) whose model weights start this run (the optimizer and schedule start fresh):
    # fine-tuning and continual learning; its model config must equal this one's. "" = random initialisation
    init_from: str = ""
    protect: dict[str, Any] = field(default_factory=dict)  # options of the "protect" callback (circuits.protect)


@dataclass
class RunConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 1337

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return coerce_dataclass(cls, d, where="config")


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``3``, ``1e-3``, ``true``, ``"x"``, ``[1, 2]``) or else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(d: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in the nested dict ``d`` (creating tables as needed)."""
    parts = key.split(".")
    if not all(parts):
        raise GeoformerError(f"malformed --set key {key!r}")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise GeoformerError(f"--set {key}: {p!r} is not a table")
        cur = nxt
    cur[parts[-1]] = value


def parse_sets(items: list[str] | None) -> list[tuple[str, Any]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise GeoformerError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out.append((k.strip(), parse_value(v.strip())))
    return out


def configs_dir() -> Path:
    """The presets folder: ``configs/`` at the repository root (the package is installed editable)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "configs").is_dir() and (parent / "pyproject.toml").exists():
            return parent / "configs"
    return Path.cwd() / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.toml"))


def load_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GeoformerError(f"config file not found: {path}") from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as e:
        raise GeoformerError(f"cannot read config file {path}: {e.__class__.__name__}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise GeoformerError(f"malformed TOML in {path}: {e}") from None


def load_raw(preset: str | None = None, config: str | None = None) -> dict[str, Any]:
    """The raw nested dict of a preset name or a TOML file (exactly one of them)."""
    if (preset is None) == (config is None):
        raise GeoformerError("give exactly one of --preset NAME or --config FILE.toml")
    if preset is not None:
        path = configs_dir() / f"{preset}.toml"
        if not path.is_file():
            raise GeoformerError(f"unknown preset {preset!r}; known presets: {', '.join(preset_names())}")
        return load_toml(path)
    return load_toml(Path(config))


def build_config(raw: dict[str, Any], sets: list[tuple[str, Any]] | None = None) -> RunConfig:
    """Apply overrides to a raw preset dict and validate it into a :class:`RunConfig`."""
    raw = json.loads(json.dumps(raw))  # deep copy, plain types
    for key, value in sets or []:
        apply_override(raw, key, value)
    for sec in EXTRA_SECTIONS:
        raw.pop(sec, None)
    cfg = RunConfig.from_dict(raw)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-field checks and name lookups, each a one-line error."""
    m, t, d = cfg.model, cfg.train, cfg.data
    attention.make_options(m.attention, m.attn)  # unknown kind / option -> lists the known ones
    models.validate_config(m)  # unknown model.arch / model.levels option -> one line
    schedules.get(t.schedule)
    for name in t.callbacks:  # an unknown name is one line listing the known ones; each checks its own options
        callback_class(name).check_config(cfg)
    if t.protect and "protect" not in t.callbacks:
        raise GeoformerError('train.protect is set but train.callbacks has no "protect": the options would be ignored')
    if t.optimizer not in ("adamw", "muon", "sgd", "schedulefree"):
        raise GeoformerError(f"unknown optimizer {t.optimizer!r}; known optimizers: adamw, muon, schedulefree, sgd")
    if t.optimizer == "schedulefree" and t.schedule != "constant":
        raise GeoformerError("train.optimizer=schedulefree brings its own schedule; set train.schedule=constant")
    coerce_dataclass(HomotopyOptions, t.homotopy, where="train.homotopy").validate()
    if d.tokenizer not in ("char", "bpe"):
        raise GeoformerError(f"unknown tokenizer {d.tokenizer!r}; known tokenizers: bpe, char")
    checks = [
        (m.n_layer >= 1, "model.n_layer must be >= 1"),
        (
            m.n_head >= 1 and m.n_embd % m.n_head == 0,
            "model.n_embd must be a positive multiple of model.n_head",
        ),
        (m.block_size >= 1, "model.block_size must be >= 1"),
        (0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)"),
        (t.max_iters >= 1, "train.max_iters must be >= 1"),
        (t.batch_size >= 1 and t.grad_accum >= 1, "train.batch_size and train.grad_accum must be >= 1"),
        (
            math.isfinite(t.lr) and t.lr > 0 and math.isfinite(t.min_lr) and t.min_lr >= 0,
            "train.lr must be a finite number > 0 and train.min_lr a finite number >= 0",
        ),
        (0.0 <= t.beta1 < 1.0, f"train.beta1 must be in [0, 1), got {t.beta1}"),
        (0.0 <= t.beta2 < 1.0, f"train.beta2 must be in [0, 1), got {t.beta2}"),
        (math.isfinite(t.weight_decay) and t.weight_decay >= 0, "train.weight_decay must be a finite number >= 0"),
        (math.isfinite(t.grad_clip) and t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 = off), got {t.grad_clip}"),
        (t.warmup_iters >= 0, f"train.warmup_iters must be >= 0, got {t.warmup_iters}"),
        (t.threads >= 0, f"train.threads must be >= 1 (or 0 for torch's default), got {t.threads}"),
        (t.eval_batch_size >= 0, f"train.eval_batch_size must be >= 1 (or 0 = batch_size), got {t.eval_batch_size}"),
        (math.isfinite(t.dist_timeout_s) and t.dist_timeout_s > 0, "train.dist_timeout_s must be a positive number"),
        (math.isfinite(m.init_std) and m.init_std > 0, f"model.init_std must be a positive number, got {m.init_std}"),
        (t.eval_interval >= 1 and t.eval_iters >= 1, "train.eval_interval and train.eval_iters must be >= 1"),
        (0.0 < d.val_fraction < 1.0, "data.val_fraction must be in (0, 1)"),
        (t.dtype in ("auto", "float32", "bfloat16"), "train.dtype must be auto, float32 or bfloat16"),
        (
            t.param_dtype in ("float32", "bfloat16", "float64"),
            "train.param_dtype must be float32, bfloat16 or float64",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise GeoformerError(msg)


def load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GeoformerError(f"cannot read {path}: {type(e).__name__}") from None
