#!/usr/bin/python3
"""Where a model's time goes, layer by layer, in unlearn and in PyTorch.

Runs one unlearn-bench row with UNLEARN_PROFILE=2 and prints each node's
forward and backward milliseconds per pass (one batch of 128), then runs
the identical PyTorch model (bench/compare_pytorch.py's) under
torch.profiler and prints its operators' milliseconds per pass, grouped by
operator and input shapes. Match the two by shape: a convolution's row in
PyTorch names its input and weight shapes, unlearn's names the node and its
output shape. Times include waits at barriers on unlearn's side (thread 0
times each node) and profiler overhead on PyTorch's; compare layers within
one run, not across runs.

Usage, from the repository root after scripts/build.sh (needs
python3-torch for the second table):
    /usr/bin/python3 bench/pytorch_layers.py [--model resnet18|cnn|mlp]
        [--width W] [--input CxHxW] [--mode train|infer] [--steps N]
        [--seconds S] [--rows R]
"""
import argparse
import importlib.util
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 128


def unlearn_layers(args):
    """unlearn-bench's per-node profile: (total line, [(name, op, shape, fwd ms, bwd ms)])."""
    env = dict(os.environ, UNLEARN_PROFILE="2")
    cmd = [os.path.join(ROOT, "build", "bench", "unlearn-bench"), "--no-sgemm", "--model",
           args.model, "--width", str(args.width), "--input", args.input, "--only", args.mode,
           "--seconds", str(args.seconds)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr}{run.stdout}")
    head = re.search(r"unlearn profile .*?: ([\d.]+) s in \d+-node net, (\d+) forward and "
                     r"(\d+) backward passes", run.stderr)
    if not head:
        sys.exit("no UNLEARN_PROFILE output from unlearn-bench:\n" + run.stderr)
    fwd_n, bwd_n = int(head.group(2)), int(head.group(3))
    nodes = []
    for line in run.stderr.splitlines():
        f = line.split()
        if len(f) == 8 and f[0].isdigit():
            _, op, name, shape, fs, _, bs, _ = f
            nodes.append((name, op, shape, 1e3 * float(fs) / max(fwd_n, 1),
                          1e3 * float(bs) / max(bwd_n, 1)))
    rate = next((line.split()[4 if args.mode == "train" else 5]
                 for line in run.stdout.splitlines() if line.startswith(args.model + " ")), "?")
    return rate, nodes


def torch_layers(args, threads):
    """PyTorch's operators under torch.profiler: (img/s, [(op, shapes, calls per pass, ms
    per pass)])."""
    import torch
    from torch import nn
    from torch.profiler import ProfilerActivity, profile
    spec = importlib.util.spec_from_file_location("compare_pytorch",
                                                  os.path.join(HERE, "compare_pytorch.py"))
    cp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cp)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shape = tuple(int(v) for v in args.input.split("x"))
    model = cp.torch_models(nn, torch)(args.model, args.width, shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(BATCH, *shape)
    y = torch.randint(0, 10, (BATCH,))
    # compare_pytorch.py measures inference after its training rounds, and
    # PyTorch's inference rate depends on that: on the AVX-512 machine,
    # ResNet-18 width 0.25 on 1x28x28 ran 730-1180 img/s in eval mode
    # straight after construction and 2900-3700 after one to twelve SGD
    # steps. So infer mode takes three training steps first.
    if args.mode == "infer":
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.train(args.mode == "train")

    def step():
        if args.mode == "infer":
            with torch.no_grad():
                model(x)
            return
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    rate = args.steps * BATCH / (time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        shapes = ",".join("x".join(str(d) for d in s) for s in e.input_shapes if s)
        rows.append((e.key, shapes, e.count / args.steps,
                     e.self_cpu_time_total / 1e3 / args.steps))
    rows.sort(key=lambda r: -r[3])
    return rate, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18", choices=("resnet18", "cnn", "mlp"))
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--input", default="3x32x32")
    ap.add_argument("--mode", default="infer", choices=("train", "infer"))
    ap.add_argument("--steps", type=int, default=10, help="PyTorch passes profiled")
    ap.add_argument("--seconds", type=float, default=3.0, help="unlearn-bench's time")
    ap.add_argument("--rows", type=int, default=30, help="PyTorch operators shown")
    args = ap.parse_args()
    if not re.fullmatch(r"\d+x\d+x\d+", args.input):
        sys.exit("--input must look like 3x32x32")
    if args.steps < 1:
        sys.exit("--steps must be at least 1")
    threads = int(os.environ.get("UNLEARN_THREADS", len(os.sched_getaffinity(0))))
    rate, nodes = unlearn_layers(args)
    print(f"unlearn {args.model} width {args.width} {args.input} {args.mode}, {threads} "
          f"threads, batch {BATCH}: {rate} img/s; ms per pass (thread 0's clock)")
    print(f"  {'node':22s} {'op':15s} {'output':12s} {'forward':>9s} {'backward':>9s}")
    for name, op, shape, f, b in nodes:
        print(f"  {name:22s} {op:15s} {shape:12s} {f:9.3f} {b:9.3f}")
    if importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed (apt-get install python3-torch, for /usr/bin/python3): "
              "no second table")
        return
    rate, rows = torch_layers(args, threads)
    print(f"\nPyTorch, same model and pass: {rate:.0f} img/s unprofiled; each operator's "
          f"own time under torch.profiler by input shapes, ms per pass and per call (top "
          f"{args.rows})")
    print(f"  {'operator':34s} {'calls':>5s} {'ms':>8s} {'per call':>8s}  input shapes")
    for key, shapes, calls, ms in rows[:args.rows]:
        print(f"  {key[:34]:34s} {calls:5.0f} {ms:8.3f} {ms / max(calls, 1e-9):8.3f}  {shapes}")


if __name__ == "__main__":
    main()
