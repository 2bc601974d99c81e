"""The benchmark scripts still work (their --quick modes; the numbers are not checked)."""

from benchmarks import adapter_speed, digits


def test_adapter_speed_quick() -> None:
    rows = adapter_speed.main(["--quick", "--device", "cpu"])
    assert rows and all(r["adapter_img_s"] > 0 and r["ratio"] > 0 for r in rows)


def test_digits_quick() -> None:
    rows = digits.main(["--quick", "--device", "cpu"])
    assert [r["method"] for r in rows] == list(digits.METHODS)
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)


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
