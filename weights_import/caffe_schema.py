"""The subset of caffe.proto that refnet reads: messages, field numbers, types, enums, defaults.

Field numbers and defaults follow OpenCV 4.x's ``opencv-caffe.proto`` (the schema cv2.dnn
parses with, read from the descriptor embedded in cv2 4.14), which is BVLC's caffe.proto
plus the SSD fork (PriorBox, DetectionOutput, Normalize, Permute) and NVIDIA's fp16
``raw_data`` blob field. A few names cv2 accepts only through its unknown-field fallback
(``interp_param``, ``shuffle_channel_param``, ``relu6_param``) and BVLC's ``round_mode`` are
text-format-only fields here (``number=None``): the binary format has no agreed number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Field", "MessageType", "MESSAGES", "ENUMS", "message", "SCALAR_KINDS"]

#: scalar kinds understood by the wire and text decoders
SCALAR_KINDS = frozenset(
    {"int32", "int64", "uint32", "uint64", "bool", "float", "double", "string", "bytes", "enum"}
)


@dataclass(frozen=True)
class Field:
    """One field of a message: wire number (None = text format only), name, kind."""

    number: int | None
    name: str
    kind: str  # one of SCALAR_KINDS or "message"
    repeated: bool = False
    ref: str | None = None  # message type name (kind "message") or enum name (kind "enum")
    default: Any = None


@dataclass(frozen=True)
class MessageType:
    """A message: its fields by number and by name."""

    name: str
    fields: tuple[Field, ...]
    by_number: Mapping[int, Field] = field(init=False, repr=False)
    by_name: Mapping[str, Field] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        nums = {f.number: f for f in self.fields if f.number is not None}
        names = {f.name: f for f in self.fields}
        if len(nums) != sum(f.number is not None for f in self.fields) or len(names) != len(
            self.fields
        ):
            raise RuntimeError(f"schema error: duplicate field in message {self.name}")
        object.__setattr__(self, "by_number", MappingProxyType(nums))
        object.__setattr__(self, "by_name", MappingProxyType(names))


def _f(number: int | None, name: str, kind: str, default: Any = None, *, rep: bool = False,
       ref: str | None = None) -> Field:
    if kind not in SCALAR_KINDS:  # a message type name
        return Field(number, name, "message", rep, kind, None)
    return Field(number, name, kind, rep, ref, default)


def _r(number: int | None, name: str, kind: str, *, ref: str | None = None) -> Field:
    return _f(number, name, kind, rep=True, ref=ref)


def _e(number: int | None, name: str, enum: str, default: str | None = None) -> Field:
    return Field(number, name, "enum", False, enum, default)


ENUMS: Mapping[str, Mapping[str, int]] = MappingProxyType({
    "Phase": {"TRAIN": 0, "TEST": 1},
    "Type": {"DOUBLE": 0, "FLOAT": 1, "FLOAT16": 2, "INT": 3, "UINT": 4},
    "PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "RoundMode": {"CEIL": 0, "FLOOR": 1},
    "Engine": {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2},
    "EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "CodeType": {"CORNER": 1, "CENTER_SIZE": 2, "CORNER_SIZE": 3},
    "DimCheckMode": {"STRICT": 0, "PERMISSIVE": 1},
    "V1LayerType": {
        "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3,
        "CONTRASTIVE_LOSS": 37, "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6,
        "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7, "ELTWISE": 25, "EXP": 38, "FLATTEN": 8,
        "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11, "IMAGE_DATA": 12,
        "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
        "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18,
        "SIGMOID": 19, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20,
        "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24,
        "THRESHOLD": 31,
    },
})

# Layer-parameter messages shared by LayerParameter (V2) and V1LayerParameter: (name, field
# number in V2, field number in V1 or None, message type).
_LAYER_PARAMS: tuple[tuple[str, int | None, int | None, str], ...] = (
    ("transform_param", 100, 36, "TransformationParameter"),
    ("batch_norm_param", 139, None, "BatchNormParameter"),
    ("bias_param", 141, None, "BiasParameter"),
    ("concat_param", 104, 9, "ConcatParameter"),
    ("convolution_param", 106, 10, "ConvolutionParameter"),
    ("crop_param", 144, None, "CropParameter"),
    ("detection_output_param", 147, None, "DetectionOutputParameter"),
    ("dropout_param", 108, 12, "DropoutParameter"),
    ("eltwise_param", 110, 24, "EltwiseParameter"),
    ("elu_param", 140, None, "ELUParameter"),
    ("exp_param", 111, 41, "ExpParameter"),
    ("flatten_param", 135, None, "FlattenParameter"),
    ("inner_product_param", 117, 17, "InnerProductParameter"),
    ("input_param", 143, None, "InputParameter"),
    ("log_param", 134, None, "LogParameter"),
    ("lrn_param", 118, 18, "LRNParameter"),
    ("mvn_param", 120, 34, "MVNParameter"),
    ("norm_param", 149, None, "NormalizeBBoxParameter"),
    ("permute_param", 148, None, "PermuteParameter"),
    ("pooling_param", 121, 19, "PoolingParameter"),
    ("power_param", 122, 21, "PowerParameter"),
    ("prelu_param", 131, None, "PReLUParameter"),
    ("prior_box_param", 150, None, "PriorBoxParameter"),
    ("proposal_param", 201, None, "ProposalParameter"),
    ("psroi_pooling_param", 10002, None, "PSROIPoolingParameter"),  # caffe-rfcn
    ("relu_param", 123, 30, "ReLUParameter"),
    ("reshape_param", 133, None, "ReshapeParameter"),
    ("roi_pooling_param", 8266711, None, "ROIPoolingParameter"),  # caffe-fast-rcnn
    ("scale_param", 142, None, "ScaleParameter"),
    ("sigmoid_param", 124, 38, "SigmoidParameter"),
    ("softmax_param", 125, 39, "SoftmaxParameter"),
    ("slice_param", 126, 31, "SliceParameter"),
    ("tanh_param", 127, 37, "TanHParameter"),
    ("threshold_param", 128, 25, "ThresholdParameter"),
    # not in opencv-caffe.proto: cv2 reads them through its unknown-field fallback
    ("interp_param", None, None, "InterpParameter"),
    ("shuffle_channel_param", None, None, "ShuffleChannelParameter"),
    ("relu6_param", None, None, "ReLU6Parameter"),
)

_FILLER = (
    _f(1, "type", "string", "constant"), _f(2, "value", "float", 0.0), _f(3, "min", "float", 0.0),
    _f(4, "max", "float", 1.0), _f(5, "mean", "float", 0.0), _f(6, "std", "float", 1.0),
    _f(7, "sparse", "int32", -1), _e(8, "variance_norm", "VarianceNorm", "FAN_IN"),
)

_MESSAGES: list[MessageType] = [
    MessageType("BlobShape", (_r(1, "dim", "int64"),)),
    MessageType("BlobProto", (
        _f(7, "shape", "BlobShape"),
        _r(5, "data", "float"), _r(6, "diff", "float"),
        _r(8, "double_data", "double"), _r(9, "double_diff", "double"),
        _e(10, "raw_data_type", "Type"), _f(12, "raw_data", "bytes"),
        _f(1, "num", "int32", 0), _f(2, "channels", "int32", 0),
        _f(3, "height", "int32", 0), _f(4, "width", "int32", 0),
    )),
    MessageType("NetParameter", (
        _f(1, "name", "string", ""),
        _r(3, "input", "string"),
        _r(8, "input_shape", "BlobShape"),
        _r(4, "input_dim", "int32"),
        _f(5, "force_backward", "bool", False),
        _f(6, "state", "NetState"),
        _f(7, "debug_info", "bool", False),
        _r(100, "layer", "LayerParameter"),
        _r(2, "layers", "V1LayerParameter"),
    )),
    MessageType("NetState", (
        _e(1, "phase", "Phase", "TEST"), _f(2, "level", "int32", 0), _r(3, "stage", "string"),
    )),
    MessageType("NetStateRule", (
        _e(1, "phase", "Phase"), _f(2, "min_level", "int32"), _f(3, "max_level", "int32"),
        _r(4, "stage", "string"), _r(5, "not_stage", "string"),
    )),
    MessageType("ParamSpec", (
        _f(1, "name", "string", ""), _e(2, "share_mode", "DimCheckMode"),
        _f(3, "lr_mult", "float", 1.0), _f(4, "decay_mult", "float", 1.0),
    )),
    MessageType("LayerParameter", (
        _f(1, "name", "string", ""), _f(2, "type", "string", ""),
        _r(3, "bottom", "string"), _r(4, "top", "string"),
        _e(10, "phase", "Phase"), _r(5, "loss_weight", "float"),
        _r(6, "param", "ParamSpec"), _r(7, "blobs", "BlobProto"),
        _r(11, "propagate_down", "bool"),
        _r(8, "include", "NetStateRule"), _r(9, "exclude", "NetStateRule"),
        _f(101, "loss_param", "LossParameter"),
        *(_f(v2, name, mt) for name, v2, _v1, mt in _LAYER_PARAMS),
        # the SSD fork (weiliu89/caffe) numbers its layer parameters differently; binary
        # files it wrote carry them here (text files use the names, which agree)
        _f(202, "permute_param_ssd", "PermuteParameter"),
        _f(203, "prior_box_param_ssd", "PriorBoxParameter"),
        _f(204, "detection_output_param_ssd", "DetectionOutputParameterSSD"),
        _f(206, "norm_param_ssd", "NormalizeBBoxParameter"),
    )),
    MessageType("V1LayerParameter", (
        _r(2, "bottom", "string"), _r(3, "top", "string"), _f(4, "name", "string", ""),
        _r(32, "include", "NetStateRule"), _r(33, "exclude", "NetStateRule"),
        _e(5, "type", "V1LayerType", "NONE"), _r(6, "blobs", "BlobProto"),
        _r(1001, "param", "string"), _r(1002, "blob_share_mode", "int32"),
        _r(7, "blobs_lr", "float"), _r(8, "weight_decay", "float"),
        _r(35, "loss_weight", "float"),
        _f(42, "loss_param", "LossParameter"),
        _f(1, "layer", "V0LayerParameter"),
        *(_f(v1, name, mt) for name, _v2, v1, mt in _LAYER_PARAMS if v1 is not None),
    )),
    # V0 (pre-2014) layers: only recognised, so the importer can say it does not read them
    MessageType("V0LayerParameter", (_f(1, "name", "string", ""), _f(2, "type", "string", ""))),
    MessageType("LossParameter", (_f(1, "ignore_label", "int32"), _f(2, "normalize", "bool"))),
    MessageType("FillerParameter", _FILLER),
    MessageType("TransformationParameter", (
        _f(1, "scale", "float", 1.0), _f(2, "mirror", "bool", False),
        _f(3, "crop_size", "uint32", 0), _f(4, "mean_file", "string"),
        _r(5, "mean_value", "float"), _f(6, "force_color", "bool", False),
        _f(7, "force_gray", "bool", False),
    )),
    MessageType("BatchNormParameter", (
        _f(1, "use_global_stats", "bool"), _f(2, "moving_average_fraction", "float", 0.999),
        _f(3, "eps", "float", 1e-5), _f(7, "scale_bias", "bool", False),
    )),
    MessageType("BiasParameter", (
        _f(1, "axis", "int32", 1), _f(2, "num_axes", "int32", 1),
        _f(3, "filler", "FillerParameter"),
    )),
    MessageType("ConcatParameter", (
        _f(2, "axis", "int32", 1), _f(1, "concat_dim", "uint32", 1),
    )),
    MessageType("ConvolutionParameter", (
        _f(1, "num_output", "uint32"), _f(2, "bias_term", "bool", True),
        _r(3, "pad", "uint32"), _r(4, "kernel_size", "uint32"), _r(6, "stride", "uint32"),
        _r(18, "dilation", "uint32"),
        _f(9, "pad_h", "uint32", 0), _f(10, "pad_w", "uint32", 0),
        _f(11, "kernel_h", "uint32"), _f(12, "kernel_w", "uint32"),
        _f(13, "stride_h", "uint32"), _f(14, "stride_w", "uint32"),
        _f(5, "group", "uint32", 1),
        _f(7, "weight_filler", "FillerParameter"), _f(8, "bias_filler", "FillerParameter"),
        _e(15, "engine", "Engine", "DEFAULT"), _f(16, "axis", "int32", 1),
        _f(17, "force_nd_im2col", "bool", False),
    )),
    MessageType("CropParameter", (_f(1, "axis", "int32", 2), _r(2, "offset", "uint32"))),
    MessageType("NonMaximumSuppressionParameter", (
        _f(1, "nms_threshold", "float", 0.3), _f(2, "top_k", "int32"), _f(3, "eta", "float", 1.0),
    )),
    MessageType("DetectionOutputParameter", (
        _f(1, "num_classes", "uint32"), _f(2, "share_location", "bool", True),
        _f(3, "background_label_id", "int32", 0),
        _f(4, "nms_param", "NonMaximumSuppressionParameter"),
        _e(6, "code_type", "CodeType", "CORNER"),
        _f(8, "variance_encoded_in_target", "bool", False),
        _f(7, "keep_top_k", "int32", -1), _f(9, "confidence_threshold", "float"),
        _f(10, "normalized_bbox", "bool", True), _f(1000, "clip", "bool", False),
    )),
    MessageType("DetectionOutputParameterSSD", (  # the SSD fork: 10 is `visualize` there
        _f(1, "num_classes", "uint32"), _f(2, "share_location", "bool", True),
        _f(3, "background_label_id", "int32", 0),
        _f(4, "nms_param", "NonMaximumSuppressionParameter"),
        _e(6, "code_type", "CodeType", "CORNER"),
        _f(8, "variance_encoded_in_target", "bool", False),
        _f(7, "keep_top_k", "int32", -1), _f(9, "confidence_threshold", "float"),
        _f(None, "normalized_bbox", "bool", True), _f(None, "clip", "bool", False),
    )),
    MessageType("DropoutParameter", (
        _f(1, "dropout_ratio", "float", 0.5), _f(2, "scale_train", "bool", True),
    )),
    MessageType("EltwiseParameter", (
        _e(1, "operation", "EltwiseOp", "SUM"), _r(2, "coeff", "float"),
        _f(3, "stable_prod_grad", "bool", True),
    )),
    MessageType("ELUParameter", (_f(1, "alpha", "float", 1.0),)),
    MessageType("ExpParameter", (
        _f(1, "base", "float", -1.0), _f(2, "scale", "float", 1.0), _f(3, "shift", "float", 0.0),
    )),
    MessageType("LogParameter", (
        _f(1, "base", "float", -1.0), _f(2, "scale", "float", 1.0), _f(3, "shift", "float", 0.0),
    )),
    MessageType("PowerParameter", (
        _f(1, "power", "float", 1.0), _f(2, "scale", "float", 1.0), _f(3, "shift", "float", 0.0),
    )),
    MessageType("FlattenParameter", (_f(1, "axis", "int32", 1), _f(2, "end_axis", "int32", -1))),
    MessageType("InnerProductParameter", (
        _f(1, "num_output", "uint32"), _f(2, "bias_term", "bool", True),
        _f(3, "weight_filler", "FillerParameter"), _f(4, "bias_filler", "FillerParameter"),
        _f(5, "axis", "int32", 1), _f(6, "transpose", "bool", False),
    )),
    MessageType("InputParameter", (_r(1, "shape", "BlobShape"),)),
    MessageType("LRNParameter", (
        _f(1, "local_size", "uint32", 5), _f(2, "alpha", "float", 1.0),
        _f(3, "beta", "float", 0.75), _e(4, "norm_region", "NormRegion", "ACROSS_CHANNELS"),
        _f(5, "k", "float", 1.0), _e(6, "engine", "Engine", "DEFAULT"),
    )),
    MessageType("MVNParameter", (
        _f(1, "normalize_variance", "bool", True), _f(2, "across_channels", "bool", False),
        _f(3, "eps", "float", 1e-9),
    )),
    MessageType("NormalizeBBoxParameter", (
        _f(1, "across_spatial", "bool", True), _f(2, "scale_filler", "FillerParameter"),
        _f(3, "channel_shared", "bool", True), _f(4, "eps", "float", 1e-10),
    )),
    MessageType("PermuteParameter", (_r(1, "order", "uint32"),)),
    MessageType("PoolingParameter", (
        _e(1, "pool", "PoolMethod", "MAX"),
        _f(4, "pad", "uint32", 0), _f(9, "pad_h", "uint32", 0), _f(10, "pad_w", "uint32", 0),
        _f(2, "kernel_size", "uint32"), _f(5, "kernel_h", "uint32"), _f(6, "kernel_w", "uint32"),
        _f(3, "stride", "uint32", 1), _f(7, "stride_h", "uint32"), _f(8, "stride_w", "uint32"),
        _e(11, "engine", "Engine", "DEFAULT"), _f(12, "global_pooling", "bool", False),
        _f(13, "ceil_mode", "bool", True),  # OpenCV's field; BVLC put round_mode at 13
        _e(None, "round_mode", "RoundMode", "CEIL"),
    )),
    MessageType("PriorBoxParameter", (
        _r(1, "min_size", "float"), _r(2, "max_size", "float"), _r(3, "aspect_ratio", "float"),
        _f(4, "flip", "bool", True), _f(5, "clip", "bool", True), _r(6, "variance", "float"),
        _f(7, "img_size", "uint32"), _f(8, "img_h", "uint32"), _f(9, "img_w", "uint32"),
        _f(10, "step", "float"), _f(11, "step_h", "float"), _f(12, "step_w", "float"),
        _f(13, "offset", "float", 0.5), _r(14, "offset_h", "float"), _r(15, "offset_w", "float"),
        _r(16, "width", "float"), _r(17, "height", "float"),
    )),
    # the two-stage detectors, as cv2's opencv-caffe.proto declares them
    MessageType("ProposalParameter", (
        _f(1, "feat_stride", "uint32", 16), _f(2, "base_size", "uint32", 16),
        _f(3, "min_size", "uint32", 16), _r(4, "ratio", "float"), _r(5, "scale", "float"),
        _f(6, "pre_nms_topn", "uint32", 6000), _f(7, "post_nms_topn", "uint32", 300),
        _f(8, "nms_thresh", "float", 0.7),
    )),
    MessageType("ROIPoolingParameter", (
        _f(1, "pooled_h", "uint32", 0), _f(2, "pooled_w", "uint32", 0),
        _f(3, "spatial_scale", "float", 1.0),
    )),
    MessageType("PSROIPoolingParameter", (  # all three are `required` in caffe-rfcn's proto
        _f(1, "spatial_scale", "float"), _f(2, "output_dim", "int32"), _f(3, "group_size", "int32"),
    )),
    MessageType("PReLUParameter", (
        _f(1, "filler", "FillerParameter"), _f(2, "channel_shared", "bool", False),
    )),
    MessageType("ReLUParameter", (
        _f(1, "negative_slope", "float", 0.0), _e(2, "engine", "Engine", "DEFAULT"),
    )),
    MessageType("ReshapeParameter", (
        _f(1, "shape", "BlobShape"), _f(2, "axis", "int32", 0), _f(3, "num_axes", "int32", -1),
    )),
    MessageType("ScaleParameter", (
        _f(1, "axis", "int32", 1), _f(2, "num_axes", "int32", 1),
        _f(3, "filler", "FillerParameter"), _f(4, "bias_term", "bool", False),
        _f(5, "bias_filler", "FillerParameter"),
    )),
    MessageType("SigmoidParameter", (_e(1, "engine", "Engine", "DEFAULT"),)),
    MessageType("TanHParameter", (_e(1, "engine", "Engine", "DEFAULT"),)),
    MessageType("SoftmaxParameter", (
        _e(1, "engine", "Engine", "DEFAULT"), _f(2, "axis", "int32", 1),
    )),
    MessageType("SliceParameter", (
        _f(3, "axis", "int32", 1), _r(2, "slice_point", "uint32"), _f(1, "slice_dim", "uint32", 1),
    )),
    MessageType("ThresholdParameter", (_f(1, "threshold", "float", 0.0),)),
    MessageType("InterpParameter", (
        _f(1, "height", "int32", 0), _f(2, "width", "int32", 0),
        _f(3, "zoom_factor", "int32", 1), _f(4, "shrink_factor", "int32", 1),
        _f(5, "pad_beg", "int32", 0), _f(6, "pad_end", "int32", 0),
    )),
    # weights-only views of a caffemodel (everything else is skipped without decoding it)
    MessageType("NetWeights", (_r(100, "layer", "LayerWeights"), _r(2, "layers", "V1LayerWeights"))),
    MessageType("LayerWeights", (_f(1, "name", "string", ""), _f(2, "type", "string", ""),
                                 _r(7, "blobs", "BlobProto"))),
    MessageType("V1LayerWeights", (_f(4, "name", "string", ""), _e(5, "type", "V1LayerType", "NONE"),
                                   _r(6, "blobs", "BlobProto"))),
    MessageType("ShuffleChannelParameter", (_f(1, "group", "uint32", 1),)),
    MessageType("ReLU6Parameter", (_f(1, "min_value", "float", 0.0),
                                   _f(2, "max_value", "float", 6.0))),
]

ENUMS = MappingProxyType({**ENUMS, "VarianceNorm": {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2}})

MESSAGES: Mapping[str, MessageType] = MappingProxyType({m.name: m for m in _MESSAGES})


def message(name: str) -> MessageType:
    """The message type called ``name`` (KeyError if it is not in the subset)."""
    return MESSAGES[name]


def _check() -> None:
    for m in _MESSAGES:
        for f in m.fields:
            if f.kind == "message" and f.ref not in MESSAGES:
                raise RuntimeError(f"schema error: {m.name}.{f.name} refers to unknown {f.ref}")
            if f.kind == "enum" and f.ref not in ENUMS:
                raise RuntimeError(f"schema error: {m.name}.{f.name} refers to unknown enum {f.ref}")


_check()
