"""Shared pytest fixtures.

``cosim_cache``: the Verilator build cache of :mod:`ef_train_hdl.cosim` for the tests, in
pytest's own cache folder (``.pytest_cache/d/verilator``): builds are keyed on a hash of the
Verilog, so they are reused across tests, xdist workers and sessions, and ``pytest
--cache-clear`` removes them. With the cache plugin off, a per-session temporary folder.
"""

import pytest


@pytest.fixture(scope="session")
def cosim_cache(request, tmp_path_factory):
    cache = getattr(request.config, "cache", None)
    if cache is None:  # -p no:cacheprovider: a per-session folder instead
        return tmp_path_factory.mktemp("verilator")
    return cache.mkdir("verilator")
