#!/usr/bin/env python3
"""Builds ai-worker/models/ct-classical/ct-classical.onnx: a classical (not learned)
segmentation of body, lungs and bone on CT, written as an ONNX graph of thresholds,
morphology (MaxPool as dilation, -MaxPool(-x) as erosion) and a row/column fill (CumSum).

Input  "ct":    float32 [1, 1, D, H, W]  HU, slices as stored (D slices, H rows, W columns)
Output "masks": float32 [1, 3, D, H, W]  0/1 per channel: body, lungs, bone (they overlap:
                                         the body holds the lungs and the bone)

Per slice:
  foreground = HU > -400 (soft tissue, fat, bone; not air or lung)
  closed     = closing of foreground with a 3x3 square (seals one-pixel gaps in the skin)
  body       = pixels with foreground on their left, right, above and below: a row and column
               fill, which fills every cavity of a convex outline (lungs included) and leaves
               out the air around the patient
  lungs      = body AND HU < -400, opened with a 3x3 square (drops thin strands)
  bone       = body AND HU > 300

Needs: numpy, onnx (and onnxruntime for the self-check at the end):
    python3 -m pip install numpy onnx onnxruntime==1.31.1
    python3 ai-worker/tools/build_ct_model.py
The graph is deterministic: running the script again writes the same bytes.
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "models", "ct-classical")
OUT_FILE = os.path.join(OUT_DIR, "ct-classical.onnx")

AIR_HU = -400.0  # below: air or lung parenchyma (-1000 / about -850); above: fat, soft tissue
BONE_HU = 300.0  # above: cortical and cancellous bone


def build() -> onnx.ModelProto:
    nodes = []
    inits = [
        numpy_helper.from_array(np.array(AIR_HU, np.float32), "air_hu"),
        numpy_helper.from_array(np.array(BONE_HU, np.float32), "bone_hu"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(3, np.int64), "axis_rows"),
        numpy_helper.from_array(np.array(4, np.int64), "axis_cols"),
    ]

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # in-plane 3x3 max filter; padded cells are ignored by MaxPool (as -inf)
    square = dict(kernel_shape=[1, 3, 3], pads=[0, 1, 1, 0, 1, 1], strides=[1, 1, 1])

    def dilate(x, name):
        return node("MaxPool", [x], name, **square)

    def erode(x, name):
        neg = node("Neg", [x], name + "_neg")
        pooled = node("MaxPool", [neg], name + "_pool", **square)
        return node("Neg", [pooled], name)

    def as_float(b, name):
        return node("Cast", [b], name, to=TensorProto.FLOAT)

    fg = as_float(node("Greater", ["ct", "air_hu"], "fg_bool"), "fg")
    closed = erode(dilate(fg, "fg_dilated"), "fg_closed")

    def seen(axis, reverse, name):
        s = node("CumSum", [closed, axis], name + "_sum", reverse=reverse)
        return node("Greater", [s, "half"], name)

    left = seen("axis_cols", 0, "left")
    right = seen("axis_cols", 1, "right")
    above = seen("axis_rows", 0, "above")
    below = seen("axis_rows", 1, "below")
    body_b = node("And", [node("And", [left, right], "row_fill"),
                          node("And", [above, below], "col_fill")], "body_bool")
    body = as_float(body_b, "body")

    air = node("Less", ["ct", "air_hu"], "air_bool")
    lung_raw = as_float(node("And", [body_b, air], "lung_raw_bool"), "lung_raw")
    lungs = dilate(erode(lung_raw, "lung_eroded"), "lungs")

    bone = as_float(node("And", [body_b, node("Greater", ["ct", "bone_hu"], "dense")],
                         "bone_bool"), "bone")

    node("Concat", [body, lungs, bone], "masks", axis=1)

    dims = [1, 1, "slices", "rows", "columns"]
    graph = helper.make_graph(
        nodes,
        "ct_classical",
        [helper.make_tensor_value_info("ct", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("masks", TensorProto.FLOAT,
                                       [1, 3, "slices", "rows", "columns"])],
        initializer=inits,
        doc_string="Classical CT segmentation (thresholds and morphology, not learned): "
                   "channels body, lungs, bone.",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="pacs ai-worker/tools/build_ct_model.py",
        producer_version="1",
        doc_string="Classical (not learned) body/lung/bone segmentation of CT in HU.",
    )
    model.ir_version = 8
    helper.set_model_props(model, {"classical": "true", "labels": "body,lungs,bone"})
    onnx.checker.check_model(model, full_check=True)
    return model


def phantom(n=96, slices=40, spacing=1.0):
    """A small chest: elliptic body, two ellipsoid lungs, a spine, noise; with its truth."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(np.arange(slices) - slices / 2 + 0.5,
                          np.arange(n) - n / 2 + 0.5,
                          np.arange(n) - n / 2 + 0.5, indexing="ij")
    w = n / 2 * spacing
    body = (x / (0.9 * w)) ** 2 + (y / (0.625 * w)) ** 2 <= 1
    lungs = np.zeros_like(body)
    for cx in (-0.45 * w, 0.45 * w):
        lungs |= ((x - cx) / (0.3 * w)) ** 2 + (y / (0.44 * w)) ** 2 + (z / (0.35 * slices)) ** 2 <= 1
    spine = (x ** 2 + (y - 0.42 * w) ** 2 <= (0.085 * w) ** 2) & body & ~lungs
    hu = np.full(body.shape, -1000.0)
    hu[body] = 40.0
    hu[lungs & body] = -850.0
    hu[spine] = 700.0
    hu += rng.integers(-10, 11, size=hu.shape)
    return hu.astype(np.float32), body, lungs & body, spine


def dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def self_check(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    hu, body, lungs, bone = phantom()
    out = sess.run(["masks"], {"ct": hu[None, None]})[0][0] > 0.5
    scores = [dice(out[0], body), dice(out[1], lungs), dice(out[2], bone)]
    print("self-check Dice body %.4f lungs %.4f bone %.4f" % tuple(scores))
    if min(scores) < 0.95:
        sys.exit("self-check failed")


def main():
    model = build()
    os.makedirs(OUT_DIR, exist_ok=True)
    onnx.save(model, OUT_FILE)
    print("wrote %s (%d bytes)" % (os.path.normpath(OUT_FILE), os.path.getsize(OUT_FILE)))
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: self-check skipped")
        return
    self_check(OUT_FILE)


if __name__ == "__main__":
    main()
