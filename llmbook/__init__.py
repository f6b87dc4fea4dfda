"""llmbook: the small helper package of the book *Large Language Models, Runnable*.

Modules are imported on demand so that ``python -m llmbook.assets`` stays fast:

- :mod:`llmbook.profile`  run profiles (``full`` / ``smoke``) and :func:`~llmbook.profile.pick`
- :mod:`llmbook.assets`   the offline asset manifest, fetch and verify
- :mod:`llmbook.data`     the book's fixed dataset splits
- :mod:`llmbook.models`   loading the encoder and the causal LM
- :mod:`llmbook.runtime`  notebook set-up: seeds, threads, device, versions
- :mod:`llmbook.metrics`  local ``evaluate`` metric modules (accuracy, F1, seqeval)
- :mod:`llmbook.execute`  the executor that runs and stamps notebooks
"""

__version__ = "0.1.0"
