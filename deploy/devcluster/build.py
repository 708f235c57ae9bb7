"""Build the dev cluster's binaries from the Go module proxy, once, and cache them by version.

Each component (Kubernetes, etcd, Helm, kwok) gets a small wrapper Go module under
``<cache>/src/<component>-<version>/`` that requires the upstream module at its pinned version; the
binaries land in ``<cache>/bin/<component>-<version>/``. ``GOMODCACHE`` and ``GOCACHE`` live under
``<cache>/go/`` so a rebuild after a version bump only compiles what changed. A binary counts as
built only when its recipe stamp (wrapper go.mod, ldflags, patches) matches, so a warm start never
invokes Go at all.

One source patch is applied to Kubernetes: it refuses loopback addresses in Endpoints and
EndpointSlices, and the dev cluster's pod IPs are loopback addresses (``127.10.x.y``) so that all
traffic stays on this machine. The patch drops exactly that one check; everything else is the
released code. It is applied to a copy of the released module under ``<cache>/src/`` (never to the
module cache, which Go keeps read-only and verified), and the wrapper module ``replace``s
``k8s.io/kubernetes`` with that copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelplane.devcluster import versions


class BuildError(RuntimeError):
    """A build could not run or failed; the message says what to do."""


@dataclass(frozen=True)
class Patch:
    """An exact text replacement in one file of an upstream module (applied to a copy of it)."""

    module: str
    path: str
    old: str
    new: str
    why: str


@dataclass(frozen=True)
class Binary:
    name: str
    package: str


@dataclass(frozen=True)
class Component:
    """One upstream project built from a wrapper module at one version."""

    name: str
    version: str
    go_mod: str
    binaries: tuple[Binary, ...]
    ldflags: tuple[str, ...] = ()
    module: str = ""
    module_version: str = ""
    patches: tuple[Patch, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    def recipe(self, binary: Binary) -> str:
        """A digest of everything that decides the binary's content; a change forces a rebuild."""
        h = hashlib.sha256()
        for part in (
            self.go_mod,
            binary.package,
            *self.ldflags,
            *(p.old + "\0" + p.new for p in self.patches),
        ):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]


STAGING_MODULES = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
)
"""The ``replace`` block of k8s.io/kubernetes' own go.mod: its staging modules, pinned at v0.Y.Z."""

LOOPBACK_ENDPOINTS = Patch(
    module="k8s.io/kubernetes",
    path="pkg/apis/core/validation/validation.go",
    old=(
        "\tif ip.IsLoopback() {\n"
        '\t\tallErrs = append(allErrs, field.Invalid(fldPath, ipAddress, "may not be in the loopback range '
        '(127.0.0.0/8, ::1/128)"))\n'
        "\t}\n"
    ),
    new="\t// modelplane dev cluster: pod IPs are loopback addresses, so endpoints may be too.\n",
    why="pod IPs of the dev cluster are loopback addresses and must be allowed in EndpointSlices",
)


def kubernetes_component(version: str = versions.KUBERNETES) -> Component:
    staging = versions.staging_version(version)
    replaces = "\n".join(f"\tk8s.io/{m} => k8s.io/{m} {staging}" for m in STAGING_MODULES)
    go_mod = (
        "module modelplane.local/build/kubernetes\n\n"
        "go 1.24.0\n\n"
        "godebug default=go1.24\n\n"
        f"require k8s.io/kubernetes {version}\n\n"
        f"replace (\n\tk8s.io/kubernetes => ./patched\n{replaces}\n)\n"
    )
    major, minor = versions.major_minor(version)
    ldflags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        ldflags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    cmd = "k8s.io/kubernetes/cmd/"
    return Component(
        name="kubernetes",
        version=version,
        go_mod=go_mod,
        binaries=(
            Binary("kube-apiserver", cmd + "kube-apiserver"),
            Binary("kube-controller-manager", cmd + "kube-controller-manager"),
            Binary("kube-scheduler", cmd + "kube-scheduler"),
            Binary("kubectl", cmd + "kubectl"),
        ),
        ldflags=tuple(ldflags),
        module="k8s.io/kubernetes",
        module_version=version,
        patches=(LOOPBACK_ENDPOINTS,),
    )


def etcd_component(version: str = versions.ETCD) -> Component:
    go_mod = (
        f"module modelplane.local/build/etcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 {version}\n"
    )
    return Component(
        name="etcd",
        version=version,
        go_mod=go_mod,
        binaries=(Binary("etcd", "go.etcd.io/etcd/server/v3"),),
    )


def helm_component(version: str = versions.HELM, kubernetes: str = versions.KUBERNETES) -> Component:
    major, minor = versions.major_minor(kubernetes)
    go_mod = f"module modelplane.local/build/helm\n\ngo 1.24.0\n\nrequire helm.sh/helm/v3 {version}\n"
    return Component(
        name="helm",
        version=version,
        go_mod=go_mod,
        binaries=(Binary("helm", "helm.sh/helm/v3/cmd/helm"),),
        ldflags=(
            f"-X helm.sh/helm/v3/internal/version.version={version}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
        ),
    )


def kwok_component(version: str = versions.KWOK) -> Component:
    go_mod = f"module modelplane.local/build/kwok\n\ngo 1.24.0\n\nrequire sigs.k8s.io/kwok {version}\n"
    return Component(
        name="kwok",
        version=version,
        go_mod=go_mod,
        binaries=(Binary("kwok", "sigs.k8s.io/kwok/cmd/kwok"),),
        ldflags=(f"-X sigs.k8s.io/kwok/pkg/consts.Version={version}",),
    )


def core_components() -> tuple[Component, ...]:
    """What ``dev-cluster up`` needs: etcd and the Kubernetes binaries."""
    return (etcd_component(), kubernetes_component())


def all_components() -> tuple[Component, ...]:
    return (*core_components(), helm_component(), kwok_component())


def cache_root() -> Path:
    """``$MODELPLANE_CACHE_DIR``, else ``$XDG_CACHE_HOME/modelplane``, else ``~/.cache/modelplane``."""
    explicit = os.environ.get("MODELPLANE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelplane"


def bin_dir(component: Component, root: Path | None = None) -> Path:
    return (root or cache_root()) / "bin" / component.key


def binary_path(component: Component, name: str, root: Path | None = None) -> Path:
    return bin_dir(component, root) / name


def _stamp_path(component: Component, binary: Binary, root: Path | None) -> Path:
    return bin_dir(component, root) / f".{binary.name}.recipe"


def is_built(component: Component, binary: Binary, root: Path | None = None) -> bool:
    path = binary_path(component, binary.name, root)
    stamp = _stamp_path(component, binary, root)
    return path.is_file() and stamp.is_file() and stamp.read_text().strip() == component.recipe(binary)


def missing(components: Iterable[Component], root: Path | None = None) -> list[tuple[Component, Binary]]:
    return [(c, b) for c in components for b in c.binaries if not is_built(c, b, root)]


def go_environment(root: Path | None = None) -> dict[str, str]:
    base = root or cache_root()
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(base / "go" / "mod"),
        GOCACHE=str(base / "go" / "build"),
        CGO_ENABLED="0",
        GOFLAGS="-mod=mod",
        GOWORK="off",
    )
    return env


def find_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "The Go toolchain (`go`) is not on PATH. The dev cluster builds etcd and Kubernetes from the Go "
            "module proxy once and caches them; install Go 1.26 or newer (https://go.dev/dl/), put it on "
            "PATH, and run `modelplane dev-cluster build` again."
        )
    return go


Reporter = Callable[[str], None]


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str], what: str, report: Reporter) -> None:
    """Run a go command, feeding each output line to ``report``; on failure raise with the output's tail."""
    tail: list[str] = []
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-40:], line]
        report(line)
    if proc.wait() != 0:
        joined = "\n".join(tail[-25:])
        raise BuildError(
            f"{what} failed (exit {proc.returncode}). Last output:\n{joined}\n"
            "Check that the Go module proxy is reachable (GOPROXY) and that Go is recent enough, then run "
            "`modelplane dev-cluster build` again; the module and build caches are kept, so a retry "
            "resumes where it stopped."
        )


def apply_patch(text: str, patch: Patch) -> str:
    """Apply one exact replacement; refuse when the upstream text moved, so a version bump is noticed."""
    if text.count(patch.old) != 1:
        raise BuildError(
            f"The source patch for {patch.module}/{patch.path} ({patch.why}) no longer applies to this "
            "version; update LOOPBACK_ENDPOINTS in modelplane/devcluster/build.py for the new release."
        )
    return text.replace(patch.old, patch.new)


def _patched_copy(go: str, component: Component, src: Path, env: dict[str, str], report: Reporter) -> None:
    """Copy the upstream module out of the module cache into ``src/patched`` and apply the patches."""
    target = src / "patched"
    stamp = src / ".patched"
    digest = hashlib.sha256("".join(p.old + p.new for p in component.patches).encode()).hexdigest()
    if target.is_dir() and stamp.is_file() and stamp.read_text() == digest:
        return
    report(f"downloading {component.module} {component.module_version} to patch it")
    result = subprocess.run(
        [go, "mod", "download", "-json", f"{component.module}@{component.module_version}"],
        cwd=src.parent,  # outside any module: the wrapper's go.mod may name the copy not made yet
        env={**env, "GOFLAGS": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(
            f"Downloading {component.module} {component.module_version} failed:\n{result.stderr}\n"
            "Check that the Go module proxy is reachable (GOPROXY), then run `modelplane dev-cluster build`."
        )
    module_dir = Path(json.loads(result.stdout)["Dir"])
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(module_dir, target, ignore=shutil.ignore_patterns("*_test.go"))
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for patch in component.patches:
        file = target / patch.path
        file.write_text(apply_patch(file.read_text(), patch))
    stamp.write_text(digest)


def _prepare_module(go: str, component: Component, root: Path, env: dict[str, str], report: Reporter) -> Path:
    src = root / "src" / component.key
    src.mkdir(parents=True, exist_ok=True)
    if component.patches:
        _patched_copy(go, component, src, env, report)
    imports = "\n".join(f'\t_ "{b.package}"' for b in component.binaries)
    tools = f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
    template_stamp = src / ".template"
    digest = hashlib.sha256((component.go_mod + tools).encode()).hexdigest()
    if template_stamp.is_file() and template_stamp.read_text() == digest and (src / "go.sum").is_file():
        return src
    (src / "go.mod").write_text(component.go_mod)
    (src / "tools.go").write_text(tools)
    (src / "go.sum").unlink(missing_ok=True)
    report(f"resolving modules for {component.key}")
    _run([go, "mod", "tidy"], src, env, f"Resolving the Go modules of {component.key}", report)
    template_stamp.write_text(digest)
    return src


def build_binary(
    component: Component, binary: Binary, root: Path | None = None, report: Reporter = print
) -> Path:
    """Build one binary into the cache (atomically: a half-written file never counts as built)."""
    base = root or cache_root()
    go = find_go()
    env = go_environment(base)
    src = _prepare_module(go, component, base, env, report)
    out = binary_path(component, binary.name, base)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [
        go,
        "build",
        "-v",
        "-trimpath",
        "-ldflags",
        " ".join(("-s", "-w", *component.ldflags)),
        "-o",
        str(tmp),
    ]
    cmd.append(binary.package)
    _run(cmd, src, env, f"Building {binary.name} {component.version}", report)
    tmp.replace(out)
    _stamp_path(component, binary, base).write_text(component.recipe(binary) + "\n")
    return out


def build(
    components: Iterable[Component], root: Path | None = None, report: Reporter = print
) -> list[tuple[str, float]]:
    """Build whatever is missing; return (binary, seconds) for what was built (empty when all cached)."""
    built: list[tuple[str, float]] = []
    for component, binary in missing(components, root):
        start = time.monotonic()
        report(f"building {binary.name} {component.version}")
        build_binary(component, binary, root, report)
        built.append((f"{binary.name} {component.version}", time.monotonic() - start))
    return built


def bin_dirs(components: Iterable[Component], root: Path | None = None) -> dict[str, Path]:
    """Binary name -> path, for components already built (raises with the fix when one is not)."""
    comps = list(components)
    absent = missing(comps, root)
    if absent:
        names = ", ".join(f"{b.name} {c.version}" for c, b in absent)
        raise BuildError(
            f"Not built yet: {names}. Run `modelplane dev-cluster build` (or `make cluster-bins`)."
        )
    return {b.name: binary_path(c, b.name, root) for c in comps for b in c.binaries}
