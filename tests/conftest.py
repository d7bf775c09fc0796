"""Shared pytest set-up: the project's tools first on PATH, and simulator fixtures that skip
visibly when a tool is missing locally but fail in CI, so a green CI means every tool ran."""

import os

import pytest

from tilemesh.toolchain import apply_tool_env, have_tool

apply_tool_env()

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SIM_TOOLS = {"verilator": "verilator", "icarus": "iverilog"}


def require_tool(name, why):
    """Skip (locally) or fail (in CI) when tool ``name`` is not on the tool PATH."""
    if not have_tool(name):
        msg = f"{name} not found: {why}"
        if IN_CI:
            pytest.fail(msg + " (CI must have every tool)")
        pytest.skip(msg)


@pytest.fixture(params=list(SIM_TOOLS))
def simulator(request):
    """Each RTL test runs once on Verilator and once on Icarus."""
    require_tool(SIM_TOOLS[request.param], f"needed for the {request.param} RTL tests")
    return request.param
