"""The Open Inference Protocol's wire constants, shared by its REST and gRPC services and Triton's extensions."""

import numpy as np

REQUEST_KEYS = ("id", "model_name", "model_version", "inputs", "outputs", "parameters")
TENSOR_KEYS = ("name", "shape", "datatype", "data", "parameters")
# The datatypes each input takes; outputs keep their own numpy type.
INPUT_DATATYPES = {
    "images": {"FP32": np.float32},
    "targets": {"INT32": np.int32, "INT64": np.int64},
    "rho": {"FP32": np.float32},
    "steps": {"INT32": np.int32, "INT64": np.int64},
    "samples": {"INT32": np.int32, "INT64": np.int64},
    "noise": {"FP32": np.float32},
    "seed": {"INT32": np.int32, "INT64": np.int64},
    "baseline": {"FP32": np.float32},
}
NUMPY_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
                   np.dtype(np.bool_): "BOOL"}
SIGNATURE_DATATYPES = {"DT_FLOAT": "FP32", "DT_INT32": "INT32", "DT_INT64": "INT64", "DT_BOOL": "BOOL"}
# Request parameters a V2 client may send that change nothing here.
PROTOCOL_PARAMETERS = ("binary_data_output", "timeout", "priority")
HEADER_LENGTH = "Inference-Header-Content-Length"
# What the server metadata lists, and the platform each backend kind is reported as.
V2_EXTENSIONS = ("binary_tensor_data", "parameters", "explain", "model_configuration", "statistics")
PLATFORMS = {"onnx": "onnxruntime_onnx", "savedmodel": "tensorflow_savedmodel"}
# perf_analyzer always sends it over gRPC; it matters only to streaming, which is not served.
GRPC_PARAMETERS = ("triton_enable_empty_final_response",)
# The typed gRPC `contents` field of each input datatype.
CONTENTS = {"FP32": "fp32_contents", "INT32": "int_contents", "INT64": "int64_contents"}
