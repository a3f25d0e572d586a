"""The built-in demo world: a procedural image world, a tiny CLIP trained on it by the project
(shipped under ``assets/``), a single-object probe, and the ``wca demo`` runner."""
