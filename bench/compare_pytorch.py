#!/usr/bin/python3
"""Runs unlearn-bench and the identical models and steps in PyTorch (when
python3-torch is installed) in one invocation, and prints unlearn's img/s,
PyTorch's and the ratio per row.

Usage, from the repository root after scripts/build.sh:
    /usr/bin/python3 bench/compare_pytorch.py [--quick] [--model mlp|cnn|resnet18]
        [--rounds R] [--seconds S]

Both sides use UNLEARN_THREADS (default: the CPUs this process may use) threads, batch 128, and
time one step = forward + backward + SGD update (momentum 0.9, weight decay
5e-4) on random data, after one warm-up step, for at least --seconds.

Each row runs R rounds (default 3), each round unlearn then PyTorch, one
right after the other, so that both sides of a round see the machine in the
same state; the table gives each side's median over the rounds, the ratio of
the medians, and the lowest and highest ratio of a single round. The sgemm
rate and the SCRUB epoch come from one more unlearn-bench run at the start.
"""
import argparse
from collections import OrderedDict
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


MODELS = ("mlp", "cnn", "resnet18")
WIDTHS = (0.1, 0.25, 0.5, 1.0)
INPUTS = ((1, 28, 28), (3, 32, 32))


def unlearn_bench(extra, seconds):
    """Runs unlearn-bench with extra arguments; returns its JSON lines."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        path = f.name
    cmd = [os.path.join(ROOT, "build", "bench", "unlearn-bench"), "--json", path,
           "--seconds", str(seconds)] + extra
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    os.unlink(path)
    return rows


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def torch_models(nn, torch):
    def rnd(x):
        return max(1, round(x))

    class MLP(nn.Module):
        def __init__(self, in_features, n_classes, width, depth=2, base=256):
            super().__init__()
            h = rnd(base * width)
            dims = [in_features] + [h] * depth
            self.hidden = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(depth))
            self.fc = nn.Linear(h, n_classes)

        def forward(self, x):
            x = torch.flatten(x, 1)
            for layer in self.hidden:
                x = torch.relu(layer(x))
            return self.fc(x)

    class CNN(nn.Module):
        def __init__(self, c, h, w, n_classes, width, stages=3, base=32):
            super().__init__()
            blocks, c_in = [], c
            for i in range(stages):
                ch = rnd(base * 2 ** i * width)
                blocks.append(nn.Sequential(OrderedDict(
                    conv=nn.Conv2d(c_in, ch, 3, padding=1, bias=False), bn=nn.BatchNorm2d(ch),
                    relu=nn.ReLU(inplace=True), pool=nn.MaxPool2d(2))))
                c_in, h, w = ch, h // 2, w // 2
            self.features = nn.Sequential(*blocks)
            self.fc = nn.Linear(c_in * h * w, n_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.features(x), 1))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            sc = x if self.downsample is None else self.downsample(x)
            return torch.relu(out + sc)

    class ResNet18(nn.Module):
        def __init__(self, c, n_classes, width):
            super().__init__()
            ch = [rnd(width * k) for k in (64, 128, 256, 512)]
            self.conv1 = nn.Conv2d(c, ch[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(ch[0])
            layers, cin = [], ch[0]
            for i, (cout, stride) in enumerate(zip(ch, (1, 2, 2, 2))):
                layers.append(nn.Sequential(Block(cin, cout, stride), Block(cout, cout, 1)))
                cin = cout
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.fc = nn.Linear(ch[3], n_classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def make(name, width, shape, params=None):
        """The module of model plugin `name` with its parameters (defaults
        when params is None)."""
        p = params or {}
        c, h, w = shape
        if name == "mlp":
            return MLP(c * h * w, 10, width, p.get("depth", 2), p.get("base", 256))
        if name == "cnn":
            return CNN(c, h, w, 10, width, p.get("stages", 3), p.get("base_channels", 32))
        if p.get("keep_stem"):
            raise ValueError("resnet18 with keep_stem is not modelled here")
        return ResNet18(c, 10, width)

    return make


def torch_rate(step, seconds):
    step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        t = time.perf_counter() - t0
        if t >= seconds and n >= 3:
            return n / t


def torch_row(row, seconds, threads):
    """Runs in a child process so that its peak RSS is its own."""
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    make = torch_models(nn, torch)
    model = make(row["model"], row["width"], row["input"])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(128, *row["input"])
    y = torch.randint(0, 10, (128,))
    loss_fn = nn.CrossEntropyLoss()

    def train():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    model.train()
    train_ips = torch_rate(train, seconds) * 128
    model.eval()

    def infer():
        with torch.no_grad():
            model(x)

    infer_ips = torch_rate(infer, seconds) * 128
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"train_ips": train_ips, "infer_ips": infer_ips, "peak_rss_mib": rss}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    if args.model and args.model not in MODELS:
        sys.exit(f"--model must be one of {', '.join(MODELS)}")
    threads = int(os.environ.get("UNLEARN_THREADS", len(os.sched_getaffinity(0))))
    if args.child:
        print(json.dumps(torch_row(json.loads(args.child), args.seconds, threads)))
        return
    if importlib.util.find_spec("torch") is None:
        sys.exit("PyTorch is not installed: apt-get install python3-torch "
                 "(it installs for /usr/bin/python3)")
    # The sgemm rate (start and end of that run) and the SCRUB epoch.
    head = unlearn_bench(["--model", "scrub"], args.seconds)
    sgemm = next((r["sgemm_gflops"] for r in head if "sgemm_gflops" in r), None)
    scrub = next((r for r in head if "scrub_epoch_seconds" in r), None)
    print(f"threads {threads}, batch 128, {args.rounds} rounds per row; img/s (higher is "
          f"better): medians over the rounds, their ratio, and (lowest-highest) ratio of "
          f"a single round; peak RSS in MiB; '2x needs': the arithmetic rate twice "
          f"PyTorch's img/s takes (multiply-adds x 2, training x 3), in % of the measured "
          f"sgemm rate")
    print(f"{'model':9s} {'width':>5s} {'input':8s} | {'train ours':>10s} {'torch':>8s} "
          f"{'ratio':>6s} {'(range)':>11s} | {'infer ours':>10s} {'torch':>8s} {'ratio':>6s} "
          f"{'(range)':>11s} | {'RSS ours':>8s} {'torch':>7s} | "
          f"{'2x needs: train':>15s} {'infer':>6s}")
    full_rate = None
    for model in MODELS:
        if args.model and model != args.model:
            continue
        for shape in INPUTS:
            for wi, width in enumerate(WIDTHS):
                if args.quick and wi % 2 == 0:
                    continue
                ins = "x".join(str(v) for v in shape)
                ours, theirs = [], []
                for _ in range(args.rounds):
                    got = unlearn_bench(["--no-sgemm", "--model", model, "--width",
                                         str(width), "--input", ins], args.seconds)
                    row = next(r for r in got if "model" in r)
                    ours.append(row)
                    out = subprocess.run([sys.executable, __file__, "--child",
                                          json.dumps(row), "--seconds", str(args.seconds)],
                                         check=True, capture_output=True, text=True).stdout
                    theirs.append(json.loads(out))
                o = {k: median([r[k] for r in ours])
                     for k in ("train_ips", "infer_ips", "peak_rss_mib")}
                t = {k: median([r[k] for r in theirs])
                     for k in ("train_ips", "infer_ips", "peak_rss_mib")}
                macs = ours[0]["forward_macs"]
                if model == "resnet18" and width == 1.0 and shape == (3, 32, 32):
                    full_rate = o["train_ips"] * 3 * macs * 2 / 1e9

                def need(torch_ips, flops_per_mac):
                    if not sgemm:
                        return float("nan")
                    return 100.0 * 2 * torch_ips * flops_per_mac * macs / 1e9 / sgemm

                def spread(key):
                    r = [a[key] / b[key] for a, b in zip(ours, theirs)]
                    return f"({min(r):.2f}-{max(r):.2f})"

                print(f"{model:9s} {width:5g} {ins:8s} | "
                      f"{o['train_ips']:10.0f} {t['train_ips']:8.0f} "
                      f"{o['train_ips'] / t['train_ips']:6.2f} {spread('train_ips'):>11s} | "
                      f"{o['infer_ips']:10.0f} {t['infer_ips']:8.0f} "
                      f"{o['infer_ips'] / t['infer_ips']:6.2f} {spread('infer_ips'):>11s} | "
                      f"{o['peak_rss_mib']:8.0f} {t['peak_rss_mib']:7.0f} | "
                      f"{need(t['train_ips'], 6):>14.0f}% {need(t['infer_ips'], 2):>5.0f}%",
                      flush=True)
    if sgemm:
        print(f"sgemm 2048^3 (unlearn's BLIS, the better of the start and the end of its "
              f"run): {sgemm:.1f} GFLOP/s")
        if full_rate:
            print(f"resnet18 w=1 3x32x32 training step (median): {full_rate:.1f} GFLOP/s "
                  f"(3 x forward multiply-adds x 2), {100 * full_rate / sgemm:.0f}% of it")
    if scrub:
        print(f"scrub, one epoch (resnet18 w=0.25, 3x32x32, |F|=256, |R|=2048): "
              f"{scrub['scrub_epoch_seconds']:.2f} s, peak {scrub['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
