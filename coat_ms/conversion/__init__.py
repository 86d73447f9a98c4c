"""PyTorch <-> coat_ms weight conversion: the rules the library needs at load time and the converter uses.

``pretrained=True`` converts timm's hub files with them and every checkpoint reader converts mindcv's
layout in memory with them (coat_ms.origin), so they live in the library; ``python -m convert`` (the
top-level ``convert`` package) is the command line over them, and its Python API.

* ``rules``: PyTorch names and shapes <-> coat_ms parameters, read off a built model (tied aliases);
* ``mindcv_rules``: mindcv 0.3.0's CoaT names -> PyTorch names, and the switches its weights need;
* ``core``: ``torch_to_ms``, ``ms_to_torch``, ``mindcv_to_ms`` (strict, with a report);
* ``readers`` / ``writers``: .pth, .safetensors and MindSpore files in and out (atomic writes);
* ``verify``: the source framework's model and coat_ms on one shared input.

The submodules are imported one by one (this package imports none of them: reading a file's hash
needs no MindSpore).
"""

CONVERTER_VERSION = "0.1.0"   # recorded in every converted file's metadata and in the pretrained cache
