"""Hard dollar budget with reservations and a crash-safe ledger.

Every request reserves its worst-case cost before it is sent; afterwards the reservation is
committed (the request may have been billed) or released (the provider refused it). Nothing
is reserved when spent + reserved + cost would exceed the limit, however many requests are in
flight. Amounts are integer nanodollars so that sums are exact; committed spend is appended
to a JSON-lines ledger (flushed and fsynced) that survives crashes and is reloaded on resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from barapi.errors import BudgetExhausted, PartialAnswer, ProviderError

NANO = 1_000_000_000


def to_nano(dollars: float) -> int:
    return round(dollars * NANO)


@dataclass
class Budget:
    """Budget of `limit` dollars (None = no limit) at `price_per_1000` dollars per 1,000 images."""

    price_per_1000: float = 0.0
    limit: float | None = None
    ledger: Path | None = None
    spent_nano: int = 0
    reserved_nano: int = 0
    spent_images: int = 0

    def __post_init__(self) -> None:
        if self.price_per_1000 < 0:
            raise ValueError(f"price per 1,000 images must be ≥ 0, got {self.price_per_1000}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"budget must be ≥ 0 dollars, got {self.limit}")
        if self.ledger is not None and self.ledger.exists():
            for line in self.ledger.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.spent_nano += int(entry["nanodollars"])
                    self.spent_images += int(entry["images"])

    @classmethod
    def unlimited(cls) -> Budget:
        return cls()

    def cost_nano(self, images: int) -> int:
        return images * round(self.price_per_1000 * NANO / 1000)

    @property
    def spent(self) -> float:
        """Dollars committed so far (this run and, when resumed, its earlier parts)."""
        return self.spent_nano / NANO

    @property
    def left(self) -> float | None:
        if self.limit is None:
            return None
        return (to_nano(self.limit) - self.spent_nano - self.reserved_nano) / NANO

    def affordable_images(self) -> int | None:
        """How many more images fit in the budget; None without a limit or at price 0."""
        per_image = self.cost_nano(1)
        if self.limit is None or per_image == 0:
            return None
        return max(0, (to_nano(self.limit) - self.spent_nano - self.reserved_nano) // per_image)

    def reserve(self, images: int) -> int:
        cost = self.cost_nano(images)
        if self.limit is not None and self.spent_nano + self.reserved_nano + cost > to_nano(self.limit):
            raise BudgetExhausted(
                f"budget of ${self.limit:.2f} reached: spent ${self.spent:.4f}, "
                f"${self.reserved_nano / NANO:.4f} in flight, next request costs ${cost / NANO:.4f}"
            )
        self.reserved_nano += cost
        return cost

    def release(self, cost: int) -> None:
        self.reserved_nano -= cost

    def commit(self, cost: int, images: int) -> None:
        self.reserved_nano -= cost
        self.spent_nano += cost
        self.spent_images += images
        if self.ledger is not None:
            entry = json.dumps({"time": time.time(), "images": images, "nanodollars": cost})
            fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (entry + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    @contextlib.asynccontextmanager
    async def reservation(self, images: int) -> AsyncIterator[None]:
        """Reserve `images`' cost; commit on success or on an error after which the request
        may have been billed; release when the provider refused it (a ProviderError that was
        not billed)."""
        cost = self.reserve(images)
        try:
            yield
        except PartialAnswer as exc:  # only the answered inputs are charged
            paid = self.cost_nano(exc.billed_images)
            self.release(cost - paid)
            self.commit(paid, exc.billed_images)
            raise
        except ProviderError as exc:
            if exc.billed:
                self.commit(cost, images)
            else:
                self.release(cost)
            raise
        except BaseException:
            self.commit(cost, images)
            raise
        self.commit(cost, images)
