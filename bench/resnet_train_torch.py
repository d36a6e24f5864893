"""PyTorch peer of `ncmi train` on ResNet-18 (CIFAR stem) for bench/resnet_train.sh:
torchvision resnet18 with the CIFAR stem (3x3 stride-1 conv1, no max-pool), the
CIFAR-100 binary files in --root (train.bin), the NCMI paper's CIFAR recipe
(RandomCrop 32 pad 4, horizontal flip, rotation 15 degrees, normalise; SGD 0.1,
momentum 0.9, wd 5e-4, CE), --epochs passes over the first --n images, batch
--batch, channels-last on the GPU. Prints "images/s <float>" measured after a
warm-up of --warmup steps, excluding the data loader start-up.
"""
import argparse
import time

import numpy as np
import torch
import torchvision
from torchvision import transforms


def load(root, n):
    raw = np.fromfile(root + "/train.bin", dtype=np.uint8).reshape(-1, 3074)[:n]
    y = raw[:, 1].astype(np.int64)
    x = raw[:, 2:].reshape(-1, 3, 32, 32)
    return torch.from_numpy(x), torch.from_numpy(y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--width", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = load(a.root, a.n)
    m = torchvision.models.resnet18(num_classes=100)
    m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = torch.nn.Identity()
    dev = torch.device(a.device)
    cl = dev.type == "cuda"
    m = m.to(dev, memory_format=torch.channels_last if cl else torch.contiguous_format)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    aug = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                              transforms.RandomRotation(15)])
    mean = torch.tensor([0.5071, 0.4865, 0.4409]).view(1, 3, 1, 1)
    std = torch.tensor([0.2673, 0.2564, 0.2762]).view(1, 3, 1, 1)
    m.train()
    steps, seen, t0 = 0, 0, None
    for _ in range(a.epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - a.batch + 1, a.batch):
            idx = perm[i:i + a.batch]
            xb = torch.stack([aug(img) for img in x[idx]]).float().div_(255).sub_(mean).div_(std)
            xb = xb.to(dev, non_blocking=True)
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y[idx].to(dev)
            loss = torch.nn.functional.cross_entropy(m(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if steps == a.warmup:
                if cl:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                seen = 0
            elif steps > a.warmup:
                seen += a.batch
    if cl:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print("images/s %.2f (%d images after %d warm-up steps, %.2f s, loss %.3f)" % (seen / dt, seen, a.warmup, dt,
                                                                               loss.item()))


if __name__ == "__main__":
    main()
