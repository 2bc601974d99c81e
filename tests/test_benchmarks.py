"""The benchmark scripts still work (their --quick modes; the numbers are not checked)."""

from pathlib import Path

from benchmarks import adapter_speed


def test_adapter_speed_quick() -> None:
    rows = adapter_speed.main(["--quick", "--device", "cpu"])
    assert rows and all(r["adapter_img_s"] > 0 and r["ratio"] > 0 for r in rows)



def test_providers_quick() -> None:
    from benchmarks import providers

    rows = providers.main(["--quick"])
    assert all(r["emulator_billed"] == r["barapi_billed"] > 0 for r in rows)


def test_azure_transport_quick() -> None:
    from benchmarks import azure_transport

    rows = azure_transport.main(["--quick"])
    assert all(r["sdk_img_s"] > 0 and r["httpx_img_s"] > 0 for r in rows)


def test_scheduler_quick() -> None:
    from benchmarks import scheduler

    rates, costs = scheduler.main(["--quick"])
    assert all(r["billed_images"] > 0 for r in rates) and all(c["time_ratio"] > 0 for c in costs)


def test_suite_quick_runs_every_method_and_resumes_from_its_results(tmp_path) -> None:
    from benchmarks import suite
    from benchmarks.common import code_version

    rows = suite.main(["--quick", "--results", str(tmp_path)])
    assert set(suite.METHODS) - set(suite.HONEST_ONLY) <= {r["method"] for r in rows}
    assert {r["box"] for r in rows} == {"lite0", "moderation"}
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
    paid = [r for r in rows if r["box"] == "moderation" and r["method"] != "AR (white-box)"]
    assert all(r["dollars"] > 0 and r["images"] == r["emulator_billed"] > 0 for r in paid)
    main_methods = set(suite.METHODS) - set(suite.HONEST_ONLY)
    table = (tmp_path / "suite.md").read_text()
    assert all(f"| digits | lite0 | {m} |" in table for m in main_methods)
    assert list(tmp_path.glob("curves_*.png"))
    again = suite.main(["--quick", "--results", str(tmp_path)])  # everything read back
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]
    assert {r["code"] for r in again} == {code_version()}  # which code computed each cell
    suite.main(["--quick", "--results", str(tmp_path), "--only", "linear probe"])
    table = (tmp_path / "suite.md").read_text()
    assert all(f"| digits | lite0 | {m} |" in table for m in main_methods)  # kept
    cell = next(r for r in rows if r["box"] == "moderation" and r["method"] == suite.DEFAULT)
    (tmp_path / f"{cell['key']}.json").unlink()  # its run folder resumes, on a new port
    again = suite.main(["--quick", "--results", str(tmp_path), "--only", suite.DEFAULT])
    resumed = next(r for r in again if r["key"] == cell["key"])
    assert resumed["test_accuracy"] == cell["test_accuracy"]


def test_suite_says_which_cells_other_code_computed(tmp_path, capsys) -> None:
    from benchmarks import suite
    from benchmarks.common import code_version

    rows = [{"code": code_version()}, {"code": "0123abc"}, {}]
    suite.warn_other_code(rows, tmp_path)
    assert "2 of 3 cells were computed by other code" in capsys.readouterr().err
    suite.warn_other_code(rows[:1], tmp_path)
    assert capsys.readouterr().err == ""


def test_step_time_quick() -> None:
    from benchmarks import step_time

    (row,) = step_time.main(["--quick", "--steps", "2"])
    assert row["steps"] == 2 and row["model_s_per_step"] > 0 and 0 < row["barapi_share"] < 1


def test_gradient_agreement_quick_passes_its_float_control() -> None:
    # the control: tiny float-image differences agree with autograd's directional derivative,
    # so the benchmark compares like with like (and AR's gradient is the loss's gradient)
    from benchmarks import gradient_agreement

    rows = gradient_agreement.main(["--quick", "--directions", "12", "--betas", "0.05"])
    control = [r for r in rows if r["wire"] == "float" and r["beta"] == 1e-3]
    assert len(control) == 2 and all(r["two_sided"] > 0.9 for r in control)
    assert {r["wire"] for r in rows} == {"float", "8-bit"}


def test_cma_es_quick() -> None:
    from benchmarks import cma_es

    (row,) = cma_es.main(["--quick", "--seeds", "0", "--sigmas", "0.1"])
    assert 0 <= row["test_accuracy"] <= 1 and row["images"] > 0


def test_probe_l2_quick() -> None:
    from benchmarks import probe_l2

    rows = probe_l2.main(["--quick", "--l2", "0.01", "100"])
    assert [r["l2"] for r in rows] == [0.01, 100] and all(0 <= r["train"] <= 1 for r in rows)


def test_calibrate_table_groups_seeds_with_standard_error() -> None:
    from benchmarks.calibrate import FASHION_WIDE, spelled, table

    def row(candidate: dict, seed: int, accuracy: float) -> dict:
        settings = {"box": "moderation", **FASHION_WIDE, **spelled(candidate), "seed": seed}
        return {"settings": settings, "test_accuracy": accuracy, "images": 1000 * (seed + 1)}

    k4 = {"resolution": 4, "epochs": 12}
    rows = [row(k4, 0, 0.7), row(k4, 1, 0.8), row({"method": "ar", "patience": 0}, 0, 0.9)]
    lines = table(rows).splitlines()
    prefix = "| moderation | shirt vs T-shirt | "
    assert lines[2] == prefix + "BAR k=4, 12 ep., patience 2 | 2 | 75.0% | 5.0% | 1,500 |"
    assert lines[3] == prefix + "AR k=8, 6 ep., no early stop | 1 | 90.0% | 0.0% | 1,000 |"


def test_calibrate_paired_differences_use_the_seeds_both_ran() -> None:
    from benchmarks.calibrate import FASHION_WIDE, paired, spelled

    def row(candidate: dict, seed: int, accuracy: float) -> dict:
        settings = {"box": "nsfw", **FASHION_WIDE, **spelled(candidate), "seed": seed}
        return {"settings": settings, "test_accuracy": accuracy, "images": 1000}

    b5 = {"batch": 5}
    rows = [row({}, 0, 0.70), row({}, 1, 0.60), row(b5, 0, 0.75), row(b5, 1, 0.61),
            row(b5, 2, 0.99)]  # seed 2 has no baseline: left out
    lines = paired(rows, {}).splitlines()
    assert lines[0] == "Against BAR k=8, 6 ep., patience 2:"
    assert lines[4:] == ["| nsfw | shirt vs T-shirt | BAR k=8, 6 ep., patience 2, batch 5 | 2 "
                         "| +3.0 | 2.0 |"]


def test_estimate_consistency_quick_passes_its_linear_control() -> None:
    # the control: with each difference replaced by the exact directional derivative, averaging
    # and least squares converge on the gradient, so a low 8-bit cosine is the differences' doing
    from benchmarks import estimate_consistency

    rows = estimate_consistency.main(["--quick", "--steps", "8"])
    first, last = rows[0], rows[-1]
    assert [r["steps"] for r in rows] == [1, 5, 8] and last["pairs"] == 80
    assert last["exact"] > 0.8 and last["linear_lsq"] > 0.5
    assert last["linear_average"] > first["linear_average"]


def test_calibrate_runs_cma_es_rows_on_the_named_black_box() -> None:
    from benchmarks import calibrate

    settings = {"box": "nsfw", "dataset": "digits", "classes": "0,1", "canvas": 32, "window": 16,
                "input_size": 32, "resolution": 4, "per_class": 10, "epochs": 1, "m": 1,
                "cma_sigma": 0.1, "patience": 0, "seed": 0, "device": "cpu"}
    row = calibrate.run_one(settings)
    assert row["settings"] == settings and 0 <= row["test_accuracy"] <= 1 and row["images"] > 0
    assert calibrate.label(settings).startswith("CMA-ES k=4, 1 ep., no early stop")


def test_calibrate_seed_range_is_inclusive() -> None:
    from benchmarks.calibrate import seed_range

    assert seed_range("0-9") == range(10) and seed_range("5-9") == range(5, 10)
    assert seed_range("3") == range(3, 4)


def test_suite_quick_honest_group_serves_the_boxes_through_the_emulator(tmp_path) -> None:
    from benchmarks import suite

    rows = suite.main(["--quick", "--group", "honest", "--results", str(tmp_path)])
    assert {r["box"] for r in rows} == {"imagenet nsfw"}
    bar = [r for r in rows if r["method"] == "BAR, barapi default"]
    assert bar and bar[0]["images"] == bar[0]["emulator_billed"] > 0  # over the real wire
    (planned,) = [r for r in rows if r["method"] == suite.QUARTER]  # a budget plan: cut short
    assert 0 < planned["images"] < bar[0]["images"]
    (capped,) = [r for r in rows if r["method"] == suite.AT_25]  # a plan at the goal's dollars
    assert 0 < capped["dollars"] <= suite.GOAL_DOLLARS


def test_quick_cells_run_at_most_two_epochs() -> None:
    """A method's own epoch count (paper settings 3, LONGER 8) must not lengthen CI's runs."""
    from benchmarks import suite

    quick = suite.cells(["main", "honest", "ablations"], [0], True)
    assert quick and all(c.settings(suite.QUICK)[1]["epochs"] <= suite.QUICK_EPOCHS
                         for c in quick)
    full = {c.method: c.settings()[1].get("epochs") for c in
            suite.cells(["honest"], [0], False)}
    assert full[suite.LONGER] == 8 and full[suite.PAPER] == 3  # only --quick is capped


def test_surrogate_quick() -> None:
    from benchmarks import surrogate

    rows = surrogate.main(["--quick", "--boxes", "imagenet-moderation", "--seeds", "0",
                           "--walk", "1", "--prime-steps", "2"])
    assert -1 <= rows[0]["mean_cos"] <= 1 and rows[0]["paid_images"] > 0


def test_calibrate_runs_its_stages_through_barapi_sweep(tmp_path: Path) -> None:
    from barapi.sweep.spec import read_spec
    from benchmarks import calibrate

    spec = tmp_path / "calibration_grid.toml"
    spec.write_text(calibrate.sweep_spec("grid", [0, 3, 23], "cpu", 0.0, 1.0))
    trials = read_spec(spec).trials()  # the hook's settings are valid run settings
    assert [t.varied["row"] for t in trials] == [0, 3, 23]
    stage = calibrate.grid()
    for trial in trials:
        config = trial.config()
        expected = calibrate.with_budget(stage[trial.varied["row"]])
        assert config.method == expected.get("method", "bar") and config.device == "cpu"
        assert config.q == expected.get("q", calibrate.BASE["q"])
    few = calibrate.sweep_hook({"stage": "few-output", "row": 0, "device": "cpu"}, build=False)
    assert few[1] is None and "box" not in few[0] and few[0]["m"] == 1


def test_suite_rewrites_only_its_own_block_of_the_results_doc(tmp_path) -> None:
    from benchmarks import suite

    doc = tmp_path / "results.md"
    doc.write_text("a\n<!-- results:begin -->\nMAIN\n<!-- results:end -->\nb\n"
                   "<!-- honest:begin -->\nOLD\n<!-- honest:end -->\nc\n")
    suite.update_readme("NEW", doc, name="honest")
    assert doc.read_text() == ("a\n<!-- results:begin -->\nMAIN\n<!-- results:end -->\nb\n"
                               "<!-- honest:begin -->\nNEW\n<!-- honest:end -->\nc\n")


def test_suite_expects_durations_at_each_boxs_measured_rate(tmp_path) -> None:
    import json

    from benchmarks import suite

    honest = suite.cells(["honest"], [0], False)
    bar = next(c for c in honest if c.box == "nudenet nsfw" and c.method == suite.DEFAULT)
    ar = next(c for c in honest if c.box == "nudenet nsfw" and c.method == suite.AR)
    (tmp_path / f"{bar.key}.json").write_text(json.dumps({"images": 100, "seconds": 4.0,
                                                          "steps": 3}))
    (tmp_path / f"{ar.key}.json").write_text(json.dumps({"images": 10, "seconds": 60.0,
                                                         "steps": 3}))  # white-box time
    assert suite.measured_rates(tmp_path) == {"nudenet nsfw": 25.0}


def test_cells_run_before_head_refit_keep_their_keys() -> None:
    """head_refit=False (how every stored cell ran) is left out of a key, and so is the
    setting wherever it is inert (an untrained head, a box of K > REFIT_MAX_SOURCES): the
    stored runs stay found; the new default makes new runs."""
    from dataclasses import replace

    from benchmarks import suite

    previous = suite.Cell("honest", "digits 0 vs 1", "nudenet nsfw", suite.PREVIOUS, 0,
                          {**suite.METHODS[suite.PREVIOUS], "m": 1})
    assert replace(previous, method=suite.DEFAULT, overrides={"m": 1}).key != previous.key
    probe = replace(previous, method=suite.PROBE, overrides={**suite.METHODS[suite.PROBE],
                                                               "m": 1})
    assert replace(probe, overrides={**probe.overrides, "head_refit": False}).key == probe.key
    lite0 = suite.Cell("main", "digits", "lite0", suite.DEFAULT, 0, {})
    assert replace(lite0, overrides={"head_refit": False}).key == lite0.key


def test_suite_restores_the_committed_cells_a_fresh_clone_lacks(tmp_path) -> None:
    """The cell files are not committed: the reports' `runs` bring them back, so a fresh
    clone neither re-runs (re-pays for) a stored cell nor drops it from a partial report;
    a cell file already there is kept."""
    import json

    from benchmarks import suite

    cell = suite.Cell("honest", "digits 0 vs 1", "imagenet nsfw", suite.PROBE, 0,
                      {**suite.METHODS[suite.PROBE], "m": 1})
    other = suite.Cell("honest", "digits 0 vs 1", "imagenet nsfw", suite.PROBE, 1,
                       {**suite.METHODS[suite.PROBE], "m": 1})
    runs = [{**suite.asdict(c), "key": c.key, "test_accuracy": accuracy, "code": "abc"}
            for c, accuracy in ((cell, 0.6), (other, 0.7))]
    records, root = tmp_path / "results", tmp_path / "suite"
    records.mkdir()
    root.mkdir()
    (records / "honest.json").write_text(json.dumps({"runs": runs}))
    (root / f"{other.key}.json").write_text(json.dumps({"key": other.key, "test_accuracy": 0.9}))
    assert suite.restore_cells(root, records) == 1
    rows = suite.finished([cell, other], root)
    assert [(r["seed"], r["test_accuracy"]) for r in rows] == [(0, 0.6), (1, 0.9)]
    assert suite.restore_cells(root, records) == 0


def test_suite_report_never_silently_drops_recorded_runs(tmp_path, monkeypatch) -> None:
    """A report whose cells no longer match a recorded run (settings changed since) stops
    with one line before it rewrites the committed record, its plots or the docs."""
    import json

    import pytest

    from benchmarks import suite

    records = tmp_path / "results"
    records.mkdir()
    record = json.dumps({"runs": [{"key": "0123456789abcdef", "test_accuracy": 0.5}]})
    (records / "honest.json").write_text(record)
    monkeypatch.setattr(suite, "RESULTS", records)
    assert suite.dropped_runs("honest", []) == 1
    with pytest.raises(SystemExit, match="would drop 1 of its recorded runs"):
        suite.main(["--group", "honest", "--report", "--results", str(tmp_path / "suite")])
    assert (records / "honest.json").read_text() == record
    assert not list(records.glob("*.png"))


def test_cost_to_match_falls_back_to_the_previous_default_per_seed() -> None:
    """A seed the new default has not rerun keeps its row, from the previous default."""
    from benchmarks import suite

    def row(method: str, seed: int, curve: list[list[float]]) -> dict:
        return {"task": "t", "box": "b", "seed": seed, "method": method, "curve": curve,
                "images": 1000, "best_val_accuracy": 0.6}

    rows = [row(suite.PAPER, 0, [[1000, 0.6]]), row(suite.PAPER, 1, [[1000, 0.6]]),
            row(suite.PREVIOUS, 0, [[100, 0.5], [300, 0.7]]),
            row(suite.PREVIOUS, 1, [[100, 0.5], [300, 0.7]]),
            row(suite.DEFAULT, 1, [[200, 0.65]])]
    matches = suite.cost_to_match(rows)
    assert [(m["seed"], m["barapi"], m["barapi_images"]) for m in matches] == [
        (0, suite.PREVIOUS, 300), (1, suite.DEFAULT, 200)]


def test_goals_pair_each_default_with_ar_of_the_same_head_and_say_which() -> None:
    """A task not rerun with the newest default is reported with the previous default,
    against AR with the previous default's head training, and the cell says so."""
    from benchmarks import suite

    def row(method: str, seed: int, accuracy: float) -> dict:
        return {"group": "honest", "task": "t", "box": "b", "method": method, "seed": seed,
                "test_accuracy": accuracy, "dollars": 10.0, "images": 100, "curve": [],
                "best_val_accuracy": accuracy}

    older = [row(suite.PREVIOUS, 0, 0.7), row(suite.AR_ADAM, 0, 0.8), row(suite.AR, 0, 0.95)]
    (cells,) = suite.goals(older)
    assert cells["ar_gap"] == "+10.0 (1), Adam head" and cells["refit"] == "–"
    (cells,) = suite.goals([*older, row(suite.DEFAULT, 0, 0.9)])
    assert cells["ar_gap"] == "+5.0 (1)" and cells["refit"] == "+20.0 (1)"


def test_best_within_25_skips_dearer_methods_and_pairs_ar_of_the_same_head() -> None:
    """The best BAR run within goal 1's $25: a more accurate run over the cap is not it, and
    an Adam-head method is measured against AR with the Adam-moved head."""
    from benchmarks import suite

    def row(method: str, seed: int, accuracy: float, dollars: float = 10.0) -> dict:
        return {"group": "honest", "task": "t", "box": "b", "method": method, "seed": seed,
                "test_accuracy": accuracy, "dollars": dollars, "images": 100, "seconds": 60.0}

    rows = [row(m, s, a + s / 100, d) for s in (0, 1) for m, a, d in (
        (suite.DEFAULT, 0.95, 30.0), (suite.PREVIOUS, 0.8, 10.0), (suite.QUARTER, 0.7, 2.5),
        (suite.PROBE, 0.9, 0.4), (suite.AR, 0.99, 0.0), (suite.AR_ADAM, 0.85, 0.0))]
    (best,) = suite.best_within(rows)
    assert best["method"] == suite.PREVIOUS and best["ar"] == suite.AR_ADAM
    assert best["ar_gap"] == "+5.0 ± 0.0 (2)" and best["dollars"] == "$10.00"
    assert suite.best_within(rows, dollars=1.0) == []


def test_every_committed_honest_run_is_still_a_cell() -> None:
    """A change of barapi's defaults must keep the runs already paid for reachable (a method
    that pins the old settings), or the next report would drop them (issue 16's table)."""
    import json

    from benchmarks import suite
    from benchmarks.common import RESULTS

    runs = json.loads((RESULTS / "honest.json").read_text())["runs"]
    keys = {c.key for c in suite.cells(["honest"], list(suite.REPORT_SEEDS), False)}
    assert runs and not [r["method"] for r in runs if r["key"] not in keys]


def test_money_soak_quick_covers_a_poisoned_and_damaged_cache_the_providers_words_and_a_moved_version(
        tmp_path: Path) -> None:
    """Issue 29: each new kind of the money soak once or twice, pinned (the soak draws them at
    random): a poisoned cache (planted code never runs, tampered rows never served), a
    damaged cache.db ($0, CacheUnusable), answers missing a concept or tag, renamed concepts
    or tags (columns still filled), and a model version moved between stop and resume.
    Issue 32: one faulted run of each new provider (Rekognition up to its quota, SafeSearch
    with failed images, label detection with its bound labels renamed, a metered OIP server),
    every row served and cached what the emulator answers after the provider's transform."""
    import asyncio
    import random

    from barapi.emulate import Faults
    from benchmarks import money_soak
    from benchmarks.loopback import NumpyModel

    model = NumpyModel()
    runs = {
        "poisoned clarifai": ("poisoned", "clarifai", Faults(), 0.3),
        "poisoned azure": ("poisoned", "azure", Faults(), 0.05),
        "damaged clarifai": ("corrupt", "clarifai", Faults(), 0.3),
        "damaged azure": ("corrupt", "azure", Faults(), 0.05),
        "omitting clarifai": ("clean", "clarifai", Faults(omit_every=2), 0.3),
        "omitting azure": ("poisoned", "azure", Faults(omit_every=3), 0.2),
        "renamed clarifai": ("poisoned", "clarifai", Faults(answer_names={"gore": "sangre"},
                                                            concept_names={"explicit": "nsfw"}), 1.0),
        "renamed azure": ("clean", "azure", Faults(answer_names={"negative": "négatif"}), 0.2),
        "rekognition quota": ("clean", "rekognition", Faults(quota_images=12, drop_every=4,
                                                             bad_answer_every=5), 1.0),
        "google safe-search": ("poisoned", "google-safe-search",
                               Faults(fail_input_every=4, unavailable_every=5), 1.0),
        "renamed google labels": ("clean", "google-labels",
                                  Faults(answer_names={"bound": "renamed"}, drop_every=2), 1.0),
        "metered oip": ("poisoned", "oip", Faults(unavailable_every=2, drop_every=3), 1.0),
    }
    got = {}
    for n, (name, (state, provider, faults, budget)) in enumerate(runs.items()):
        folder = tmp_path / f"s{n}"
        folder.mkdir()
        got[name] = asyncio.run(money_soak.service_run(random.Random(n), folder, model, state,
                                                       faults, provider, budget))
    for n, keep_old in enumerate([False, True]):
        folder = tmp_path / f"c{n}"
        folder.mkdir()
        got[f"version keep_old={keep_old}"] = money_soak.cli_run(random.Random(n), folder, "version",
                                                                 keep_old=keep_old)
    for name, outcome in got.items():
        assert not outcome.failed, (name, outcome)
    for name in ("poisoned clarifai", "poisoned azure"):
        extra = got[name].extra
        assert extra["planted"]["code"] and extra["bad_entries"] and got[name].server_billed
    for name in ("damaged clarifai", "damaged azure"):
        assert got[name].ended == "CacheUnusable" and got[name].server_billed == 0
    for name in ("omitting clarifai", "omitting azure"):
        assert got[name].extra["invalid_answers"] > 0, got[name]
    for name in ("renamed clarifai", "renamed azure"):
        assert got[name].ended == "done" and got[name].server_billed, got[name]
    assert got["version keep_old=False"].extra["refusals"] == 1
    assert got["version keep_old=True"].extra["unpinned_billed"] == 0
    table = money_soak.summarize(list(got.values()))
    assert {row["kind"] for row in table} == {"service", "version"}
    assert sum(row["poisoned"] for row in table) == 6 and sum(row["markers"] for row in table) == 0
    assert {row["provider"] for row in table if row["kind"] == "service"} == set(money_soak.PLANS)
    quota = got["rekognition quota"]  # refused at the quota, not billed; lost answers counted
    assert quota.ended == "FatalProviderError" and quota.server_billed == 12 <= quota.ledger_images
    assert quota.extra["invalid_answers"] and got["google safe-search"].extra["failed_inputs"]
    assert got["google safe-search"].extra["bad_entries"] and got["metered oip"].extra["bad_entries"]
    assert got["metered oip"].price_per_1000 == money_soak.OIP_PRICE > 0
    labels = got["renamed google labels"]
    assert labels.ended == "done" and labels.faults["answer_names"], labels
    for name in ("google safe-search", "renamed google labels", "metered oip"):
        assert got[name].ended == "done" and got[name].server_billed > 0, got[name]
    for name in ("rekognition quota", "google safe-search", "renamed google labels", "metered oip"):
        assert got[name].uncertain_images > 0, got[name]  # lost answers or outages did happen


def test_subspace_gate_low_rank_fit_recovers_a_planted_subspace() -> None:
    # per-image gradients g_i = B a_i in a 3-dimensional subspace of 48, each seen only
    # through 12 noisy directional derivatives of its own: the fit finds span(B)
    import numpy as np

    from benchmarks.subspace_gate import capture, low_rank_fit, orthonormal, top

    rng = np.random.default_rng(0)
    n, q, d, k = 80, 12, 48, 3
    basis = orthonormal(rng.standard_normal((d, k)))
    g = rng.standard_normal((n, k)) @ basis.T
    u = rng.standard_normal((n, q, d))
    y = np.einsum("ijd,id->ij", u, g)[..., None] + 0.05 * rng.standard_normal((n, q, 1))
    start = top(np.einsum("n,nd,ne->de", (y ** 2).ravel(), u.reshape(-1, d), u.reshape(-1, d)), k)
    found = low_rank_fit(u, y, k, start)
    assert min(capture(found, basis[:, j]) for j in range(k)) > 0.98
    assert max(capture(start, basis[:, j]) for j in range(k)) < 0.9  # the fit did the work


def test_subspace_gate_per_image_gradients_average_to_ars_gradient() -> None:
    # the white-box truth of the gate: per-image loss gradients (one copy of W per image) whose
    # mean is exactly the gradient white-box AR follows on the same images
    import asyncio

    import numpy as np

    from barapi import api
    from barapi.adapters.boxes import create_box
    from barapi.query import QueryService
    from barapi.trainer import Task, build_heads
    from barapi.whitebox import autograd_gradient
    from benchmarks.gradient_agreement import QUICK
    from benchmarks.subspace_gate import true_gradients

    config = api.make_config(**{**QUICK, "classes": "0,1,2"})
    box = create_box("imagenet-moderation", device="cpu", input_size=config.input_size)
    task = Task(config, api.load_split(config))
    _, head = asyncio.run(build_heads(QueryService(box), task))
    windows, labels = task.windows["train"][:10], task.split.train.labels[:10]
    weights = np.random.default_rng(1).normal(0, 0.3, task.program.shape).astype(np.float32)
    truth = true_gradients(box, task, head, weights, windows, labels, chunk=4)
    _, expected, _ = asyncio.run(autograd_gradient(box, task)(weights, head, windows, labels, 0))
    assert truth.jacobians.shape == (10, 5, task.program.dim)
    np.testing.assert_allclose(truth.gradient, expected.reshape(-1), rtol=1e-4, atol=1e-7)


def test_paired_differences_carry_a_student_t_interval() -> None:
    import numpy as np
    import pytest

    from benchmarks.common import interval, paired

    # 5 seeds: t(0.975, 4) = 2.776, not the normal 1.96
    diffs = [-0.014, -0.236, -0.333, -0.042, -0.069]
    mean, low, high = interval(diffs)
    assert mean - low == pytest.approx(high - mean)
    half = 2.776 * np.std(diffs, ddof=1) / np.sqrt(5)
    assert mean == pytest.approx(-0.1388) and high - mean == pytest.approx(half, rel=1e-3)
    assert paired(diffs) == "-13.9 [-31.1, +3.3]"  # 1.96 would print [-26.1, -1.7]
    assert paired([0.02]) == "+2.0" and paired([]) == "–"


def test_the_direction_sharing_ratio_is_one_over_b_for_equal_gradients() -> None:
    import numpy as np
    import pytest

    from benchmarks.subspace_gate import MINIBATCH, per_sample_error_ratio

    rng = np.random.default_rng(0)
    same = np.tile(rng.standard_normal(192), (60, 1))
    assert per_sample_error_ratio(same, rng) == pytest.approx(1 / MINIBATCH)
    independent = rng.standard_normal((60, 192))  # mean of B independent: ratio ≈ 1
    assert 0.7 < per_sample_error_ratio(independent, rng) < 1.4


def test_the_suites_white_box_nudenet_is_the_box_the_emulator_serves() -> None:
    # AR cells on NudeNet failed with "input_size: nudenet-nsfw runs at 320 px" once the box
    # refused the suite's 112 px: the white-box copy takes NudeNet's own side, as the BAR path
    from barapi import api
    from benchmarks import suite

    box = suite.local_box("nudenet nsfw", api.make_config(device="cpu"))
    assert box.identity.startswith("local/nudenet-nsfw/")
