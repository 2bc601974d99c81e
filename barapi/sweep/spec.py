"""A sweep's specification: a TOML file of base run settings and the fields to vary.

    [run]                # the base: any `barapi run` option (RunConfig field), plus preset
    provider = "clarifai"
    model = "moderation-recognition"
    classes = "0,1"
    epochs = 2

    [grid]               # every combination of these lists
    seed = [0, 1, 2]
    q = [5, 10]

    [random]             # for each trial, one value drawn from each list
    lr = [0.02, 0.05, 0.1]

    [card]               # overrides of the provider's price/limit card (as --card-set)
    requests_per_second = 10

    [sweep]              # how the sweep runs (all optional)
    samples = 1          # random draws per grid point
    seed = 0             # seed of the random draws (the trials are the same on every read)
    max_concurrent = 4   # trials at a time (--max-concurrent wins)
    cpus_per_trial = 1.0
    gpus_per_trial = 0.0
    lease_dollars = 0.0  # dollars a trial takes from the sweep's wallet at a time (0: auto)
    cache_dir = "..."    # the answer cache on each node (default ~/.cache/barapi)
    cache = true         # default: on for priced providers
    hook = "pkg.mod:fn"  # optional: your own black box or settings (see `Trial.plan`)

Trials are expanded on reading, in a fixed order (grid row-major in the file's key order,
then samples), so that a sweep and its resume see the same trials. Nothing is created here:
a bad field raises ConfigError with one line naming the file, the table and the field.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from barapi.cards import OVERRIDABLE, Card
from barapi.config import RunConfig, make_config, one_line
from barapi.errors import ConfigError
from barapi.files import read_small_text

TABLES = ("run", "grid", "random", "card", "sweep")
RUN_EXTRAS = ("preset",)
"""Keys of [run], [grid] and [random] besides RunConfig's fields."""
PATH_FIELDS = ("dataset", "weights", "key_file")
"""Run settings that may name a file: made absolute against the spec's folder when they do,
since a trial runs in another process and folder."""


class SweepOptions(BaseModel):
    """The [sweep] table."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    samples: int = Field(1, ge=1, description="random draws per grid point")
    seed: int = Field(0, description="seed of the random draws")
    max_concurrent: int | None = Field(None, ge=1, description="trials at a time")
    cpus_per_trial: float = Field(1.0, ge=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    lease_dollars: float = Field(0.0, ge=0, description="dollars leased at a time; 0: auto")
    cache_dir: str | None = None
    cache: bool | None = None
    hook: str | None = Field(None, description="module:function turning a trial's values into "
                             "(run settings, adapter or None); with it, [run], [grid] and "
                             "[random] may hold keys of the hook's own")


class Trial(BaseModel):
    """One trial: its index, its folder name and its full run settings (`values`: what
    `make_config` takes, preset included; `varied`: the fields the sweep chose)."""

    model_config = ConfigDict(frozen=True)

    index: int
    name: str
    values: dict[str, Any]
    varied: dict[str, Any]
    hook: str | None = None

    def plan(self, build: bool = True) -> tuple[RunConfig, Any]:
        """The trial's RunConfig and black box (None: the provider its config names). With a
        hook ("module:function"), `function(values, build)` returns (run settings, an
        Adapter or None); `build` False asks for the settings only (validation on the
        driver). Raises ConfigError for bad settings."""
        values = dict(self.values)
        adapter = None
        if self.hook is not None:
            values, adapter = load_hook(self.hook)(values, build)
            values = dict(values)
        return make_config(values.pop("preset", None), **values), adapter

    def config(self) -> RunConfig:
        return self.plan(build=False)[0]


def load_hook(text: str) -> Any:
    """The callable named "module:function"; raises ConfigError when it cannot be found."""
    import importlib

    module, _, name = text.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"hook {text!r}: cannot load it ({one_line(exc)})") from exc


class SweepSpec(BaseModel):
    """A read spec: the base, the grid and random choices, card overrides and options."""

    model_config = ConfigDict(frozen=True)

    path: str
    run: dict[str, Any]
    grid: dict[str, list[Any]]
    random: dict[str, list[Any]]
    card: dict[str, Any]
    options: SweepOptions

    def trials(self) -> list[Trial]:
        """Every trial, in a fixed order (see the module's docstring)."""
        keys = list(self.grid)
        rng = random.Random(self.options.seed)
        trials: list[Trial] = []
        for row in itertools.product(*(self.grid[k] for k in keys)):
            for _ in range(self.options.samples):
                varied = dict(zip(keys, row, strict=True))
                varied.update({k: rng.choice(v) for k, v in self.random.items()})
                index = len(trials)
                trials.append(Trial(index=index, name=trial_name(index, varied),
                                    values={**self.run, **varied}, varied=varied,
                                    hook=self.options.hook))
        return trials

    def to_toml_dict(self) -> dict[str, Any]:
        """The spec as stored in the sweep folder (JSON-compatible)."""
        return {"run": self.run, "grid": self.grid, "random": self.random, "card": self.card,
                "sweep": self.options.model_dump()}


def trial_name(index: int, varied: dict[str, Any]) -> str:
    """"003-seed1-q5": the index, then the varied values, kept short and path-safe."""
    parts = [f"{k}{v}" for k, v in varied.items()]
    text = "-".join(parts)
    safe = "".join(c if c.isalnum() or c in "._" else "-" for c in text)[:60].strip("-")
    if len(text) > 60:
        safe += "-" + hashlib.sha256(json.dumps(varied, sort_keys=True).encode()).hexdigest()[:6]
    return f"{index:03d}" + (f"-{safe}" if safe else "")


def _normalise(key: str) -> str:
    return key.replace("-", "_")


def _fail(path: Path, where: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: [{where}] {message}")


def _absolute(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for name in PATH_FIELDS:
        value = out.get(name)
        if isinstance(value, str) and not Path(value).is_absolute():
            candidate = path.parent / value
            if candidate.exists():
                out[name] = str(candidate.resolve())
    return out


def parse_spec(data: dict[str, Any], path: Path) -> SweepSpec:
    """A SweepSpec from the TOML tables in `data` (`path` names the file in errors).

    Raises ConfigError naming the file, table and field: no run setting at all (an empty
    spec is not "the default run"), an unknown table or field, a value of the wrong type, an
    empty list, a field both in [grid] and [random], or trial settings that `barapi run`
    would refuse (checked for every trial)."""
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ConfigError(f"{path}: unknown table [{unknown[0]}] (expected: {', '.join(TABLES)})")
    fields = set(RunConfig.model_fields) | set(RUN_EXTRAS)
    tables: dict[str, dict[str, Any]] = {}
    for table in TABLES:
        raw = data.get(table, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
        tables[table] = {_normalise(k): v for k, v in raw.items()}
    try:
        options = SweepOptions(**tables["sweep"])
    except ValidationError as exc:
        raise _fail(path, "sweep", one_line(exc)) from exc
    if options.hook is not None:
        try:
            load_hook(options.hook)
        except ConfigError as exc:
            raise _fail(path, "sweep", f"hook: {exc}") from exc
    for table in ("run", "grid", "random"):
        for key, value in tables[table].items():
            if key not in fields and options.hook is None:
                raise _fail(path, table, f"{key}: not a barapi run option (see `barapi run --help`)")
            if table != "run":
                if not isinstance(value, list) or not value:
                    raise _fail(path, table, f"{key}: expected a non-empty list of values")
                if any(isinstance(v, (dict, list)) for v in value):
                    raise _fail(path, table, f"{key}: values must be numbers, strings or booleans")
    both = sorted(set(tables["grid"]) & set(tables["random"]))
    if both:
        raise _fail(path, "random", f"{both[0]}: also in [grid]; vary a field in one table only")
    card_fields = [name for name in OVERRIDABLE if name != "sources"]
    for key in tables["card"]:
        if key not in card_fields:
            why = "a card's name cannot be overridden" if key == "name" else "not a card field"
            raise _fail(path, "card", f"{key}: {why} (expected one of {', '.join(card_fields)})")
    try:
        Card(name="check", **tables["card"])
    except ValidationError as exc:
        raise _fail(path, "card", one_line(exc)) from exc
    if not any(tables[t] for t in ("run", "grid", "random")):
        raise ConfigError(f"{path}: no run settings: [run], [grid] and [random] are all "
                          f"missing or empty (an empty spec is a mistake, not the default run)")
    if options.cache_dir is not None and not Path(options.cache_dir).is_absolute():
        options = options.model_copy(  # trials run in other folders
            update={"cache_dir": str((path.parent / options.cache_dir).resolve())})
    for key in ("resolution",):
        for table in ("run",):
            if tables[table].get(key) == "full":
                tables[table][key] = None
        for table in ("grid", "random"):
            if key in tables[table]:
                tables[table][key] = [None if v == "full" else v for v in tables[table][key]]
    spec = SweepSpec(path=str(path), run=_absolute(path, tables["run"]), grid=tables["grid"],
                     random=tables["random"], card=tables["card"], options=options)
    for trial in spec.trials():
        try:
            trial.config()
        except ConfigError as exc:
            where, culprit = _culprit(spec, trial)
            message = str(exc)
            if culprit is not None and not message.startswith(f"{culprit}:"):
                message = f"{culprit}: {message}"
            raise _fail(path, where, f"{message} (trial {trial.name})") from exc
    return spec


def _culprit(spec: SweepSpec, trial: Trial) -> tuple[str, str | None]:
    """The table and field that make `trial`'s settings invalid: the base's, or the first
    varied field that is invalid on the base alone."""
    if spec.options.hook is not None:
        return "grid", None
    base = dict(spec.run)
    preset = base.pop("preset", None)
    try:
        make_config(preset, **base)
    except ConfigError:
        return "run", None
    for key, value in trial.varied.items():
        values = {**spec.run, key: value}
        try:
            make_config(values.pop("preset", None), **values)
        except ConfigError:
            return ("grid" if key in spec.grid else "random"), key
    return ("grid" if spec.grid else "random"), None


def read_spec(path: Path | str) -> SweepSpec:
    """The spec in the TOML file at `path`; raises ConfigError (one line) when it is missing,
    not TOML, or has a bad field (see `parse_spec`)."""
    path = Path(path)
    text = read_small_text(path, "sweep spec")  # a FIFO, a device, binary: refused, not read
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not a TOML file ({one_line(exc)})") from exc
    return parse_spec(data, path)
