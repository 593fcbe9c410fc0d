"""The data management report: one self-contained HTML page (``reconciler report --html``)."""
