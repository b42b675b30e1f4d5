"""The runtime boundary (DESIGN.md): what `tokenscale run` and `tokenscale crd` import stays
within the declared runtime dependencies; commands that need an extra say which one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tokenscale.extras import EXTRA_MODULES, MissingExtraError, require

RUNTIME_MODULES = ("tokenscale.cli", "tokenscale.runner", "tokenscale.reconcile",
                   "tokenscale.handlers", "tokenscale.crd", "tokenscale.status",
                   "tokenscale.metrics", "tokenscale.adapters.prometheus",
                   "tokenscale.adapters.kube", "tokenscale.adapters.peering")

# The extras' modules are made unimportable first, as in the image: a dependency's optional
# import (kubernetes tries kubernetes_validate) falls back quietly, one of ours fails.
_PROBE = """
import json, sys
blocked = set(json.loads(sys.argv[1]))
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (an extra)", name=name)
        return None
sys.meta_path.insert(0, Absent())
for name in sys.argv[2:]:
    __import__(name)
from tokenscale.cli import build_parser
build_parser().parse_args(["run"]); build_parser().parse_args(["crd"])
build_parser().parse_args(["demo", "--duration", "1"])
build_parser().parse_args(["backtest", "--budget", "b.yaml", "--trace", "t=x.csv"])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


#: modules of the dev extra that a dependency would pick up if present
DEV_ONLY = ("kubernetes_validate", "hypothesis", "pytest")


def _loaded_by_runtime(blocked: set[str]) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(sorted(blocked)),
                          *RUNTIME_MODULES], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout))


def test_runtime_modules_and_the_parser_load_no_module_of_an_extra() -> None:
    extras = {m for modules in EXTRA_MODULES.values() for m in modules}
    loaded = _loaded_by_runtime(extras | set(DEV_ONLY))
    assert "tokenscale" in loaded and "kopf" in loaded  # the probe did import the runtime
    assert loaded & extras == set()


def test_a_missing_extra_names_the_extra_and_the_install_command() -> None:
    with pytest.raises(MissingExtraError) as err:
        require("demo", "the demo", ("json", "no_such_module_tokenscale"))
    message = str(err.value)
    assert "'demo' extra" in message and "no_such_module_tokenscale" in message
    assert "pip install 'tokenscale[demo]'" in message and "json," not in message
    require("demo", "the demo", ("json",))  # present: nothing happens
