"""Your own code on every worker: `tasks.upload` (profile) and `launch --upload PATH`.

A wrapper in a module beside the batch imports where the launcher runs, but not on a SLURM/SGE
worker started in another folder, nor in the Kubernetes image. Each upload, a `.py` module or a
package folder, is read and checked by the launcher (`collect`), importable by the launcher's own
batch check (`importable_here`), and shipped in one worker plugin per run (`CodeUpload`, `ship`),
which distributed hands to every worker, including workers that join later, before the worker
takes a task. Uploading never allows a wrapper to run: the batch's allow-list still decides.

Why not distributed's UploadFile / UploadDirectory: UploadDirectory extracts into the scratch
root that every Dask process on the host shares (`dask-scratch-space/NAME`, measured) and leaves
it there, so two runs' packages of one name overwrite each other and any later worker on that host
imports the stale copy without being sent anything; it also needs nannies. UploadFile writes a
single file into the worker's scratch folder and imports it there and then; it ships no package
folder. Neither refuses a name that shadows an installed module, nor removes anything after the run.
Here each upload lands in a folder of its own inside the worker's own scratch folder, named by its
content digest; it goes on sys.path only after the worker checked that it shadows nothing there,
and it leaves (files, sys.path entry, modules) when the run's plugin is torn down, unless another
run on that worker still uses the same content.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import keyword
import logging
import os
import secrets
import shutil
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

from resqmp import launcher_plugins
from resqmp.errors import BatchError, ClusterError, ProfileError

log = logging.getLogger("resqmp")

#: an upload is code, sent to every worker inside the plugin: data belongs on the shared storage
MAX_BYTES = 32 << 20
#: what resqmp itself runs on: never replaced by an upload, even by a copy of itself
RESERVED = frozenset({"resqpy", "resqmp", "dask", "distributed"})
PLUGIN_PREFIX = "resqmp-upload-"
#: the folder, inside each worker's own scratch folder, that holds the uploads
WORKER_FOLDER = "resqmp-upload"


class UploadRefused(Exception):
    """Raised on a worker when an upload cannot be put in place there."""


@dataclass(frozen=True)
class Upload:
    """One module or package, read by the launcher."""
    source: Path                            # absolute, as given: a module is named by its file's name
    name: str                               # the top-level module or package name
    files: tuple[tuple[str, bytes], ...]    # (path relative to source's folder, content)
    digest: str

    @property
    def kind(self) -> str:
        return "module" if len(self.files) == 1 and self.files[0][0] == f"{self.name}.py" else "package"

    def summary(self) -> dict:
        return {"path": str(self.source), "module": self.name, "kind": self.kind, "sha256": self.digest,
                "bytes": sum(len(data) for _, data in self.files)}


# ---- the launcher: read and check --------------------------------------------------------------

def collect(profile, cli_paths=()) -> list[Upload]:
    """The profile's tasks.upload, then each --upload, read and checked; before any cluster starts.

    A bad entry of the profile is a profile error (exit 4), a bad --upload a batch error (exit 5).
    Paths from profile files were anchored to their file's folder when the profile was loaded;
    any still relative here (from --set) and --upload paths are relative to the current folder."""
    uploads: dict[str, Upload] = {}
    entries = profile.tasks.get("upload") or []
    sources = [(raw, f"profile {profile.source}: tasks.upload", ProfileError) for raw in entries]
    sources += [(raw, "--upload", BatchError) for raw in cli_paths]
    for raw, where, error in sources:
        path = Path(os.path.abspath(os.path.expanduser(os.path.expandvars(str(raw)))))
        upload = read(path, where, error)
        first = uploads.get(upload.name)
        if first is not None:
            if os.path.realpath(first.source) == os.path.realpath(upload.source):
                continue
            raise error(f"{where} {raw}: a module named {upload.name!r} is uploaded from {first.source} already; "
                        f"one name, one upload")
        uploads[upload.name] = upload
    return list(uploads.values())


def read(path: Path, where: str = "--upload", error=BatchError) -> Upload:
    """A .py file or a package folder (with __init__.py), its files read, its name checked."""
    label = f"{where} {path}"
    if not path.exists():
        raise error(f"{label}: not found (expected a .py file or a package folder)")
    if path.is_file():
        if path.suffix != ".py":
            raise error(f"{label}: not a .py file or a package folder")
        name = path.stem
    elif path.is_dir():
        name = path.name
        if not (path / "__init__.py").is_file():
            raise error(f"{label}: a folder must be a Python package (it has no __init__.py)")
    else:
        raise error(f"{label}: not a .py file or a package folder")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise error(f"{label}: {name!r} cannot be imported (a module name is a Python identifier, "
                    f"e.g. my_wrappers)")
    files = _read_files(path, label, error)
    shadowed = _shadows(name, path, files)
    if shadowed:
        raise error(f"{label}: a module named {name!r} would shadow {shadowed} on the workers; rename it")
    return Upload(source=path, name=name, files=files, digest=_digest(files))


def _read_files(path: Path, label: str, error) -> tuple[tuple[str, bytes], ...]:
    """(relative path, content) of a module, or of every file of a package but caches and hidden
    entries (.git, __pycache__, *.pyc). A symbolic link in a package is followed when it points
    inside the package (its files go under the link's name); one pointing outside it, or a folder
    link that loops back to a folder it is in, is refused: never silently dropped."""
    if path.is_file():
        members = [path]
    else:
        members = []
        root = os.path.realpath(path)
        for folder, dirs, names in os.walk(path, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            names = sorted(n for n in names if not n.startswith(".") and not n.endswith((".pyc", ".pyo")))
            for name in dirs + names:
                _check_link(path, Path(folder) / name, root, label, error)
            members += [Path(folder) / n for n in names]
    files, total = [], 0
    for member in members:
        try:
            data = member.read_bytes()
        except OSError as e:
            raise error(f"{label}: cannot read {member} ({e.strerror})") from None
        total += len(data)
        if total > MAX_BYTES:
            raise error(f"{label}: more than {MAX_BYTES >> 20} MiB; upload code only, and put data on "
                        f"the shared storage")
        files.append((member.relative_to(path.parent).as_posix(), data))
    return tuple(files)


def _check_link(top: Path, entry: Path, root: str, label: str, error) -> None:
    """A symbolic link in the package folder top (root: top resolved) must stay inside it, and a
    folder link must not lead back to a folder the walk came through (it would go round for ever)."""
    if not entry.is_symlink():
        return
    target = os.path.realpath(entry)
    if os.path.commonpath([root, target]) != root:
        raise error(f"{label}: {entry} is a symbolic link to {os.readlink(entry)}, outside the uploaded "
                    f"folder; only what is inside it is uploaded: copy it in, or upload it on its own")
    if os.path.isdir(target) and target in _walked(top, entry):
        raise error(f"{label}: {entry} is a symbolic link to {os.readlink(entry)}, a folder it is in "
                    f"(a loop); remove the link")


def _walked(top: Path, entry: Path) -> set[str]:
    """The folders from top down to the one holding entry, resolved."""
    folders, folder = [], entry.parent
    while folder != top and top in folder.parents:
        folders.append(folder)
        folder = folder.parent
    return {os.path.realpath(f) for f in (top, *folders)}


def _digest(files) -> str:
    h = hashlib.sha256()
    for rel, data in files:
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def _shadows(name: str, source: Path | None, files=None) -> str | None:
    """What an upload named `name` would hide in this process's Python, or None. An installed
    module that is the upload itself (the same file, or the same content) hides nothing."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return f"Python's standard library module {name}"
    if name in RESERVED:
        return f"{name}, which resqmp runs on"
    try:
        spec = importlib.util.find_spec(name)       # a top-level name: finds, imports nothing
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    location = _location(spec)
    if location and source is not None and os.path.realpath(location) == os.path.realpath(source):
        return None
    if location and files is not None and _same_content(Path(location), files):
        return None
    return f"the module at {location}" if location else f"the importable module {name}"


def _location(spec) -> str | None:
    """A module's file or a package's folder."""
    if spec.submodule_search_locations:
        return next(iter(spec.submodule_search_locations), None)
    return spec.origin if spec.origin not in (None, "built-in", "frozen") else None


def _same_content(location: Path, files) -> bool:
    try:
        return _read_files(location, "", ValueError) == tuple(files)
    except (ValueError, OSError):
        return False


class _UploadFinder(importlib.abc.MetaPathFinder):
    """Finds exactly the uploaded names, at their source, and nothing else of their folders."""

    def __init__(self, uploads: list[Upload]):
        self.folders = {u.name: str(u.source.parent) for u in uploads}

    def find_spec(self, fullname, path=None, target=None):
        folder = self.folders.get(fullname)     # submodules are found through the package's __path__
        return importlib.machinery.PathFinder.find_spec(fullname, [folder]) if folder else None


@contextmanager
def importable_here(uploads: list[Upload]):
    """The uploads importable in the launcher while it checks the batch (the wrapper's signature).
    Afterwards they are forgotten again, so a later launch in this process reads them afresh."""
    if not uploads:
        yield
        return
    finder = _UploadFinder(uploads)
    sys.meta_path.append(finder)          # last: the names were checked to shadow nothing
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for u in uploads:
            _forget(u.name)


def _forget(name: str) -> None:
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    importlib.invalidate_caches()


# ---- the launcher: ship ----------------------------------------------------------------------

@dataclass
class Shipment:
    """What this run uploaded (plugin name, names -> digests); withdrawn at the end."""
    client: object
    plugin: str | None = None
    uploads: list[Upload] = field(default_factory=list)
    workers_outlive_run: bool = False

    @property
    def digests(self) -> dict[str, str]:
        return {u.name: u.digest for u in self.uploads}

    def withdraw(self) -> None:
        """Remove the plugin (its teardown removes the files and modules on every worker). Only
        matters where the workers outlive the run (an external scheduler); other clusters close."""
        if self.plugin and self.workers_outlive_run:
            launcher_plugins.unregister(self.client, self.plugin)


def ship(client, uploads: list[Upload], workers_outlive_run: bool) -> Shipment:
    """Register the plugin that puts the uploads on every worker, now and joining later. Workers
    connected now set it up before this returns; a refusal there is a cluster error (exit 7)."""
    if not uploads:
        return Shipment(client)
    _withdraw_stale(client)
    name = PLUGIN_PREFIX + client.id
    shipment = Shipment(client, name, list(uploads), workers_outlive_run)
    try:
        client.register_plugin(CodeUpload(name, uploads), name=name)
    except UploadRefused as e:
        launcher_plugins.unregister(client, name)
        raise ClusterError(f"upload {', '.join(u.name for u in uploads)}: {e}") from None
    return shipment


def _withdraw_stale(client) -> None:
    """On a long-lived scheduler a launcher that was killed leaves its plugin behind, and its
    workers keep its uploads; they would refuse another version of those modules for ever."""
    for name in launcher_plugins.withdraw_stale(client, PLUGIN_PREFIX):
        log.info("removed the upload plugin %s of a launcher that is gone", name)


# ---- the worker ------------------------------------------------------------------------------

@dataclass
class _Installed:
    digest: str
    folder: str
    holders: set = field(default_factory=set)      # (plugin name, worker address)


#: in each worker process: upload name -> what is installed, and which runs' workers hold it
_ACTIVE: dict[str, _Installed] = {}
#: in each worker process: plugin name -> why its setup failed (for the preflight check)
_FAILED: dict[str, str] = {}


class CodeUpload(WorkerPlugin):
    """One run's uploads, put in place on a worker before it takes any task."""

    def __init__(self, name: str, uploads: list[Upload]):
        self.name = name
        self.uploads = [(u.name, u.digest, u.files) for u in uploads]

    def setup(self, worker):
        holder = (self.name, worker.address)
        done = []
        try:
            for name, digest, files in self.uploads:
                _install(worker.local_directory, name, digest, files, holder)
                done.append(name)
        except Exception as e:   # noqa: BLE001 - reported by the preflight check, naming the worker
            for name in done:
                _release(name, holder)
            message = f"worker {worker.address} (host {socket.gethostname()}): {e}"
            _FAILED[self.name] = message
            # A worker joining later fails here after preflight: its tasks must fail too, never
            # import another module of that name (one this upload would have shadowed).
            _block([n for n, _, _ in self.uploads if n not in _ACTIVE], self.name, message)
            raise UploadRefused(message) from None

    def teardown(self, worker):
        _FAILED.pop(self.name, None)
        _unblock(self.name)
        for name, _, _ in self.uploads:
            _release(name, (self.name, worker.address))


class _Blocked(importlib.abc.MetaPathFinder):
    """First on sys.meta_path of a worker that refused an upload: importing those names fails
    with the reason instead of finding something else."""

    def __init__(self, names: list[str], plugin: str, reason: str):
        self.names, self.plugin, self.reason = set(names), plugin, reason

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"the upload of {fullname.split('.')[0]} was refused on this worker: "
                                      f"{self.reason}", name=fullname)
        return None


def _block(names: list[str], plugin: str, reason: str) -> None:
    if names:
        for name in names:
            _forget(name)
        sys.meta_path.insert(0, _Blocked(names, plugin, reason))


def _unblock(plugin: str) -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not (isinstance(f, _Blocked) and f.plugin == plugin)]


def _install(local_directory: str, name: str, digest: str, files, holder) -> None:
    current = _ACTIVE.get(name)
    if current is not None:
        if current.digest != digest:
            # one process holds one version of a module: the other run's tasks would import ours
            raise UploadRefused(f"another resqmp run on this worker uses a different {name}; "
                                f"run again when it has finished, or on other workers")
        current.holders.add(holder)
        return
    shadowed = _shadows(name, None, files)
    if shadowed:
        raise UploadRefused(f"{name} would shadow {shadowed} there; rename your module")
    folder = os.path.join(local_directory, WORKER_FOLDER, digest[:16])
    _write(folder, files)
    _forget(name)              # an identical copy found elsewhere (the worker's cwd) yields to ours
    sys.path.insert(0, folder)
    importlib.invalidate_caches()
    _ACTIVE[name] = _Installed(digest, folder, {holder})


def _write(folder: str, files) -> None:
    """Written beside, then renamed into place: no import ever sees half an upload."""
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".staging-{secrets.token_hex(4)}")
    try:
        for rel, data in files:
            target = os.path.join(staging, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        shutil.rmtree(folder, ignore_errors=True)     # ours: left by a worker that lost its teardown
        os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _release(name: str, holder) -> None:
    current = _ACTIVE.get(name)
    if current is None:
        return
    current.holders.discard(holder)
    if current.holders:
        return
    del _ACTIVE[name]
    if current.folder in sys.path:
        sys.path.remove(current.folder)
    sys.path_importer_cache.pop(current.folder, None)
    _forget(name)              # the next run's upload of this name is imported afresh
    shutil.rmtree(current.folder, ignore_errors=True)


def wrapper_imports_here(wrapper: str, plugin: str | None, digests: dict[str, str]) -> dict:
    """Run on a worker by the preflight check: does the batch's wrapper import here, and from the
    uploaded copy when its module was uploaded?"""
    from resqmp.batch import import_reference
    from resqmp.tasks import _where
    result = {"worker": _where(), "host": socket.gethostname(), "error": None, "file": None}
    if plugin in _FAILED:
        result["error"] = f"the upload failed there: {_FAILED[plugin]}"
        return result
    try:
        function = import_reference(wrapper)
    except Exception as e:   # noqa: BLE001 - reported, naming the worker
        result["error"] = f"{type(e).__name__}: {e}"
        return result
    top = wrapper.partition(":")[0].split(".")[0]
    module = sys.modules.get(getattr(function, "__module__", "") or "")
    result["file"] = getattr(module, "__file__", None)
    if top in digests:
        active = _ACTIVE.get(top)
        if active is None or active.digest != digests[top] or \
                not str(result["file"]).startswith(active.folder + os.sep):
            result["error"] = f"{top} was imported from {result['file']}, not from this run's upload"
    return result
