"""The adapter contract: the only thing barapi knows about a black box.

An adapter knows its wire protocol and nothing else — no budget, cache, retry or rate logic.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from barapi.errors import BarapiError, ConfigError, InvalidAnswer

ONNX2TORCH = "onnx2torch>=1.5,<1.6"
"""Installed with ``pip install --no-deps``: its torchvision requirement would replace the
pinned CPU torch with a CUDA build (see `boxes.onnx2torch_convert`); tested with 1.5.15."""
TORCH = "torch==2.13.0"
"""The pinned CPU build (README), installed before any extra that needs torch."""


def install_hint(extra: str) -> str:
    """The one command that installs barapi's optional `extra` ("local", "cloud", "nudenet",
    "sweep"), as every "needs the optional package" error gives it (from an index, and the
    ``-e '.[extra]'`` form for a clone)."""
    torch = f"{TORCH} " if extra in ("local", "nudenet") else ""
    tail = f" && pip install --no-deps '{ONNX2TORCH}'" if extra == "nudenet" else ""
    return f"pip install {torch}'barapi[{extra}]'{tail} (in a clone of barapi: -e '.[{extra}]')"


def needs(what: str, package: str, extra: str) -> ConfigError:
    """ConfigError: `what` needs the optional `package`, with `install_hint(extra)`."""
    return ConfigError(f"{what} needs the optional package {package}: {install_hint(extra)}")


@dataclass(frozen=True)
class AnswerForm:
    """What a provider's answers leave out or round, as the adapter reports them.

    An omitted score is not a zero (DESIGN: "Trust at the edges"): the adapter fills it with
    `censored_value`, the highest value it may have had, so that a score that falls under the
    threshold and one that stays under it read the same (a zeroth-order difference of 0, not a
    jump to 0) and the head sees "below the threshold" as one value.

    Attributes:
        threshold: scores below it are left out of an answer (AWS Rekognition's
            ``MinConfidence`` / 100; Google label detection's score floor), in [0, 1]; None:
            every column is answered.
        top: at most this many labels per answer (label detection's ``maxResults``); a label
            left out when the answer is full is below the lowest score answered. None: no cap.
        levels: the only values an answer takes, ascending, in [0, 1] (Google SafeSearch's
            five likelihoods, read as the centres of five equal bins); None: continuous.
        step: the resolution answers are rounded to (e.g. 0.01 for percentages given with two
            decimals); None: unrounded (float32).
    """

    threshold: float | None = None
    top: int | None = None
    levels: tuple[float, ...] | None = None
    step: float | None = None

    @property
    def exact(self) -> bool:
        """True when answers omit and round nothing (the default of every adapter)."""
        return self.threshold is None and self.top is None and self.levels is None \
            and self.step is None

    def describe(self) -> str:
        """One line for the user: what each answer omits or rounds; "" when nothing."""
        parts = []
        if self.threshold is not None:
            parts.append(f"omits every score under {self.threshold:g} (read as that threshold, "
                         f"not as 0)")
        if self.top is not None:
            parts.append(f"answers at most {self.top} labels (one left out of a full answer is "
                         f"read as the lowest score answered)")
        if self.levels is not None:
            parts.append(f"rounds each score to one of {len(self.levels)} levels "
                         f"({', '.join(f'{v:g}' for v in self.levels)})")
        elif self.step is not None:
            parts.append(f"rounds each score to {self.step:g}")
        return "; ".join(parts)

    def censored_value(self, answered: Sequence[float]) -> float:
        """The value of a score this answer left out, given the scores it did answer: the
        lowest answered when the answer is full (`top` labels), else the threshold; with
        neither, the lowest answered (0 for an empty answer)."""
        if self.top is not None and answered and len(answered) >= self.top:
            return float(min(answered))
        if self.threshold is not None:
            return float(self.threshold)
        return float(min(answered)) if answered else 0.0

    def fill(self, scores: Mapping[int, float], k: int,
             answered: Sequence[float] | None = None) -> NDArray[np.float32]:
        """(k,) float32 row from one answer: `scores` {column: score} for the columns it held;
        the others get `censored_value(answered)`, `answered` being every score the answer held
        (the adapter's columns or not; default: `scores`' values)."""
        held = list(scores.values()) if answered is None else list(answered)
        row = np.full(k, self.censored_value(held), dtype=np.float32)
        for column, score in scores.items():
            row[column] = score
        return row


class Adapter(ABC):
    """A classifier reachable only through its predicted probabilities.

    Attributes:
        labels: names of the K source classes, in the column order of `predict_proba`.
        max_batch: most images one request (one `predict_proba` call) may carry.
        card: name of the price/limit card in `barapi.budgets` (e.g. "local").
        identity: everything that determines an answer besides the image: provider,
            endpoint, model and version, output settings (for a local model: its weights'
            digest and input size, not its device). Part of every cache key.
        answers: what the provider promises of each row: "distribution" (softmax: each in
            [0, 1], summing to 1) or "scores" (a confidence per class in [0, 1], not summing
            to one, like Clarifai's concepts and Azure's tags). Answers that break the promise
            are never cached (see `barapi.query.invalid_rows`).
    """

    labels: Sequence[str]
    max_batch: int
    card: str
    identity: str
    answers: str = "distribution"
    form: AnswerForm = AnswerForm()
    """What each answer omits or rounds (`AnswerForm`); exact by default."""
    label_note: str | None = None
    """Said to the user once the labels are known, e.g. that `--labels` names a subset."""
    input_note: str | None = None
    """Said to the user once the black box is checked: how an image is sent where the adapter
    had to choose (e.g. an inference server's input tensor)."""

    def notes(self) -> list[str]:
        """What the user is told once the black box is checked (`check`): how images are sent,
        which labels are used, and what each answer omits or rounds (`AnswerForm.describe`)."""
        said = [note for note in (self.input_note, self.label_note) if note]
        if not self.form.exact:
            said.append(f"{self.who}: each answer {self.form.describe()}")
        return said
    paid_labels: bool = False
    """True while the labels are unknown and only a paid answer can tell them
    (`discover_labels`, asked through QueryService so that it is reserved and ledgered)."""

    async def discover_labels(self, image: NDArray[np.uint8]) -> list[str]:
        """The class names, from one paid prediction of the (H, W, 3) `image`."""
        raise NotImplementedError(f"{type(self).__name__} does not learn its labels")

    def use_labels(self, labels: list[str]) -> None:
        """Take `labels` (learned, or stored in a run folder) as the answer's columns."""
        self.labels = list(labels)

    version: str | None = None
    """The model version the service reported (by `check`, or in an answer); None while
    unknown, or where the service tells none (a local model: its weights are in `identity`)."""
    pinned_version: str | None = None
    """The version a run folder pinned at its start, or the one accepted with
    `--accept-version`: `found_version` refuses any other."""
    on_pinned: Callable[[], None] | None = None
    """Called when `pinned()` changes after the run folder recorded it (a version or ids
    first told by an answer), so that the folder records them (see `barapi.api.keep_pins`)."""

    def pinned(self) -> dict[str, Any]:
        """What a run folder records at its start so that a resume, `evaluate` or `predict`
        asks the same black box: {"version": the model version the service reported} and
        whatever else the adapter needs (the ids its columns are bound to); {} when unknown."""
        return {"version": self.version} if self.version else {}

    def pin(self, pins: Mapping[str, Any], accept_version: str | None = None) -> None:
        """Hold the adapter to `pins` (what `pinned()` returned when the run started):
        another model version is refused (`found_version`). `accept_version`: the version the
        user accepted knowingly, pinned instead."""
        self.pinned_version = accept_version or pins.get("version") or None

    def found_version(self, version: str,
                      error: Callable[[str], BarapiError] = ConfigError) -> None:
        """The service reported `version` (a subclass calls this from `check` or from an
        answer). Raises `error(message)` when it is not the pinned version, or not the one
        reported earlier in this process (a model that moved mid-run); the first version
        reported is kept (`on_pinned` is told)."""
        if not version:
            return
        held = self.pinned_version or self.version
        if held and version != held:
            raise error(self.version_changed(held, version))
        if self.version != version:
            self.version = version
            self.pins_changed()

    def pins_changed(self) -> None:
        """Tell `on_pinned` (if set) that `pinned()` changed."""
        if self.on_pinned is not None:
            self.on_pinned()

    def version_changed(self, pinned: str, now: str, gone: str | None = None) -> str:
        """One line: the run is pinned to `pinned`, the service now answers with `now`
        (`gone`: what the service said when asked for `pinned`), and how to go on knowingly."""
        served = (f"no longer serves it ({gone}) and answers with version {now}" if gone
                  else f"answers with version {now}")
        return (f"{self.who}: this run folder is pinned to model version "
                f"{pinned}, the one its program was trained against, but the service now "
                f"{served}; a program learned against one version need not work against another. "
                f"{self.keep_version_hint(pinned)}To go on against {now} knowingly, add "
                f"--accept-version {now} (or start a new run)")

    @property
    def who(self) -> str:
        """The black box, as messages name it (its identity without the version)."""
        return self.identity.rsplit("@", 1)[0]

    def keep_version_hint(self, pinned: str) -> str:
        """How to get `pinned` served again, as a sentence ending in a space; "" if no way."""
        return ""

    _checked: bool = False

    async def ensure_checked(self) -> None:
        """`check`, once per adapter: `QueryService` calls it before its first cache lookup,
        since `check` may settle `identity` (the model version a service reports)."""
        if self._checked:
            return
        import asyncio

        loop = asyncio.get_running_loop()  # a lock of this loop: concurrent callers wait
        held = self.__dict__.get("_check_lock")
        if held is None or held[0] is not loop:
            held = self.__dict__["_check_lock"] = (loop, asyncio.Lock())
        async with held[1]:
            if not self._checked:
                await self.check()
                self._checked = True

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Free preflight before the first paid request: raise ConfigError when the black
        box cannot be reached at all (malformed endpoint, refused connection, no key), and
        learn `labels` where the service lists them for free. Sends no prediction."""

    @abstractmethod
    async def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Probabilities (N, K) for N 8-bit RGB images of shape (N, H, W, 3), N ≤ max_batch."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections or devices."""

    def __deepcopy__(self, memo: dict[int, object]) -> Adapter:
        """Adapters are handles to a black box (connections, devices): copies share it."""
        return self

    @property
    def n_sources(self) -> int:
        return len(self.labels)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only hosts a plaintext key may go to."""
    import ipaddress

    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def wait_until_reachable(host: str, port: int, who: str, timeout: float = 10.0) -> None:
    """Open (and close) a TCP connection to `host`:`port`, trying for up to `timeout` seconds
    (a server still starting, such as an emulator); no request is sent. Raises ConfigError
    naming `who` when no connection could be made (an adapter's free `check`)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                               max(0.1, deadline - loop.time()))
        except (OSError, asyncio.TimeoutError) as exc:
            if loop.time() + 0.2 < deadline:
                await asyncio.sleep(0.2)
                continue
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError(f"cannot connect to {who} at {host}:{port} within {timeout:g} s "
                              f"({why}); check --endpoint and the network") from None
        writer.close()
        return


class IncompleteAnswers:
    """Answers that leave out some of an adapter's columns (a concept or a tag it listed).
    Such an answer is not a zero for what it omits (DESIGN: "Trust at the edges"): the first
    one for an image is made invalid (NaN in the columns it lacks, so that QueryService never
    caches it and asks once more); a second one in a row for the same image raises
    InvalidAnswer naming what was left out (billed, not cached)."""

    LIMIT = 4096
    """Images remembered at most (the oldest are forgotten first)."""

    def __init__(self) -> None:
        self._pending: dict[bytes, None] = {}

    def settle(self, probs: NDArray[np.float32], images: NDArray[np.uint8],
               missing: Mapping[int, Sequence[int]], labels: Sequence[str], who: str) -> None:
        """Mark rows of `probs` (N, K) invalid where `missing` {row: columns left out} says
        an answer to `images` (N, H, W, 3) lacks columns; raises InvalidAnswer when an image
        is answered incompletely for the second time in a row. `who` names the provider."""
        if not missing and not self._pending:
            return
        digests = [hashlib.sha256(image.tobytes()).digest() for image in images]
        again = [i for i in missing if digests[i] in self._pending]
        if again:
            row = again[0]
            names = ", ".join(repr(labels[c]) for c in missing[row])
            raise InvalidAnswer(
                f"{who} answered without {names} twice for the same image; an answer must "
                f"score every one of its {len(labels)} labels ({', '.join(labels)}): billed, "
                f"not cached")
        for i, digest in enumerate(digests):
            if i in missing:
                probs[i, list(missing[i])] = np.nan
                self._pending[digest] = None
            else:
                self._pending.pop(digest, None)
        while len(self._pending) > self.LIMIT:
            del self._pending[next(iter(self._pending))]
