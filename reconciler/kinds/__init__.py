"""Built-in resource kinds, one module or package each, found by name.

A module here that defines ``KIND = SomeKind`` is a resource kind; anything
else (helpers) defines no ``KIND`` and is skipped.
"""
