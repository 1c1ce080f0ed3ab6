"""The `graphdl` command line (also `python -m graphdl`).

    graphdl info [--json]              version, dependencies, backends, CPU features, threads,
                                       compile cache
    graphdl explain <op>               the op's formula and its sympy-derived derivative
    graphdl explain <script.py>        the formula of the script's module-level `loss`
                                       (and d loss / d p for each p in its `params`)
    graphdl graph <script.py> [-o F]   Graphviz DOT text of the script's `loss` graph
    graphdl train <example> [args...]  run examples/<example>.py with its own arguments
    graphdl train --list               the examples available
    graphdl cache info|clear           the llvm backend's compile cache

Script convention (explain, graph): the script is run with `runpy` under the module name
"__graphdl__", so its `if __name__ == "__main__":` block does not run; it must define a
module-level scalar tensor `loss` and may define `params` (a list of gd.param tensors) to
explain the gradients with respect to them:

    # model.py
    x = gd.input("x", (None, 3))
    y = gd.input("y", (None, 1))
    w = gd.param("w", (3, 1), init=gd.init.normal())
    loss = gd.losses.mse(x @ w, y)
    params = [w]

Exit status: 0 on success, 1 when the command fails (unknown op, missing example, a script
without `loss`, a failing example), 2 for a command line argparse rejects.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import platform
import runpy
import sys
import traceback

from graphdl.errors import GraphdlError

RUN_NAME = "__graphdl__"


class CommandError(Exception):
    """A command failed in an expected way: print the message, exit with status 1."""


# --------------------------------------------------------------------------------- info
def _version(module: str):
    try:
        return importlib.import_module(module).__version__
    except Exception:  # noqa: BLE001 - not installed, or broken: info reports and goes on
        return None


def _llvm_info() -> dict:
    try:
        from graphdl.codegen.llvm import target
        host = target.host()
    except Exception as error:  # noqa: BLE001 - llvmlite missing or no native target
        return {"available": False, "error": str(error)}
    flags = {f[1:]: f[0] == "+" for f in host["features"].split(",") if f}
    wanted = ("avx512f", "avx512bw", "avx512vl", "avx2", "fma", "avx", "sse4.2", "neon")
    return {"available": True, "cpu": host["cpu"], "triple": host["triple"],
            "features": [f for f in wanted if flags.get(f)],
            "vector_bits": target.vector_bits()}


def _cache_info() -> dict:
    from graphdl.codegen.llvm import cache
    folder = cache.directory()
    files = list(folder.glob("*.o")) if folder.exists() else []
    return {"directory": str(folder), "enabled": cache.enabled(), "files": len(files),
            "bytes": cache.size_bytes() if folder.exists() else 0,
            "max_mb": float(os.environ.get("GRAPHDL_CACHE_MAX_MB", "512"))}


def collect_info() -> dict:
    """Everything `graphdl info` prints, as a dict."""
    import graphdl as gd
    from graphdl.function import default_backend
    cupy = _version("cupy")
    info = {
        "graphdl": gd.__version__,
        "location": os.path.dirname(gd.__file__),
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "dependencies": {m: _version(m) for m in ("numpy", "sympy", "networkx", "llvmlite")},
        "extras": {m: _version(m) for m in ("sklearn", "tqdm", "matplotlib")},
        "default_backend": default_backend(),
        "backends": {
            "llvm": _llvm_info(),
            "reference": {"available": True},
            "cupy": {"available": False, "installed": cupy is not None, "version": cupy,
                     "note": "the cupy backend is not part of this build yet"},
        },
        "threads": gd.get_num_threads(),
    }
    try:
        info["cache"] = _cache_info()
    except Exception as error:  # noqa: BLE001 - llvmlite missing
        info["cache"] = {"error": str(error)}
    return info


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _print_info(info: dict) -> None:
    missing = "not installed"
    print(f"graphdl {info['graphdl']}  ({info['location']})")
    print(f"python  {info['python']}")
    print(f"platform {info['platform']}")
    deps = ", ".join(f"{k} {v or missing}" for k, v in info["dependencies"].items())
    extras = ", ".join(f"{k} {v or missing}" for k, v in info["extras"].items())
    print(f"dependencies: {deps}")
    print(f"extras:       {extras}")
    print(f"backends (default: {info['default_backend']}):")
    llvm = info["backends"]["llvm"]
    if llvm["available"]:
        print(f"  llvm       available: host CPU {llvm['cpu']} ({llvm['triple']}), "
              f"features {' '.join(llvm['features']) or 'none of avx512f/avx2/fma'}, "
              f"{llvm['vector_bits']}-bit vectors")
    else:
        print(f"  llvm       unavailable: {llvm['error']}")
    print("  reference  available (NumPy)")
    cupy = info["backends"]["cupy"]
    state = f"cupy {cupy['version']} installed" if cupy["installed"] else "cupy not installed"
    print(f"  cupy       unavailable: {state}; {cupy['note']}")
    print(f"threads: {info['threads']} (gd.set_num_threads, OMP_NUM_THREADS)")
    cache = info["cache"]
    if "error" in cache:
        print(f"compile cache: unavailable ({cache['error']})")
    else:
        print(f"compile cache: {cache['directory']}  {cache['files']} files, "
              f"{_size(cache['bytes'])} (cap {cache['max_mb']:.0f} MiB"
              f"{'' if cache['enabled'] else ', disabled by GRAPHDL_CACHE=0'})")


def cmd_info(args) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


# ------------------------------------------------------------------------------ explain
def _is_script(target: str) -> bool:
    return target.endswith(".py") or os.path.sep in target or os.path.isfile(target)


def load_script(path: str) -> dict:
    """Run a script under the module name "__graphdl__" and return its globals."""
    if not os.path.isfile(path):
        raise CommandError(f"no such script: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)      # as `python script.py` does, for its local imports
    try:
        return runpy.run_path(path, run_name=RUN_NAME)
    except SystemExit as error:
        raise CommandError(f"{path} exited ({error.code}) while loading; keep its command "
                           "line code under `if __name__ == \"__main__\":`") from None
    except Exception as error:  # noqa: BLE001 - any error of the user's script is reported
        if not isinstance(error, GraphdlError):     # graphdl's errors name the line already
            traceback.print_exc()
        raise CommandError(f"{path} raised {type(error).__name__} while loading: "
                           f"{error}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def script_loss(path: str) -> tuple:
    """(loss, params or None) declared at module level by a script."""
    import graphdl as gd
    namespace = load_script(path)
    loss = namespace.get("loss")
    if not isinstance(loss, gd.Tensor):
        found = "" if loss is None else f" (it is a {type(loss).__name__})"
        raise CommandError(f"{path} defines no module-level tensor `loss`{found}; graphdl "
                           "explain/graph need `loss = ...` at module level (and optionally "
                           "`params = [...]`)")
    params = namespace.get("params")
    if params is not None:
        params = [params] if isinstance(params, gd.Tensor) else list(params)
        if not all(isinstance(p, gd.Tensor) for p in params):
            raise CommandError(f"{path}: `params` must be a list of tensors")
    return loss, params


def _explain_op(name: str):
    import graphdl as gd
    from graphdl.ops import registry
    try:
        return gd.explain(registry.get(name))
    except KeyError:
        function = getattr(gd, name, None)
        if callable(function):
            try:
                return gd.explain(function)
            except TypeError as error:
                raise CommandError(str(error)) from None
        known = ", ".join(sorted(o.name for o in registry.all_ops()))
        raise CommandError(f"no op named {name!r}; known ops: {known}") from None


def cmd_explain(args) -> int:
    import graphdl as gd
    if _is_script(args.target):
        loss, params = script_loss(args.target)
        explanation = gd.explain(loss, wrt=params) if params else gd.explain(loss)
    else:
        explanation = _explain_op(args.target)
    print(explanation.latex() if args.latex else explanation)
    return 0


def cmd_graph(args) -> int:
    import graphdl as gd
    loss, _ = script_loss(args.script)
    text = gd.to_dot(loss)
    if args.output is None:
        print(text)
        return 0
    if args.output.endswith(".html"):
        to_html = getattr(gd, "to_html", None)
        if to_html is None:
            raise CommandError("this build has no gd.to_html; write DOT with -o graph.dot")
        to_html(loss, args.output)
    else:
        pathlib.Path(args.output).write_text(text)
    print(f"wrote {args.output}")
    return 0


# -------------------------------------------------------------------------------- train
def examples_directory() -> pathlib.Path:
    """The repository's examples folder, found relative to the graphdl package."""
    import graphdl
    return pathlib.Path(graphdl.__file__).resolve().parent.parent / "examples"


def available_examples() -> list:
    folder = examples_directory()
    return sorted(p.stem for p in folder.glob("*.py")) if folder.is_dir() else []


def resolve_example(name: str) -> pathlib.Path:
    """The path of examples/<name>.py, or a CommandError listing the available ones."""
    folder = examples_directory()
    if not folder.is_dir():
        raise CommandError(f"no examples folder at {folder}: the examples ship with the "
                           "source repository (install it with pip install -e .)")
    stem = pathlib.Path(name).name
    stem = stem.removesuffix(".py")
    path = folder / f"{stem}.py"
    if not path.is_file():
        listing = ", ".join(available_examples()) or "none"
        raise CommandError(f"no example named {name!r} in {folder}; available: {listing}")
    return path


def cmd_train(args) -> int:
    if args.list or args.example is None:
        names = available_examples()
        if not names:
            raise CommandError(f"no examples found in {examples_directory()}")
        print("\n".join(names))
        return 0
    path = resolve_example(args.example)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(path), *args.args]
    sys.path.insert(0, str(path.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as error:
        return error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    except AssertionError as error:
        raise CommandError(f"example {path.stem} failed its check: {error}") from None
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


# -------------------------------------------------------------------------------- cache
def cmd_cache(args) -> int:
    from graphdl.codegen.llvm import cache
    if args.action == "clear":
        removed = cache.clear()
        print(f"removed {removed} files from {cache.directory()}")
        return 0
    info = _cache_info()
    print(f"directory: {info['directory']}")
    print(f"files:     {info['files']}")
    print(f"size:      {_size(info['bytes'])} (cap {info['max_mb']:.0f} MiB)")
    print(f"enabled:   {'yes' if info['enabled'] else 'no (GRAPHDL_CACHE=0)'}")
    return 0


# --------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the `graphdl` command."""
    from graphdl import __version__
    parser = argparse.ArgumentParser(
        prog="graphdl", description="graphdl: a define-then-run deep-learning compiler.",
        epilog="Scripts given to explain/graph define a module-level `loss` (and optionally "
               "`params`); they run as module '__graphdl__', so their __main__ block is "
               "skipped.")
    parser.add_argument("--version", action="version", version=f"graphdl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)

    info = commands.add_parser("info", help="versions, backends, CPU features, cache")
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(run=cmd_info)

    explain = commands.add_parser("explain", help="an op's derivative, or a script's loss")
    explain.add_argument("target", help="an op name (sigmoid) or a script (model.py)")
    explain.add_argument("--latex", action="store_true", help="print LaTeX instead of text")
    explain.set_defaults(run=cmd_explain)

    graph = commands.add_parser("graph", help="Graphviz DOT of a script's loss graph")
    graph.add_argument("script", help="a script defining a module-level `loss`")
    graph.add_argument("-o", "--output", help="write to this file (.dot, or .html)")
    graph.set_defaults(run=cmd_graph)

    train = commands.add_parser("train", help="run one of the examples",
                                description="Run examples/<example>.py; arguments after the "
                                            "name go to the example.")
    train.add_argument("example", nargs="?", help="example name, e.g. mlp_digits")
    train.add_argument("args", nargs=argparse.REMAINDER, help="the example's own arguments")
    train.add_argument("--list", action="store_true", help="list the examples")
    train.set_defaults(run=cmd_train)

    cache = commands.add_parser("cache", help="the llvm compile cache")
    cache.add_argument("action", choices=("info", "clear"))
    cache.set_defaults(run=cmd_cache)
    return parser


def main(argv=None) -> int:
    """Entry point of the `graphdl` console script; returns the exit status.

    Example:
        >>> from graphdl.cli import main
        >>> main(["explain", "sigmoid"])
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CommandError as error:
        print(f"graphdl {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:     # `graphdl info | head`: the reader left; exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
