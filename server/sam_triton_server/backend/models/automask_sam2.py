"""``sam_automask`` for a SAM 2 repository: :mod:`~sam_triton_server.backend.models.automask` with
the family's generator (``SAM2AutomaticMaskGenerator``, :mod:`sam_triton_server.backend.automask_sam2`)
and nothing else changed (request checks, limits, cancellation, metrics and the wire format
are the same code). ``onnx_file`` points at sam_decoder's full SAM 2 graph."""

from __future__ import annotations

from collections.abc import Callable

from sam_triton_common.amg import AmgParams
from sam_triton_common.contract import IMAGE, SAM2, family_named
from sam_triton_common.proto import automask_pb2

from sam_triton_server.backend.automask_sam2 import run_sam2_automask, warm_up
from sam_triton_server.backend.models import automask
from sam_triton_server.backend.models._common import Array
from sam_triton_server.backend.ort import MemoryReleasing, Session


class TritonPythonModel(automask.TritonPythonModel):
    GRAPHS = {"full_decoder": "onnx_file"}
    full_decoder: Session

    def setup_family(self) -> None:
        family = family_named(self.params.get("family", SAM2.name))
        if family is not SAM2:
            raise ValueError(f"automask_sam2 serves SAM 2 repositories, this config says {family.name}")
        warm_up(self.full_decoder)

    def release_memory(self) -> None:
        """As SAM 1's: one small decode that hands the runtime's kept memory back."""
        warm_up(MemoryReleasing(self.full_decoder), 1)

    def run(
        self, image: Array, params: AmgParams, cancelled: Callable[[], bool]
    ) -> automask_pb2.AutomaskResult:
        return run_sam2_automask(
            image,
            params,
            encode=self._encode_crop,
            decoder=self.full_decoder,
            limits=self.limits,
            cancelled=cancelled,
        )

    def _encode_crop(self, crop: Array) -> dict[str, Array]:
        """One crop, as it is, through sam_encoder (BLS): the SAM 2 encoder resizes it itself."""
        return self.encode_features_via_bls(self.encoder_model, {IMAGE: crop[None]}, SAM2.encoder_outputs)
