"""Pillow's images/s for what `sagan prepare` does to each ImageFolder file: open, decode,
convert("RGB"), centre square crop, BICUBIC (antialiased) resize to 128x128. Prints one number.
Usage: bench_pillow.py DIR PROCESSES (DIR holds class subfolders, as sagan bench-data writes)."""
import os
import sys
import time
from multiprocessing import Pool

from PIL import Image


def work(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.resize((128, 128), Image.BICUBIC, box=(left, top, left + s, top + s)).getpixel((0, 0))


def main():
    root, procs = sys.argv[1], int(sys.argv[2])
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    for f in files:  # warm the page cache, as sagan bench-data does
        open(f, "rb").read()
    if procs == 1:  # in this process: no pool overhead for the one-core figure
        work(files[0])
        t = time.perf_counter()
        for f in files:
            work(f)
        print(len(files) / (time.perf_counter() - t))
        return
    with Pool(procs) as pool:
        pool.map(work, files[: procs * 2])  # start the workers
        t = time.perf_counter()
        pool.map(work, files, chunksize=8)
        print(len(files) / (time.perf_counter() - t))


if __name__ == "__main__":
    main()
