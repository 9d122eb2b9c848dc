"""Captions of segments: one imperative instruction per segment (+ short reasoning), or N/A.

Backends (registered for the ``captions`` stage in :mod:`ego_assets.lib.captions.backends`):
``kinematic`` (offline default, from the measured motion) and ``openai`` (an OpenAI-compatible VLM
endpoint shown overlay frames, :mod:`ego_assets.lib.captions.overlay`).
"""

from ego_assets.lib.captions.base import NA, CaptionConfigError, CaptionError, CaptionResult

__all__ = ["NA", "CaptionConfigError", "CaptionError", "CaptionResult"]
