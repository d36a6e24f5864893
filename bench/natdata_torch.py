#!/usr/bin/python3
"""The torchvision peer of bench/natdata.c, one process (no DataLoader
workers): per-image cost of the same transforms on PIL images.

  cifar_train  RandomCrop(32, 4) + RandomHorizontalFlip + RandomRotation(15)
               + ToTensor + Normalize on 32x32 images
  inet_train   default_loader (PIL open + convert RGB) + RandomResizedCrop(224)
               + RandomHorizontalFlip + ToTensor + Normalize on 500x375 JPEGs
  inet_eval    default_loader + Resize(256) + CenterCrop(224) + ToTensor + Normalize
Prints CASE <name> workers 0 <images/s> <CPU us per image> (DataLoader's num_workers processes
multiply it by at most their number).
usage: bench/natdata_torch.py [jpegs (generated here) | folder of <class>/*.JPEG
(NCMI_BENCH_NATDATA_DIR of bench/natdata.c: the same files)]
"""
import glob
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.datasets.folder import default_loader

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CMEAN, CSTD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def run(name, fn, items):
    t0, c0 = time.perf_counter(), time.process_time()
    for x in items:
        fn(x)
    n = len(items)
    print("CASE %-12s workers  0 %9.0f images/s %9.0f us CPU/image"
          % (name, n / (time.perf_counter() - t0), 1e6 * (time.process_time() - c0) / n))


def main():
    arg = sys.argv[1] if len(sys.argv) > 1 else "128"
    njpeg = int(arg) if arg.isdigit() else 0
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    cif = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(5000)]
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.RandomRotation(15),
                    T.ToTensor(), T.Normalize(CMEAN, CSTD)])
    run("cifar_train", tf, cif)
    with tempfile.TemporaryDirectory() as d:
        y, x = np.mgrid[0:375, 0:500]
        paths = sorted(glob.glob(os.path.join(arg, "*", "*.JPEG"))) if not njpeg else []
        for i in range(njpeg):
            ch = [128 + 70 * np.sin((x + 31.0 * c + 7 * i) / (19.0 + i % 11)) * np.cos((y - 9.0 * c) / 23.0)
                  + rng.integers(-8, 8, (375, 500)) for c in range(3)]
            img = np.clip(np.stack(ch, axis=2), 0, 255).astype(np.uint8)
            p = os.path.join(d, "%05d.JPEG" % i)
            Image.fromarray(img).save(p, quality=90)
            paths.append(p)
        tr = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                        T.Normalize(MEAN, STD)])
        ev = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
        run("inet_decode", default_loader, paths)
        run("inet_train", lambda p: tr(default_loader(p)), paths)
        run("inet_eval", lambda p: ev(default_loader(p)), paths)


if __name__ == "__main__":
    main()
