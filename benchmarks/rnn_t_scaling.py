"""How W6's compile time and step time grow with the sequence length T.

The LSTM of W6 (input 28, hidden 128, batch 64, last hidden -> dense 10, cross-entropy,
Adam) at T = 28, 128, 512 (or --t-values). gd.lstm is a scan whose body is compiled once,
so definition-to-first-step should be nearly flat in T (issue 4: compile at T=512 no more
than 1.5 x that at T=28), and the step time linear in T.

Each T runs in a fresh process. --cache cold gives every process an empty
GRAPHDL_CACHE_DIR (so each pays for the runtime GEMM library too); --cache runtime first
builds the runtime once in a shared folder, so the figures are the graph's own compile.
Step times are the median of 5 repetitions; --ftz also times the step with
gd.set_flush_denormal(True) (LSTM gradients underflow to denormals for long T).

    python benchmarks/rnn_t_scaling.py
    python benchmarks/rnn_t_scaling.py --cache runtime --t-values 28,128,512,1024
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def child(t, ftz):
    start = time.perf_counter()
    import graphdl as gd
    from frameworks import common as C
    from frameworks.fw_graphdl import lstm_step
    imported = time.perf_counter()
    C.W6_T = t                         # W6's model and data, at sequence length t
    if ftz:
        gd.set_flush_denormal(True)
    x, y, loss, ups, xs, ys = lstm_step(gd)
    defined = time.perf_counter()
    f = gd.function([x, y], [loss], updates=ups, backend="llvm")
    built = time.perf_counter()
    first = float(f(xs, ys)[0])
    done = time.perf_counter()
    min_time = 0.2 if t <= 128 else 0.5
    timing = C.measure(lambda: f(xs, ys), repeat=5, min_time=min_time, warmup_time=0.3)
    return {"T": t, "ftz": ftz, "import_s": imported - start, "define_s": defined - imported,
            "function_s": built - defined, "first_call_s": done - built,
            "def_to_first_step_s": done - imported, "step_ms": timing["median_s"] * 1e3,
            "first_loss": first}


def run_child(t, ftz, cache_dir):
    env = dict(os.environ, GRAPHDL_CACHE_DIR=cache_dir)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(t)] + (["--ftz"] if ftz else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"T={t}: child failed\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t-values", default="28,128,512")
    ap.add_argument("--cache", choices=("cold", "runtime"), default="cold")
    ap.add_argument("--ftz", action="store_true", help="also time with set_flush_denormal(True)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.ftz)))
        return
    ts = [int(v) for v in args.t_values.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as shared:
        if args.cache == "runtime":
            print("building the runtime once (T=4) ...", file=sys.stderr)
            run_child(4, False, shared)
        for t in ts:
            for ftz in ([False, True] if args.ftz else [False]):
                print(f"T={t} ftz={ftz} ...", file=sys.stderr)
                if args.cache == "cold":
                    with tempfile.TemporaryDirectory() as fresh:
                        rows.append(run_child(t, ftz, fresh))
                else:
                    rows.append(run_child(t, ftz, shared))
    base = next(r for r in rows if r["T"] == ts[0] and not r["ftz"])
    print(f"W6 LSTM (batch 64, input 28, hidden 128), cache={args.cache}, one process per row")
    print(f"{'T':>5} {'ftz':>4} {'define s':>9} {'function s':>11} {'first call s':>13} "
          f"{'def->1st s':>11} {'x T=' + str(ts[0]):>8} {'step ms':>9} {'ms/step/T':>10}")
    for r in rows:
        print(f"{r['T']:>5} {('on' if r['ftz'] else 'off'):>4} {r['define_s']:>9.3f} "
              f"{r['function_s']:>11.3f} {r['first_call_s']:>13.3f} "
              f"{r['def_to_first_step_s']:>11.3f} "
              f"{r['def_to_first_step_s'] / base['def_to_first_step_s']:>8.2f} "
              f"{r['step_ms']:>9.2f} {r['step_ms'] / r['T']:>10.3f}")


if __name__ == "__main__":
    main()
