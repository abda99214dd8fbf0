"""SurgUn for ComfyUI: erase a concept (an artist's style, a character, nudity) from a diffusion model.

Registered through ``comfy_entrypoint`` only (ComfyUI's V3 node API); nothing is imported or
computed until ComfyUI asks for the nodes.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import SurgUnExtension

    return SurgUnExtension()
