"""Hard dollar budget with reservations and a crash-safe, self-checking ledger.

Every request reserves its worst-case cost before it is sent. Just before it leaves, the
cost is counted as spent and a "sent" line is appended to the ledger (flushed and fsynced):
a crash, a kill -9 or a lost connection after that point leaves the request counted as
billed. Its outcome follows as a second line: "answered" (billed, certain), "partial" (only
the answered inputs billed), "refused" (provably not billed: the provider said so, or the
request never left) or "unknown" (billed, uncertain). A reservation that was never sent is
released without a line. Nothing is reserved when spent + reserved + cost would exceed the
limit, however many requests are in flight. Amounts are integer nanodollars, so sums are
exact.

Ledger lines (JSON, one per line; "images" and "nanodollars" first so that a line torn by a
crash still shows its amount):

    {"images": 128, "nanodollars": 153600000, "id": 7, "sent": 1733000000.0}
    {"id": 7, "outcome": "answered"}
    {"id": 8, "outcome": "partial", "images": 120, "nanodollars": 144000000}
    {"images": 0, "nanodollars": 0, "repair": "...", "uncertain": true}

Lines without "id" (barapi before 2026-11-30) are committed spend. A torn line (not JSON)
is counted as billed at the amount it shows. `read_ledger` also checks that "sent" ids run
1, 2, …, n without a gap, so that lines cut from the middle are noticed; a ledger cut at the
end or deleted is noticed by the run folder against the spend recorded beside it.

Uncertain spend (billed as far as barapi knows, but the provider may not have billed it) is
counted with its reason, grouped by kind (`reason_kind`), so that the result, `--json` and
budget.json can say how much is uncertain and why (docs/method.md: checking it against the
provider's bill). A ledger line that cannot be written (a full disk) raises WriteFailed:
a request whose "sent" line could not be written is not sent; one whose outcome could not be
written stays counted as billed, uncertain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from barapi.checkpoint import append_line
from barapi.errors import (
    BudgetExhausted,
    ConfigError,
    LedgerDamaged,
    PartialAnswer,
    ProviderError,
    WriteFailed,
)

NANO = 1_000_000_000
_AMOUNT = re.compile(r'"images":\s*(\d+),\s*"nanodollars":\s*(\d+)')
_KIND_END = re.compile(r":\s| \(|;")
TORN = "a ledger line torn by a crash or a full disk"
IN_FLIGHT = "in flight when its process ended (or its outcome could not be written)"


def reason_kind(reason: str) -> str:
    """The kind of an uncertain request's reason, for grouping: its first clause, e.g.
    "Clarifai gRPC UNAVAILABLE" for "Clarifai gRPC UNAVAILABLE: connection reset"."""
    first = (reason.strip().splitlines() or [""])[0]
    kind = _KIND_END.split(first, maxsplit=1)[0].strip()
    return (kind or "no reason given")[:80]


def to_nano(dollars: float) -> int:
    """Dollars → integer nanodollars. Raises ConfigError unless finite and ≥ 0."""
    if not isinstance(dollars, (int, float)) or not math.isfinite(dollars) or dollars < 0:
        raise ConfigError(f"an amount of money must be a finite number ≥ 0 dollars, got {dollars!r}")
    return round(dollars * NANO)


def format_dollars(amount: float | int, *, nano: bool = False) -> str:
    """"$1.50", "$0.004", "$0.0000012": at least two decimals, and as many more as the
    amount needs to be printed exactly (up to nanodollars). `nano`: `amount` is in
    nanodollars."""
    value = int(amount) if nano else round(float(amount) * NANO)
    sign, value = ("-", -value) if value < 0 else ("", value)
    whole, frac = divmod(value, NANO)
    digits = f"{frac:09d}".rstrip("0")
    return f"{sign}${whole:,}.{digits.ljust(2, '0')}"


def uncertain_note(nano: int, reasons: dict[str, int]) -> str:
    """One clause on uncertain spend, e.g. "$0.20 of it uncertain: 10 requests (Clarifai gRPC
    UNAVAILABLE); the provider may not have billed them (docs/method.md#uncertain-spend)";
    "" when there is none."""
    if not nano and not reasons:
        return ""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    why = ", ".join(f"{n:,} request{'s' if n != 1 else ''} ({kind})" for kind, n in ranked[:3])
    more = f" and {len(ranked) - 3} more kinds" if len(ranked) > 3 else ""
    return (f"{format_dollars(nano, nano=True)} of it uncertain: {why or 'reason not recorded'}"
            f"{more}; the provider may not have billed them (docs/method.md#uncertain-spend)")


@dataclass
class LedgerTotals:
    """What a ledger says: billed nanodollars and images (uncertain ones included), the
    uncertain part with the number of uncertain requests (or repairs, or torn lines) per
    reason kind, and the last request id."""

    spent_nano: int = 0
    images: int = 0
    uncertain_nano: int = 0
    uncertain_images: int = 0
    uncertain_reasons: dict[str, int] = field(default_factory=dict)
    last_id: int = 0

    def add_uncertain(self, images: int, nano: int, reason: str) -> None:
        """Count `images` costing `nano` as billed and uncertain, for `reason`."""
        self.images += images
        self.spent_nano += nano
        self.uncertain_images += images
        self.uncertain_nano += nano
        kind = reason_kind(reason)
        self.uncertain_reasons[kind] = self.uncertain_reasons.get(kind, 0) + 1


def read_ledger(path: Path, allow_gaps: bool = False) -> LedgerTotals:
    """Totals of the ledger at `path` (empty totals when it does not exist).

    Raises LedgerDamaged when "sent" ids skip a number (lines removed; unless `allow_gaps`,
    or a repair line accepted them) or the file cannot be read."""
    totals = LedgerTotals()
    if not path.exists():
        return totals
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise LedgerDamaged(f"{path}: cannot read the ledger ({exc.strerror})") from exc
    sent: dict[int, tuple[int, int]] = {}
    outcome: dict[int, dict[str, object]] = {}
    accepted = 0  # a repair accepted the gaps up to this id
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError
        except ValueError:  # torn by a crash: billed at the amount it shows
            found = _AMOUNT.search(line)
            if found:
                totals.add_uncertain(int(found[1]), int(found[2]), TORN)
            continue
        try:
            if "outcome" in entry:
                outcome[int(entry["id"])] = entry
                if entry["outcome"] == "partial":
                    int(entry["images"]), int(entry["nanodollars"])
            elif "id" in entry:
                sent[int(entry["id"])] = (int(entry["images"]), int(entry["nanodollars"]))
            else:  # a committed line of the old format, or a repair
                accepted = max(accepted, int(entry.get("accept_gaps_to", 0)))
                if entry.get("uncertain"):
                    totals.add_uncertain(int(entry["images"]), int(entry["nanodollars"]),
                                         str(entry.get("repair", "")))
                else:
                    totals.images += int(entry["images"])
                    totals.spent_nano += int(entry["nanodollars"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerDamaged(f"{path}: line {number} is not a ledger entry ({type(exc).__name__}: "
                                f"{exc}); restore the ledger from a backup") from None
    if sent:
        gaps = sorted(set(range(accepted + 1, max(sent) + 1)) - set(sent))
        if gaps and not allow_gaps:
            raise LedgerDamaged(
                f"{path}: the ledger has lost lines (request {gaps[0]} of {max(sent)} is missing); "
                f"restore it from a backup, or run `barapi repair-ledger {path.parent}`")
        totals.last_id = max(sent)
    for ident, (images, cost) in sent.items():
        result = outcome.get(ident, {}).get("outcome")
        if result == "refused":
            continue
        if result == "partial":
            images = int(outcome[ident]["images"])  # type: ignore[call-overload]
            cost = int(outcome[ident]["nanodollars"])  # type: ignore[call-overload]
        elif result != "answered":  # unknown, or in flight when the process died
            reason = outcome[ident].get("reason", "") if ident in outcome else IN_FLIGHT
            totals.add_uncertain(images, cost, str(reason))
            continue
        totals.images += images
        totals.spent_nano += cost
    return totals


@dataclass
class Ticket:
    """One request's reservation: `cost` nanodollars for `images` images; `id` its ledger
    number once sent (0 before)."""

    images: int
    cost: int
    id: int = 0
    sent: bool = False


@dataclass
class Budget:
    """Budget of `limit` dollars (None = no limit) at `price_per_1000` dollars per 1,000
    images, with its ledger at `ledger` (None: in memory only).

    Raises ConfigError for a negative, NaN or infinite price or limit, and LedgerDamaged
    for a ledger with missing lines."""

    price_per_1000: float = 0.0
    limit: float | None = None
    ledger: Path | None = None
    spent_nano: int = 0
    reserved_nano: int = 0
    spent_images: int = 0
    uncertain_images: int = 0
    uncertain_nano: int = 0
    uncertain_reasons: dict[str, int] = field(default_factory=dict)
    """Uncertain requests (repairs, torn lines) per reason kind (`reason_kind`)."""
    _last_id: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        to_nano(self.price_per_1000)
        if self.limit is not None:
            to_nano(self.limit)
        if self.ledger is not None:
            self.attach(self.ledger)

    @classmethod
    def unlimited(cls) -> Budget:
        return cls()

    def attach(self, ledger: Path) -> None:
        """Use `ledger` from now on, counting what it already records as spent."""
        totals = read_ledger(ledger)
        self.ledger = ledger
        self.spent_nano, self.spent_images = totals.spent_nano, totals.images
        self.uncertain_nano, self.uncertain_images = totals.uncertain_nano, totals.uncertain_images
        self.uncertain_reasons = dict(totals.uncertain_reasons)
        self._last_id = totals.last_id
        if ledger.exists() and ledger.stat().st_size and not ledger.read_bytes().endswith(b"\n"):
            self._append({}, terminate_only=True)  # a torn last line stays on its own line

    def cost_nano(self, images: int) -> int:
        return images * round(self.price_per_1000 * NANO / 1000)

    @property
    def limit_nano(self) -> int | None:
        return None if self.limit is None else to_nano(self.limit)

    @property
    def spent(self) -> float:
        """Dollars billed so far, uncertain ones included (this run and its earlier parts)."""
        return self.spent_nano / NANO

    @property
    def left(self) -> float | None:
        if self.limit_nano is None:
            return None
        return (self.limit_nano - self.spent_nano - self.reserved_nano) / NANO

    def affordable_images(self) -> int | None:
        """How many more images fit in the budget; None without a limit or at price 0."""
        per_image = self.cost_nano(1)
        if self.limit_nano is None or per_image == 0:
            return None
        return max(0, (self.limit_nano - self.spent_nano - self.reserved_nano) // per_image)

    def reserve(self, images: int) -> Ticket:
        """Reserve the cost of `images`; raises BudgetExhausted when it does not fit."""
        cost = self.cost_nano(images)
        limit = self.limit_nano
        if limit is not None and self.spent_nano + self.reserved_nano + cost > limit:
            raise BudgetExhausted(
                f"budget of {format_dollars(limit, nano=True)} reached: spent "
                f"{format_dollars(self.spent_nano, nano=True)}, "
                f"{format_dollars(self.reserved_nano, nano=True)} in flight, the next request "
                f"costs {format_dollars(cost, nano=True)}")
        self.reserved_nano += cost
        return Ticket(images, cost)

    def send(self, ticket: Ticket) -> None:
        """The request is about to leave: count it as billed, durably, before it does.
        Raises WriteFailed (the request must not leave; its reservation stays to be
        released) when its ledger line cannot be written."""
        if ticket.sent:
            return
        self._append({"images": ticket.images, "nanodollars": ticket.cost,
                      "id": self._last_id + 1, "sent": round(time.time(), 3)}, sync=True)
        self._last_id += 1
        ticket.id, ticket.sent = self._last_id, True
        self.reserved_nano -= ticket.cost
        self.spent_nano += ticket.cost
        self.spent_images += ticket.images

    def release(self, ticket: Ticket) -> None:
        """Give back a reservation that was never sent."""
        if not ticket.sent:
            self.reserved_nano -= ticket.cost

    def settle(self, ticket: Ticket, outcome: str, paid_images: int | None = None,
               reason: str = "") -> None:
        """Record a sent request's outcome: "answered", "partial" (`paid_images` billed),
        "refused" (not billed) or "unknown" (billed, uncertain)."""
        if not ticket.sent:
            self.send(ticket)
        entry: dict[str, object] = {"id": ticket.id, "outcome": outcome}
        if outcome == "refused":
            paid_images = 0
        paid = self.cost_nano(paid_images or 0)
        if outcome == "partial":
            entry.update(images=paid_images, nanodollars=paid)
        elif outcome == "unknown":
            entry["reason"] = reason[:200]
        try:
            self._append(entry)
        except WriteFailed:  # as the ledger reads now: in flight, billed, uncertain
            self._count_uncertain(ticket.images, ticket.cost, IN_FLIGHT)
            raise
        if outcome in ("partial", "refused"):
            self.spent_nano -= ticket.cost - paid
            self.spent_images -= ticket.images - (paid_images or 0)
        elif outcome == "unknown":
            self._count_uncertain(ticket.images, ticket.cost, reason)

    def _count_uncertain(self, images: int, nano: int, reason: str) -> None:
        self.uncertain_images += images
        self.uncertain_nano += nano
        kind = reason_kind(reason)
        self.uncertain_reasons[kind] = self.uncertain_reasons.get(kind, 0) + 1

    @property
    def uncertain_requests(self) -> int:
        """Uncertain requests (and repairs, torn lines) counted so far."""
        return sum(self.uncertain_reasons.values())

    def add_uncertain(self, images: int, nano: int, reason: str, accept_gaps_to: int = 0) -> None:
        """Record spend known from elsewhere (a repair): billed, uncertain. `accept_gaps_to`:
        request ids up to this one may be missing from the ledger from now on. Raises
        WriteFailed when the ledger cannot be written (nothing is counted then)."""
        self._append({"images": images, "nanodollars": nano, "repair": reason,
                      "uncertain": True, "accept_gaps_to": accept_gaps_to,
                      "time": round(time.time(), 3)}, sync=True)
        self.spent_nano += nano
        self.spent_images += images
        self._count_uncertain(images, nano, reason)

    def _append(self, entry: dict[str, object], sync: bool = False,
                terminate_only: bool = False) -> None:
        """Append one line, all of it or none (WriteFailed naming the ledger otherwise)."""
        if self.ledger is None:
            return
        data = b"\n" if terminate_only else (json.dumps(entry) + "\n").encode()
        append_line(self.ledger, data, sync=sync or terminate_only)

    @contextlib.asynccontextmanager
    async def reservation(self, images: int) -> AsyncIterator[Ticket]:
        """Reserve `images`' cost for one request. The caller calls `send(ticket)` just
        before the request leaves; the outcome is then settled from how the block ends: no
        error → answered; PartialAnswer → its answered inputs; an error that says the
        request was not billed → refused; any other error → unknown (billed). A reservation
        that was never sent is released."""
        ticket = self.reserve(images)
        try:
            yield ticket
        except PartialAnswer as exc:
            self._settle_failure(ticket, "partial", exc.billed_images, str(exc))
            raise
        except ProviderError as exc:
            self._settle_failure(ticket, "unknown" if exc.billed else "refused", None, str(exc))
            raise
        except ConfigError as exc:  # the request could not even be built: it never left
            self._settle_failure(ticket, "refused", None, str(exc))
            raise
        except BaseException as exc:  # the run was stopped (Ctrl-C, SIGTERM) or a bug: unknown
            stopped = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
            reason = ("the run was interrupted with it in flight" if stopped
                      else f"{type(exc).__name__}: {exc}".rstrip(": "))
            self._settle_failure(ticket, "unknown", None, reason)
            raise
        self.settle(ticket, "answered")

    def _settle_failure(self, ticket: Ticket, outcome: str, paid: int | None, reason: str) -> None:
        if ticket.sent:
            self.settle(ticket, outcome, paid, reason)
        else:
            self.release(ticket)
