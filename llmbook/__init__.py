"""llmbook: the helper package of the book *Large Language Models, Runnable*.

One flat module per concept; the module map is in the README (section "The llmbook package")
and a module's docstring says what it owns. Modules are imported on demand so that
``python -m llmbook.assets`` stays fast.
"""

__version__ = "0.1.0"
