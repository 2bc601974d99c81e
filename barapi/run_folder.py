"""The run folder: everything a run leaves behind, and how to read it back.

    config.json     resolved configuration, seeds and package versions
    metrics.jsonl   one JSON object per step / validation / event
    checkpoint.npz  W, best W, optimiser state, label map, step (atomic, every step)
    ledger.jsonl    committed spend (see budget.py)
    program.png     the learned program on the canvas
    curves.png      training loss and validation accuracy
    summary.json    final numbers
"""

from __future__ import annotations

import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from barapi.config import RunConfig
from barapi.errors import ConfigError

PACKAGES = ("barapi", "numpy", "torch", "efficientnet-lite-pytorch", "scikit-learn", "pillow",
            "diskcache", "tenacity", "clarifai-grpc", "azure-cognitiveservices-vision-customvision")


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path, config: RunConfig, **session: Any) -> RunFolder:
        """A new folder under `root`; `session` (card, cache settings) is stored beside the
        config so that a resumed run pays the same prices and uses the same cache."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = root / f"{stamp}-{Path(config.dataset).stem}-{config.method}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True, mode=0o700)
        folder = cls(path)
        folder.write_json("config.json", {"config": config.model_dump(), "session": session,
                                          "versions": package_versions()})
        return folder

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"{path}: not a barapi run folder (no config.json)")
        return cls(Path(path))

    def config(self) -> RunConfig:
        return RunConfig(**self.read_json("config.json")["config"])

    def session(self) -> dict[str, Any]:
        """Card and cache settings the run was started with."""
        stored: dict[str, Any] = self.read_json("config.json").get("session", {})
        return stored

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.npz"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        (self.path / name).write_text(json.dumps(payload, indent=2) + "\n")

    def read_json(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / name).read_text())
        return data

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def truncate_metrics(self, step: int) -> None:
        """Drop records after `step` (written after the last checkpoint of a crashed run)."""
        kept = [r for r in self.metrics() if r.get("step", 0) <= step]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
