"""On-disk cache of compiled object code, keyed by the IR text and the machine.

Key: sha256 of (IR text, CPU name and features, llvmlite version, graphdl version). The IR
text determines the machine code for a given target, so equal graphs at equal sizes hit.
A hit skips LLVM's optimizer and code generator, the expensive part of a compile.

Writes go to a temporary file renamed into place, so several processes compiling at once
never see a partial file. The folder is capped (GRAPHDL_CACHE_MAX_MB, default 512): the
least recently used files are removed beyond it. `clear()` empties it; GRAPHDL_CACHE=0
disables it. The folder is $GRAPHDL_CACHE_DIR, else ~/.cache/graphdl.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import pathlib
import tempfile

from graphdl.codegen.llvm import jit, target

VERSION = "1"


def directory() -> pathlib.Path:
    """The cache folder."""
    root = os.environ.get("GRAPHDL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "graphdl")
    return pathlib.Path(root)


def enabled() -> bool:
    """False when GRAPHDL_CACHE=0."""
    return os.environ.get("GRAPHDL_CACHE", "1") != "0"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of graphdl's own source: any change to the compiler invalidates the cache."""
    import graphdl
    h = hashlib.sha256()
    roots = {pathlib.Path(graphdl.__file__).parent, pathlib.Path(__file__).parent.parent}
    for root in sorted(roots):
        for path in sorted(root.rglob("*.py")):
            h.update(path.read_bytes())
    return h.hexdigest()


def key(ir_text: str) -> str:
    """The cache key of a module's IR text on this machine."""
    from graphdl import __version__
    h = hashlib.sha256()
    for part in (VERSION, __version__, target.cache_identity(), ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def compile_cached(ir_text: str):
    """(Kernel, hit): load the object code for this IR, or compile and store it."""
    if not enabled():
        return jit.compile_ir(ir_text), False
    path = directory() / f"{key(ir_text)}.o"
    try:
        data = path.read_bytes()
    except OSError:
        data = None
    if data:
        try:
            kernel = jit.load_object(data)
            os.utime(path)
            return kernel, True
        except Exception:       # a damaged file: recompile and overwrite it
            pass
    kernel = jit.compile_ir(ir_text, keep_object=True)
    _store(path, kernel.object_code)
    return kernel, False


def compile_keyed(name: str, build_ir):
    """(Kernel, hit) for a module that depends only on graphdl's source and the machine
    (the runtime library): its key needs no IR text, so a hit skips building the IR too."""
    digest = hashlib.sha256(f"{VERSION}|{name}|{code_version()}|{target.cache_identity()}"
                            .encode()).hexdigest()
    entry = load_entry(digest)
    if entry is not None:
        try:
            return jit.load_object(entry[0]), True
        except Exception:
            pass
    kernel = jit.compile_ir(build_ir(), keep_object=True)
    store_entry(digest, kernel.object_code, None)
    return kernel, False


def load_entry(digest: str):
    """(object code, metadata) stored under a graph fingerprint, or None."""
    if not enabled():
        return None
    path = directory() / f"{digest}.graph.o"
    try:
        entry = pickle.loads(path.read_bytes())
        os.utime(path)
        return entry["object"], entry["meta"]
    except Exception:           # missing, damaged, or from an incompatible version
        return None


def store_entry(digest: str, object_code: bytes, meta) -> None:
    """Store object code and its call plan under a graph fingerprint."""
    if enabled():
        _store(directory() / f"{digest}.graph.o",
               pickle.dumps({"object": object_code, "meta": meta}, protocol=4))


def _store(path: pathlib.Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        _evict(path.parent)
    except OSError:
        pass                    # a read-only home: run without the disk cache


def _evict(folder: pathlib.Path) -> None:
    cap = float(os.environ.get("GRAPHDL_CACHE_MAX_MB", "512")) * 2 ** 20
    files = [(p.stat().st_mtime, p.stat().st_size, p) for p in folder.glob("*.o")]
    total = sum(size for _, size, _ in files)
    for _, size, p in sorted(files):
        if total <= cap:
            break
        try:
            p.unlink()
            total -= size
        except OSError:
            pass


def clear() -> int:
    """Remove every cached object file; returns how many were removed."""
    removed = 0
    for p in directory().glob("*.o"):
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def size_bytes() -> int:
    """Bytes the cache folder holds."""
    return sum(p.stat().st_size for p in directory().glob("*.o"))
