"""Command line: ``brainjepa`` (``main``), one module per command group, and the end-to-end demo."""
