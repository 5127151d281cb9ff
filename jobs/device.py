"""The model execution device, chosen once per run at startup (``streamquant run --device``).

CPU is the reference: replays are byte-identical on it. ``auto`` takes CUDA only when a probe
session really runs on it, ``cuda`` requires it; either way the choice is made here, once, and
the concrete device goes into ``infer``'s config (hence its fingerprint), the run manifest and
the audit records — an operator never probes hardware, and no run silently changes device.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np

from jobs.errors import UsageError
from operators.infer import CUDA, Device, providers_for

DeviceRequest = Literal["cpu", "cuda", "auto"]
DEVICE_REQUESTS: tuple[str, ...] = get_args(DeviceRequest)
_QUIET = 3  # onnxruntime log severity: errors only (no warnings about missing providers)


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data: bytes = model.SerializeToString()
    return data


def cuda_available() -> bool:
    """True when the CUDA provider is built in *and* a real session runs on it.

    ``get_available_providers()`` lists CUDA for the GPU wheel even on a machine without a
    driver; only opening and running a session proves it works. The check stays quiet when
    the provider is not even listed (the common CPU-only case).
    """
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    try:
        so: Any = ort.SessionOptions()
        so.log_severity_level = 4  # fatal only: a failed probe is an answer, not an error
        sess = ort.InferenceSession(_probe_model(), so, providers=[CUDA])
        if sess.get_providers()[0] != CUDA:
            return False
        out = sess.run(None, {"x": np.full((1, 1), 1.5, dtype=np.float32)})[0]
        return bool(out[0, 0] == 3.0)
    except Exception:  # any failure to start CUDA means "not available"
        return False


def resolve_device(request: str) -> Device:
    """The concrete device for ``--device``: ``cpu`` as asked, ``auto`` -> CUDA if it works
    else CPU, ``cuda`` -> CUDA or a usage error (exit 2), never a silent fallback."""
    if request not in DEVICE_REQUESTS:
        raise UsageError(f"--device must be one of {', '.join(DEVICE_REQUESTS)}, got {request!r}")
    if request == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if request == "cuda":
        import onnxruntime as ort

        raise UsageError(
            "--device cuda: CUDA is not usable by onnxruntime on this machine (available "
            f"providers: {', '.join(ort.get_available_providers())}); use --device cpu (the "
            "reference) or --device auto"
        )
    return "cpu"


def device_record(request: str, device: Device) -> dict[str, Any]:
    """What the manifest records: the request, the resolved device and its providers."""
    return {"requested": request, "resolved": device, "providers": list(providers_for(device))}

