"""Fixtures of the packaging tests. The binaries they need are built from
source on first use (see helpers.py); like the control plane they never skip:
a missing toolchain is an error, not a green run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging import helpers


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """helm v3, built by tests/envtest/build-helm.sh on first use."""
    return helpers.build_helm()


@pytest.fixture(scope="session")
def promql_check_bin() -> Path:
    """tests/packaging/promql (Prometheus' PromQL parser), built on first use."""
    return helpers.build_promql_check()
