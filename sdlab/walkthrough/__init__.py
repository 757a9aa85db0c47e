"""Real Stable Diffusion, built on the meta device: published configs, parameter counts and the tensor shapes
of one generation, read off the real modules without downloading a weight.

    from sdlab.walkthrough import SD15, walkthrough, spec_from_pipeline
    walk = walkthrough(SD15)                      # seconds on a CPU, no memory
    walk.parameters["unet"]                       # 859,520,964
    [s for s in walk.stages if s.part == "UNet"]  # each block's output shape, where cross-attention sits
    toy = walkthrough(spec_from_pipeline(sdlab.load_pipeline()))

Tables and a figure that put walkthroughs side by side: `sdlab.walkthrough.compare`.
"""

from .configs import PUBLISHED, SD15, SD21_BASE, SDXL, MetaModel, ModelSpec, build_on_meta, spec_from_pipeline
from .trace import CrossAttention, Padding, Stage, Walkthrough, walkthrough

__all__ = ["PUBLISHED", "SD15", "SD21_BASE", "SDXL", "CrossAttention", "MetaModel", "ModelSpec", "Padding", "Stage",
           "Walkthrough", "build_on_meta", "spec_from_pipeline", "walkthrough"]
