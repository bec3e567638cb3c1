"""Where tritonserver lives and what it needs around it to run the Python backend.

Two installations are supported: a `tritonserver` on PATH (the NGC container, whose
backends sit in their default place) and the binary bundled in the `nvidia-pytriton`
wheel, which needs a backend directory laid out for it (the stub that matches the
running Python), its bundled shared libraries and this interpreter's libpython on
LD_LIBRARY_PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path


class TritonNotFoundError(RuntimeError):
    """No tritonserver on PATH and no nvidia-pytriton wheel installed."""


@dataclass(frozen=True)
class TritonInstallation:
    binary: Path
    # The bundled wheel's layout; None for a system install (backends in their default place).
    bundle_root: Path | None = None
    library_dirs: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def is_bundled(self) -> bool:
        return self.bundle_root is not None


def _pytriton_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def find_triton() -> TritonInstallation:
    """PATH first (a deliberate system install wins), else the nvidia-pytriton bundle."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstallation(binary=Path(on_path))
    root = _pytriton_root()
    if root is not None:
        bundle = root / "tritonserver"
        binary = bundle / "bin" / "tritonserver"
        if binary.exists():
            libs = root.parent / "nvidia_pytriton.libs"
            return TritonInstallation(binary=binary, bundle_root=bundle, library_dirs=(libs,))
    raise TritonNotFoundError(
        "tritonserver was not found: put it on PATH (NGC container) or install the server "
        "extra: pip install 'sam-triton[server]' (it brings the nvidia-pytriton wheel)."
    )


def prepare_backend_directory(installation: TritonInstallation, workdir: Path) -> Path | None:
    """Lay out ``workdir/backends`` for a bundled tritonserver; None means Triton's default.

    The wheel ships one Python-backend stub per Python version; Triton looks for exactly
    ``backends/python/triton_python_backend_stub``, so the stub for the interpreter that
    runs sam-triton (and whose packages the models import) is copied in beside the backend.
    """
    if installation.bundle_root is None:
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = installation.bundle_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonNotFoundError(
            f"the nvidia-pytriton wheel has no Python-backend stub for Python {version}"
        )
    target = workdir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for item in (installation.bundle_root / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    shutil.copy2(stub, target / stub.name)
    return workdir / "backends"


def _package_roots() -> list[Path]:
    """Folders that make this project's own packages importable, editable install or not."""
    roots: list[Path] = []
    for name in ("sam_triton", "sam_triton_common", "sam_triton_server"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            roots.append(Path(spec.origin).parent.parent)
    return roots


def server_environment(
    installation: TritonInstallation, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for tritonserver and its Python-backend stubs.

    The stubs inherit it: PYTHONPATH gives model.py files this project's packages and this
    environment's site-packages (onnxruntime, numpy), so the models run exactly the code
    and versions the client and tests run.
    """
    env = dict(os.environ if base is None else base)
    lib_dirs = [str(d) for d in installation.library_dirs]
    libpython_dir = sysconfig.get_config_var("LIBDIR")
    if installation.is_bundled and libpython_dir:
        lib_dirs.append(libpython_dir)
    if env.get("LD_LIBRARY_PATH"):
        lib_dirs.append(env["LD_LIBRARY_PATH"])
    if lib_dirs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)

    # The bundled stub's embedded interpreter ignores PYTHONPATH and takes its prefix from
    # the `python3` on PATH: this environment's interpreter goes first, so its
    # site-packages and .pth files (editable installs) load exactly as they do here.
    # PYTHONPATH still serves stubs that honour it (the NGC container's).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    python_path = [str(p) for p in _package_roots()] + site.getsitepackages()
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(python_path))
    # Two cores serve several model instances: one BLAS/OpenMP thread pool each would
    # oversubscribe them; onnxruntime sessions set their own thread counts.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
