"""The benchmark harness: graphdl beside its peers on workloads W1-W7 of BENCHMARKS.md.

    python benchmarks/run.py                      # everything (about 10 minutes)
    python benchmarks/run.py --workloads W1,W3    # a selection
    python benchmarks/run.py --quick              # smoke test: fewer, shorter repetitions
    python benchmarks/run.py --json out.json      # also write every raw number

Every (framework, workload) pair runs in its own subprocess with 2 threads (OMP, MKL and
OpenBLAS variables, torch.set_num_threads(2), XLA_FLAGS for jax; graphdl's default, which
follows OMP_NUM_THREADS). A child that raises, crashes or times out is reported in its
table cell and the run goes on. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")
ORDER = ("graphdl", "graphdl-ref", "numpy", "torch", "torch.compile", "jax.jit", "pytensor")
THREADS = "2"
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2"
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
RESULT_MARK = "@@RESULT@@"
W1_BYTES = 2 * 4_194_304 * 4            # 16 MiB read + 16 MiB written
W2_SIZES = ("256", "1024", "2048")
W7_PEERS = ("jax.jit", "torch.compile", "torch", "pytensor")


# ==== child side ========================================================================
def child_main(name: str, workload: str, repeat: int, min_time: float, out: str) -> int:
    """Run one (framework, workload) pair and write its JSON record to `out`."""
    sys.path.insert(0, str(BENCH))
    sys.path.insert(1, str(ROOT))
    record = {"framework": name, "workload": workload}
    try:
        from frameworks import load
        from frameworks.common import env_threads
        module = load(name)
        start = time.perf_counter()
        record["data"] = module.run(workload, repeat, min_time)
        record["run_s"] = time.perf_counter() - start
        record["info"] = module.info()
        record["env"] = env_threads()
        record["status"] = "ok"
    except BaseException as exc:                          # noqa: BLE001 - report everything
        record["status"] = "error"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    with open(out, "w") as fh:
        json.dump(record, fh)
    return 0


W7_SCRIPT = """\
import time
T0 = time.perf_counter()
import json, sys
sys.path.insert(0, {bench!r})
sys.path.insert(1, {root!r})
from frameworks.common import Stopwatch, peak_rss_mib
from frameworks import load
sw = Stopwatch(T0)
module = load({name!r})
sw.lap("harness_s")
step, sync = module.w3_build(sw)
step()
sync()
sw.lap("first_step_s")
total = sw.total()
report = getattr(step, "report", None)
print({mark!r} + json.dumps({{"total_s": total, "laps": sw.laps,
                              "peak_rss_mib": peak_rss_mib(),
                              "compile_report": report() if report else None}}))
"""

IMPORT_SCRIPT = """\
import time
T0 = time.perf_counter()
import sys
sys.path.insert(0, {root!r})
import graphdl
print({mark!r} + str(time.perf_counter() - T0))
"""


# ==== parent side: running children =====================================================
def child_env(name: str, opts, tmp: pathlib.Path, cache: pathlib.Path | None = None,
              w7: bool = False) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS, OPENBLAS_NUM_THREADS=THREADS)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if name == "jax.jit":
        env["XLA_FLAGS"] = XLA_FLAGS
        env["JAX_PLATFORMS"] = "cpu"
    if opts.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if name == "numpy" and opts.unset_openblas_coretype:
        for var in OPENBLAS_VARS:
            env.pop(var, None)
    if cache is None:
        cache = pathlib.Path(tempfile.mkdtemp(prefix="cache-", dir=tmp))
    if name.startswith("graphdl"):
        env["GRAPHDL_CACHE_DIR"] = str(cache)          # empty: compile times are cold
    if name == "torch.compile":
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
        if not w7:
            # Inductor's pool of compile workers keeps both cores busy for seconds after the
            # first compile and would slow the timed steps; W7 keeps the default.
            env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    if name == "pytensor":
        flags = env.get("PYTENSOR_FLAGS", "")
        env["PYTENSOR_FLAGS"] = ",".join(filter(None, [flags, f"compiledir={cache}"]))
        env["NUMBA_CACHE_DIR"] = str(cache / "numba")
    if name == "jax.jit":
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _busy_seconds():
    """CPU seconds the whole machine has been busy (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
        ticks = [int(v) for v in fields]
        busy = sum(ticks[:3]) + sum(ticks[5:8])   # user nice system irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


LAST_OTHERS = {"cores": None}


def spawn(cmd, env, timeout):
    """(returncode or None on timeout, stdout, stderr, wall seconds). The child gets its own
    process group so that a timeout also ends the workers it started. LAST_OTHERS["cores"]
    is then the average number of cores that other processes kept busy meanwhile (the
    machine's busy time less the child's own CPU time, per second of wall time)."""
    busy0, own0 = _busy_seconds(), _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        rc = None
    wall = time.perf_counter() - start
    busy1, own1 = _busy_seconds(), _children_cpu()
    LAST_OTHERS["cores"] = (None if busy0 is None or busy1 is None else
                            max(0.0, (busy1 - busy0) - (own1 - own0)) / max(wall, 1e-9))
    return rc, out, err, wall


def failure(rc, err, timeout):
    if rc is None:
        return f"timeout after {timeout:.0f} s"
    lines = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "(no output)"
    if rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = str(-rc)
        return f"crashed ({sig}): {last}"
    return f"exit code {rc}: {last}"


def run_child(name, workload, opts, tmp):
    out = tmp / f"{workload}-{name}.json"
    cmd = [sys.executable, str(BENCH / "run.py"), "--child", name, workload,
           "--repeat", str(opts.repeat), "--min-time", str(opts.min_time), "--out", str(out)]
    rc, _, err, wall = spawn(cmd, child_env(name, opts, tmp), opts.timeout)
    if out.exists():
        record = json.loads(out.read_text())
    else:
        record = {"status": "error", "error": failure(rc, err, opts.timeout)}
    record["wall_s"] = wall
    record["others_cores"] = LAST_OTHERS["cores"]
    if record["status"] == "error":
        record["stderr_tail"] = (err or "")[-3000:]
    return record


def run_script(name, source, env, timeout):
    rc, out, err, wall = spawn([sys.executable, "-c", source], env, timeout)
    for line in (out or "").splitlines():
        if line.startswith(RESULT_MARK):
            payload = line[len(RESULT_MARK):]
            try:
                return {"status": "ok", "data": json.loads(payload), "wall_s": wall,
                        "others_cores": LAST_OTHERS["cores"]}
            except json.JSONDecodeError:
                return {"status": "ok", "data": payload, "wall_s": wall,
                        "others_cores": LAST_OTHERS["cores"]}
    return {"status": "error", "error": failure(rc, err, timeout) if rc != 0 else
            f"no result: {(err or '').strip().splitlines()[-1:] or ''}",
            "wall_s": wall, "stderr_tail": (err or "")[-3000:]}


def import_breakdown(env, timeout):
    """Cumulative import seconds of graphdl and of the top-level packages it pulls in
    (python -X importtime; a package is counted where it is first imported)."""
    _, _, err, _ = spawn([sys.executable, "-X", "importtime", "-c", "import graphdl"], env,
                          timeout)
    rows = {}
    for line in (err or "").splitlines():
        parts = line[len("import time:"):].split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        name, cumulative = parts[2].strip(), parts[1].strip()
        if cumulative.isdigit() and ("." not in name or name.count(".") == 1
                                     and name.startswith("graphdl.")):
            rows[name] = int(cumulative) / 1e6
    top = sorted(rows.items(), key=lambda r: -r[1])[:10]
    return [{"module": n, "cumulative_s": v} for n, v in top]


def run_w7(opts, tmp, frameworks, installed):
    """W7: W3 from fresh processes, definition (script start) to the first finished step."""
    res = {}
    runs = 1 if opts.quick else opts.w7_runs
    for name in ["graphdl"] + [p for p in W7_PEERS if p in frameworks]:
        if name not in frameworks:
            continue
        if not installed[name]:
            res[name] = {"status": "not installed"}
            continue
        entry = {"status": "ok", "cold": [], "warm": []}
        source = W7_SCRIPT.format(bench=str(BENCH), root=str(ROOT), name=name,
                                  mark=RESULT_MARK)
        for _ in range(runs):
            cache = pathlib.Path(tempfile.mkdtemp(prefix=f"w7-{name}-", dir=tmp))
            env = child_env(name, opts, tmp, cache, w7=True)
            for kind in ("cold", "warm"):
                rec = run_script(name, source, env, opts.timeout)
                entry[kind].append(rec)
                progress(f"W7 {name} {kind}", rec, lambda d: f"{d['total_s']:.2f} s")
        res[name] = entry
    if "graphdl" in frameworks:
        env = child_env("graphdl", opts, tmp)
        source = IMPORT_SCRIPT.format(root=str(ROOT), mark=RESULT_MARK)
        imports = [run_script("graphdl", source, env, opts.timeout) for _ in range(3)]
        res["import graphdl"] = {"runs": imports}
        try:
            res["import graphdl"]["breakdown"] = import_breakdown(env, opts.timeout)
        except Exception as exc:                        # noqa: BLE001
            res["import graphdl"]["breakdown_error"] = str(exc)
        progress("W7 import graphdl", imports[0], lambda d: f"{d:.2f} s")
    return res


def merge_timing(timings):
    """One timing record from the per-pass ones: the median of the pass medians."""
    medians = [t["median_s"] for t in timings]
    return {"median_s": statistics.median(medians), "min_s": min(t["min_s"] for t in timings),
            "samples_s": [x for t in timings for x in t["samples_s"]],
            "calls_per_rep": timings[0]["calls_per_rep"], "pass_medians_s": medians}


def merge_passes(recs):
    """The record of one (framework, workload) over passes; raw records kept in 'passes'."""
    ok = [r for r in recs if r.get("status") == "ok"]
    if len(recs) == 1 or not ok:
        return dict(recs[0], passes=len(recs)) if len(recs) > 1 else recs[0]
    merged = json.loads(json.dumps(ok[0]))
    data = merged["data"]
    datas = [r["data"] for r in ok]
    if "timing" in data:
        data["timing"] = merge_timing([d["timing"] for d in datas])
    for n in data.get("sizes", {}):
        data["sizes"][n]["timing"] = merge_timing([d["sizes"][n]["timing"] for d in datas])
    for key in ("peak_rss_mib", "compile_s", "function_s", "first_call_s"):
        if key in data:
            data[key] = statistics.median(d[key] for d in datas)
    merged["passes"] = len(recs)
    others = [r["others_cores"] for r in ok if r.get("others_cores") is not None]
    merged["others_cores"] = statistics.median(others) if others else None
    merged["failed_passes"] = [first_line(r.get("error")) for r in recs
                               if r.get("status") != "ok"]
    return merged


def merge_w7(into, res):
    for name, entry in res.items():
        if name not in into:
            into[name] = entry
            continue
        for key in ("cold", "warm", "runs"):
            if key in entry and key in into[name]:
                into[name][key] += entry[key]


def progress(label, rec, fmt):
    if rec.get("status") == "ok":
        try:
            text = fmt(rec["data"])
        except Exception:                               # noqa: BLE001
            text = "ok"
    else:
        text = "error: " + first_line(rec.get("error", "?"))
    print(f"  [{label}] {text}  ({rec.get('wall_s', 0):.1f} s)", file=sys.stderr, flush=True)


def first_line(text):
    return (str(text).strip().splitlines() or ["?"])[0][:110]


# ==== tables ============================================================================
def table(title, header, rows, notes=()):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = [title, "-" * len(title)]
    def cell(i, c, w):
        text = str(c)
        left = i == 0 or text.startswith(("error", "not ", "timeout"))
        return text.ljust(w) if left else text.rjust(w)

    def fmt_row(r):
        return "  ".join(cell(i, c, w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    lines.append(fmt_row(header))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt_row(r) for r in rows]
    lines += list(notes)
    return "\n".join(lines) + "\n"


def f(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b not in (None, 0) else "—"


def status_text(rec):
    st = rec.get("status")
    if st == "ok":
        return None
    if st == "error":
        return "error: " + first_line(rec.get("error", "?"))
    return st


def median_of(rec, *path):
    d = rec.get("data") if rec.get("status") == "ok" else None
    for key in path:
        if d is None:
            return None
        d = d.get(key) if isinstance(d, dict) else None
    return d


def render_simple(wl, results, unit, scale, extra_cols):
    """W1, W3-W6: one time figure per framework."""
    recs = results.get(wl, {})
    gd_t = median_of(recs.get("graphdl", {}), "timing", "median_s")
    header = (["framework", f"{unit}", "graphdl/peer", "range", "others"]
              + [c[0] for c in extra_cols])
    rows = []
    for name in ORDER:
        if name not in recs:
            continue
        rec = recs[name]
        st = status_text(rec)
        if st:
            rows.append([name, st] + [""] * (3 + len(extra_cols)))
            continue
        t = median_of(rec, "timing", "median_s")
        samples = rec["data"]["timing"]["samples_s"]
        spread = f"{f(min(samples) * scale)}-{f(max(samples) * scale)}"
        rows.append([name, f(t * scale), "—" if name == "graphdl" else ratio(gd_t, t), spread,
                     others_col(rec)] + [c[1](rec) for c in extra_cols])
    return header, rows


def others_col(rec):
    v = rec.get("others_cores")
    return "?" if v is None else f"{v:.1f}"


def compile_col(rec):
    d = rec["data"]
    if "function_s" in d:
        return f"{d['compile_s']:.2f} ({d['function_s']:.2f}+{d['first_call_s']:.2f})"
    return f(d.get("compile_s"))


def losses_col(rec):
    return " ".join(f"{v:.5f}" for v in rec["data"].get("losses", []))


def render(results, meta, opts):
    out = []
    time_note = ("graphdl/peer = graphdl time / peer time: < 1 means graphdl is faster. "
                 "range: fastest and slowest of the timed repetitions. others: cores kept "
                 "busy by other processes meanwhile (on average; > 0.3 makes figures unreliable)")
    if "W1" in results:
        header, rows = render_simple("W1", results, "ms/call", 1e3, [
            ("GB/s", lambda r: f(W1_BYTES / r["data"]["timing"]["median_s"] / 1e9)),
            ("compile s", compile_col),
            ("max abs err", lambda r: f"{r['data']['check']['max_abs_err']:.1e}")])
        out.append(table(
            "W1 eltwise: y = x*sigmoid(x) + 0.5*tanh(x) - softplus(x), 4,194,304 float32",
            header, rows, [time_note, "GB/s counts 16 MiB read + 16 MiB written (higher is "
                           "better). compile s for graphdl: total (gd.function + first call);"
                           " for peers the first call."]))
    if "W2" in results:
        recs = results["W2"]
        def gfl(rec, n):
            t = median_of(rec, "sizes", n, "timing", "median_s")
            return None if t is None else 2 * int(n) ** 3 / t / 1e9
        header = (["framework"] + [f"GFLOP/s N={n}" for n in W2_SIZES]
                  + [f"gd/peer N={n}" for n in W2_SIZES] + ["others", "compile s", "max rel err"])
        rows = []
        for name in ORDER:
            if name not in recs:
                continue
            rec = recs[name]
            st = status_text(rec)
            if st:
                rows.append([name, st] + [""] * (len(header) - 2))
                continue
            sizes = rec["data"]["sizes"]
            rows.append([name] + [f(gfl(rec, n), 1) for n in W2_SIZES]
                        + ["—" if name == "graphdl" else ratio(gfl(recs.get("graphdl", {}), n),
                                                                gfl(rec, n))
                           for n in W2_SIZES]
                        + [others_col(rec), "/".join(f(sizes[n].get("compile_s")) for n in W2_SIZES),
                           f"{max(sizes[n]['check']['max_rel_err'] for n in W2_SIZES):.1e}"])
        out.append(table("W2 gemm: C = A @ B, square float32", header, rows, [
            "GFLOP/s = 2N^3/t: higher is better; gd/peer = graphdl GFLOP/s / peer GFLOP/s: "
            "> 1 means graphdl is faster.", "compile s per size N=256/1024/2048; max rel err "
            "= max |C - C64| / max |C64| over 64 rows."]))
    train = {"W3": ("W3 mlp_train: MLP 784-512-512-10 ReLU, cross-entropy, Adam, batch 128",
                    "ms/step", 1e3),
             "W4": ("W4 mlp_small: MLP 64-128-10 sigmoid, cross-entropy, SGD momentum, "
                    "batch 32", "µs/step", 1e6),
             "W5": ("W5 cnn_train: conv16-pool-conv32-pool-dense, SGD momentum, batch 64",
                    "ms/step", 1e3),
             "W6": ("W6 lstm_train: LSTM T=28 in 28 hidden 128 -> dense 10, Adam, batch 64",
                    "ms/step", 1e3)}
    for wl, (title, unit, scale) in train.items():
        if wl not in results:
            continue
        extra = [("compile s", compile_col), ("losses (call 1, 2)", losses_col)]
        header, rows = render_simple(wl, results, unit, scale, extra)
        notes = [time_note, "compile s: graphdl total (gd.function + first call); peers the"
                 " first step (eager: no compile). Losses of the first two steps should agree"
                 " across frameworks (same initial values and batch)."]
        out.append(table(title, header, rows, notes))
        if wl == "W3":
            recs = results["W3"]
            gd_rss = median_of(recs.get("graphdl", {}), "peak_rss_mib")
            rows = []
            for name in ORDER:
                if name in recs:
                    st = status_text(recs[name])
                    rss = median_of(recs[name], "peak_rss_mib")
                    rel = "" if st else ("—" if name == "graphdl" else ratio(gd_rss, rss))
                    rows.append([name, st or f(rss, 0), rel])
            out.append(table("W3 peak RSS of the W3 process (MiB)",
                             ["framework", "peak RSS MiB", "graphdl/peer"], rows,
                             ["ru_maxrss of the child process at its end (includes compiling); "
                              "< 1 means graphdl uses less memory."]))
    if "W7" in results:
        out.append(render_w7(results["W7"]))
    return "\n".join(out)


def _med(runs, key="total_s"):
    vals = [r["data"][key] if isinstance(r["data"], dict) else r["data"]
            for r in runs if r.get("status") == "ok"]
    return statistics.median(vals) if vals else None


def _med_wall(runs):
    vals = [r["wall_s"] for r in runs if r.get("status") == "ok"]
    return statistics.median(vals) if vals else None


def _others(runs):
    vals = [r["others_cores"] for r in runs if r.get("others_cores") is not None]
    return f"{statistics.median(vals):.1f}" if vals else "?"


def _laps(runs):
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        return ""
    keys = ok[0]["data"]["laps"].keys()
    return " ".join(f"{k[:-2]} {statistics.median(r['data']['laps'][k] for r in ok):.2f}"
                    for k in keys)


def render_w7(res):
    rows = []
    gd = res.get("graphdl", {})
    gd_vals = {k: _med(gd.get(k, [])) for k in ("cold", "warm")} if gd.get("status") == "ok" \
        else {}
    for name in ["graphdl"] + list(W7_PEERS):
        if name not in res:
            continue
        entry = res[name]
        if entry.get("status") != "ok":
            rows.append([name, entry.get("status", "?"), "", "", "", "", ""])
            continue
        for kind in ("cold", "warm"):
            runs = entry[kind]
            errs = [r for r in runs if r.get("status") != "ok"]
            v = _med(runs)
            if v is None:
                rows.append([f"{name} {kind}", "error: " + first_line(errs[0].get("error")),
                             "", "", "", "", ""])
                continue
            rss = statistics.median(r["data"]["peak_rss_mib"] for r in runs
                                    if r.get("status") == "ok")
            rows.append([f"{name} {kind}", f(v), f(_med_wall(runs)),
                         "—" if name == "graphdl" else ratio(gd_vals.get(kind), v),
                         f(rss, 0), _others(runs), _laps(runs)])
    imp = res.get("import graphdl")
    if imp:
        v = _med(imp["runs"])
        rows.append(["import graphdl", f(v) if v is not None else
                     "error: " + first_line(imp["runs"][0].get("error")),
                     f(_med_wall(imp["runs"])), "", "", _others(imp["runs"]), ""])
    notes = ["script s: from the first line of a fresh script (before importing the framework)"
             " to the end of the first training step; process s adds interpreter start and "
             "exit. cold: empty cache folder (GRAPHDL_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR, "
             "JAX_COMPILATION_CACHE_DIR, PyTensor's compiledir and NUMBA_CACHE_DIR); warm: a "
             "second process with the same folder.",
             "graphdl/peer < 1 means graphdl is faster (cold vs cold, warm vs warm). Phases: "
             "harness (numpy + harness), import, define, function (gd.function), first_step."]
    if imp and imp.get("breakdown"):
        notes.append("import graphdl, cumulative by module (-X importtime): " + ", ".join(
            f"{b['module']} {b['cumulative_s']:.2f}" for b in imp["breakdown"]))
    return table("W7 compile: W3 from a fresh process, definition to first finished step (s)",
                 ["run", "script s", "process s", "graphdl/peer", "peak RSS MiB", "others",
                  "phases (s)"], rows, notes)


# ==== main ==============================================================================
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of W1..W7 (default: all)")
    p.add_argument("--frameworks", default=",".join(ORDER),
                   help="comma-separated subset of " + ",".join(ORDER))
    p.add_argument("--repeat", type=int, default=7, help="timed repetitions (default 7)")
    p.add_argument("--min-time", type=float, default=0.2,
                   help="seconds one repetition lasts at least (default 0.2)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 3 repetitions of >= 0.03 s, one W7 round")
    p.add_argument("--passes", type=int, default=1,
                   help="run everything N times, one pass after the other; tables show "
                        "the median of the pass medians (default 1)")
    p.add_argument("--w7-runs", type=int, default=1,
                   help="W7 rounds (cold + warm process each; median reported)")
    p.add_argument("--json", metavar="PATH", help="write all raw numbers to PATH")
    p.add_argument("--timeout", type=float, default=300, help="seconds per child (default 300)")
    p.add_argument("--unset-openblas-coretype", action="store_true",
                   help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from NumPy's children")
    p.add_argument("--omp-passive", action="store_true",
                   help="OMP_WAIT_POLICY=PASSIVE in every child: OpenMP threads sleep instead "
                        "of spinning (on a shared machine torch's steps can otherwise be 10-100x"
                        " slower); changes nothing for graphdl, whose pool is not OpenMP")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder")
    p.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.quick:
        opts.repeat, opts.min_time = min(opts.repeat, 3), min(opts.min_time, 0.03)
    return opts


def main(argv=None):
    opts = parse_args(argv)
    if opts.child:
        return child_main(*opts.child, opts.repeat, opts.min_time, opts.out)

    sys.path.insert(0, str(BENCH))
    sys.path.insert(1, str(ROOT))        # the children import graphdl from this checkout
    from frameworks import FRAMEWORKS, GRAPHDL_MISSING
    from frameworks import installed as is_installed

    workloads = [w.strip().upper() for w in opts.workloads.split(",") if w.strip()]
    frameworks = [n.strip() for n in opts.frameworks.split(",") if n.strip()]
    bad = [w for w in workloads if w not in WORKLOADS] + [n for n in frameworks
                                                          if n not in FRAMEWORKS]
    if bad:
        sys.exit(f"unknown workload(s) or framework(s): {', '.join(bad)}")
    installed = {n: is_installed(n) for n in FRAMEWORKS}
    meta = {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "repeat": opts.repeat, "min_time_s": opts.min_time,
            "threads": THREADS, "xla_flags": XLA_FLAGS,
            "openblas_env": {v: os.environ.get(v) for v in OPENBLAS_VARS},
            "unset_openblas_coretype_for_numpy": opts.unset_openblas_coretype,
            "omp_wait_policy": "PASSIVE" if opts.omp_passive else os.environ.get(
                "OMP_WAIT_POLICY"),
            "installed": installed, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "loadavg_start": os.getloadavg()}
    try:
        meta["graphdl_git"] = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
            text=True, timeout=10, check=False).stdout.strip()
    except Exception:                                   # noqa: BLE001
        pass
    ob = ", ".join(f"{k}={v if v is not None else '<unset>'}"
                   for k, v in meta["openblas_env"].items())
    ob += f", OMP_WAIT_POLICY={meta['omp_wait_policy'] or '<unset>'}"
    print(f"graphdl benchmarks: python {meta['python']}, {meta['cpus']} CPUs, 2 threads per "
          f"framework, repeat {opts.repeat} x >= {opts.min_time} s", file=sys.stderr)
    print(f"environment: {ob}" + (" (unset for NumPy's children)"
                                  if opts.unset_openblas_coretype else ""), file=sys.stderr)
    print("not installed: " + (", ".join(n for n in FRAMEWORKS if not installed[n]) or "none"),
          file=sys.stderr, flush=True)

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="graphdl-bench-"))
    results = {}
    start = time.perf_counter()
    raw = {}
    try:
        for npass in range(opts.passes):
            if opts.passes > 1:
                print(f"pass {npass + 1} of {opts.passes}", file=sys.stderr, flush=True)
            for wl in workloads:
                if wl == "W7":
                    merge_w7(results.setdefault("W7", {}),
                             run_w7(opts, tmp, frameworks, installed))
                    continue
                results.setdefault(wl, {})
                for name in ORDER:
                    if name not in frameworks:
                        continue
                    if name == "graphdl" and wl in GRAPHDL_MISSING:
                        results[wl][name] = {"status": "not available"}
                        continue
                    if wl not in FRAMEWORKS[name][3]:
                        continue
                    if not installed[name]:
                        results[wl][name] = {"status": "not installed"}
                        continue
                    rec = run_child(name, wl, opts, tmp)
                    raw.setdefault(wl, {}).setdefault(name, []).append(rec)
                    results[wl][name] = merge_passes(raw[wl][name])
                    unit = {"W1": 1e3, "W4": 1e6}.get(wl, 1e3)
                    progress(f"{wl} {name}", rec,
                             lambda d, unit=unit: (f"{d['timing']['median_s'] * unit:.3g}"
                                        if "timing" in d else "ok"))
    finally:
        meta["elapsed_s"] = time.perf_counter() - start
        meta["loadavg_end"] = os.getloadavg()
        if not opts.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    infos = {}
    for recs in results.values():
        for name, rec in recs.items():
            if isinstance(rec, dict) and rec.get("info") and name not in infos:
                infos[name] = rec["info"]
    meta["frameworks"] = infos
    text = render(results, meta, opts)
    header = [f"graphdl benchmarks ({meta['started']}, {meta['elapsed_s']:.0f} s): python "
              f"{meta['python']}, {meta['cpus']} CPUs; every framework in its own process "
              f"with 2 threads; median of {opts.repeat} repetitions of >= {opts.min_time} s"
              + (f", median over {opts.passes} passes." if opts.passes > 1 else "."),
              "load average (1 min) at start / end: {:.1f} / {:.1f} on {} CPUs".format(
                  meta["loadavg_start"][0], meta["loadavg_end"][0], meta["cpus"]),
              f"environment: {ob}"
              + (" (both unset for NumPy's children)" if opts.unset_openblas_coretype else ""),
              "versions: " + "; ".join(
                  f"{n}: " + ", ".join(f"{k} {v}" for k, v in i.items()
                                        if k in ("graphdl", "numpy", "torch", "jax",
                                                 "pytensor", "llvmlite", "optax"))
                  for n, i in infos.items() if n in ("graphdl", "numpy", "torch", "jax.jit",
                                                     "pytensor")),
              "not installed: " + (", ".join(n for n in FRAMEWORKS if not installed[n])
                                   or "none"), ""]
    others = [rec.get("others_cores") for recs in results.values() for rec in recs.values()
              if isinstance(rec, dict) and rec.get("others_cores") is not None]
    for entry in results.get("W7", {}).values():
        for key in ("cold", "warm", "runs"):
            others += [r["others_cores"] for r in entry.get(key, [])
                       if r.get("others_cores") is not None]
    meta["others_cores_median"] = statistics.median(others) if others else None
    if others and statistics.median(others) > 0.3:
        header.insert(-1, f"WARNING: other processes kept {statistics.median(others):.1f} of "
                      f"{meta['cpus']} cores busy (median over the children; column 'others'):"
                      " figures are unreliable, most of all for thread pools that spin-wait "
                      "at every parallel region (OpenMP in torch / torch.compile, OpenBLAS)"
                      + ("." if opts.omp_passive else "; --omp-passive helps torch."))
    blas = infos.get("numpy", {}).get("blas")
    if blas:
        header.insert(-1, "numpy BLAS: " + "; ".join(
            f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')} "
            f"{b.get('num_threads')} threads" for b in blas))
    print("\n".join(header) + "\n" + text)
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1)
        print(f"raw numbers: {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
