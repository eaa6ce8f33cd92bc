"""The optional-dependency check of the test suite: skip locally, fail under CI=true."""

from __future__ import annotations

import pytest

import needs


def test_a_missing_test_dependency_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(needs, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="celeriac_absent_module"):
        needs.need("celeriac_absent_module")


def test_a_missing_test_dependency_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(needs, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        needs.need("celeriac_absent_module")


def test_a_present_dependency_is_returned() -> None:
    assert needs.need("json").dumps([1]) == "[1]"


def test_the_contract_suite_loads_brokers_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    contract = importlib.import_module("contract.conftest")
    monkeypatch.setattr(needs, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception):
        contract.load("celeriac.brokers.absent_engine", "Broker")
