#!/usr/bin/python3
"""Loads unlearn checkpoints into the equivalent PyTorch modules with
load_state_dict(strict=True), evaluates them on the Fashion-MNIST test set in
PyTorch, and compares loss and accuracy with `unlearn eval`.

Usage, from the repository root (needs python3-torch):
    /usr/bin/python3 bench/verify_pytorch.py CHECKPOINT.safetensors...
"""
import gzip
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_pytorch import torch_models  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": torch.float32, "I64": torch.int64}
    tensors = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=dtypes[h["dtype"]])
        tensors[name] = t.reshape(h["shape"])
    return tensors, meta


def fmnist_test():
    with gzip.open(f"{FMNIST}/t10k-images-idx3-ubyte.gz") as f:
        x = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8)
    with gzip.open(f"{FMNIST}/t10k-labels-idx1-ubyte.gz") as f:
        y = torch.frombuffer(bytearray(f.read()[8:]), dtype=torch.uint8).long()
    x = (x.float().reshape(-1, 1, 28, 28) / 255.0 - 0.2860) / 0.3530
    return x, y


def main():
    make = torch_models(nn, torch)
    x, y = fmnist_test()
    for path in sys.argv[1:]:
        tensors, meta = read_safetensors(path)
        params = json.loads(meta["model_params"])
        model = make(meta["model"], float(meta["width"]), json.loads(meta["input_shape"]),
                     params)
        model.load_state_dict(tensors, strict=True)
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
            loss = nn.functional.cross_entropy(logits, y).item()
            acc = (logits.argmax(1) == y).float().mean().item()
        # The run's test split may be a subset: ask unlearn for the full set.
        ours = subprocess.run([os.path.join(HERE, "..", "build", "core", "unlearn"), "eval", path,
                               "--dataset", "fashion_mnist", "--json"],
                              check=True, capture_output=True, text=True).stdout
        o = json.loads(ours)
        note = "" if o["n"] == len(y) else f" (unlearn evaluated {o['n']} test images)"
        print(f"{os.path.basename(path)}: strict load OK; PyTorch loss {loss:.5f} acc {acc:.4f}"
              f" | unlearn loss {o['loss']:.5f} acc {o['accuracy']:.4f}{note}")


if __name__ == "__main__":
    main()
