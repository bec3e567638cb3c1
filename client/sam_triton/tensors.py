"""The SDK's request tensors and response decoding, for code that runs the exported graphs
itself: the bench harness's in-process baselines and its perf_analyzer input files feed the
graphs exactly the tensors a served request carries, and read their outputs the same way.

- :func:`encoder_inputs`: an RGB image -> ``image``/``input_size`` tensors and the input size.
- :func:`decoder_prompt_inputs`: one group of encoded prompts -> the decoder's prompt tensors.
- :func:`decode_predictions`: decoder outputs -> :class:`~sam_triton.Prediction` objects.
"""

from ._core import decode_predictions as decode_predictions
from ._core import decoder_prompt_inputs as decoder_prompt_inputs
from ._core import encoder_inputs as encoder_inputs
