"""KServe's Python SDK calling a running server; run by `test_kserve_clients.py` in its own process.

`kserve` and `tritonclient.grpc` register the same protobuf messages
(`inference.ServerLiveRequest`, ...) in the default descriptor pool, so the
two cannot be imported into one process: the test suite imports tritonclient,
and this script imports kserve.

Usage: python kserve_sdk_calls.py HTTP_URL GRPC_ADDRESS IMAGES.npy TARGETS.npy [MODEL]
Prints one JSON object: every answer the SDK returned, arrays as lists. MODEL
is the served model's name (default tiny).
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

STEPS = 4


def infer_request(model, binary, **arrays):
    inputs = []
    for name, array in arrays.items():
        datatype = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}[array.dtype]
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return InferRequest(model, inputs, parameters={"steps": STEPS} if model.endswith("-explainer") else None)


def outputs(response):
    return {output.name: output.as_numpy().tolist() for output in response.outputs}


async def v1_rest(url, model, images, targets):
    async with InferenceRESTClient(RESTConfig(protocol="v1")) as client:
        predicted = await client.infer(url, {"instances": images.tolist()}, model_name=model)
        instances = [{"images": image.tolist(), "targets": int(target), "steps": STEPS}
                     for image, target in zip(images, targets)]
        explained = await client.explain(url, model, {"instances": instances})
        return {"live": await client.is_server_live(url), "ready": await client.is_model_ready(url, model),
                "predict": predicted["predictions"], "explain": explained["predictions"]}


async def v2_rest(url, model, images, targets, binary):
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        predicted = await client.infer(url, infer_request(model, binary, images=images), model_name=model)
        explainer = f"{model}-explainer"
        explained = await client.infer(url, infer_request(explainer, binary, images=images, targets=targets),
                                       model_name=explainer)
        return {"live": await client.is_server_live(url), "ready": await client.is_server_ready(url),
                "model_ready": await client.is_model_ready(url, model),
                "predict": outputs(predicted), "explain": outputs(explained)}


async def v2_grpc(address, model, images, targets):
    async with InferenceGRPCClient(address, retries=0) as client:
        predicted = await client.infer(infer_request(model, True, images=images))
        explained = await client.infer(infer_request(f"{model}-explainer", True, images=images, targets=targets))
        return {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
                "model_ready": await client.is_model_ready(model),
                "predict": outputs(predicted), "explain": outputs(explained)}


async def main(url, address, images, targets, model):
    return {"v1_rest": await v1_rest(url, model, images, targets),
            "v2_rest_json": await v2_rest(url, model, images, targets, binary=False),
            "v2_rest_binary": await v2_rest(url, model, images, targets, binary=True),
            "v2_grpc": await v2_grpc(address, model, images, targets)}


if __name__ == "__main__":
    http_url, grpc_address, images_path, targets_path, *rest = sys.argv[1:]
    arrays = np.load(images_path), np.load(targets_path)
    print(json.dumps(asyncio.run(main(http_url, grpc_address, *arrays, rest[0] if rest else "tiny"))))
