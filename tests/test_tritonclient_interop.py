"""The SDK imports and works beside NVIDIA's tritonclient in one process, in either order.

Both register KServe v2 messages in protobuf's default descriptor pool; the SDK's live in a
package of its own (sam_triton.inference), so neither import breaks the other. Each order
runs in a fresh interpreter (imports are once per process) and encodes one image through
both clients against the real server: the embeddings must be equal.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ServedTriton

SCRIPT = textwrap.dedent(
    """
    import sys
    {imports}
    import numpy as np
    from sam_triton.transforms import prepare_image

    url = sys.argv[1]
    image = np.random.default_rng(5).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    with sam_triton.SamClient(url, server_embeddings=False) as client:
        ours = client.embed(image).embedding

    padded, input_size = prepare_image(image)
    triton = tritonclient.grpc.InferenceServerClient(url)
    inputs = [
        tritonclient.grpc.InferInput("image", [1, *padded.shape], "UINT8"),
        tritonclient.grpc.InferInput("input_size", [1, 2], "INT32"),
    ]
    inputs[0].set_data_from_numpy(padded[None])
    inputs[1].set_data_from_numpy(np.array([input_size], np.int32))
    theirs = triton.infer("sam_encoder", inputs).as_numpy("image_embeddings")[0]
    assert triton.is_model_ready("sam_session")
    np.testing.assert_array_equal(ours, theirs)
    print("OK", ours.shape)
    """
)

ORDERS = {
    "tritonclient first": "import tritonclient.grpc\nimport sam_triton",
    "sam_triton first": "import sam_triton\nimport tritonclient.grpc",
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_sdk_and_tritonclient_in_one_process(triton_server: ServedTriton, order: str) -> None:
    script = SCRIPT.format(imports=ORDERS[order])
    result = subprocess.run(
        [sys.executable, "-c", script, triton_server.grpc_url], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK (256, 64, 64)" in result.stdout
