"""Training throughput of `nas.train` against a plain eager reference, side by side.

    python benchmarks/train_throughput.py [--arch efficientnet_b0_cifar] [--images 2560]
        [--batch-size 128] [--repeats 2] [--json] [--quality] [--quality-epochs 3]

Both loops train the same architecture from the same initialisation on the same images,
on the same device, with the same optimiser (`RMSpropTF`, the paper's settings), learning
rate and label smoothing, for the same number of steps; they alternate ``--repeats`` times
and the median images/s of each is compared:

* ``trainer``: `nas.train.train` as users run it (device-resident uint8 data, batched
  crop/flip on the device, channels_last, autocast where the device has it; EMA off so the
  optimiser work is identical).
* ``reference``: the textbook eager loop: a ``torch.utils.data.DataLoader`` over a dataset
  whose ``__getitem__`` pads, crops, flips and normalises one image at a time, NCHW, fp32.

It also prints the achieved GFLOP/s of the trainer (training FLOPs taken as
``3 x forward``, forward FLOPs ``2 x MACs`` from `space.cost`) beside this machine's fp32
matrix-multiply GFLOP/s. ``--quality`` then trains the CIFAR-sized B0 on a 10k-image
stratified subset of the CIFAR-10 folder for a few epochs and prints the validation
accuracy and the minutes it took (validation is carved out of train; the test split is
not read).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nas.data import make_splits
from nas.train import Budget, RMSpropTF, TrainConfig, train
from space import build_model, cost
from space.presets import resolve_arch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


class PerSampleDataset(torch.utils.data.Dataset):
    """The usual per-sample transform pipeline: pad 4, random crop, flip, normalise."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, seed: int = 0):
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i].float().div_(255)
        img = F.pad(img, (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,), generator=self.gen).tolist()
        img = img[:, dy:dy + 32, dx:dx + 32]
        if torch.rand((), generator=self.gen) < 0.5:
            img = img.flip(-1)
        return (img - self.mean) / self.std, self.labels[i]


def reference_images_per_s(arch, splits, steps: int, batch_size: int, lr: float, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=splits.num_classes)
    model.train()
    data = splits.train
    mean = data.mean or (0.5, 0.5, 0.5)
    std = data.std or (0.5, 0.5, 0.5)
    loader = torch.utils.data.DataLoader(PerSampleDataset(data.images, data.labels, mean, std, seed),
                                         batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=0)
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() > 1 else no_decay).append(p)
    opt = RMSpropTF([{"params": decay, "weight_decay": 1e-5}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    done = 0
    start = time.perf_counter()
    while done < steps:
        for x, y in loader:
            if arch.resolution != x.shape[-1]:
                x = F.interpolate(x, size=arch.resolution, mode="bilinear", align_corners=False)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):  # the usual per-step loss read
                raise RuntimeError("reference diverged")
            done += 1
            if done == steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def trainer_images_per_s(arch, splits, steps: int, batch_size: int, lr: float, seed: int,
                         device: str | None) -> tuple[float, str]:
    config = TrainConfig(batch_size=batch_size, lr=lr, ema_decay=None, seed=seed, device=device,
                         warmup_epochs=0)
    result = train(arch, splits, Budget(images=steps * batch_size), config)
    return result.images_per_s, result.device


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def quality(arch, data_path: str, epochs: float, batch_size: int, seed: int, device) -> dict:
    splits = make_splits(data_path, val_size=1_000, subset=9_000, split_seed=seed)
    start = time.perf_counter()
    result = train(arch, splits, Budget(epochs=epochs),
                   TrainConfig.paper(batch_size=batch_size, seed=seed, device=device), progress=True)
    return {"val_acc": result.val_acc, "epochs": result.epochs, "minutes": (time.perf_counter() - start) / 60,
            "train_images": len(splits.train), "val_images": len(splits.val),
            "chance": 1 / splits.num_classes, "images_per_s": result.images_per_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="efficientnet_b0_cifar")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="image folder or cifar10/cifar100/synthetic")
    parser.add_argument("--images", type=int, default=2560, help="training images per measured run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quality", action="store_true", help="also run the proxy-quality training")
    parser.add_argument("--quality-epochs", type=float, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    arch = resolve_arch(args.arch)
    steps = max(1, args.images // args.batch_size)
    splits = make_splits(args.data, val_size=1_000, subset=min(9_000, steps * args.batch_size * 2),
                         split_seed=args.seed)
    lr = 0.016 * args.batch_size / 256
    ref, ours, device = [], [], "cpu"
    for r in range(args.repeats):
        ref.append(reference_images_per_s(arch, splits, steps, args.batch_size, lr, args.seed))
        ips, device = trainer_images_per_s(arch, splits, steps, args.batch_size, lr, args.seed, args.device)
        ours.append(ips)
        if not args.json:
            print(f"run {r + 1}: reference {ref[-1]:.1f} img/s, trainer {ours[-1]:.1f} img/s", flush=True)
    ref_ips, our_ips = statistics.median(ref), statistics.median(ours)
    macs = cost(arch, num_classes=splits.num_classes).macs
    achieved = our_ips * macs * 2 * 3 / 1e9
    peak = matmul_gflops()
    out = {"arch": arch.to_string(), "device": device, "batch_size": args.batch_size, "steps": steps,
           "reference_images_per_s": ref_ips, "trainer_images_per_s": our_ips, "ratio": our_ips / ref_ips,
           "achieved_gflops": achieved, "matmul_gflops": peak, "threads": args.threads}
    if args.quality:
        out["quality"] = quality(arch, args.data, args.quality_epochs, args.batch_size, args.seed, args.device)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"reference (DataLoader, per-sample transforms, NCHW fp32): {ref_ips:.1f} images/s")
        print(f"trainer (device-resident batches, {device}):               {our_ips:.1f} images/s")
        print(f"ratio: {out['ratio']:.2f}x")
        print(f"achieved {achieved:.1f} GFLOP/s (3 x 2 x {macs / 1e6:.1f} M MACs per image) vs fp32 matmul "
              f"{peak:.1f} GFLOP/s on {args.threads} threads ({achieved / peak:.0%})")
        if args.quality:
            q = out["quality"]
            print(f"proxy quality: val acc {q['val_acc']:.3f} (chance {q['chance']:.2f}) after {q['epochs']:g} "
                  f"epochs on {q['train_images']} images, {q['minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
