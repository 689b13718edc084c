"""The template's facade: ``Trainer`` and what it is made of.

Setters (``recipe``), validation (``checks``), one run's objects (``build``), run folders
(``runs``, ``runfiles``) and study files (``studyfile``). It calls the search engine and the
training layer; nothing below imports it.
"""
