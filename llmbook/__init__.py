"""llmbook: the helper package of the book *Large Language Models, Runnable*.

One flat module per concept; a module's docstring says what it owns. Modules are imported on
demand so that ``python -m llmbook.assets`` stays fast.

Core (every chapter; they import no chapter module):

- :mod:`llmbook.profile`   run profiles (``full`` / ``smoke``) and :func:`~llmbook.profile.pick`
- :mod:`llmbook.assets`    the offline asset manifest, fetch and verify
- :mod:`llmbook.data`      the book's fixed dataset splits
- :mod:`llmbook.models`    loading the encoder and the causal LM
- :mod:`llmbook.runtime`   notebook set-up: seeds, threads, device, versions
- :mod:`llmbook.hardware`  bf16 capability and the precision switch (fp32 for every stamp)
- :mod:`llmbook.metrics`   local ``evaluate`` metric modules (accuracy, F1, seqeval)
- :mod:`llmbook.execute`   the executor that runs and stamps notebooks

Methods (each owned by the chapter named, which teaches it; later chapters reuse them):

- :mod:`llmbook.losses`        losses derived from maximum likelihood; ``IGNORE_INDEX`` (ch. 2)
- :mod:`llmbook.calibration`   reliability bins, ECE, temperature scaling (ch. 2)
- :mod:`llmbook.stats`         Wilson and bootstrap intervals, paired comparisons, mean ± sd (ch. 3)
- :mod:`llmbook.encoding`      tokenisation, label alignment, padding, length-bucketed batches (ch. 3)
- :mod:`llmbook.optim`         AdamW parameter groups with one decay rule, learning-rate schedules (ch. 1)
- :mod:`llmbook.training`      ``TrainConfig``, ``train_step`` and ``fit`` with hooks (ch. 3)
- :mod:`llmbook.evaluation`    predictions in input order, accuracy, word-level tags (ch. 3)
- :mod:`llmbook.tasks`         the polarity and NER tasks, subsets, classifiers, TF-IDF baseline (ch. 3)
- :mod:`llmbook.regularizers`  L2-SP and the penalties that keep pretrained knowledge (ch. 2; ch. 4 adds)
- :mod:`llmbook.gpt`           the chapter 1 GPT, its pretraining loop and evaluation (ch. 1)
- :mod:`llmbook.inference`     causal-LM scoring with a shared prefix, greedy generation (ch. 5)
- :mod:`llmbook.prompting`     prompts, label words, demonstrations, calibration (ch. 5)
"""

__version__ = "0.1.0"
