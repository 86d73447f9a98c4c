"""Speed and scale studies, run as scripts (``python benchmarks/bench.py``); each prints ratios against
anchors measured in the same run.  A package only so that the scripts can share code (bench.py,
bench_onnx.py, step.py) and the tests can import it; nothing in coat_ms imports it."""
