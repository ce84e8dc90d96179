"""Run the real `helm` CLI on charts/hymirec: lint, template (parsed into dicts), NOTES.txt.

The binary comes from tools/setup.d/40-helm.sh (built once with `go install`, cached); the first call runs
that script if the binary is missing, so the chart tests also work without `make setup`. Set HYMIREC_HELM
to use another helm binary.

Also a small CLI:  python tests/charts/helm_runner.py lint|template [-f values.yaml] [--set k=v ...]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hymirec"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
SETUP_SCRIPT = ROOT / "tools" / "setup.d" / "40-helm.sh"
DEFAULT_HELM = ROOT / ".cache" / "bin" / "helm"


class HelmError(RuntimeError):
    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str):
        super().__init__(f"helm {' '.join(args)} exited {returncode}:\n{stderr or stdout}")
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def helm_binary() -> Path:
    override = os.environ.get("HYMIREC_HELM")
    if override:
        return Path(override)
    if not DEFAULT_HELM.exists():
        subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, cwd=ROOT)
    return DEFAULT_HELM


@dataclass
class Rendered:
    """The manifests of one `helm template`, indexed by (kind, name)."""

    docs: list[dict[str, Any]] = field(default_factory=list)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for doc in self.docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
        raise KeyError(f"no {kind}/{name}; rendered: {sorted(self.names())}")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def names(self) -> set[tuple[str, str]]:
        return {(doc["kind"], doc["metadata"]["name"]) for doc in self.docs}

    def workloads(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


class Helm:
    def __init__(self, binary: Path | None = None, chart: Path = CHART):
        self.binary = Path(binary) if binary else helm_binary()
        self.chart = chart
        # Keep helm's config/cache/data out of the user's home and away from any kube config.
        self._home = Path(tempfile.mkdtemp(prefix="hymirec-helm-"))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._home),
            "HELM_CACHE_HOME": str(self._home / "cache"),
            "HELM_CONFIG_HOME": str(self._home / "config"),
            "HELM_DATA_HOME": str(self._home / "data"),
            "KUBECONFIG": str(self._home / "no-kubeconfig"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=self.env,
                              timeout=120)
        if check and proc.returncode != 0:
            raise HelmError(list(args), proc.returncode, proc.stdout, proc.stderr)
        return proc

    @staticmethod
    def _value_args(values: Iterable[Path | str] = (), set_values: Iterable[str] = ()) -> list[str]:
        out: list[str] = []
        for path in values:
            out += ["-f", str(path)]
        for item in set_values:
            out += ["--set", item]
        return out

    def version(self) -> str:
        return self.run("version", "--template", "{{.Version}}").stdout.strip()

    def lint(self, values: Iterable[Path | str] = (), set_values: Iterable[str] = (),
             strict: bool = True, chart: Path | None = None) -> subprocess.CompletedProcess:
        args = ["lint", str(chart or self.chart), *self._value_args(values, set_values)]
        if strict:
            args.append("--strict")
        return self.run(*args)

    def template(self, values: Iterable[Path | str] = (), set_values: Iterable[str] = (),
                 release: str = "hymirec", namespace: str = "recs", chart: Path | None = None,
                 extra: Iterable[str] = ()) -> Rendered:
        proc = self.run("template", release, str(chart or self.chart), "--namespace", namespace,
                        *self._value_args(values, set_values), *extra)
        return Rendered([doc for doc in yaml.safe_load_all(proc.stdout) if doc])

    def template_error(self, values: Iterable[Path | str] = (), set_values: Iterable[str] = ()) -> str:
        """Render expecting failure; returns helm's error text (raises if the render succeeds)."""
        proc = self.run("template", "hymirec", str(self.chart), *self._value_args(values, set_values),
                        check=False)
        if proc.returncode == 0:
            raise AssertionError(f"render unexpectedly succeeded with {list(values)} {list(set_values)}")
        return proc.stderr

    def notes(self, values: Iterable[Path | str] = (), set_values: Iterable[str] = (),
              release: str = "hymirec", namespace: str = "recs") -> str:
        """Render templates/NOTES.txt offline (`helm template` skips it; `install --dry-run` needs a cluster):
        a scratch copy of the chart renders it through `tpl` inside a ConfigMap."""
        with tempfile.TemporaryDirectory(prefix="hymirec-notes-") as tmp:
            chart = Path(tmp) / self.chart.name
            shutil.copytree(self.chart, chart)
            shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes-under-test.txt")
            (chart / "templates" / "notes-under-test.yaml").write_text(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\ndata:\n"
                '  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | quote }}\n')
            rendered = self.template(values, set_values, release=release, namespace=namespace, chart=chart,
                                     extra=["--show-only", "templates/notes-under-test.yaml"])
            return rendered.get("ConfigMap", "notes-under-test")["data"]["notes"]


def _main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("lint", "template", "notes"):
        print(__doc__)
        return 2
    helm = Helm()
    cmd, rest = argv[0], argv[1:]
    values = [rest[i + 1] for i, a in enumerate(rest) if a == "-f"]
    sets = [rest[i + 1] for i, a in enumerate(rest) if a == "--set"]
    if cmd == "lint":
        print(helm.lint(values, sets).stdout)
    elif cmd == "notes":
        print(helm.notes(values, sets))
    else:
        print(yaml.safe_dump_all(helm.template(values, sets).docs, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
