"""PyTorch, eager (mode 'eager') and torch.compile (mode 'compile'), 2 threads.

W3/W4/W5/W6: nn modules + F.cross_entropy + torch.optim (Adam / SGD with momentum); under
torch.compile the model-and-loss function is compiled and so is the optimizer step (as in
PyTorch's "compiling the optimizer" recipe); backward runs through the compiled autograd
graph of the forward.
"""

from __future__ import annotations

import time

from . import common as C

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
MODE = "eager"


def info():
    import torch
    return {"torch": torch.__version__, "num_threads": torch.get_num_threads(),
            "mode": MODE}


def _torch():
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(C.SEED)
    return torch


def _maybe_compile(torch, fn):
    return torch.compile(fn) if MODE == "compile" else fn


def _mlp(torch, params, act):
    nn = torch.nn
    layers = []
    n = len(params) // 2
    for i in range(n):
        w, b = params[2 * i], params[2 * i + 1]
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < n - 1:
            layers.append(nn.ReLU() if act == "relu" else nn.Sigmoid())
    return nn.Sequential(*layers)


class CNN:
    def __init__(self, torch, params):
        nn = torch.nn
        self.model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1568, 10))
        with torch.no_grad():
            for mod, (w, b) in zip([self.model[0], self.model[3], self.model[7]],
                                   zip(params[::2], params[1::2])):
                mod.weight.copy_(torch.from_numpy(w if w.ndim == 4 else w.T.copy()))
                mod.bias.copy_(torch.from_numpy(b))


def _lstm_model(torch, params):
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(C.W6_IN, C.W6_HIDDEN, batch_first=True)
            self.fc = nn.Linear(C.W6_HIDDEN, 10)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out[:, -1])

    net = Net()
    with torch.no_grad():
        for t, a in zip([net.lstm.weight_ih_l0, net.lstm.weight_hh_l0, net.lstm.bias_ih_l0,
                         net.lstm.bias_hh_l0], params[:4]):
            t.copy_(torch.from_numpy(a))
        net.fc.weight.copy_(torch.from_numpy(params[4].T.copy()))
        net.fc.bias.copy_(torch.from_numpy(params[5]))
    return net


def train_step(torch, workload):
    """(step() -> loss tensor, x, y) for W3..W6."""
    F = torch.nn.functional
    if workload == "W3":
        params, xs, ys = C.w3_setup()
        model = _mlp(torch, params, "relu")
        h = C.ADAM
        opt = torch.optim.Adam(model.parameters(), lr=h["lr"], betas=(h["beta1"], h["beta2"]),
                               eps=h["eps"])
    elif workload == "W4":
        params, xs, ys = C.w4_setup()
        model = _mlp(torch, params, "sigmoid")
        opt = torch.optim.SGD(model.parameters(), **C.SGD_W4)
    elif workload == "W5":
        params, xs, ys = C.w5_setup()
        model = CNN(torch, params).model
        opt = torch.optim.SGD(model.parameters(), **C.SGD_W5)
    elif workload == "W6":
        params, xs, ys = C.w6_setup()
        model = _lstm_model(torch, params)
        h = C.ADAM
        opt = torch.optim.Adam(model.parameters(), lr=h["lr"], betas=(h["beta1"], h["beta2"]),
                               eps=h["eps"])
    else:
        raise NotImplementedError(workload)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)

    def loss_fn(x, y):
        return F.cross_entropy(model(x), y)

    loss_fn = _maybe_compile(torch, loss_fn)

    def opt_step():
        opt.step()

    opt_step = _maybe_compile(torch, opt_step)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        opt_step()
        return loss

    return step


def w3_build(sw=None):
    torch = _torch()
    if sw:
        sw.lap("import_s")
    step = train_step(torch, "W3")
    if sw:
        sw.lap("define_s")
    return step, (lambda: None)


def run(workload, repeat, min_time):
    torch = _torch()
    if workload == "W1":
        F = torch.nn.functional
        xs = C.w1_data()
        x = torch.from_numpy(xs)

        def fn(x):
            return x * torch.sigmoid(x) + 0.5 * torch.tanh(x) - F.softplus(x)

        fn = _maybe_compile(torch, fn)
        start = time.perf_counter()
        out = fn(x)
        compile_s = time.perf_counter() - start
        check = C.w1_check(xs, out.numpy())
        timing = C.measure(lambda: fn(x), repeat=repeat, min_time=min_time)
        return {"timing": timing, "check": check, "compile_s": compile_s}
    if workload == "W2":
        sizes = {}
        for n in C.W2_SIZES:
            a, b = (torch.from_numpy(v) for v in C.w2_data(n))
            fn = _maybe_compile(torch, torch.matmul)
            start = time.perf_counter()
            out = fn(a, b)
            compile_s = time.perf_counter() - start
            check = C.w2_check(a.numpy(), b.numpy(), out.numpy())
            timing = C.measure(lambda fn=fn, a=a, b=b: fn(a, b), repeat=repeat, min_time=min_time)
            sizes[str(n)] = {"timing": timing, "check": check, "compile_s": compile_s}
        return {"sizes": sizes}
    step = train_step(torch, workload)
    start = time.perf_counter()
    first = step().item()
    compile_s = time.perf_counter() - start
    losses = [first, step().item()]
    timing = C.measure(step, repeat=repeat, min_time=min_time)
    return C.train_result(timing, losses, compile_s=compile_s)
