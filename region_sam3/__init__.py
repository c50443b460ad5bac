"""Region-aware SAM3: region tokens, closed-loop mask refinement and CLIP region distillation."""

from region_sam3.utils.resolvers import register_resolvers

register_resolvers()

__version__ = "0.1.0"
