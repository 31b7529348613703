"""finsent: finance text in, a gated, auditable PEFT sentiment model out."""

__version__ = "0.1.0"
