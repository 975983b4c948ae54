"""LoRA on AWQ 4-bit bases: `qalign quantize awq`, the AutoAWQ compatibility fixes, and GPU measurement helpers."""
