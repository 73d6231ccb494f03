"""ckptd: watches training runs and converts their checkpoints to HuggingFace safetensors."""

from __future__ import annotations

__version__ = "0.1.0"
