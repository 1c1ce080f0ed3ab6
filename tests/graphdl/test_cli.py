"""The `graphdl` command line: info, explain (op and script), graph, train, cache, errors."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import graphdl as gd
from graphdl import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import graphdl as gd

    x = gd.input("x", (None, 3))
    y = gd.input("y", (None, 1))
    w = gd.param("w", (3, 1))
    loss = gd.losses.mse(gd.sigmoid(x @ w), y)
    params = [w]

    if __name__ == "__main__":
        raise SystemExit("the __main__ block must not run under graphdl explain")
''')


def run_cli(*args, env=None):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "graphdl", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT, check=False)


def test_info_runs_as_a_module():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for word in ("graphdl 0.", "numpy", "sympy", "llvmlite", "llvm", "reference", "cupy",
                 "threads:", "compile cache:"):
        assert word in out, word


def test_info_json_names_cpu_features_and_cache(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["backends"]) == {"llvm", "reference", "cupy"}
    llvm = info["backends"]["llvm"]
    if llvm["available"]:
        assert llvm["cpu"] and isinstance(llvm["features"], list)
    assert info["threads"] >= 1 and "directory" in info["cache"]
    assert info["dependencies"]["numpy"]


def test_explain_op_prints_the_derivative(capsys):
    assert cli.main(["explain", "sigmoid"]) == 0
    out = capsys.readouterr().out
    assert "sigmoid" in out and "derivative" in out and "y⋅(1 - y)" in out
    assert cli.main(["explain", "tanh", "--latex"]) == 0
    assert "\\begin{aligned}" in capsys.readouterr().out


def test_explain_script_uses_its_module_level_loss(tmp_path, capsys):
    script = tmp_path / "model.py"
    script.write_text(SCRIPT)
    assert cli.main(["explain", str(script)]) == 0
    out = capsys.readouterr().out
    loss, params = cli.script_loss(str(script))
    assert [p.name for p in params] == ["w"]
    assert out == str(gd.explain(loss, wrt=params)) + "\n"
    assert cli.main(["graph", str(script), "-o", str(tmp_path / "g.dot")]) == 0
    assert (tmp_path / "g.dot").read_text().startswith("digraph")


def test_script_without_loss_and_unknown_op_fail_with_a_message(tmp_path, capsys):
    script = tmp_path / "empty.py"
    script.write_text("import graphdl as gd\nx = gd.input('x', (3,))\n")
    assert cli.main(["explain", str(script)]) == 1
    assert "no module-level tensor `loss`" in capsys.readouterr().err
    assert cli.main(["explain", str(tmp_path / "absent.py")]) == 1
    assert "no such script" in capsys.readouterr().err
    assert cli.main(["explain", "no_such_op"]) == 1
    err = capsys.readouterr().err
    assert "no op named 'no_such_op'" in err and "sigmoid" in err
    assert cli.main(["explain", "softmax"]) == 1
    assert "composites" in capsys.readouterr().err


def test_bad_commands_exit_non_zero_with_a_message(capsys):
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "invalid choice: 'frobnicate'" in result.stderr
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["explain"])
    assert exit_info.value.code == 2 and "target" in capsys.readouterr().err
    assert cli.main(["train", "no_such_example"]) == 1
    err = capsys.readouterr().err
    assert "no example named 'no_such_example'" in err and "mlp_digits" in err


def test_train_runs_an_example_with_its_arguments(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.py").write_text(textwrap.dedent('''
        import sys
        if __name__ == "__main__":
            print("ran with", sys.argv[1:])
            assert "--fail" not in sys.argv, "asked to fail"
    '''))
    monkeypatch.setattr(cli, "examples_directory", lambda: tmp_path)
    assert cli.main(["train", "--list"]) == 0
    assert capsys.readouterr().out.split() == ["tiny"]
    assert cli.main(["train", "tiny", "--epochs", "2"]) == 0
    assert "ran with ['--epochs', '2']" in capsys.readouterr().out
    assert cli.main(["train", "tiny.py", "--fail"]) == 1
    assert "failed its check: asked to fail" in capsys.readouterr().err


def test_real_examples_are_found():
    names = cli.available_examples()
    assert "mlp_digits" in names
    assert cli.resolve_example("mlp_digits").name == "mlp_digits.py"


def test_cache_info_and_clear_use_the_cache_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRAPHDL_CACHE_DIR", str(tmp_path))
    for name in ("a.o", "b.graph.o"):
        (tmp_path / name).write_bytes(b"x" * 10)
    assert cli.main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "files:     2" in out
    assert cli.main(["cache", "clear"]) == 0
    assert "removed 2 files" in capsys.readouterr().out
    assert list(tmp_path.glob("*.o")) == []
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["cache", "wipe"])
    assert exit_info.value.code == 2
