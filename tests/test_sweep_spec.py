"""The sweep's spec and wallet, without Ray: trials expand the same on every read, a bad
field is one line naming the file, table and field (nothing created), and the wallet's
leases never let the trials together spend more than the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from barapi.budget import Budget
from barapi.errors import ConfigError, LedgerDamaged
from barapi.sweep.ledger import LeasedBudget, SweepBudgetExhausted, SweepLedger
from barapi.sweep.spec import read_spec

GOOD = """
[run]
classes = "0,1"
epochs = 1
[grid]
seed = [0, 1]
q = [2, 5]
[random]
lr = [0.01, 0.02, 0.05]
[card]
requests_per_second = 3
[sweep]
samples = 2
"""


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_trials_are_the_grid_times_samples_in_a_fixed_order(tmp_path: Path) -> None:
    spec = read_spec(spec_file(tmp_path, GOOD))
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 2
    assert [t.varied["seed"] for t in trials] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [t.varied["q"] for t in trials[:4]] == [2, 2, 5, 5]
    assert all(t.varied["lr"] in (0.01, 0.02, 0.05) for t in trials)
    assert trials[0].name.startswith("000-seed0-q2-lr")
    assert [t.model_dump() for t in read_spec(spec_file(tmp_path, GOOD)).trials()] == \
        [t.model_dump() for t in trials]  # the same trials on every read (a resume)
    config = trials[5].config()
    assert config.classes == "0,1" and config.epochs == 1 and config.q == trials[5].varied["q"]


@pytest.mark.parametrize(("text", "message"), [
    ("[run]\nqq = 3\n", "[run] qq: not a barapi run option"),
    ("[grid]\nq = 3\n", "[grid] q: expected a non-empty list"),
    ("[grid]\nq = []\n", "[grid] q: expected a non-empty list"),
    ("[grid]\nq = [1]\n[random]\nq = [2]\n", "[random] q: also in [grid]"),
    ("[grid]\nq = [2, -1]\n", "[grid] q: "),
    ("[run]\nepochs = \"many\"\n", "[run] epochs: "),
    ("[card]\nprice = 3\n", "[card] price: not a card field"),
    ("[card]\nrequests_per_second = -1\n", "[card] requests_per_second: "),
    ("[sweep]\nsamples = 0\n", "[sweep] samples: "),
    ("[sweep]\nworkers = 2\n", "[sweep] workers: "),
    ("[runs]\nq = 2\n", "unknown table [runs]"),
    ("[run\n", "not a TOML file"),
])
def test_a_bad_field_is_one_line_naming_file_table_and_field(tmp_path: Path, text: str,
                                                              message: str) -> None:
    path = spec_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_spec(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]  # nothing created


def test_the_cli_refuses_a_bad_spec_or_a_missing_budget_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from barapi.cli import main

    runner = CliRunner()
    bad = spec_file(tmp_path, "[grid]\nqq = [1]\n")
    out = runner.invoke(main, ["sweep", str(bad), "--budget", "5", "--sweeps-dir",
                               str(tmp_path / "sweeps")])
    assert out.exit_code == 2 and "[grid] qq: not a barapi run option" in out.output
    good = spec_file(tmp_path, GOOD)
    out = runner.invoke(main, ["sweep", str(good), "--sweeps-dir", str(tmp_path / "sweeps")])
    assert out.exit_code == 2 and "give the sweep's budget in dollars" in out.output
    assert not (tmp_path / "sweeps").exists()


class LocalWallet:
    """A wallet in this process (what the Ray actor does, without Ray)."""

    def __init__(self, ledger: SweepLedger, trial: str) -> None:
        self.ledger, self.trial, self.calls = ledger, trial, 0

    def lease(self, need: int, want: int, spent: int, held: int) -> int:
        self.calls += 1
        return self.ledger.lease(self.trial, need, want, spent, held)

    def settle(self, spent: int, held: int) -> None:
        self.ledger.settle(self.trial, spent, held)


def trial_budget(ledger: SweepLedger, trial: str, folder: Path, lease: float) -> LeasedBudget:
    folder.mkdir(parents=True, exist_ok=True)
    budget = LeasedBudget(1000.0, None, wallet=LocalWallet(ledger, trial), lease_nano=int(lease * 1e9))
    budget.attach(folder / "ledger.jsonl")
    ledger.open(trial, budget.spent_nano, new_folder=budget.spent_nano == 0)
    return budget


def test_leases_keep_all_trials_within_the_sweep_budget(tmp_path: Path) -> None:
    ledger = SweepLedger(tmp_path / "wallet.jsonl", 100 * 10**9)  # $100; an image costs $1
    budgets = [trial_budget(ledger, f"t{i}", tmp_path / f"t{i}", lease=7) for i in range(3)]
    sent = 0
    with pytest.raises(SweepBudgetExhausted):
        while True:
            for budget in budgets:  # interleaved, as concurrent trials are
                ticket = budget.reserve(3)
                budget.send(ticket)
                budget.settle(ticket, "answered")
                sent += 3
    assert sent <= 100 and ledger.committed_nano <= 100 * 10**9
    for budget in budgets:
        budget.close()
    assert ledger.committed_nano == sum(b.spent_nano for b in budgets) == sent * 10**9
    assert sum(b.wallet.calls for b in budgets) < sent // 3  # leases, not a call per request


def test_a_lost_trials_lease_counts_as_spent_until_it_reopens_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "wallet.jsonl"
    ledger = SweepLedger(path, 50 * 10**9)
    budget = trial_budget(ledger, "t0", tmp_path / "t0", lease=20)
    ticket = budget.reserve(2)
    budget.send(ticket)  # in flight when the node is lost: no outcome line
    assert ledger.committed_nano == 20 * 10**9  # the whole lease
    reloaded = SweepLedger(path, 50 * 10**9)  # the driver restarts: the file is the truth
    assert reloaded.committed_nano == 20 * 10**9
    again = Budget(1000.0, None, tmp_path / "t0" / "ledger.jsonl")  # the trial, run again
    assert again.spent_nano == 2 * 10**9  # its ledger counts the request in flight as billed
    reloaded.open("t0", again.spent_nano, new_folder=False)
    assert reloaded.committed_nano == 2 * 10**9
    assert SweepLedger(path, 80 * 10**9).committed_nano == 2 * 10**9  # and stays so
    with pytest.raises(LedgerDamaged, match="run folder is missing"):
        reloaded.open("t0", 0, new_folder=True)
    with pytest.raises(LedgerDamaged, match="more than"):
        reloaded.settle("t0", 5 * 10**9, 0)


def test_a_torn_lease_line_counts_as_held(tmp_path: Path) -> None:
    path = tmp_path / "wallet.jsonl"
    ledger = SweepLedger(path, 10 * 10**9)
    ledger.lease("t0", 10**9, 10**9, 0, 0)
    with path.open("a") as handle:
        handle.write('{"trial": "t1", "lease": 3000000000, "ti')
    assert SweepLedger(path, 10 * 10**9).committed_nano == 4 * 10**9


def test_importing_barapi_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = ("import sys, barapi, barapi.api, barapi.cli, barapi.sweep, barapi.sweep.trial; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_ray_the_sweep_says_which_extra_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from click.testing import CliRunner

    from barapi.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    out = CliRunner().invoke(main, ["sweep", str(spec_file(tmp_path, GOOD)), "--budget", "5",
                                    "--sweeps-dir", str(tmp_path / "sweeps")])
    assert out.exit_code == 2, out.output
    from barapi.adapters.base import install_hint

    assert install_hint("sweep") in out.output and len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "sweeps").exists()


# --- issue 29, item 9: an empty spec, a spec that is not a small text file, card fields ------

@pytest.mark.parametrize("text", ["", "# a comment only\n", "[run]\n[grid]\n", "[sweep]\nsamples = 2\n",
                                  "[card]\nrequests_per_second = 3\n"])
def test_a_spec_without_run_settings_is_an_error_not_the_default_job(tmp_path: Path,
                                                                     text: str) -> None:
    """An empty spec started the default 6-epoch job."""
    path = spec_file(tmp_path, text)
    with pytest.raises(ConfigError, match=r": no run settings: \[run\], \[grid\] and \[random\]"):
        read_spec(path)


@pytest.mark.parametrize(("text", "message"), [
    ('[run]\nq = 1\n[card]\nname = "x"\n', "[card] name: a card's name cannot be overridden"),
    ("[run]\nq = 1\n[card]\nprice_per_1000 = true\n", "[card] price_per_1000: Input should be a "
                                                       "valid number, got True"),
    ("[run]\nq = 1\n[card]\nprice_per_1000 = 1e-7\n", "[card] price_per_1000: 1e-07 is above 0"),
    ("[run]\nq = 1\n[card]\nrequests_per_second = 1e-9\n", "[card] requests_per_second: 1e-09"),
    ('[run]\nclasses = ""\n', "[run] classes: empty"),
    ("[run]\nq = 100000\n", "[run] q: one training step would query"),
])
def test_card_and_run_fields_follow_the_run_and_card_rules(tmp_path: Path, text: str,
                                                           message: str) -> None:
    path = spec_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_spec(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value), info.value


@pytest.mark.timeout(20)  # the old code read a FIFO forever
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "binary"])
def test_a_spec_that_is_not_a_small_text_file_is_refused_unread(tmp_path: Path,
                                                                kind: str) -> None:
    import os

    path = tmp_path / "spec.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "binary":
        path.write_bytes(b"[run]\x00\x00")
    else:
        path = Path(kind)
    with pytest.raises(ConfigError, match=rf"^sweep spec {path}: "):
        read_spec(path)
