"""Which steps one scalar tag has in a TensorBoard log directory, read with the real `tensorboard`
package two ways, as JSON: per event file from the raw records (every record, nothing dropped),
and as TensorBoard itself shows the directory as one run (EventAccumulator, which silently
discards "orphaned" steps when a restarted writer goes back in time, so duplicates only show
in the raw view).

Usage: event_steps.py LOGDIR TAG
"""
import glob
import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat import tf
from tensorboard.compat.proto import event_pb2


def steps_in_file(path, tag):
    reader = tf.pywrap_tensorflow.PyRecordReader_New(path)
    steps = []
    while True:
        try:
            reader.GetNext()
        except tf.errors.OutOfRangeError:
            return steps
        event = event_pb2.Event.FromString(reader.record())
        for value in event.summary.value:
            if value.tag == tag:
                steps.append(event.step)


def main():
    logdir, tag = sys.argv[1], sys.argv[2]
    files = sorted(glob.glob(os.path.join(logdir, "*tfevents*")))
    per_file = [[os.path.basename(f), steps_in_file(f, tag)] for f in files]
    acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    shown = [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()[ea.SCALARS] else []
    json.dump({"files": per_file, "shown": shown}, sys.stdout)


if __name__ == "__main__":
    main()
