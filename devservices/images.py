"""Build and run the container images (images/*.Dockerfile) with Buildah, offline, on a machine of this kind.

No container registry and no Docker engine are reachable here, so:

* storage is private to the clone: <repo>/.cache/images/{storage,run}; every Buildah call gets --root/--runroot,
  so nothing here touches the machine's own containers, and `--isolation chroot` (no cgroups needed);
* the storage driver is overlay when an overlay mount works on that file system (a layer costs its own size), else
  vfs (every layer and every container is a full copy of the root file system: ~1.6x the disk, see NEED_GB);
* the base image is a Debian bookworm root file system made by `debootstrap` from Debian's mirror with python3.11
  and its venv module (production passes an official python:3.11-slim-bookworm as BASE instead); made once, kept;
* the Python packages come from requirements/app.lock (`make lock` rewrites it, see lock()), downloaded once into a
  wheelhouse (.cache/images/wheels) that is bind-mounted into the build, never copied into a layer;
* a build's peak disk is measured and checked first (NEED_GB, needed_gb()); images are removed by their users.

CLI (`make lock`, `make images`):  python -m devservices.images lock | wheels | base | build [--base B]
[--models-repo DIR] [--tag T]
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "images"
LOCK_FILE = ROOT / "requirements" / "app.lock"
APP_DOCKERFILE = ROOT / "images" / "app.Dockerfile"
MODELS_DOCKERFILE = ROOT / "images" / "models.Dockerfile"
BASE_IMAGE = "localhost/hymirec-base:bookworm"
MIRROR = os.environ.get("HYMIREC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# python3-distutils: python3.11-venv depends on the virtual python3.11-distutils, which debootstrap cannot resolve.
BASE_PACKAGES = ("python3.11", "python3.11-venv", "python3-distutils", "ca-certificates")
BASE_RECIPE = hashlib.sha256(f"bookworm minbase {' '.join(BASE_PACKAGES)} v1".encode()).hexdigest()[:16]

# Left out of the lock on purpose. `triton` is OpenAI's Triton compiler (~690 MB installed), which torch only uses
# for torch.compile / TorchInductor GPU kernels; the project never compiles (training runs eager, the ONNX export
# goes through torch.export, which checks for triton and carries on without it). The nvidia-* / cuda-* packages
# (~2.8 GB) cannot go: PyPI's Linux torch wheel links libcudart, libcublas, libcudnn, libnccl, ... as DT_NEEDED of
# libtorch_cuda.so / libtorch_cpu.so, so `import torch` fails without them even on a CPU-only machine (measured:
# "libcudart.so.13: cannot open shared object file"); the CPU-only wheels live on download.pytorch.org, which the
# build machines cannot reach. Keeping them also keeps the image able to train on a GPU node.
LOCK_EXCLUDE = {"triton"}
# Free disk (GB) a build needs at the storage path, measured on this machine kind (du of .cache/images during
# `pytest tests/images`). overlay: the layers are committed one by one, but Buildah keeps one working container
# whose upper directory grows with every step, and committing a layer writes its diff twice more (a temporary blob,
# then the layer), so the peak is ~2x the image plus ~2x its last big layer: +14.7 GB for the 5.8 GB app image.
# vfs: every layer is a full copy of the root file system, so the build commits once (no per-step layers): the
# container, the diff twice and the new layer, ~4x the image. Plus, once, the wheelhouse and the base.
NEED_GB = {"overlay": 15.5, "vfs": 24.5, "wheels": 3.0, "base": 0.5}


class BuildahError(RuntimeError):
    """A failed Buildah (or debootstrap) call. The message: exit status, free disk and the command on one line, then
    the END of stderr (where the real error is), then only the end of stdout (build steps, pip's output)."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str, note: str = ""):
        err = stderr.strip().splitlines()[-40:]
        out = stdout.strip().splitlines()[-15:]
        cmd = " ".join(argv)
        super().__init__(f"exit {returncode}{note}: {cmd[:400]}{' ...' if len(cmd) > 400 else ''}\n"
                         "--- stderr (last lines) ---\n" + "\n".join(err) +
                         "\n--- stdout (last lines) ---\n" + "\n".join(out))
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr


def _run(argv: list[str], *, timeout: float = 1800, check: bool = True, env: dict | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    # own session: on a timeout the whole group (buildah and what it started in the container) is killed
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise BuildahError(argv, -9, out, err + f"\n(killed after {timeout:.0f} s)") from None
    done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise BuildahError(argv, proc.returncode, out, err)
    return done


def free_gb(path: Path = CACHE) -> float:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free / 1e9


def du_gb(path: Path) -> float:
    out = _run(["du", "-sxB1", str(path)], check=False).stdout.split()
    return int(out[0]) / 1e9 if out else 0.0


# --------------------------------------------------------------------------------------------------- the lock file
def lock(out: Path = LOCK_FILE) -> Path:
    """Resolve pyproject.toml's dependencies with pip's own resolver (`pip install --dry-run --report`, metadata
    only: ~40 s) and write every package as name==version with the sha256 of the wheel pip chose. One wheel a
    package: the lock is for CPython 3.11 on manylinux x86_64, the platform of both bases (Debian bookworm)."""
    import platform

    if sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64" or sys.platform != "linux":
        raise SystemExit("lock: run with CPython 3.11 on Linux x86_64 (the images' platform)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    with tempfile.TemporaryDirectory(prefix="hymirec-lock-") as tmp:
        report = Path(tmp) / "report.json"
        _run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
              "--quiet", "--report", str(report), str(ROOT)], env=env, timeout=900)
        items = json.loads(report.read_text())["install"]
    via = _via(items)
    lines = ["# The application image's Python packages, each pinned to one wheel by its sha256 (pip --require-hashes).",
             "# Generated by `make lock` (python -m devservices.images lock) from pyproject.toml's dependencies,",
             "# resolved by pip for CPython 3.11 on manylinux x86_64. Do not edit by hand.",
             f"# Left out on purpose (see LOCK_EXCLUDE in devservices/images.py): {', '.join(sorted(LOCK_EXCLUDE))}.",
             "# Install with: pip install --no-deps --require-hashes -r requirements/app.lock", ""]
    for item in sorted(items, key=lambda i: _norm(i["metadata"]["name"])):
        name, version = _norm(item["metadata"]["name"]), item["metadata"]["version"]
        if name == "hymirec" or name in LOCK_EXCLUDE:
            continue
        hashes = item["download_info"].get("archive_info", {}).get("hashes", {})
        if "sha256" not in hashes:
            raise SystemExit(f"lock: pip reported no sha256 for {name} ({item['download_info'].get('url')})")
        lines += [f"{name}=={version} \\", f"    --hash=sha256:{hashes['sha256']}",
                  f"    # via {', '.join(sorted(via.get(name, ()))) or '?'}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _via(items: list[dict]) -> dict[str, set[str]]:
    """Which resolved packages require each package. The report does not say which extras of a package were
    asked for (feast[redis], uvicorn[standard], ...), so they are propagated along the edges to a fixed point."""
    from packaging.requirements import Requirement

    reqs = {_norm(i["metadata"]["name"]): [Requirement(s) for s in i["metadata"].get("requires_dist") or []]
            for i in items}
    extras: dict[str, set[str]] = {name: {""} for name in reqs}
    via: dict[str, set[str]] = {}
    changed = True
    while changed:
        changed = False
        for parent, parent_reqs in reqs.items():
            for req in parent_reqs:
                child = _norm(req.name)
                if child not in reqs or not (req.marker is None or any(
                        req.marker.evaluate({"extra": e}) for e in extras[parent])):
                    continue
                before = (len(extras[child]), len(via.get(child, ())))
                extras[child] |= set(req.extras)
                via.setdefault(child, set()).add(parent)
                changed |= before != (len(extras[child]), len(via[child]))
    return via


def wheelhouse(dest: Path = CACHE / "wheels", lock_file: Path = LOCK_FILE) -> Path:
    """Download every locked wheel once (pip checks the hashes); a stamp of the lock makes it instant afterwards."""
    stamp = dest / ".stamp-lock"
    want = hashlib.sha256(lock_file.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes", "--only-binary=:all:",
          "--dest", str(dest), "-r", str(lock_file)], env=env, timeout=1800)
    keep = {tuple(line.split(" ")[0].split("==")) for line in lock_file.read_text().splitlines()
            if line[:1].isalnum() and "==" in line}
    for wheel in dest.glob("*.whl"):  # wheels no longer locked
        name, version = wheel.name.split("-")[:2]
        if (_norm(name), version) not in keep:
            wheel.unlink()
    stamp.write_text(want)
    return dest


# --------------------------------------------------------------------------------------------------------- Buildah
class Buildah:
    def __init__(self, cache: Path = CACHE):
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        self.driver = self._driver()
        self.base_argv = ["buildah", "--root", str(cache / "storage"), "--runroot", str(cache / "run"),
                          "--storage-driver", self.driver]
        # TMPDIR: where buildah writes a layer's diff while committing it (default /var/tmp): next to the storage,
        # so the free-disk check sees it, and on a file system with room for it
        (cache / "tmp").mkdir(exist_ok=True)
        self.env = os.environ | {"BUILDAH_ISOLATION": "chroot", "TMPDIR": str(cache / "tmp")}

    def _driver(self) -> str:
        """overlay when an overlay mount works under the cache, else vfs; remembered, because a storage directory
        cannot change its driver."""
        chosen = self.cache / "driver"
        if chosen.exists():
            return chosen.read_text().strip()
        probe = Path(tempfile.mkdtemp(prefix="probe-", dir=self.cache))
        try:
            for d in ("lower", "upper", "work", "merged"):
                (probe / d).mkdir()
            opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
            ok = _run(["mount", "-t", "overlay", "overlay", "-o", opts, str(probe / "merged")], check=False,
                      timeout=30).returncode == 0
            if ok:
                _run(["umount", str(probe / "merged")], check=False, timeout=30)
        finally:
            shutil.rmtree(probe, ignore_errors=True)
        driver = "overlay" if ok else "vfs"
        chosen.write_text(driver + "\n")
        return driver

    def __call__(self, *args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
        try:
            return _run([*self.base_argv, *args], timeout=timeout, check=check, env=self.env)
        except BuildahError as exc:  # a full disk is the usual suspect on a build machine: say how full
            raise BuildahError(exc.argv, exc.returncode, exc.stdout, exc.stderr,
                               f" ({free_gb(self.cache):.1f} GB free at {self.cache})") from None

    @contextmanager
    def locked(self):
        """One Buildah user of this storage at a time (tests, `make images`)."""
        with open(self.cache / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield self

    def needed_gb(self) -> float:
        need = NEED_GB[self.driver]
        if not (self.cache / "wheels" / ".stamp-lock").exists():
            need += NEED_GB["wheels"]
        if not self.exists(BASE_IMAGE):
            need += NEED_GB["base"]
        return need

    def exists(self, image: str) -> bool:
        return self("inspect", "--type", "image", image, check=False, timeout=120).returncode == 0

    def inspect(self, image: str) -> dict:
        return json.loads(self("inspect", "--type", "image", image, timeout=120).stdout)

    def size_gb(self, image: str) -> float:
        """Sum of the image's layers (uncompressed: what it takes on a node's disk)."""
        manifest = json.loads(self.inspect(image)["Manifest"])
        return sum(layer["size"] for layer in manifest["layers"]) / 1e9

    def cleanup(self) -> None:
        """Drop working containers (an interrupted build or run) and nameless images (intermediate images of
        builds, dangling ones): they can hold gigabytes. Layers of named images stay."""
        self("rm", "--all", check=False, timeout=600)
        self.prune()

    def prune(self) -> None:
        rows = json.loads(self("images", "--all", "--json", check=False, timeout=120).stdout or "[]")
        nameless = [row["id"] for row in rows if not row.get("names")]
        if nameless:
            self("rmi", "--force", *nameless, check=False, timeout=600)

    def rmi(self, *images: str) -> None:
        present = [i for i in images if self.exists(i)]
        if present:
            self("rmi", "--force", *present, timeout=600)
        self.cleanup()

    def base(self, image: str = BASE_IMAGE) -> str:
        """The Debian bookworm base with python3.11 + venv, made by debootstrap straight into a scratch container's
        mounted root (no copy), committed once; rebuilt only when BASE_PACKAGES change."""
        if self.exists(image) and self.inspect(image).get("OCIv1", {}).get("config", {}).get(
                "Labels", {}).get("io.hymirec.base-recipe") == BASE_RECIPE:
            return image
        ctr = self("from", "--name", "hymirec-base-build", "scratch", timeout=120).stdout.strip()
        try:
            root = self("mount", ctr, timeout=120).stdout.strip()
            _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), "bookworm", root,
                  MIRROR], timeout=1800)
            # apt's downloaded .debs and indexes are ~45 MB nobody in the image needs
            _run(["chroot", root, "apt-get", "clean"], timeout=120)
            for junk in ("var/lib/apt/lists", "var/cache/apt"):
                for p in (Path(root) / junk).glob("*"):
                    if p.is_file():
                        p.unlink()
            self("umount", ctr, timeout=120)
            self("config", "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", "--label",
                 f"io.hymirec.base-recipe={BASE_RECIPE}", ctr, timeout=120)
            self("commit", "--quiet", "--rm", ctr, image, timeout=1800)
        except BaseException:
            self("rm", ctr, check=False, timeout=600)
            raise
        return image

    def build(self, dockerfile: Path, context: Path, tag: str, *, base: str | None = None,
              wheels: Path | None = None, ignorefile: Path | None = None, timeout: float = 2400) -> str:
        """`buildah build`, intermediate containers removed even on failure. overlay: one layer per instruction
        (the Dockerfile splits the install by size, which keeps the peak disk down, see NEED_GB); vfs: one commit
        (there every layer is a full copy). `wheels` is bind-mounted read-only at /tmp/wheels for the build only
        (under the chart, /tmp is an emptyDir: the empty mount point left in the image is hidden). Intermediate
        images are removed afterwards (their layers belong to the image)."""
        args = ["build", f"--layers={str(self.driver == 'overlay').lower()}", "--force-rm", "--pull=never" if base and base.startswith("localhost/")
                else "--pull=missing", "--isolation", "chroot", "--network", "host", "-f", str(dockerfile),
                "-t", tag]
        if base:
            args += ["--build-arg", f"BASE={base}"]
        if wheels is not None:
            args += ["--volume", f"{wheels}:/tmp/wheels:ro", "--build-arg", "WHEELS=/tmp/wheels"]
        if ignorefile is not None:
            args += ["--ignorefile", str(ignorefile)]
        try:
            self(*args, str(context), timeout=timeout)
        finally:
            self.prune()
        return tag

    def build_app(self, tag: str, base: str | None = None, offline: bool = True) -> str:
        wheels = wheelhouse() if offline else None
        return self.build(APP_DOCKERFILE, ROOT, tag, base=base, wheels=wheels,
                          ignorefile=APP_DOCKERFILE.with_name(APP_DOCKERFILE.name + ".dockerignore"))

    def build_models(self, repo: Path, tag: str, base: str | None = None) -> str:
        return self.build(MODELS_DOCKERFILE, repo, tag, base=base)

    @contextmanager
    def container(self, image: str, name: str):
        """A working container of `image` (with overlay: no copy of the image), removed afterwards."""
        self("rm", name, check=False, timeout=300)
        ctr = self("from", "--pull=never", "--name", name, image, timeout=600).stdout.strip()
        try:
            yield ctr
        finally:
            self("rm", ctr, check=False, timeout=600)

    def run(self, ctr: str, argv: list[str], *, user: str | None = None, volumes: tuple[str, ...] = (),
            env: dict[str, str] | None = None, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        args = ["run", "--isolation", "chroot", "--network", "host"]
        if user:
            args += ["--user", user]
        for vol in volumes:
            args += ["--volume", vol]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        return self(*args, ctr, "--", *argv, timeout=timeout, check=check)


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m devservices.images", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("lock", "wheels", "base", "build"))
    p.add_argument("--base", default=None, help="base image (default: the local debootstrap base)")
    p.add_argument("--online", action="store_true", help="pip installs from PyPI, not the local wheelhouse")
    p.add_argument("--models-repo", type=Path, help="a Triton model repository: also build the models image")
    p.add_argument("--tag", default=None, help="image tag (default: the project version)")
    a = p.parse_args(argv)
    if a.what == "lock":
        print(f"wrote {lock().relative_to(ROOT)}")
        return 0
    if a.what == "wheels":
        print(f"wheelhouse: {wheelhouse()}")
        return 0
    tag = a.tag or _version()
    b = Buildah()
    with b.locked():
        b.cleanup()
        if free_gb() < b.needed_gb():
            raise SystemExit(f"[images] a build needs ~{b.needed_gb():.1f} GB free at {CACHE} ({b.driver} storage), "
                             f"{free_gb():.1f} GB free (images: {' '.join(b.base_argv)} images)")
        base = a.base or b.base()
        if a.what == "build":
            print(f"[images] building localhost/hymirec/hymirec:{tag} on {base} ({b.driver} storage)", flush=True)
            b.build_app(f"localhost/hymirec/hymirec:{tag}", base=base, offline=not a.online)
            if a.models_repo:
                b.build_models(a.models_repo.resolve(), f"localhost/hymirec/hymirec-models:{tag}", base=base)
        print(b("images", timeout=120).stdout)
    return 0


def _version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
