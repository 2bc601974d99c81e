"""`barapi emulate PROVIDER`: loopback emulators of the paid APIs (127.0.0.1 only), answering
from a local box, for free rehearsals (the emulators themselves: `barapi.emulate`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click

from barapi.cli_types import NonEmptyPath


@click.group()
def emulate() -> None:
    """Serve a loopback emulator of a paid API (127.0.0.1 only), answering from a local model."""


BOX_HELP = ("the model behind the emulator: imagenet = EfficientNet-Lite0 with concepts made of "
            "meaningful groups of ImageNet classes ('safe' near 1 on ordinary images, like a real "
            "service); nudenet = NudeNet's nudity detector (needs barapi[nudenet]); modk = the easy "
            "box, ImageNet class i counted towards concept i mod K")


def box_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--box", type=click.Choice(["imagenet", "nudenet", "modk"]),
                        default="imagenet", show_default=True, help=BOX_HELP)(command)


@emulate.command("clarifai")
@click.option("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
@box_option
@click.option("--input-size", type=int, default=112, show_default=True,
              help="side the emulator's EfficientNet-Lite0 runs at (nudenet: always 320)")
@click.option("--max-rps", type=float, default=0.0, help="throttle (11005) above this rate")
@click.option("--unavailable-every", type=int, default=0, help="every n-th request: UNAVAILABLE")
@click.option("--fail-input-every", type=int, default=0, help="every n-th input fails (MIXED_STATUS)")
@click.option("--quota-images", type=int, default=None, help="quota exhausted after this many")
@click.option("--delay", type=float, default=0.0, help="seconds added to every answer")
@click.option("--burst", type=float, default=1.0, show_default=True,
              help="with --max-rps: requests the rate limit lets through at once (a token "
                   "bucket; 1: at least 1/max-rps apart)")
@click.option("--counters-file", type=NonEmptyPath(dir_okay=False), default=None,
              help="write the emulator's counters here (JSON) after every request")
def emulate_clarifai(port: int, box: str, input_size: int, max_rps: float, unavailable_every: int,
                     fail_input_every: int, quota_images: int | None, delay: float,
                     burst: float, counters_file: str | None) -> None:
    """Clarifai PostModelOutputs over gRPC; the key it accepts is CLARIFAI_PAT. The request's
    model (moderation-recognition or nsfw-recognition) picks the box's view."""
    from barapi.adapters.boxes import box_views
    from barapi.emulate import ClarifaiEmulator, Faults, write_counters
    from barapi.keys import read_key

    key = read_key("CLARIFAI_PAT").reveal()
    faults = Faults(max_rps, unavailable_every, fail_input_every, quota_images, delay,
                    burst=burst)

    async def serve() -> None:
        import signal

        views = box_views(box, device="cpu", input_size=input_size)
        emulator = ClarifaiEmulator({"moderation-recognition": views["moderation"],
                                     "nsfw-recognition": views["nsfw"]}, key, faults)
        if counters_file:
            emulator.on_request = lambda counters: write_counters(counters_file, counters)
            write_counters(counters_file, emulator.counters)
        bound = await emulator.start(port)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT is ignored in background jobs
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        click.echo(f"clarifai emulator on 127.0.0.1:{bound}", err=True)
        click.echo(f"box: {box} ({', '.join(v.identity.split('/')[1] for v in views.values())})",
                   err=True)
        try:
            await stop.wait()
        finally:
            click.echo(f"billed images: {emulator.counters.billed_images}", err=True)
            await emulator.stop()

    asyncio.run(serve())


@emulate.command("azure")
@click.option("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
@click.option("--tags", default="negative,positive", show_default=True,
              help="the project's tag names, comma-separated: 2 (the box's nsfw view) or 5 (its "
              "moderation view), or any number with --box modk")
@box_option
@click.option("--input-size", type=int, default=112, show_default=True,
              help="side the emulator's EfficientNet-Lite0 runs at (nudenet: always 320)")
@click.option("--max-rps", type=float, default=0.0, help="429 with Retry-After above this rate")
@click.option("--unavailable-every", type=int, default=0, help="every n-th request: 503")
@click.option("--quota-images", type=int, default=None, help="403 quota after this many")
@click.option("--delay", type=float, default=0.0, help="seconds added to every answer")
def emulate_azure(port: int, tags: str, box: str, input_size: int, max_rps: float,
                  unavailable_every: int, quota_images: int | None, delay: float) -> None:
    """Custom Vision v3.1 prediction over HTTP; the key it accepts is AZURE_CV_PREDICTION_KEY.
    Tag i gets concept i of the box's view with as many concepts as tags."""
    from barapi.adapters.boxes import box_views, view_for
    from barapi.adapters.local import create
    from barapi.emulate import AzureEmulator, Faults
    from barapi.errors import ConfigError
    from barapi.keys import read_key

    key = read_key("AZURE_CV_PREDICTION_KEY").reveal()
    faults = Faults(max_rps, unavailable_every, 0, quota_images, delay)
    names = [t.strip() for t in tags.split(",") if t.strip()]
    if box == "modk":  # any number of tags: the 1,000 classes folded i mod K
        model: Any = create(device="cpu", input_size=input_size)
    else:
        model = view_for(box_views(box, device="cpu", input_size=input_size), len(names))
        if model is None:
            raise ConfigError(f"--tags: box {box} answers 2 tags (its nsfw view) or 5 (its "
                              f"moderation view), not {len(names)}; --box modk serves any number")
    emulator = AzureEmulator(model, key, names, faults, port)
    serve_until_stopped(emulator, "azure", box)


@emulate.command("rekognition")
@click.option("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
@click.option("--view", type=click.Choice(["moderation", "nsfw"]), default="moderation",
              show_default=True, help="the box's concepts answered as moderation labels: "
              "moderation (explicit, suggestive, drug, gore) or nsfw (nsfw)")
@box_option
@click.option("--input-size", type=int, default=112, show_default=True,
              help="side the emulator's EfficientNet-Lite0 runs at (nudenet: always 320)")
@click.option("--max-rps", type=float, default=0.0, help="ThrottlingException above this rate")
@click.option("--unavailable-every", type=int, default=0,
              help="every n-th request: 500 InternalServerError")
@click.option("--quota-images", type=int, default=None,
              help="LimitExceededException after this many billed images")
@click.option("--delay", type=float, default=0.0, help="seconds added to every answer")
def emulate_rekognition(port: int, view: str, box: str, input_size: int, max_rps: float,
                        unavailable_every: int, quota_images: int | None, delay: float) -> None:
    """AWS Rekognition DetectModerationLabels over AWS's JSON protocol, SigV4 signatures
    verified; the credentials it accepts are AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
    AWS_SESSION_TOKEN when set). Use it with --endpoint http://127.0.0.1:PORT --insecure."""
    import os

    from barapi.adapters.boxes import VIEWS, box_views
    from barapi.adapters.local import create
    from barapi.emulate import Faults, RekognitionEmulator
    from barapi.keys import read_key

    secrets = {read_key("AWS_ACCESS_KEY_ID").reveal(): read_key("AWS_SECRET_ACCESS_KEY").reveal()}
    faults = Faults(max_rps, unavailable_every, 0, quota_images, delay)
    if box == "modk":  # the 1,000 classes folded i mod K into the view's concepts
        model: Any = create(device="cpu", input_size=input_size)
    else:
        model = box_views(box, device="cpu", input_size=input_size)[view]
    emulator = RekognitionEmulator(model, secrets, concepts=VIEWS[view], faults=faults,
                                   token=os.environ.get("AWS_SESSION_TOKEN") or None, port=port)
    serve_until_stopped(emulator, "rekognition",
                        f"{box} ({view}), moderation model version {emulator.version}")


@emulate.command("google")
@click.option("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
@box_option
@click.option("--input-size", type=int, default=112, show_default=True,
              help="side the emulator's EfficientNet-Lite0 runs at (nudenet: always 320)")
@click.option("--max-rps", type=float, default=0.0, help="429 RESOURCE_EXHAUSTED above this rate")
@click.option("--unavailable-every", type=int, default=0, help="every n-th request: 503")
@click.option("--fail-input-every", type=int, default=0,
              help="every n-th image fails inside its batch (responses[i].error)")
@click.option("--quota-images", type=int, default=None,
              help="429 naming a per-day quota after this many units")
@click.option("--delay", type=float, default=0.0, help="seconds added to every answer")
def emulate_google(port: int, box: str, input_size: int, max_rps: float, unavailable_every: int,
                   fail_input_every: int, quota_images: int | None, delay: float) -> None:
    """Cloud Vision images:annotate over HTTP; the key it accepts is GOOGLE_VISION_API_KEY.
    SafeSearch answers from the box's moderation view, label detection from the 1,000
    ImageNet classes of EfficientNet-Lite0."""
    from barapi.adapters.boxes import box_views, view_for
    from barapi.adapters.local import create
    from barapi.emulate import Faults, GoogleVisionEmulator
    from barapi.keys import read_key

    key = read_key("GOOGLE_VISION_API_KEY").reveal()
    faults = Faults(max_rps, unavailable_every, fail_input_every, quota_images, delay)
    moderation = view_for(box_views(box, device="cpu", input_size=input_size), 5)
    emulator = GoogleVisionEmulator(moderation, create(device="cpu", input_size=input_size), key,
                                    faults, port)
    serve_until_stopped(emulator, "google", box)


@emulate.command("oip")
@click.option("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
@box_option
@click.option("--input-size", type=int, default=112, show_default=True,
              help="side of the served models' input tensor and of the EfficientNet-Lite0 "
                   "behind them (nudenet: the detector always runs at 320)")
@click.option("--max-rps", type=float, default=0.0, help="429 with Retry-After above this rate")
@click.option("--unavailable-every", type=int, default=0, help="every n-th request: 503")
@click.option("--delay", type=float, default=0.0, help="seconds added to every answer")
def emulate_oip(port: int, box: str, input_size: int, max_rps: float, unavailable_every: int,
                delay: float) -> None:
    """An Open Inference Protocol (KServe V2) server over REST, free and without a key: the
    box's two views as models BOX-nsfw and BOX-moderation (input "image", UINT8
    [-1, SIDE, SIDE, 3]; output "probabilities"). For a rehearsal of --provider oip."""
    from barapi.adapters.boxes import box_views
    from barapi.emulate import Faults, OIPEmulator

    views = box_views(box, device="cpu", input_size=input_size)
    emulator = OIPEmulator({f"{box}-{view}": model for view, model in views.items()},
                           input_size, Faults(max_rps, unavailable_every, delay=delay), port)
    serve_until_stopped(emulator, "oip", f"models {', '.join(emulator.models)}")


def serve_until_stopped(emulator: Any, name: str, box: str) -> None:
    """Run a threaded loopback `emulator` (a context manager with `port` and `counters`) until
    SIGINT or SIGTERM, saying where it listens and, at the end, what it billed."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT is ignored in background jobs
        signal.signal(sig, lambda *_: stop.set())
    with emulator:
        click.echo(f"{name} emulator on http://127.0.0.1:{emulator.port}", err=True)
        click.echo(f"box: {box}", err=True)
        try:
            stop.wait()
        finally:
            click.echo(f"billed images: {emulator.counters.billed_images}", err=True)
