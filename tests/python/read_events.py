"""Reads a TensorBoard log directory with the real `tensorboard` package and prints what it found
as JSON, for tests/tensorboard_readback.rs to compare with what was written.

Usage: read_events.py LOGDIR
"""
import glob
import io
import json
import os
import struct
import sys

from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat import tf
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util


def bits(x):
    """A double's IEEE bit pattern: exact through JSON, whatever the reader's float parsing."""
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def raw_records(path):
    """Every record of one file, CRCs checked: EventAccumulator logs and skips a corrupt tail,
    which would hide a framing bug behind a merely missing value."""
    reader = tf.pywrap_tensorflow.PyRecordReader_New(path)
    events = []
    while True:
        try:
            reader.GetNext()
        except tf.errors.OutOfRangeError:
            return events
        events.append(event_pb2.Event.FromString(reader.record()))


def main():
    logdir = sys.argv[1]
    files = {}
    for path in sorted(glob.glob(os.path.join(logdir, "*tfevents*"))):
        events = raw_records(path)
        files[os.path.basename(path)] = {
            "records": len(events),
            "first_file_version": events[0].file_version if events else None,
            "first_has_summary": events[0].HasField("summary") if events else None,
        }

    guidance = {
        kind: 0
        for kind in (
            ea.COMPRESSED_HISTOGRAMS,
            ea.IMAGES,
            ea.AUDIO,
            ea.SCALARS,
            ea.HISTOGRAMS,
            ea.TENSORS,
        )
    }
    acc = EventAccumulator(logdir, size_guidance=guidance)
    acc.Reload()
    tags = acc.Tags()

    scalars = {
        tag: [[e.step, bits(e.value), bits(e.wall_time)] for e in acc.Scalars(tag)]
        for tag in tags[ea.SCALARS]
    }

    images = {}
    for tag in tags[ea.IMAGES]:
        images[tag] = []
        for e in acc.Images(tag):
            png = Image.open(io.BytesIO(e.encoded_image_string))
            png.load()
            images[tag].append(
                {
                    "step": e.step,
                    "width": e.width,
                    "height": e.height,
                    "format": png.format,
                    "mode": png.mode,
                    "png_size": list(png.size),
                    # Row-major HWC, as PIL's tobytes gives it for L, LA, RGB and RGBA.
                    "pixels": list(png.tobytes()),
                }
            )

    histograms = {}
    for tag in tags[ea.HISTOGRAMS]:
        histograms[tag] = [
            {
                "step": e.step,
                "min": bits(e.histogram_value.min),
                "max": bits(e.histogram_value.max),
                "num": bits(e.histogram_value.num),
                "sum": bits(e.histogram_value.sum),
                "sum_squares": bits(e.histogram_value.sum_squares),
                "bucket_limit": [bits(x) for x in e.histogram_value.bucket_limit],
                "bucket": [bits(x) for x in e.histogram_value.bucket],
            }
            for e in acc.Histograms(tag)
        ]

    text_tags = acc.PluginTagToContent("text")
    texts = {}
    for tag in text_tags:
        texts[tag] = []
        for e in acc.Tensors(tag):
            array = tensor_util.make_ndarray(e.tensor_proto)
            texts[tag].append(
                {
                    "step": e.step,
                    "shape": list(array.shape),
                    "dtype": e.tensor_proto.dtype,
                    "text": array.item().decode("utf-8"),
                }
            )

    json.dump(
        {
            "files": files,
            "file_version": acc.file_version,
            "scalars": scalars,
            "images": images,
            "histograms": histograms,
            "texts": texts,
            "text_plugin_content": {t: c.hex() for t, c in text_tags.items()},
            "text_data_class": {
                t: acc.SummaryMetadata(t).data_class for t in text_tags
            },
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
