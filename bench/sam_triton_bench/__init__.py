"""``sam-triton bench``: load testing a sam-triton deployment over the real gRPC path.

Layout (each module small and usable on its own):

* :mod:`.loadgen` - closed-loop (N workers) and open-loop (Poisson arrivals) drivers around
  any ``async (index) -> None`` callable; they only measure, they know nothing about SAM.
* :mod:`.stats` - percentiles, throughput and the per-second timeline from the samples.
* :mod:`.images` - the benchmark's images (deterministic synthetic ones, or a directory).
* :mod:`.scenarios` - what one request is (``encode``, ``click``, ``oneshot``, ``automask``)
  against a served model; :mod:`.baselines` - the same work in-process (segment_anything or
  onnxruntime) so served/in-process ratios come from one run.
* :mod:`.session` - the ``session`` scenario: virtual users (embed, then clicks with think
  time and refinement) beside background load, one result per stage; :mod:`.session_report`
  its ``results.json`` section and table; :mod:`.session_cli` its options and handler.
* :mod:`.runner` - one run (or a sweep) end to end; :mod:`.report`, :mod:`.plots` - the
  table, ``results.json``, ``samples.csv`` and PNGs; :mod:`.perf_analyzer` - input-data files
  for Triton's own ``perf_analyzer``; :mod:`.cli` - the subcommand.
* :mod:`.verify_served` - not load but fidelity: a running server's answers (TensorRT plans
  included) against segment_anything's ``SamPredictor`` with ``sam-triton verify``'s cases and
  tolerances (``python -m sam_triton_bench.verify_served``).
* :mod:`.remote` - the ``remote`` scenario: a new JPEG photo and its clicks over emulated
  links (:mod:`.link`), the wire format before against today's; :mod:`.remote_cli` its options
  and handler; :mod:`.meter` - bytes per call for such scripts.
* :mod:`.video` - the ``video`` scenario: paced live streams tracked by ``sam_video``, frames
  answered and dropped, the server's video bytes per stream; :mod:`.video_cli` its options,
  ``results.json`` section and handler.
* :mod:`.locust_user` - a Locust user class (a locustfile) for load from many machines; importing
  it patches the process for gevent, so only Locust loads it.

Nothing here imports torch, onnxruntime or matplotlib at module import time.
"""
