"""Pillow's side of tests/data.rs.

  data_reference.py tree DIR          writes an ImageFolder tree: PNG and JPEG files of several
                                      sizes and modes (RGB, L, RGBA, LA, P), and one corrupt JPEG
                                      in DIR/../corrupt/ for the bad-image tests
  data_reference.py expect DIR RES CH OUT
                                      for every image of the tree in sagan's order (sorted classes,
                                      sorted paths), what a PyTorch pipeline would feed: Pillow's
                                      convert("RGB"/"L"), centre square crop (offsets rounded down),
                                      BICUBIC resize to RES, CHW uint8; all concatenated into OUT,
                                      labels into OUT.labels (one byte each)
  data_reference.py decode FILE OUT   Pillow's RGB decode of FILE (HWC uint8) into OUT
  data_reference.py fmnist IDX_DIR N RES OUT
                                      the first N Fashion-MNIST training images as sagan should
                                      bring them to RES (zero-padded for 32, BICUBIC otherwise)
"""
import gzip
import os
import sys

import numpy as np
from PIL import Image

EXTS = (".jpg", ".jpeg", ".png")


def photo(w, h, seed):
    """Smooth colour gradients with some detail: JPEG-friendly but not trivial."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2), rng.uniform(0, 6)
        img[..., c] = 128 + 80 * np.sin(fx * xx + ph) * np.cos(fy * yy)
    img += rng.normal(0, 8, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def tree(root):
    specs = {
        "cat": [
            ("a_rgb.png", "RGB", 40, 30),
            ("b_gray.png", "L", 24, 50),
            ("c_photo.jpg", "RGB", 64, 48),
        ],
        "dog": [
            ("a_rgba.png", "RGBA", 33, 33),
            ("b_square.jpg", "RGB", 32, 32),
            ("sub/c_gray.jpg", "L", 45, 41),
        ],
        "eel": [
            ("a_la.png", "LA", 20, 36),
            ("b_palette.png", "P", 37, 29),
            ("c_small.png", "RGB", 12, 10),
        ],
    }
    for k, (cls, files) in enumerate(sorted(specs.items())):
        for j, (name, mode, w, h) in enumerate(files):
            path = os.path.join(root, cls, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            rgb = photo(w, h, 10 * k + j)
            im = Image.fromarray(rgb)
            if mode == "RGBA":
                alpha = np.linspace(0, 255, w * h).reshape(h, w).astype(np.uint8)
                im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
            elif mode == "LA":
                im = im.convert("LA")
            elif mode != "RGB":
                im = im.convert(mode)
            if name.endswith(".jpg"):
                im.save(path, quality=90)
            else:
                im.save(path)
    # Not images: ignored.
    open(os.path.join(root, "cat", "notes.txt"), "w").write("not an image\n")
    os.makedirs(os.path.join(root, ".hidden"), exist_ok=True)
    # A JPEG cut short: the header is fine, the scan is missing.
    bad = os.path.join(os.path.dirname(root.rstrip("/")), "corrupt")
    os.makedirs(bad, exist_ok=True)
    src = os.path.join(root, "cat", "c_photo.jpg")
    data = open(src, "rb").read()
    open(os.path.join(bad, "broken.jpg"), "wb").write(data[: len(data) // 3])


def listing(root):
    classes = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    out = []
    for label, cls in enumerate(classes):
        # torchvision's ImageFolder order: folders sorted by path, files sorted within each.
        walk = [(d, dirs, fs) for d, dirs, fs in os.walk(os.path.join(root, cls), followlinks=True)]
        for d, _, fs in sorted(walk):
            if any(part.startswith(".") for part in os.path.relpath(d, root).split(os.sep)):
                continue
            out += [(os.path.join(d, f), label) for f in sorted(fs) if f.lower().endswith(EXTS) and not f.startswith(".")]
    return out


def expect(root, res, ch, out):
    images, labels = [], []
    for path, label in listing(root):
        im = Image.open(path).convert("RGB" if ch == 3 else "L")
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        if (w, h) != (res, res):
            im = im.resize((res, res), Image.BICUBIC, box=(left, top, left + s, top + s))
        a = np.asarray(im, np.uint8)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        images.append(a.tobytes())
        labels.append(label)
    open(out, "wb").write(b"".join(images))
    open(out + ".labels", "wb").write(bytes(labels))


def fmnist(d, n, res, out):
    with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8)[16:].reshape(-1, 28, 28)[:n]
    with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8)[8:][:n]
    if res == 32:
        x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    else:
        x = np.stack([np.asarray(Image.fromarray(a).resize((res, res), Image.BICUBIC)) for a in x])
    open(out, "wb").write(x.astype(np.uint8).tobytes())
    open(out + ".labels", "wb").write(y.tobytes())


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "tree":
        tree(sys.argv[2])
    elif cmd == "expect":
        expect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif cmd == "decode":
        open(sys.argv[3], "wb").write(np.asarray(Image.open(sys.argv[2]).convert("RGB")).tobytes())
    elif cmd == "fmnist":
        fmnist(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(f"unknown command {cmd}")
